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

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The metrics registry. Hot-path recorders hold pre-resolved handles (atomics), so recording
/// never looks a label set up under a lock.
pub struct Metrics {
    registry: Registry,
    pub config_reloads: Family<Labels, Counter>,
    pub config_generation: Gauge,
    pub connections_active: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
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
        Metrics {
            registry,
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
