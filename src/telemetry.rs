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
    /// The status the upstream itself answered with, whatever later filters made of it (a
    /// cache may have put a stale copy in its place).
    pub status: Option<u16>,
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
    pub filters: ConfigMetrics,
}

/// Named parts of the running config (upstreams, caches), read at scrape time and not kept
/// alive by the registry: parts of an old config drop out when they are freed.
pub struct Registered<T: ?Sized>(Arc<Mutex<Vec<Named<T>>>>);

/// A registered part's name and a reference that does not keep it alive.
type Named<T> = (String, std::sync::Weak<T>);

impl<T: ?Sized> Clone for Registered<T> {
    fn clone(&self) -> Self {
        Registered(Arc::clone(&self.0))
    }
}

impl<T: ?Sized> Default for Registered<T> {
    fn default() -> Self {
        Registered(Arc::default())
    }
}

impl<T: ?Sized> std::fmt::Debug for Registered<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registered")
    }
}

impl<T: ?Sized> Registered<T> {
    /// Adds `item` under `name`; an item already listed (carried over a reload) is not added
    /// twice.
    pub fn register(&self, name: &str, item: &Arc<T>) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|(_, weak)| weak.strong_count() > 0);
        let known = list
            .iter()
            .any(|(_, weak)| std::ptr::addr_eq(weak.as_ptr(), Arc::as_ptr(item)));
        if !known {
            list.push((name.to_string(), Arc::downgrade(item)));
        }
    }

    /// The live items; of several under one name, the latest registered (the one a reload
    /// replaced may live on while its last requests finish).
    pub fn live(&self) -> Vec<(String, Arc<T>)> {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, Arc<T>)> = Vec::with_capacity(list.len());
        for (name, weak) in list.iter() {
            let Some(item) = weak.upgrade() else {
                continue;
            };
            match out.iter_mut().find(|(known, _)| known == name) {
                Some(slot) => slot.1 = item,
                None => out.push((name.clone(), item)),
            }
        }
        out
    }
}

/// What an upstream reports: its discovery's progress and its endpoints' health.
pub struct UpstreamState {
    /// Unix seconds of the last successful registry read.
    pub discovery_last_success: Option<f64>,
    pub discovery_errors: u64,
    /// Endpoint address and whether it passes health checks (health-checked upstreams only).
    pub endpoint_health: Vec<(String, bool)>,
}

pub trait UpstreamStateSource: Send + Sync {
    fn upstream_state(&self) -> UpstreamState;
}

/// The upstreams of the running config, by name.
pub type UpstreamRegistry = Registered<dyn UpstreamStateSource>;

impl Collector for UpstreamRegistry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats: Vec<(String, UpstreamState)> = self
            .live()
            .into_iter()
            .map(|(name, upstream)| (name, upstream.upstream_state()))
            .collect();
        let mut metric = encoder.encode_descriptor(
            "discovery_last_success_timestamp",
            "Unix time of the last successful read of each upstream's registry",
            None,
            MetricType::Gauge,
        )?;
        for (upstream, s) in &stats {
            if let Some(time) = s.discovery_last_success {
                prometheus_client::metrics::gauge::ConstGauge::new(time)
                    .encode(metric.encode_family(&[("upstream", upstream.clone())])?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "discovery_errors",
            "Failed reads of each upstream's registry (the last endpoints were kept)",
            None,
            MetricType::Counter,
        )?;
        for (upstream, s) in &stats {
            ConstCounter::new(s.discovery_errors)
                .encode(metric.encode_family(&[("upstream", upstream.clone())])?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "upstream_endpoint_healthy",
            "1 when an endpoint passes its active health checks, by upstream and endpoint",
            None,
            MetricType::Gauge,
        )?;
        for (upstream, s) in &stats {
            for (endpoint, healthy) in &s.endpoint_health {
                let labels = [
                    ("upstream", upstream.clone()),
                    ("endpoint", endpoint.clone()),
                ];
                prometheus_client::metrics::gauge::ConstGauge::new(i64::from(*healthy))
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Reads the control runtime's task count at scrape time.
#[derive(Debug)]
struct BackgroundTasks(tokio::runtime::Handle);

impl Collector for BackgroundTasks {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tasks = self.0.metrics().num_alive_tasks();
        let metric = encoder.encode_descriptor(
            "background_tasks",
            "Tasks alive on the control thread (discovery, health checks, key refresh, admin)",
            None,
            MetricType::Gauge,
        )?;
        prometheus_client::metrics::gauge::ConstGauge::new(tasks as i64).encode(metric)
    }
}

/// Metrics of the running config's parts: upstreams are read at scrape time; each filter kind
/// keeps its own families in `filters`, resolving its series once, when it is built.
#[derive(Clone, Default)]
pub struct ConfigMetrics {
    pub upstreams: UpstreamRegistry,
    pub filters: MetricSets,
}

/// Metric families a part of the gateway defines next to its code (a filter kind's
/// `metrics.rs`): made on first use, kept for the life of the process so that series survive
/// reloads, and encoded at every scrape.
pub trait MetricSet: Default + Send + Sync + 'static {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error>;
}

/// A [`MetricSet`] with its type erased, so sets of every kind share one list.
trait AnySet: Send + Sync {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error>;
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

impl<T: MetricSet> AnySet for T {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        MetricSet::encode(self, encoder)
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

/// One of each [`MetricSet`] type, registered with the process's registry as one collector.
#[derive(Clone, Default)]
pub struct MetricSets(Arc<Mutex<Vec<TypedSet>>>);

/// A set and the type it was made as.
type TypedSet = (std::any::TypeId, Arc<dyn AnySet>);

impl std::fmt::Debug for MetricSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricSets")
    }
}

impl MetricSets {
    /// The set of type `T`, made the first time it is asked for. Called when filters are
    /// built, never per request.
    pub fn get<T: MetricSet>(&self) -> Arc<T> {
        let mut sets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let id = std::any::TypeId::of::<T>();
        let found = sets
            .iter()
            .find(|(known, _)| *known == id)
            .and_then(|(_, set)| Arc::clone(set).into_any().downcast::<T>().ok());
        found.unwrap_or_else(|| {
            let set = Arc::new(T::default());
            sets.push((id, Arc::clone(&set) as Arc<dyn AnySet>));
            set
        })
    }
}

impl Collector for MetricSets {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sets: Vec<Arc<dyn AnySet>> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, set)| Arc::clone(set))
            .collect();
        for set in sets {
            set.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// Encodes `family` under `name` with `help`, for [`MetricSet`]s.
pub fn encode_family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    family: &M,
) -> Result<(), std::fmt::Error> {
    family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)
}

impl Metrics {
    /// `workers`: how many shards the request statistics keep; `control`: the runtime of
    /// background tasks, whose task count is reported (a leak shows as growth).
    pub fn new(workers: usize, control: tokio::runtime::Handle) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(BackgroundTasks(control)));
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
        let filters = ConfigMetrics::default();
        registry.register_collector(Box::new(filters.upstreams.clone()));
        registry.register_collector(Box::new(filters.filters.clone()));
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
