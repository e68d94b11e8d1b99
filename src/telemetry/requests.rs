//! Request statistics: counts and latency by route and upstream, sharded by worker and merged
//! at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// (key, count) pairs: a handful per route or upstream, scanned.
type Counts<K> = Vec<(K, u64)>;

fn add<K: PartialEq>(counts: &mut Counts<K>, key: K, n: u64) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, count)) => *count += n,
        None => counts.push((key, n)),
    }
}

/// Statistics that shards add up into one.
trait Merge {
    fn merge(&mut self, other: &Self);
}

#[derive(Clone, Default)]
struct RouteStats {
    /// By (method, status).
    counts: Counts<(&'static str, u16)>,
    duration: Histogram,
}

impl Merge for RouteStats {
    fn merge(&mut self, other: &RouteStats) {
        for &(key, n) in &other.counts {
            add(&mut self.counts, key, n);
        }
        self.duration.merge(&other.duration);
    }
}

#[derive(Clone, Default)]
struct UpstreamStats {
    duration: Histogram,
    /// By error kind.
    errors: Counts<&'static str>,
}

impl Merge for UpstreamStats {
    fn merge(&mut self, other: &UpstreamStats) {
        self.duration.merge(&other.duration);
        for &(kind, n) in &other.errors {
            add(&mut self.errors, kind, n);
        }
    }
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

impl<T: Default + Merge> Sharded<T> {
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

    /// Every shard added up.
    fn total(&self) -> T {
        let mut total = T::default();
        for shard in self.shards.iter() {
            total.merge(&shard.0.lock().unwrap_or_else(|e| e.into_inner()));
        }
        total
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
        add(&mut stats.counts, (method, status), 1);
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
            add(&mut stats.errors, kind, 1);
        }
    }
}

impl std::fmt::Debug for UpstreamMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.name)
    }
}

/// Meters by name, each keyed by its own name.
type Meters<T> = Mutex<BTreeMap<Arc<str>, Arc<Sharded<T>>>>;

/// Every meter handed out, by name. Meters are never dropped: a route or upstream that a
/// reload removed keeps its series, as counters must.
pub(crate) struct RequestStats {
    workers: usize,
    routes: Meters<RouteStats>,
    upstreams: Meters<UpstreamStats>,
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
        RouteMeter(self.meter(&self.routes, name))
    }

    /// The meter of the upstream called `name` (taken when the upstream is built).
    pub(crate) fn upstream(&self, name: &str) -> UpstreamMeter {
        UpstreamMeter(self.meter(&self.upstreams, name))
    }

    /// The meter called `name` in `meters`, made on first use.
    fn meter<T: Default + Merge>(&self, meters: &Meters<T>, name: &str) -> Arc<Sharded<T>> {
        let mut meters = meters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(meter) = meters.get(name) {
            return Arc::clone(meter);
        }
        let meter = Arc::new(Sharded::new(name, self.workers));
        meters.insert(Arc::clone(&meter.name), Arc::clone(&meter));
        meter
    }
}

/// Each meter's shards added up, in name order, so scrapes list series in a stable order.
fn totals<T: Default + Merge>(meters: &Meters<T>) -> Vec<(Arc<str>, T)> {
    // Taken out first: no shard is locked while the registry is.
    let meters: Vec<_> = meters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    meters
        .iter()
        .map(|meter| (Arc::clone(&meter.name), meter.total()))
        .collect()
}

/// `counts` ordered by key, for a stable scrape.
fn sorted<K: Ord + Copy>(counts: &Counts<K>) -> Counts<K> {
    let mut counts = counts.clone();
    counts.sort_unstable_by_key(|&(key, _)| key);
    counts
}

impl Collector for RequestStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let routes = totals(&self.routes);
        let upstreams = totals(&self.upstreams);
        let mut metric = encoder.encode_descriptor(
            "requests",
            "Requests by route, method and status",
            None,
            MetricType::Counter,
        )?;
        for (route, stats) in &routes {
            for ((method, status), n) in sorted(&stats.counts) {
                let labels = [
                    ("route", route.to_string()),
                    ("method", method.to_string()),
                    ("status", status.to_string()),
                ];
                ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "request_duration_seconds",
            "Time from the request head to the response head, by route",
            None,
            MetricType::Histogram,
        )?;
        for (route, stats) in &routes {
            let labels = [("route", route.to_string())];
            stats.duration.encode(&mut metric.encode_family(&labels)?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "upstream_request_duration_seconds",
            "Time from sending to an upstream to its response head, by upstream",
            None,
            MetricType::Histogram,
        )?;
        for (upstream, stats) in &upstreams {
            let labels = [("upstream", upstream.to_string())];
            stats.duration.encode(&mut metric.encode_family(&labels)?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "upstream_errors",
            "Failed upstream exchanges by upstream and kind",
            None,
            MetricType::Counter,
        )?;
        for (upstream, stats) in &upstreams {
            for (kind, n) in sorted(&stats.errors) {
                let labels = [
                    ("upstream", upstream.to_string()),
                    ("kind", kind.to_string()),
                ];
                ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
            }
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
        // What another worker counted adds up with this one's.
        let other = &stats.route("api").0.shards[1];
        add(&mut other.0.lock().unwrap().counts, ("GET", 200), 4);
        let upstream = stats.upstream("users");
        let outcome = UpstreamOutcome {
            upstream: stats.upstream("users"),
            elapsed: Duration::from_millis(1),
            error: Some("timeout"),
            status: None,
        };
        upstream.record(&outcome);
        upstream.record(&outcome);

        let routes = totals(&stats.routes);
        let route = |name: &str| &routes.iter().find(|(n, _)| &**n == name).unwrap().1;
        let count = |name: &str, key| {
            route(name)
                .counts
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, n)| *n)
        };
        assert_eq!(count("api", ("GET", 200)), Some(6));
        assert_eq!(count("api", ("POST", 201)), Some(1));
        assert_eq!(count("gone", ("GET", 502)), Some(1));
        assert_eq!(route("api").duration.count, 3);
        let upstreams = totals(&stats.upstreams);
        assert_eq!(upstreams.len(), 1);
        assert_eq!(upstreams[0].1.duration.count, 2);
        assert_eq!(upstreams[0].1.errors, vec![("timeout", 2)]);
    }
}
