//! Redis (`stores: { redis: ... }`): each worker opens its own multiplexed connection on its
//! own runtime, so a check never hops to another thread; until it is open, the worker uses
//! the connections the control runtime keeps.
//!
//! A request never waits on a dead Redis: the first error or timeout marks the store down, and
//! until a background task has reconnected (with backoff) and seen a PING answered, callers
//! are told "down" at once and apply their failure mode. Transitions are logged once each and
//! counted.

use arc_swap::{ArcSwap, ArcSwapOption};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// Validated `stores.redis` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedisSpec {
    pub(crate) url: String,
    /// A check slower than this counts as a failure (default 20 ms).
    pub(crate) timeout: Duration,
    /// Multiplexed connections shared by all workers.
    pub(crate) pool_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("store is down")]
    Down,
    #[error("store timed out")]
    Timeout,
    #[error("store error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// GCRA in one atomic step on the server's clock (microseconds), so every replica shares one
/// budget and replicas' clocks do not matter. KEYS[1]: the bucket; ARGV: interval and
/// tolerance in microseconds. Returns {allowed, remaining, wait_us}; the key expires once its
/// bucket is full again.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next = tat + interval
if next - now <= tolerance then
  redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000) + 1)
  return {1, math.floor((now + tolerance - next) / interval), next - now}
end
return {0, 0, next - now - tolerance}
";

pub(crate) struct RedisStore {
    pub(crate) spec: RedisSpec,
    shared: Arc<Shared>,
    /// Dropped with the store; ends the reconnect task.
    _stop: oneshot::Sender<()>,
}

struct Shared {
    spec: RedisSpec,
    client: redis::Client,
    connections: ArcSwap<Vec<MultiplexedConnection>>,
    next: AtomicUsize,
    /// One connection per worker, driven by that worker's runtime; emptied when the store
    /// goes down.
    local: Box<[ArcSwapOption<MultiplexedConnection>]>,
    connecting: Box<[AtomicBool]>,
    up: AtomicBool,
    /// Wakes the reconnect task after a failure.
    failed: Notify,
    script: redis::Script,
}

impl RedisStore {
    /// Opens connections in the background on the runtime behind `handle`; until they are up,
    /// the store reports itself down. `None` when the URL is invalid (validated at load).
    pub(crate) fn start(
        spec: RedisSpec,
        workers: usize,
        handle: &tokio::runtime::Handle,
    ) -> Option<Arc<RedisStore>> {
        let client = redis::Client::open(spec.url.as_str()).ok()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            spec: spec.clone(),
            client,
            connections: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            local: (0..workers.max(1))
                .map(|_| ArcSwapOption::empty())
                .collect(),
            connecting: (0..workers.max(1))
                .map(|_| AtomicBool::new(false))
                .collect(),
            up: AtomicBool::new(false),
            failed: Notify::new(),
            script: redis::Script::new(GCRA_SCRIPT),
        });
        handle.spawn(reconnect_loop(Arc::clone(&shared), stop_rx));
        Some(Arc::new(RedisStore {
            spec,
            shared,
            _stop: stop_tx,
        }))
    }

    /// One GCRA step for `key` (the emission interval and the burst tolerance, both at least
    /// a microsecond): admitted or not, requests left, and the wait (until full when admitted,
    /// until the next admission when not). `Err` at once when the store is down, or after
    /// `timeout`.
    pub(crate) async fn gcra(
        &self,
        key: &str,
        interval: Duration,
        tolerance: Duration,
    ) -> Result<(bool, u64, Duration), StoreError> {
        let shared = &self.shared;
        if !shared.up.load(Ordering::Acquire) {
            return Err(StoreError::Down);
        }
        let mut connection = match shared.local_connection() {
            Some(connection) => connection,
            None => {
                let connections = shared.connections.load();
                if connections.is_empty() {
                    return Err(StoreError::Down);
                }
                let index = shared.next.fetch_add(1, Ordering::Relaxed) % connections.len();
                connections[index].clone()
            }
        };
        let interval_us = (interval.as_micros() as u64).max(1);
        let tolerance_us = (tolerance.as_micros() as u64).max(interval_us);
        let mut invocation = shared.script.key(key);
        invocation.arg(interval_us).arg(tolerance_us);
        let result = tokio::time::timeout(
            shared.spec.timeout,
            invocation.invoke_async::<(i64, i64, i64)>(&mut connection),
        )
        .await;
        let error = match result {
            Ok(Ok((allowed, remaining, wait_us))) => {
                return Ok((
                    allowed == 1,
                    remaining.max(0) as u64,
                    Duration::from_micros(wait_us.max(0) as u64),
                ))
            }
            Ok(Err(error)) => StoreError::Redis(error),
            Err(_) => StoreError::Timeout,
        };
        if shared.up.swap(false, Ordering::AcqRel) {
            for slot in shared.local.iter() {
                slot.store(None);
            }
            tracing::warn!(url = %redacted(&shared.spec.url), %error, "redis store down; filters apply their on_store_error mode");
            shared.failed.notify_one();
        }
        Err(error)
    }
}

impl Shared {
    /// This worker's own connection; when it has none yet, starts opening one on this
    /// worker's runtime (once at a time) and answers `None` meanwhile.
    fn local_connection(self: &Arc<Self>) -> Option<MultiplexedConnection> {
        let index = crate::worker::index() % self.local.len();
        if let Some(connection) = &*self.local[index].load() {
            return Some(MultiplexedConnection::clone(connection));
        }
        if self.connecting[index].swap(true, Ordering::AcqRel) {
            return None;
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let opened = connect_one(&shared).await;
            if let (Ok(connection), true) = (opened, shared.up.load(Ordering::Acquire)) {
                shared.local[index].store(Some(Arc::new(connection)));
            }
            shared.connecting[index].store(false, Ordering::Release);
        });
        None
    }
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Connecting gets at least this long, even when commands must answer faster.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

async fn reconnect_loop(shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut delay = FIRST_RETRY;
    let mut first = true;
    loop {
        if !shared.up.load(Ordering::Acquire) {
            match connect(&shared).await {
                Ok(connections) => {
                    shared.connections.store(Arc::new(connections));
                    shared.up.store(true, Ordering::Release);
                    delay = FIRST_RETRY;
                    if first {
                        tracing::info!(url = %redacted(&shared.spec.url), "redis store connected");
                    } else {
                        tracing::warn!(url = %redacted(&shared.spec.url), "redis store back up");
                    }
                    first = false;
                }
                Err(error) => {
                    if first {
                        tracing::warn!(url = %redacted(&shared.spec.url), %error, "redis store unreachable; retrying");
                        first = false;
                    }
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(MAX_RETRY);
                    continue;
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = shared.failed.notified() => {}
        }
    }
}

/// Opens `pool_size` connections and checks that the server answers.
async fn connect(shared: &Shared) -> Result<Vec<MultiplexedConnection>, StoreError> {
    let mut connections = Vec::with_capacity(shared.spec.pool_size);
    for _ in 0..shared.spec.pool_size.max(1) {
        connections.push(connect_one(shared).await?);
    }
    Ok(connections)
}

/// One connection, driven by the runtime this runs on, checked with a PING.
async fn connect_one(shared: &Shared) -> Result<MultiplexedConnection, StoreError> {
    let timeout = shared.spec.timeout.max(MIN_CONNECT_TIMEOUT);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut connection = shared
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let _: String = redis::cmd("PING").query_async(&mut connection).await?;
    Ok(connection)
}
