//! Logging set-up (pretty for people, JSON for machines) and the metrics registry.

mod parts;
mod requests;
pub(crate) mod trace;

pub(crate) use parts::{
    encode_family, MetricSet, MetricSets, Registered, UpstreamRegistry, UpstreamState,
    UpstreamStateSource,
};
pub(crate) use requests::{RequestStats, RouteMeter, UpstreamMeter, UpstreamOutcome};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::Arc;
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

pub(crate) type Labels = Vec<(&'static str, String)>;

/// The metrics registry. Hot-path recorders hold pre-resolved handles (atomics), so recording
/// never looks a label set up under a lock.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) config_reloads: Family<Labels, Counter>,
    config_generation: Gauge,
    /// One series, `build_info{version, config_hash} 1`: what a replica runs.
    build_info: Family<Labels, Gauge>,
    pub(crate) connections_active: Family<Labels, Gauge>,
    connections_refused: Family<Labels, Counter>,
    pub(crate) config: ConfigMetrics,
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
pub(crate) struct ConfigMetrics {
    pub(crate) upstreams: UpstreamRegistry,
    /// Sets of families defined beside what they measure (a filter kind's, a split's).
    pub(crate) sets: MetricSets,
    /// Where routes and upstreams take their request meters.
    pub(crate) requests: Arc<RequestStats>,
}

impl Metrics {
    /// `workers`: how many shards the request statistics keep; `control`: the runtime of
    /// background tasks, whose task count is reported (a leak shows as growth).
    pub(crate) fn new(workers: usize, control: tokio::runtime::Handle) -> Metrics {
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
        let build_info = Family::<Labels, Gauge>::default();
        registry.register(
            "build_info",
            "Always 1: the gateway's version and the hash of the config it serves (secrets left out)",
            build_info.clone(),
        );
        let connections_active = Family::<Labels, Gauge>::default();
        registry.register(
            "connections_active",
            "Open client connections by listener",
            connections_active.clone(),
        );
        let connections_refused = Family::<Labels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept, by listener and reason (max_connections, max_connections_per_ip, connection_rate_per_ip)",
            connections_refused.clone(),
        );
        let config = ConfigMetrics {
            requests: Arc::clone(&requests),
            ..ConfigMetrics::default()
        };
        registry.register_collector(Box::new(config.upstreams.clone()));
        registry.register_collector(Box::new(config.sets.clone()));
        Metrics {
            registry,
            config,
            config_reloads,
            config_generation,
            build_info,
            connections_active,
            connections_refused,
        }
    }

    /// Says which config is being served: its generation and hash.
    pub(crate) fn serving(&self, generation: u64, config_hash: String) {
        self.config_generation.set(generation as i64);
        self.build_info.clear();
        let labels = vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("config_hash", config_hash),
        ];
        self.build_info.get_or_create(&labels).set(1);
    }

    pub(crate) fn reload_result(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&vec![(
                "result",
                if ok { "ok" } else { "error" }.to_string(),
            )])
            .inc();
    }

    /// The gauge of one listener, resolved once per listener.
    pub(crate) fn connections(&self, listener: &str) -> Gauge {
        self.connections_active
            .get_or_create_owned(&vec![("listener", listener.to_string())])
    }

    /// Counts a connection closed at accept on `listener` for `reason`.
    pub(crate) fn connection_refused(&self, listener: &str, reason: &'static str) {
        self.connections_refused
            .get_or_create(&vec![
                ("listener", listener.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    /// Prometheus / OpenMetrics text.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
