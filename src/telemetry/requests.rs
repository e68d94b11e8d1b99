//! Request statistics: counts and latency by route and upstream, sharded by worker and merged
//! at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Upper bounds, in seconds, of the latency histogram buckets.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Default)]
struct Histogram {
    /// Per bucket (not cumulative), the last one for values above every bound.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let bucket = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    fn encode(&self, encoder: &mut prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &buckets, None)
    }
}

/// How the exchange with the upstream went, for metrics and the access log.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamOutcome {
    pub(crate) upstream: Arc<str>,
    pub(crate) elapsed: Duration,
    /// `None` on success; otherwise a fixed error kind (`connect_error`, `timeout`, …).
    pub(crate) error: Option<&'static str>,
    /// The status the upstream itself answered with, whatever later filters made of it (a
    /// cache may have put a stale copy in its place).
    pub(crate) status: Option<u16>,
}

#[derive(Clone, Default)]
struct RouteStats {
    /// (method, status, count): a handful per route, scanned.
    counts: Vec<(&'static str, u16, u64)>,
    duration: Histogram,
}

#[derive(Clone, Default)]
struct UpstreamStats {
    duration: Histogram,
    /// (kind, count)
    errors: Vec<(&'static str, u64)>,
}

/// Looked up by `&str`: a hit clones no `Arc` (whose count is shared across cores).
#[derive(Default)]
struct Shard {
    routes: FastMap<Arc<str>, RouteStats>,
    upstreams: FastMap<Arc<str>, UpstreamStats>,
}

fn slot<'m, V: Default>(map: &'m mut FastMap<Arc<str>, V>, key: &Arc<str>) -> &'m mut V {
    if !map.contains_key(&**key) {
        map.insert(Arc::clone(key), V::default());
    }
    map.get_mut(&**key).expect("inserted above")
}

/// Request statistics, one shard per worker thread: a worker only ever locks its own shard
/// (uncontended); a scrape merges them.
#[derive(Debug)]
pub(crate) struct RequestStats {
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shard")
    }
}

impl RequestStats {
    pub(super) fn new(workers: usize) -> RequestStats {
        RequestStats {
            shards: (0..workers.max(1))
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
        }
    }

    /// Records one finished request (and its upstream exchange, if any).
    pub(crate) fn record(
        &self,
        route: &Arc<str>,
        method: &'static str,
        status: u16,
        elapsed: Duration,
        upstream: Option<&UpstreamOutcome>,
    ) {
        let index = crate::worker::index() % self.shards.len();
        let mut shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
        let stats = slot(&mut shard.routes, route);
        match stats
            .counts
            .iter_mut()
            .find(|(m, s, _)| *m == method && *s == status)
        {
            Some((_, _, n)) => *n += 1,
            None => stats.counts.push((method, status, 1)),
        }
        stats.duration.observe(elapsed.as_secs_f64());
        if let Some(outcome) = upstream {
            upstream_outcome(&mut shard, outcome);
        }
    }

    /// Records an upstream exchange that is not the request's own (a fallback's).
    pub(crate) fn record_upstream(&self, outcome: &UpstreamOutcome) {
        let index = crate::worker::index() % self.shards.len();
        let mut shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
        upstream_outcome(&mut shard, outcome);
    }

    /// All shards added up, by name (a reload gives routes new `Arc`s with the same names).
    fn merged(&self) -> Merged {
        let mut total = Merged::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (route, stats) in &shard.routes {
                for (method, status, n) in &stats.counts {
                    *total
                        .requests
                        .entry((route.to_string(), method, *status))
                        .or_default() += n;
                }
                total
                    .durations
                    .entry(route.to_string())
                    .or_default()
                    .merge(&stats.duration);
            }
            for (upstream, stats) in &shard.upstreams {
                total
                    .upstream_durations
                    .entry(upstream.to_string())
                    .or_default()
                    .merge(&stats.duration);
                for (kind, n) in &stats.errors {
                    *total
                        .upstream_errors
                        .entry((upstream.to_string(), kind))
                        .or_default() += n;
                }
            }
        }
        total
    }
}

fn upstream_outcome(shard: &mut Shard, outcome: &UpstreamOutcome) {
    let stats = slot(&mut shard.upstreams, &outcome.upstream);
    stats.duration.observe(outcome.elapsed.as_secs_f64());
    if let Some(kind) = outcome.error {
        match stats.errors.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => stats.errors.push((kind, 1)),
        }
    }
}

#[derive(Default)]
struct Merged {
    requests: FastMap<(String, &'static str, u16), u64>,
    durations: FastMap<String, Histogram>,
    upstream_durations: FastMap<String, Histogram>,
    upstream_errors: FastMap<(String, &'static str), u64>,
}

/// Label sets sorted, so scrapes list series in a stable order.
fn sorted<K, V>(map: &FastMap<K, V>) -> Vec<(K, V)>
where
    K: Ord + Clone + std::hash::Hash + Eq,
    V: Clone,
{
    let mut items: Vec<(K, V)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items
}

impl Collector for RequestStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let total = self.merged();
        let mut metric = encoder.encode_descriptor(
            "requests",
            "Requests by route, method and status",
            None,
            MetricType::Counter,
        )?;
        for ((route, method, status), n) in sorted(&total.requests) {
            let labels = [
                ("route", route.to_string()),
                ("method", method.to_string()),
                ("status", status.to_string()),
            ];
            ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "request_duration_seconds",
            "Time from the request head to the response head, by route",
            None,
            MetricType::Histogram,
        )?;
        for (route, histogram) in sorted(&total.durations) {
            histogram.encode(&mut metric.encode_family(&[("route", route.to_string())])?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "upstream_request_duration_seconds",
            "Time from sending to an upstream to its response head, by upstream",
            None,
            MetricType::Histogram,
        )?;
        for (upstream, histogram) in sorted(&total.upstream_durations) {
            histogram.encode(&mut metric.encode_family(&[("upstream", upstream.to_string())])?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "upstream_errors",
            "Failed upstream exchanges by upstream and kind",
            None,
            MetricType::Counter,
        )?;
        for ((upstream, kind), n) in sorted(&total.upstream_errors) {
            let labels = [
                ("upstream", upstream.to_string()),
                ("kind", kind.to_string()),
            ];
            ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
