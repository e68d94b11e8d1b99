//! Logging set-up: pretty for people, JSON for machines.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Installs the global subscriber. `level` is a tracing filter (`info`, `portcullis=debug`);
/// `RUST_LOG` wins when set.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type Labels = Vec<(&'static str, String)>;
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
pub struct UpstreamOutcome {
    pub upstream: Arc<str>,
    pub elapsed: Duration,
    /// `None` on success; otherwise a fixed error kind (`connect_error`, `timeout`, …).
    pub error: Option<&'static str>,
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
pub struct RequestStats {
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shard")
    }
}

impl RequestStats {
    fn new(workers: usize) -> RequestStats {
        RequestStats {
            shards: (0..workers.max(1))
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
        }
    }

    /// Records one finished request (and its upstream exchange, if any).
    pub fn record(
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
            let stats = slot(&mut shard.upstreams, &outcome.upstream);
            stats.duration.observe(outcome.elapsed.as_secs_f64());
            if let Some(kind) = outcome.error {
                match stats.errors.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => stats.errors.push((kind, 1)),
                }
            }
        }
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

/// The metrics registry. Hot-path recorders hold pre-resolved handles (atomics), so recording
/// never looks a label set up under a lock.
pub struct Metrics {
    registry: Registry,
    pub requests: Arc<RequestStats>,
    pub config_reloads: Family<Labels, Counter>,
    pub config_generation: Gauge,
    pub connections_active: Family<Labels, Gauge>,
    pub filters: FilterMetrics,
}

/// What a response cache reports.
pub struct CacheStats {
    pub entries: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

/// Something that keeps cache statistics (the `cache` filter's store).
pub trait CacheStatsSource: Send + Sync {
    fn cache_stats(&self) -> CacheStats;
}

/// The caches of the running config, read at scrape time. A store carried over a reload is
/// listed once; stores of removed filters drop out when they are freed.
#[derive(Clone, Default)]
pub struct CacheRegistry(Arc<Mutex<Vec<NamedCache>>>);

/// A cache filter's name and its store, not kept alive by the registry.
type NamedCache = (String, std::sync::Weak<dyn CacheStatsSource>);

impl CacheRegistry {
    pub fn register(&self, filter: &str, store: &Arc<dyn CacheStatsSource>) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|(_, weak)| weak.strong_count() > 0);
        let known = list
            .iter()
            .any(|(_, weak)| std::ptr::addr_eq(weak.as_ptr(), Arc::as_ptr(store)));
        if !known {
            list.push((filter.to_string(), Arc::downgrade(store)));
        }
    }
}

impl std::fmt::Debug for CacheRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheRegistry")
    }
}

impl Collector for CacheRegistry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats: Vec<(String, CacheStats)> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(name, weak)| Some((name.clone(), weak.upgrade()?.cache_stats())))
            .collect();
        type Field = fn(&CacheStats) -> u64;
        let gauges: [(&str, &str, Field); 2] = [
            ("cache_entries", "Stored entries by cache filter", |s| {
                s.entries
            }),
            ("cache_bytes", "Bytes held by cache filter", |s| s.bytes),
        ];
        for (name, help, field) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (filter, s) in &stats {
                let gauge = prometheus_client::metrics::gauge::ConstGauge::new(field(s) as i64);
                gauge.encode(metric.encode_family(&[("filter", filter.clone())])?)?;
            }
        }
        let counters: [(&str, &str, Field); 3] = [
            ("cache_hits", "Requests answered from the cache", |s| s.hits),
            (
                "cache_misses",
                "Cacheable requests that went upstream",
                |s| s.misses,
            ),
            (
                "cache_evictions",
                "Entries evicted to stay within max_size",
                |s| s.evictions,
            ),
        ];
        for (name, help, field) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (filter, s) in &stats {
                ConstCounter::new(field(s))
                    .encode(metric.encode_family(&[("filter", filter.clone())])?)?;
            }
        }
        Ok(())
    }
}

/// Metrics that filters keep; each filter resolves its series once, when it is built.
#[derive(Clone, Default)]
pub struct FilterMetrics {
    pub caches: CacheRegistry,
    /// Checks a shared store could not answer, by filter owner and the mode applied.
    pub rate_limit_store_failures: Family<Labels, Counter>,
    /// 0 closed, 1 open, 2 half-open, by route and upstream.
    pub circuit_breaker_state: Family<Labels, Gauge>,
    /// Transitions into each state, by route, upstream and state.
    pub circuit_breaker_transitions: Family<Labels, Counter>,
}

impl Metrics {
    /// `workers`: how many shards the request statistics keep.
    pub fn new(workers: usize) -> Metrics {
        let mut registry = Registry::default();
        let requests = Arc::new(RequestStats::new(workers));
        registry.register_collector(Box::new(Arc::clone(&requests)));
        let config_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads by result (ok, error)",
            config_reloads.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation of the config being served (1 at start)",
            config_generation.clone(),
        );
        let connections_active = Family::<Labels, Gauge>::default();
        registry.register(
            "connections_active",
            "Open client connections by listener",
            connections_active.clone(),
        );
        let filters = FilterMetrics::default();
        registry.register_collector(Box::new(filters.caches.clone()));
        registry.register(
            "rate_limit_store_failures",
            "Rate-limit checks the shared store could not answer, by filter and on_store_error mode",
            filters.rate_limit_store_failures.clone(),
        );
        registry.register(
            "circuit_breaker_state",
            "Circuit breaker state by route and upstream: 0 closed, 1 open, 2 half-open",
            filters.circuit_breaker_state.clone(),
        );
        registry.register(
            "circuit_breaker_transitions",
            "Circuit breaker transitions by route, upstream and new state",
            filters.circuit_breaker_transitions.clone(),
        );
        Metrics {
            registry,
            filters,
            requests,
            config_reloads,
            config_generation,
            connections_active,
        }
    }

    pub fn reload_result(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&vec![(
                "result",
                if ok { "ok" } else { "error" }.to_string(),
            )])
            .inc();
    }

    /// The gauge of one listener, resolved once per listener.
    pub fn connections(&self, listener: &str) -> Gauge {
        self.connections_active
            .get_or_create_owned(&vec![("listener", listener.to_string())])
    }

    /// Prometheus / OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
