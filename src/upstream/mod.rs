//! An upstream: a named set of endpoints fed by a discovery backend, a balancer over them, and
//! pooled client connections to each. `send` performs one exchange with one endpoint and maps
//! every failure onto the error policy.

mod balance;
mod outlier;
mod pool;
mod retry;

pub use balance::{hash_key, Balancer, HashOn, Strategy};
pub use outlier::OutlierSpec;
pub use pool::{BodyIdleTimeout, UpstreamBody};
pub use retry::{RetryBudget, RetryOn, RetryPolicy};

use crate::body::Body;
use crate::discovery::{DiscoverySpec, EndpointSet};
use crate::error::ProxyError;
use arc_swap::ArcSwap;
use http::uri::Authority;
use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pool::{Pool, Sender};
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// From the request being sent to the response head arriving.
    pub response: Duration,
    /// Longest pause between two pieces of the response body.
    pub idle: Duration,
}

/// The settings an upstream is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    pub name: String,
    pub discovery: DiscoverySpec,
    pub protocol: Protocol,
    /// TLS to the endpoints; `None` for plaintext.
    pub tls: Option<crate::tls::UpstreamTls>,
    pub timeouts: Timeouts,
    pub balance: Strategy,
    pub max_idle_per_endpoint: usize,
    pub retries: Option<RetryPolicy>,
    pub outlier: Option<OutlierSpec>,
}

pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
    /// Prepared once: the `:authority` of HTTP/2 requests.
    pub authority: Authority,
    pool: Pool,
    outlier: outlier::OutlierState,
    /// Requests sent and not yet answered (counted for `least_request` only).
    pub in_flight: std::sync::atomic::AtomicUsize,
}

impl Endpoint {
    /// A fresh endpoint: empty pools (one per worker), no failures, nothing in flight.
    pub fn new(address: SocketAddr, weight: u32, workers: usize, max_idle: usize) -> Endpoint {
        Endpoint {
            address,
            weight,
            authority: Authority::try_from(address.to_string().as_str())
                .unwrap_or_else(|_| Authority::from_static("upstream")),
            pool: Pool::new(workers, max_idle),
            outlier: outlier::OutlierState::default(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }
}

pub struct Upstream {
    pub name: Arc<str>,
    pub spec: UpstreamSpec,
    balancer: ArcSwap<Balancer>,
    workers: usize,
    pub retry_budget: RetryBudget,
    /// The clock of outlier ejections.
    epoch: std::time::Instant,
    /// Dropped with the upstream; ends the task that follows discovery.
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    /// Builds the upstream and starts its discovery on the runtime behind `handle`.
    pub fn start(
        spec: UpstreamSpec,
        workers: usize,
        handle: &tokio::runtime::Handle,
    ) -> Arc<Upstream> {
        let initial = spec.discovery.initial();
        let (stop_tx, stop_rx) = oneshot::channel();
        let upstream = Arc::new(Upstream {
            name: spec.name.as_str().into(),
            balancer: ArcSwap::from_pointee(Balancer::new(Vec::new(), spec.balance.clone())),
            spec,
            workers,
            retry_budget: RetryBudget::default(),
            epoch: std::time::Instant::now(),
            _stop: stop_tx,
        });
        upstream.apply(&initial);
        let (tx, rx) = watch::channel(initial);
        let backend = upstream.spec.discovery.backend();
        handle.spawn(async move { backend.run(tx).await });
        handle.spawn(follow(Arc::downgrade(&upstream), rx, stop_rx));
        upstream
    }

    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.balancer.load().endpoints().to_vec()
    }

    /// The next endpoint by the upstream's strategy (`key`: the request's hash for consistent
    /// hashing), skipping ejected ones (all ejected: any).
    pub fn pick(&self) -> Option<Arc<Endpoint>> {
        self.pick_for(None)
    }

    pub fn pick_for(&self, key: Option<u64>) -> Option<Arc<Endpoint>> {
        let balancer = self.balancer.load();
        let first = balancer.pick(key)?;
        if self.spec.outlier.is_none() {
            return Some(Arc::clone(first));
        }
        let now = self.now();
        if !first.outlier.is_ejected(now) {
            return Some(Arc::clone(first));
        }
        (1..balancer.endpoints().len())
            .filter_map(|_| balancer.pick(None))
            .find(|e| !e.outlier.is_ejected(now))
            .or(Some(first))
            .cloned()
    }

    /// For a retry: an endpoint other than `previous` when there is one.
    pub fn pick_other(&self, previous: SocketAddr) -> Option<Arc<Endpoint>> {
        let count = self.balancer.load().endpoints().len();
        let mut fallback = None;
        for _ in 0..count.max(1) {
            let endpoint = self.pick()?;
            if endpoint.address != previous {
                return Some(endpoint);
            }
            fallback = Some(endpoint);
        }
        fallback
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// One exchange's outcome, for outlier ejection.
    pub fn record(&self, endpoint: &Endpoint, failed: bool) {
        let Some(spec) = &self.spec.outlier else {
            return;
        };
        if !endpoint.outlier.record(spec, failed) {
            if !failed {
                endpoint.outlier.forgive();
            }
            return;
        }
        let now = self.now();
        let balancer = self.balancer.load();
        let total = balancer.endpoints().len();
        let ejected = balancer
            .endpoints()
            .iter()
            .filter(|e| e.outlier.is_ejected(now))
            .count();
        if (ejected + 1) * 100 > total * spec.max_ejected_percent as usize {
            tracing::debug!(upstream = %self.name, endpoint = %endpoint.address, "not ejected: max_ejected_percent reached");
            return;
        }
        let length = endpoint.outlier.eject(spec, now);
        tracing::warn!(
            upstream = %self.name,
            endpoint = %endpoint.address,
            eject_for_ms = length.as_millis() as u64,
            "endpoint ejected after consecutive failures"
        );
    }

    /// Whether `endpoint` is ejected now (admin API).
    pub fn is_ejected(&self, endpoint: &Endpoint) -> bool {
        endpoint.outlier.is_ejected(self.now())
    }

    /// Swaps in a balancer over `set`, keeping the state (pools) of endpoints still present.
    fn apply(&self, set: &EndpointSet) {
        let current = self.balancer.load();
        let known: HashMap<SocketAddr, &Arc<Endpoint>> =
            current.endpoints().iter().map(|e| (e.address, e)).collect();
        let endpoints = set
            .iter()
            .map(|d| match known.get(&d.address) {
                Some(e) if e.weight == d.weight => Arc::clone(e),
                _ => Arc::new(Endpoint::new(
                    d.address,
                    d.weight,
                    self.workers,
                    self.spec.max_idle_per_endpoint,
                )),
            })
            .collect();
        self.balancer.store(Arc::new(Balancer::new(
            endpoints,
            self.spec.balance.clone(),
        )));
        tracing::debug!(upstream = %self.name, endpoints = set.len(), "endpoint set applied");
    }

    /// One exchange with `endpoint`. A pooled connection that turns out to be closed before
    /// the request went out is replaced by a fresh one, transparently.
    pub async fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let _in_flight =
            (self.spec.balance == Strategy::LeastRequest).then(|| InFlight::new(endpoint));
        let timeouts = self.spec.timeouts;
        let mut pooled = endpoint.pool.take();
        loop {
            let reused = pooled.is_some();
            let sender = match pooled.take() {
                Some(sender) => sender,
                // Boxed: the handshake future is large and rare; inline it would be moved
                // with every request's future.
                None => Box::pin(self.connect(endpoint)).await?,
            };
            let attempt = async {
                match sender {
                    Sender::H1(mut s) => {
                        if !s.is_ready() && s.ready().await.is_err() {
                            return Err((None, None));
                        }
                        let result = s.try_send_request(request).await;
                        result
                            .map(|r| (r, Some(s)))
                            .map_err(|mut e| (e.take_message(), Some(e.into_error())))
                    }
                    Sender::H2(mut s) => {
                        if s.ready().await.is_err() {
                            return Err((None, None));
                        }
                        let result = s.try_send_request(request).await;
                        result
                            .map(|r| (r, None))
                            .map_err(|mut e| (e.take_message(), Some(e.into_error())))
                    }
                }
            };
            let outcome = tokio::time::timeout(timeouts.response, attempt).await;
            match outcome {
                Err(_) => return Err(ProxyError::ResponseTimeout),
                Ok(Ok((response, h1))) => {
                    let release = if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                        None
                    } else {
                        h1.map(|s| (Arc::clone(endpoint), s))
                    };
                    return Ok(response.map(|body| {
                        Body::Upstream(UpstreamBody::new(body, timeouts.idle, release))
                    }));
                }
                // The connection was already dead: the request never left, try a fresh one.
                Ok(Err((Some(unsent), _))) if reused => request = unsent,
                Ok(Err((_, Some(error)))) => return Err(ProxyError::from_upstream(error)),
                Ok(Err((_, None))) => {
                    return Err(ProxyError::Connect(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "pooled connection closed",
                    )))
                }
            }
        }
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Sender, ProxyError> {
        let timeouts = self.spec.timeouts;
        let stream = match tokio::time::timeout(
            timeouts.connect,
            TcpStream::connect(endpoint.address),
        )
        .await
        {
            Err(_) => return Err(ProxyError::ConnectTimeout),
            Ok(Err(error)) => return Err(ProxyError::Connect(error)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.spec.tls else {
            return self.handshake(endpoint, TokioIo::new(stream)).await;
        };
        // Verified against `server_name`, or else the endpoint's IP address.
        let name = tls
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(endpoint.address.ip().into()));
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
        match tokio::time::timeout(timeouts.connect, connector.connect(name, stream)).await {
            Err(_) => Err(ProxyError::ConnectTimeout),
            Ok(Err(error)) => {
                tracing::debug!(address = %endpoint.address, %error, "upstream TLS handshake failed");
                Err(ProxyError::Connect(error))
            }
            Ok(Ok(stream)) => self.handshake(endpoint, TokioIo::new(stream)).await,
        }
    }

    /// The HTTP handshake on a connected (and maybe TLS) stream; the connection's own task
    /// runs on this worker.
    async fn handshake<I>(&self, endpoint: &Endpoint, io: TokioIo<I>) -> Result<Sender, ProxyError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let address = endpoint.address;
        match self.spec.protocol {
            Protocol::Http1 => {
                let (sender, conn) = http1::Builder::new()
                    .handshake(io)
                    .await
                    .map_err(ProxyError::Upstream)?;
                tokio::spawn(async move {
                    if let Err(error) = conn.with_upgrades().await {
                        tracing::debug!(%address, %error, "upstream connection ended");
                    }
                });
                Ok(Sender::H1(sender))
            }
            Protocol::Http2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await
                    .map_err(ProxyError::Upstream)?;
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%address, %error, "upstream connection ended");
                    }
                });
                let shared = sender.clone();
                endpoint.pool.put(Sender::H2(shared));
                Ok(Sender::H2(sender))
            }
        }
    }
}

/// Applies each endpoint set the discovery backend publishes, until the upstream is dropped.
async fn follow(
    upstream: Weak<Upstream>,
    mut rx: watch::Receiver<EndpointSet>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = &mut stop => return,
        }
        let set = rx.borrow_and_update().clone();
        match upstream.upgrade() {
            Some(upstream) => upstream.apply(&set),
            None => return,
        }
    }
}

/// Counts a request against its endpoint until the response head is in (or it failed).
struct InFlight<'a>(&'a Endpoint);

impl<'a> InFlight<'a> {
    fn new(endpoint: &'a Endpoint) -> InFlight<'a> {
        endpoint
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(endpoint)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
