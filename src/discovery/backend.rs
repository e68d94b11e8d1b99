//! What every discovery backend shares: the endpoint sets it publishes, the status of its
//! registry reads, its backoff after failures, and the trait it implements.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// One endpoint as discovered: where it is and its share of the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DiscoveredEndpoint {
    pub(crate) address: SocketAddr,
    pub(crate) weight: u32,
}

/// A complete set: the latest one replaces the previous one whole.
pub(crate) type EndpointSet = Arc<[DiscoveredEndpoint]>;

/// How a backend's reads of its registry are going, for `/upstreams` and the metrics.
#[derive(Debug, Default)]
pub(crate) struct Status {
    /// Unix time in milliseconds of the latest successful read; 0 before the first.
    last_success_ms: AtomicU64,
    errors: AtomicU64,
    /// The set is known to be current without reading again: an open etcd watch, or a
    /// static list with every name resolved. Counts as a success at every moment.
    up_to_date: AtomicBool,
}

impl Status {
    /// The registry answered (whether or not the set changed).
    pub(crate) fn succeeded(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_success_ms.store(now.max(1), Ordering::Relaxed);
    }

    /// The registry could not be read; the last set stays.
    pub(crate) fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// See `up_to_date`; cleared when the watch ends.
    pub(crate) fn set_up_to_date(&self, yes: bool) {
        if !yes && self.up_to_date.load(Ordering::Relaxed) {
            self.succeeded();
        }
        self.up_to_date.store(yes, Ordering::Relaxed);
    }

    /// When the set was last known to be current.
    pub(crate) fn last_success(&self) -> Option<SystemTime> {
        if self.up_to_date.load(Ordering::Relaxed) {
            return Some(SystemTime::now());
        }
        match self.last_success_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// No successful read for longer than `max_stale` (counted from `since` before the first).
    pub(crate) fn is_stale(&self, max_stale: Duration, since: SystemTime) -> bool {
        let last = self.last_success().unwrap_or(since);
        SystemTime::now()
            .duration_since(last)
            .is_ok_and(|age| age > max_stale)
    }
}

/// Publishes `set` when it differs from the current one.
pub(super) fn publish(tx: &watch::Sender<EndpointSet>, set: EndpointSet) -> bool {
    tx.send_if_modified(|current| {
        let changed = *current != set;
        *current = set;
        changed
    })
}

/// The wait after a registry's first failure; it doubles with each failure after.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Waits before the next try after `failures` failures in a row: [`FIRST_BACKOFF`] doubling
/// up to `cap`, with jitter so that replicas do not retry in step.
pub(super) fn backoff(failures: u32, cap: Duration) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(cap);
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}

#[async_trait::async_trait]
pub(crate) trait Discovery: Send + Sync + 'static {
    /// Publishes complete endpoint sets (it is stopped once nobody listens). On a transient
    /// error it keeps the last set, counts the error in `status`, logs and retries with
    /// backoff: it never publishes an empty set because a registry is unreachable.
    async fn run(&self, tx: &watch::Sender<EndpointSet>, status: &Status);
}
