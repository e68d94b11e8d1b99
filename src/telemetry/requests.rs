//! Request statistics: counts and latency by route and upstream, sharded by worker and merged
//! at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use std::collections::{BTreeMap, HashMap};
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
    /// The upstream's statistics, which also carry its name.
    pub(crate) upstream: UpstreamMeter,
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

/// One worker's part of a meter, on its own cache lines: workers never share a line they
/// write.
#[repr(align(128))]
#[derive(Default)]
struct Shard<T>(Mutex<T>);

/// Statistics under one name, one shard per worker thread: a worker only ever locks its own
/// shard (uncontended); a scrape adds them up.
struct Sharded<T> {
    name: Arc<str>,
    shards: Box<[Shard<T>]>,
}

impl<T: Default> Sharded<T> {
    fn new(name: &str, workers: usize) -> Sharded<T> {
        Sharded {
            name: name.into(),
            shards: (0..workers.max(1)).map(|_| Shard::default()).collect(),
        }
    }

    /// The calling worker's shard.
    fn mine(&self) -> std::sync::MutexGuard<'_, T> {
        let shard = &self.shards[crate::worker::index() % self.shards.len()];
        shard.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn each(&self, mut f: impl FnMut(&T)) {
        for shard in self.shards.iter() {
            f(&shard.0.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}

/// A route's request counts and latency, found by name once, when a snapshot is built, so a
/// request records without a lookup. A route of the same name in a later config gets the same
/// meter: its series continue across reloads.
#[derive(Clone)]
pub(crate) struct RouteMeter(Arc<Sharded<RouteStats>>);

impl RouteMeter {
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.0.name
    }

    pub(crate) fn record(&self, method: &'static str, status: u16, elapsed: Duration) {
        let mut stats = self.0.mine();
        match stats
            .counts
            .iter_mut()
            .find(|(m, s, _)| *m == method && *s == status)
        {
            Some((_, _, n)) => *n += 1,
            None => stats.counts.push((method, status, 1)),
        }
        stats.duration.observe(elapsed.as_secs_f64());
    }
}

/// An upstream's exchange latency and errors, like [`RouteMeter`].
#[derive(Clone)]
pub(crate) struct UpstreamMeter(Arc<Sharded<UpstreamStats>>);

impl UpstreamMeter {
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.0.name
    }

    /// Records one exchange with this upstream.
    pub(crate) fn record(&self, outcome: &UpstreamOutcome) {
        let mut stats = self.0.mine();
        stats.duration.observe(outcome.elapsed.as_secs_f64());
        if let Some(kind) = outcome.error {
            match stats.errors.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => stats.errors.push((kind, 1)),
            }
        }
    }
}

impl std::fmt::Debug for UpstreamMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.name)
    }
}

/// Every meter handed out, by name. Meters are never dropped: a route or upstream that a
/// reload removed keeps its series, as counters must.
pub(crate) struct RequestStats {
    workers: usize,
    routes: Mutex<BTreeMap<Arc<str>, RouteMeter>>,
    upstreams: Mutex<BTreeMap<Arc<str>, UpstreamMeter>>,
}

impl std::fmt::Debug for RequestStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestStats")
    }
}

impl Default for RequestStats {
    fn default() -> RequestStats {
        RequestStats::new(1)
    }
}

/// The meter called `name` in `meters`, made on first use.
fn meter<M: Clone>(
    meters: &Mutex<BTreeMap<Arc<str>, M>>,
    name: &str,
    make: impl FnOnce() -> M,
) -> M {
    let mut meters = meters.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(meter) = meters.get(name) {
        return meter.clone();
    }
    let meter = make();
    meters.insert(name.into(), meter.clone());
    meter
}

impl RequestStats {
    pub(super) fn new(workers: usize) -> RequestStats {
        RequestStats {
            workers,
            routes: Mutex::default(),
            upstreams: Mutex::default(),
        }
    }

    /// The meter of the route called `name` (taken when a snapshot is built).
    pub(crate) fn route(&self, name: &str) -> RouteMeter {
        meter(&self.routes, name, || {
            RouteMeter(Arc::new(Sharded::new(name, self.workers)))
        })
    }

    /// The meter of the upstream called `name` (taken when the upstream is built).
    pub(crate) fn upstream(&self, name: &str) -> UpstreamMeter {
        meter(&self.upstreams, name, || {
            UpstreamMeter(Arc::new(Sharded::new(name, self.workers)))
        })
    }

    /// All shards added up, by name.
    fn merged(&self) -> Merged {
        let mut total = Merged::default();
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (route, meter) in &routes {
            meter.0.each(|stats| {
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
            });
        }
        let upstreams = self
            .upstreams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (upstream, meter) in &upstreams {
            meter.0.each(|stats| {
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
            });
        }
        total
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_meter_across_snapshots() {
        let stats = RequestStats::new(2);
        let before = stats.route("api");
        before.record("GET", 200, Duration::from_millis(3));
        // A reload builds the route again: same name, same series.
        let after = stats.route("api");
        after.record("GET", 200, Duration::from_millis(3));
        after.record("POST", 201, Duration::from_millis(3));
        // A route the reload removed keeps what it counted.
        stats.route("gone").record("GET", 502, Duration::ZERO);
        drop((before, after));
        let upstream = stats.upstream("users");
        let outcome = UpstreamOutcome {
            upstream: stats.upstream("users"),
            elapsed: Duration::from_millis(1),
            error: Some("timeout"),
            status: None,
        };
        upstream.record(&outcome);
        upstream.record(&outcome);

        let total = stats.merged();
        let count = |route: &str, method, status| {
            total
                .requests
                .get(&(route.to_string(), method, status))
                .copied()
        };
        assert_eq!(count("api", "GET", 200), Some(2));
        assert_eq!(count("api", "POST", 201), Some(1));
        assert_eq!(count("gone", "GET", 502), Some(1));
        assert_eq!(total.durations["api"].count, 3);
        assert_eq!(total.upstream_durations["users"].count, 2);
        assert_eq!(
            total.upstream_errors.get(&("users".to_string(), "timeout")),
            Some(&2)
        );
    }
}
