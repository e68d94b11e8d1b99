//! Hot reload, from SIGHUP or the admin API: read the file, validate it, build a new snapshot
//! against the current one (unchanged upstreams keep their pools and discovery) and swap it in
//! atomically. A file with errors replaces nothing: the errors are logged with their key paths
//! and the running snapshot keeps serving. Requests in flight finish on the snapshot they
//! started with.
//!
//! What is bound at start (listener addresses, the admin address, the worker count) cannot
//! change without a restart; such changes are reported and the rest of the file is applied.

use crate::config::{self, Config, ConfigError};
use crate::snapshot::carry::StateFate;
use crate::snapshot::Gateway;
use crate::telemetry::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the gateway was started without a config file to reload")]
    NoSource,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl ReloadError {
    /// One line per problem, for logs and the admin API.
    pub fn issues(&self) -> Vec<String> {
        match self {
            ReloadError::Config(error) => error.issues(),
            other => vec![other.to_string()],
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub generation: u64,
    /// Changes that were not applied because they need a restart.
    pub needs_restart: Vec<String>,
}

/// Where reloads read the config: its file (none for a config given as text), and where
/// `${NAME}` is looked up.
pub(crate) struct Source {
    pub(crate) path: Option<PathBuf>,
    pub(crate) env: config::Env,
}

pub(crate) struct Reloader {
    source: Source,
    gateway: Arc<Gateway>,
    control: tokio::runtime::Handle,
    workers: usize,
    /// The config behind the current snapshot; its lock also serialises reloads.
    current: Mutex<Arc<Config>>,
    metrics: Arc<Metrics>,
    /// What was bound at start and stays bound until a restart.
    /// (name, address, TLS on)
    bound_listeners: Vec<(String, SocketAddr, bool)>,
    bound_admin: Option<SocketAddr>,
    bound_workers: Option<usize>,
    /// The outcome of the latest reload, for the status page.
    last: Mutex<Option<LastReload>>,
}

/// The latest reload's outcome: when, and the problems it was rejected for (none when applied).
#[derive(Debug, Clone)]
pub(crate) struct LastReload {
    pub(crate) at: std::time::SystemTime,
    pub(crate) errors: Vec<String>,
}

impl Reloader {
    pub(crate) fn new(
        source: Source,
        gateway: Arc<Gateway>,
        control: tokio::runtime::Handle,
        workers: usize,
        config: Arc<Config>,
        bound_listeners: Vec<(String, SocketAddr, bool)>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        metrics.serving(1, config.hash());
        Reloader {
            source,
            gateway,
            control,
            workers,
            bound_listeners,
            bound_admin: config.admin,
            bound_workers: config.workers,
            current: Mutex::new(config),
            metrics,
            last: Mutex::new(None),
        }
    }

    /// The config behind the current snapshot.
    pub(crate) fn config(&self) -> Arc<Config> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn generation(&self) -> u64 {
        self.gateway.snapshot.load().generation
    }

    /// The latest reload's outcome; `None` before the first.
    pub(crate) fn last_reload(&self) -> Option<LastReload> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The listeners bound at start: (name, address, TLS on).
    pub(crate) fn listeners(&self) -> &[(String, SocketAddr, bool)] {
        &self.bound_listeners
    }

    /// Re-reads the config file.
    pub(crate) fn reload(&self) -> Result<Applied, ReloadError> {
        let loaded = match &self.source.path {
            Some(path) => config::load_with(path, &*self.source.env).map_err(ReloadError::from),
            None => Err(ReloadError::NoSource),
        };
        self.finish(loaded)
    }

    /// Reloads from config text (tests, and tools that hold the config in memory).
    pub(crate) fn reload_text(&self, text: &str) -> Result<Applied, ReloadError> {
        let parsed = config::parse(text, "config", &*self.source.env);
        self.finish(parsed.map_err(ReloadError::from))
    }

    /// What reloading to `text` would carry over and reset, by the keys the build uses;
    /// nothing is applied. `text` is read as the config file would be (its folder, `${NAME}`).
    pub(crate) fn plan(&self, text: &str) -> Result<Vec<StateFate>, ReloadError> {
        let base = match &self.source.path {
            Some(path) => config::folder_of(path),
            None => PathBuf::from("."),
        };
        let config = config::parse_in(text, "posted config", &*self.source.env, &base)?;
        let snapshot = self.gateway.snapshot.load_full();
        Ok(crate::snapshot::carry::plan(&snapshot, &config))
    }

    fn finish(&self, loaded: Result<Config, ReloadError>) -> Result<Applied, ReloadError> {
        let errors = match &loaded {
            Ok(_) => Vec::new(),
            Err(error) => error.issues(),
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastReload {
            at: std::time::SystemTime::now(),
            errors,
        });
        match loaded {
            Ok(config) => {
                let applied = self.apply(config);
                self.metrics.reload_result(true);
                for change in &applied.needs_restart {
                    tracing::warn!(change = %change, "config change needs a restart; not applied");
                }
                tracing::info!(generation = applied.generation, "config reloaded");
                Ok(applied)
            }
            Err(error) => {
                self.metrics.reload_result(false);
                for issue in error.issues() {
                    tracing::error!(problem = %issue, "config reload rejected; the running config stays");
                }
                Err(error)
            }
        }
    }

    /// Swaps in a snapshot built from `config`, reusing the current one's state.
    pub(crate) fn apply(&self, config: Config) -> Applied {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.gateway.snapshot.load_full();
        let generation = previous.generation + 1;
        let snapshot = crate::snapshot::build::build(
            &config,
            Some(&previous),
            generation,
            self.workers,
            &self.control,
            &self.metrics.config,
        );
        self.gateway.snapshot.store(Arc::new(snapshot));
        self.metrics.serving(generation, config.hash());
        let needs_restart = self.needs_restart(&config);
        *current = Arc::new(config);
        Applied {
            generation,
            needs_restart,
        }
    }

    /// Polls the config file every `interval` and reloads when its content differs from the
    /// text the running config came from, once it held still for a moment (editors and
    /// ConfigMap updates write in steps). Content, not timestamps: Kubernetes swaps a symlink
    /// and keeps old mtimes. Content that was rejected is not tried again until it changes.
    pub(crate) async fn watch(
        self: Arc<Self>,
        interval: std::time::Duration,
        shutdown: Arc<crate::server::Shutdown>,
    ) {
        let Some(path) = self.source.path.clone() else {
            return;
        };
        let mut rejected: Option<String> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.stopped() => return,
            }
            let Ok(text) = tokio::fs::read_to_string(&path).await else {
                continue;
            };
            if *text == *self.config().text || rejected.as_deref() == Some(text.as_str()) {
                continue;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            if tokio::fs::read_to_string(&path).await.ok().as_deref() != Some(text.as_str()) {
                continue; // still being written; look again next round
            }
            tracing::info!(path = %path.display(), "config file changed: reloading");
            let reloader = Arc::clone(&self);
            let outcome = tokio::task::spawn_blocking(move || reloader.reload()).await;
            rejected = match outcome {
                Ok(Ok(_)) => None,
                _ => Some(text),
            };
        }
    }

    fn needs_restart(&self, config: &Config) -> Vec<String> {
        let mut changes = Vec::new();
        for listener in &config.listeners {
            let (name, address) = (&listener.name, listener.address);
            match self.bound_listeners.iter().find(|(n, ..)| n == name) {
                None => changes.push(format!("new listener {name:?} on {address}")),
                Some((_, bound, tls)) => {
                    if *bound != address && address.port() != 0 {
                        changes.push(format!("listener {name:?} address {bound} -> {address}"));
                    }
                    if *tls != listener.tls.is_some() {
                        changes.push(format!("listener {name:?} TLS on/off"));
                    }
                }
            }
        }
        for (name, bound, _) in &self.bound_listeners {
            if !config.listeners.iter().any(|l| &l.name == name) {
                changes.push(format!(
                    "removed listener {name:?} on {bound} (still serving)"
                ));
            }
        }
        let admin_port_zero = config.admin.is_some_and(|a| a.port() == 0);
        if config.admin != self.bound_admin && !admin_port_zero {
            changes.push(format!(
                "admin address {:?} -> {:?}",
                self.bound_admin, config.admin
            ));
        }
        if config.workers != self.bound_workers {
            changes.push(format!(
                "workers {:?} -> {:?}",
                self.bound_workers, config.workers
            ));
        }
        changes
    }
}
