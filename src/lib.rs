//! Portcullis: a reverse-proxy API gateway configured with one YAML file.
//!
//! [`start`] runs a gateway in-process: one control thread (discovery and other background
//! work) and N worker threads, each a single-threaded tokio runtime with its own listening
//! sockets and its own upstream connection pools, so the request path shares no lock across
//! cores. The binary (`main.rs`) and the integration tests both start gateways this way.

mod admin;
mod body;
mod client;
pub mod config;
mod context;
mod discovery;
mod error;
pub mod filter;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod proxy;
pub mod reload;
mod remote;
pub mod router;
mod server;
mod snapshot;
mod store;
pub mod telemetry;
mod timer;
mod tls;
pub mod upstream;
mod worker;

use config::Config;
use proxy::ConnCounter;
use reload::Reloader;
pub use remote::{reload_plan, running_config, PlanError};
use server::Shutdown;
use snapshot::Gateway;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address} (listener {name:?}): {source}")]
    Bind {
        name: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start a runtime thread: {0}")]
    Runtime(std::io::Error),
}

#[derive(Clone, Default)]
pub struct Options {
    /// Overrides `workers:` in the config; default: the number of cores.
    pub workers: Option<usize>,
    /// The file the config came from, re-read on reload.
    pub config_path: Option<std::path::PathBuf>,
    /// Where reloads look up `${NAME}`; default: the process environment.
    pub env: Option<config::Env>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("workers", &self.workers)
            .field("config_path", &self.config_path)
            .field("env", &self.env.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// A gateway that is serving. Dropping it stops accepting and closes idle connections.
pub struct Running {
    listeners: Vec<(String, SocketAddr)>,
    shutdown: Arc<Shutdown>,
    threads: Vec<JoinHandle<()>>,
    reloader: Arc<Reloader>,
    admin: Option<SocketAddr>,
}

/// Starts a gateway from a validated config and returns once every listener is bound.
///
/// ```
/// let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
///             admin: { address: 127.0.0.1:0 }\n\
///             routes: [{ name: ping, respond: { body: pong } }]\n";
/// let config = portcullis::config::parse(yaml, "inline", &|_| None).expect("valid config");
/// let options = portcullis::Options { workers: Some(1), ..Default::default() };
/// let running = portcullis::start(config, options).expect("started");
/// let address = running.address("http").expect("bound");
/// assert_ne!(address.port(), 0);
/// running.shutdown();
/// ```
pub fn start(config: Config, options: Options) -> Result<Running, StartError> {
    let workers = options
        .workers
        .or(config.workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let open_files = server::raise_open_files(config.limits.max_connections);
    let shutdown = Shutdown::new();
    let mut threads = Vec::new();

    // The control runtime: discovery tasks and other background work, off the workers.
    let control_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let control = control_rt.handle().clone();
    let stop = Arc::clone(&shutdown);
    threads.push(
        std::thread::Builder::new()
            .name("portcullis-control".into())
            .spawn(move || control_rt.block_on(stop.stopped()))
            .map_err(StartError::Runtime)?,
    );

    // Bind every listener once per worker; port 0 is resolved by the first bind.
    let mut listeners = Vec::new();
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for listener in &config.listeners {
        let mut address = listener.address;
        for worker_sockets in sockets.iter_mut() {
            let socket = server::bind(address).map_err(|source| StartError::Bind {
                name: listener.name.clone(),
                address,
                source,
            })?;
            address = socket.local_addr().map_err(StartError::Runtime)?;
            worker_sockets.push(socket);
        }
        listeners.push((listener.name.clone(), address));
    }

    let admin_socket = match config.admin {
        Some(address) => {
            let socket = std::net::TcpListener::bind(address)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .map_err(|source| StartError::Bind {
                    name: "admin".into(),
                    address,
                    source,
                })?;
            Some(socket)
        }
        None => None,
    };
    let admin = match &admin_socket {
        Some(socket) => Some(socket.local_addr().map_err(StartError::Runtime)?),
        None => None,
    };

    let metrics = Arc::new(Metrics::new(workers, control.clone()));
    let snapshot = snapshot::build::build(&config, None, 1, workers, &control, &metrics.config);
    let gateway = Arc::new(Gateway::new(snapshot, Arc::clone(&metrics)));
    let connections = Arc::new(ConnCounter::default());
    let grace = config.shutdown_grace;
    let gauges: Vec<_> = config
        .listeners
        .iter()
        .map(|l| metrics.connections(&l.name))
        .collect();
    let listener_infos: Vec<Arc<server::ListenerInfo>> = config
        .listeners
        .iter()
        .map(|l| {
            Arc::new(server::ListenerInfo {
                name: l.name.as_str().into(),
                tls: l.tls.clone(),
            })
        })
        .collect();
    let config_arc = Arc::new(config);
    let source = reload::Source {
        path: options.config_path.clone(),
        env: options.env.clone().unwrap_or_else(config::process_env),
    };
    let reloader = Arc::new(Reloader::new(
        source,
        Arc::clone(&gateway),
        control.clone(),
        workers,
        Arc::clone(&config_arc),
        listeners
            .iter()
            .zip(&listener_infos)
            .map(|((name, address), info)| (name.clone(), *address, info.tls.is_some()))
            .collect(),
        Arc::clone(&metrics),
    ));
    let admin_state = Arc::new(admin::AdminState {
        gateway: Arc::clone(&gateway),
        reloader: Arc::clone(&reloader),
        started: Instant::now(),
        metrics: Arc::clone(&metrics),
        ready: std::sync::atomic::AtomicBool::new(false),
    });
    if let Some(interval) = reloader.config().watch {
        control.spawn(Arc::clone(&reloader).watch(interval, Arc::clone(&shutdown)));
    }
    if let Some(socket) = admin_socket {
        control.spawn(admin::serve(
            socket,
            Arc::clone(&admin_state),
            Arc::clone(&shutdown),
        ));
    }

    for (index, worker_sockets) in sockets.into_iter().enumerate() {
        let gateway = Arc::clone(&gateway);
        let connections = Arc::clone(&connections);
        let gauges = gauges.clone();
        let infos = listener_infos.clone();
        let stop = Arc::clone(&shutdown);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let thread = std::thread::Builder::new()
            .name(format!("portcullis-w{index}"))
            .spawn(move || {
                worker::set_index(index);
                runtime.block_on(async move {
                    for ((socket, gauge), info) in worker_sockets.into_iter().zip(gauges).zip(infos)
                    {
                        match tokio::net::TcpListener::from_std(socket) {
                            Ok(listener) => {
                                tokio::spawn(server::accept_loop(
                                    listener,
                                    info,
                                    Arc::clone(&gateway),
                                    Arc::clone(&connections),
                                    gauge,
                                    Arc::clone(&stop),
                                ));
                            }
                            Err(error) => tracing::error!(%error, "listener setup failed"),
                        }
                    }
                    stop.stopped().await;
                    // Let in-flight requests finish; connections close as they go idle.
                    let grace = Instant::now() + grace;
                    while connections.active() > 0 && Instant::now() < grace {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                });
            })
            .map_err(StartError::Runtime)?;
        threads.push(thread);
    }
    admin_state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(workers, listeners = ?listeners, admin = ?admin, open_files, "portcullis started");
    Ok(Running {
        listeners,
        shutdown,
        threads,
        reloader,
        admin,
    })
}

impl Running {
    /// The bound address of the listener called `name` (port 0 resolved).
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, address)| *address)
    }

    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// The admin listener's bound address, unless it is off.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Re-reads the config file (SIGHUP does this); see `reload.rs`.
    pub fn reload(&self) -> Result<reload::Applied, reload::ReloadError> {
        self.reloader.reload()
    }

    /// Reloads from config text.
    pub fn reload_text(&self, text: &str) -> Result<reload::Applied, reload::ReloadError> {
        self.reloader.reload_text(text)
    }

    /// Stops accepting, lets in-flight requests finish (`shutdown_grace` at most), and waits
    /// for every thread to end.
    pub fn shutdown(mut self) {
        self.shutdown.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.stop();
    }
}
