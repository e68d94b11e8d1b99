//! A JWK set fetched from a URL (`jwks_url`) and kept fresh by a background task on the
//! control runtime. A failed fetch keeps the last good set: an identity provider's outage
//! never turns valid tokens into 401s. Requests never fetch themselves; a token naming an
//! unknown `kid` asks the task for an early refetch, at most once per `min_refetch_interval`,
//! so a flood of made-up `kid`s costs the provider one fetch per interval.

use super::keys::KeyRing;
use crate::tls::UpstreamTls;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::CACHE_CONTROL;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch, Notify};

/// Larger answers are refused: a key set is a few KiB.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Retries after a failed fetch start here and double up to this cap (or `refresh`).
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Where a remote key set comes from and how it is kept fresh.
#[derive(Debug, Clone, PartialEq)]
pub struct JwksSpec {
    pub(crate) url: Uri,
    /// Refetch this often (sooner when the answer's `Cache-Control: max-age` says so).
    pub(crate) refresh: Duration,
    /// At most one early refetch per interval for tokens naming an unknown `kid`.
    pub(crate) min_refetch_interval: Duration,
    pub(crate) fetch_timeout: Duration,
    /// How long `/ready` waits for the first key set before reporting ready anyway.
    pub(crate) ready_timeout: Duration,
    /// For `https` URLs.
    pub(crate) tls: Option<UpstreamTls>,
}

/// The live key set of one `JwksSpec`; shared by every provider with that spec, and carried
/// over a reload so the keys do not have to be fetched again.
pub struct RemoteKeys {
    shared: Arc<Shared>,
    /// Dropped with the key set; ends the refresh task.
    _stop: oneshot::Sender<()>,
}

struct Shared {
    spec: JwksSpec,
    ring: ArcSwapOption<KeyRing>,
    born: Instant,
    /// Milliseconds after `born` when the latest fetch started.
    last_start_ms: AtomicU64,
    fetching: AtomicBool,
    /// An early refetch is wanted.
    wake: Notify,
    /// Counts finished fetches (good or bad), so waiters learn the outcome.
    finished: watch::Sender<u64>,
}

impl RemoteKeys {
    /// Starts fetching at once on the runtime behind `handle`.
    pub(crate) fn start(spec: JwksSpec, handle: &tokio::runtime::Handle) -> Arc<RemoteKeys> {
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            spec,
            ring: ArcSwapOption::empty(),
            born: Instant::now(),
            last_start_ms: AtomicU64::new(0),
            fetching: AtomicBool::new(false),
            wake: Notify::new(),
            finished: watch::channel(0).0,
        });
        handle.spawn(refresh_loop(Arc::clone(&shared), stop_rx));
        Arc::new(RemoteKeys {
            shared,
            _stop: stop_tx,
        })
    }

    pub(crate) fn spec(&self) -> &JwksSpec {
        &self.shared.spec
    }

    /// The latest good key set; `None` until one has been fetched.
    pub(crate) fn current(&self) -> Option<Arc<KeyRing>> {
        self.shared.ring.load_full()
    }

    /// Loaded, or no longer worth waiting for (`ready_timeout` passed).
    pub(crate) fn ready(&self) -> bool {
        self.shared.ring.load().is_some()
            || self.shared.born.elapsed() >= self.shared.spec.ready_timeout
    }

    /// A token names a `kid` the current set lacks: wait for a refetch (the one under way, or
    /// a new one unless the last started less than `min_refetch_interval` ago), at most
    /// `fetch_timeout`. The set afterwards, or `None` when no refetch was allowed.
    pub(crate) async fn refetch(&self) -> Option<Arc<KeyRing>> {
        let shared = &self.shared;
        let mut finished = shared.finished.subscribe();
        if !shared.fetching.load(Ordering::Acquire) {
            if !shared.refetch_allowed() {
                return None;
            }
            shared.wake.notify_one();
        }
        let _ = tokio::time::timeout(shared.spec.fetch_timeout, finished.changed()).await;
        self.current()
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn refetch_allowed(&self) -> bool {
        let since = self
            .now_ms()
            .saturating_sub(self.last_start_ms.load(Ordering::Acquire));
        since >= self.spec.min_refetch_interval.as_millis() as u64
    }

    /// One fetch; a good answer different from the current set replaces it. Returns when to
    /// fetch next.
    async fn fetch(&self, failures: &mut u32, last_body: &mut Bytes) -> Duration {
        self.last_start_ms.store(self.now_ms(), Ordering::Release);
        self.fetching.store(true, Ordering::Release);
        let url = &self.spec.url;
        let outcome = match tokio::time::timeout(self.spec.fetch_timeout, get(&self.spec)).await {
            Err(_) => Err("timed out".to_string()),
            Ok(result) => result,
        };
        let next = match outcome.and_then(|(body, max_age)| {
            if body == *last_body {
                return Ok(max_age);
            }
            let version = self.ring.load().as_ref().map_or(0, |r| r.version) + 1;
            let ring = KeyRing::from_jwks(&body, version)?;
            tracing::info!(%url, keys = ring.keys.len(), version, "JWKS loaded");
            self.ring.store(Some(Arc::new(ring)));
            *last_body = body;
            Ok(max_age)
        }) {
            Ok(max_age) => {
                *failures = 0;
                let refresh = max_age.map_or(self.spec.refresh, |age| age.min(self.spec.refresh));
                refresh.max(self.spec.min_refetch_interval)
            }
            Err(error) => {
                *failures += 1;
                let keeping = self.ring.load().is_some();
                tracing::warn!(%url, %error, keeping_last_good_set = keeping, "JWKS fetch failed");
                let backoff = FIRST_RETRY.saturating_mul(1 << (*failures - 1).min(10));
                backoff.min(MAX_RETRY).min(self.spec.refresh)
            }
        };
        self.fetching.store(false, Ordering::Release);
        self.finished.send_modify(|n| *n += 1);
        next
    }
}

async fn refresh_loop(shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut failures = 0;
    let mut last_body = Bytes::new();
    loop {
        let wait = shared.fetch(&mut failures, &mut last_body).await;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shared.wake.notified() => {
                    if shared.refetch_allowed() {
                        break;
                    }
                }
            }
        }
    }
}

/// GET the key set: the body and the answer's `max-age`.
async fn get(spec: &JwksSpec) -> Result<(Bytes, Option<Duration>), String> {
    let url = &spec.url;
    let request = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = crate::client::send(url, spec.tls.as_ref(), request).await?;
    if response.status() != StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    let max_age = response
        .headers()
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|directive| directive.trim().strip_prefix("max-age=")?.parse().ok())
        .map(Duration::from_secs);
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((body, max_age))
}
