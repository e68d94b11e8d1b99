//! Where an upstream's endpoints come from. Each backend publishes COMPLETE endpoint sets
//! through a `watch` channel; the upstream (`upstream/`) follows the channel and rebuilds its
//! balancer on each change. Backends know nothing of proxying.
//!
//! A running backend is a [`Feed`]: it lives as long as some upstream holds it, so a reload that
//! leaves an upstream's `discovery` block alone keeps the same task and its last known set.

mod dns;
mod etcd;
mod file;
mod static_list;

pub(crate) use dns::{DnsSpec, RecordKind};
pub(crate) use etcd::EtcdSpec;
pub(crate) use file::{FileFormat, FileSpec};
pub(crate) use static_list::{StaticEndpoint, DEFAULT_WEIGHT};

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

/// Validated discovery settings of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DiscoverySpec {
    Static(Vec<StaticEndpoint>),
    File(FileSpec),
    Dns(DnsSpec),
    Etcd(EtcdSpec),
}

impl DiscoverySpec {
    fn backend(&self) -> Box<dyn Discovery> {
        match self {
            DiscoverySpec::Static(list) => Box::new(static_list::StaticList::new(list.clone())),
            DiscoverySpec::File(spec) => Box::new(file::FileList::new(spec.clone())),
            DiscoverySpec::Dns(spec) => Box::new(dns::DnsList::new(spec.clone())),
            DiscoverySpec::Etcd(spec) => Box::new(etcd::EtcdList::new(spec.clone())),
        }
    }

    /// The backend's name in the config.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            DiscoverySpec::Static(_) => "static",
            DiscoverySpec::File(_) => "file",
            DiscoverySpec::Dns(_) => "dns",
            DiscoverySpec::Etcd(_) => "etcd",
        }
    }

    /// The set known without any I/O (IP literals), published before the backend first runs
    /// so that the first requests after start-up have endpoints.
    pub(crate) fn initial(&self) -> EndpointSet {
        match self {
            DiscoverySpec::Static(list) => {
                list.iter().filter_map(StaticEndpoint::literal).collect()
            }
            // The file as it is now, if it lists addresses (names wait for the backend).
            DiscoverySpec::File(spec) => std::fs::read_to_string(&spec.path)
                .ok()
                .and_then(|text| file::parse(&text, spec.format).ok())
                .map(|list| list.iter().filter_map(StaticEndpoint::literal).collect())
                .unwrap_or_else(|| EndpointSet::from(Vec::new())),
            DiscoverySpec::Dns(_) | DiscoverySpec::Etcd(_) => EndpointSet::from(Vec::new()),
        }
    }
}

/// How long readiness waits for a registry's first answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A running discovery backend and the latest set it published. The backend's task ends by
/// itself once the feed and every subscriber are gone.
pub(crate) struct Feed {
    pub(crate) spec: DiscoverySpec,
    pub(crate) status: Arc<Status>,
    pub(crate) started: SystemTime,
    latest: watch::Receiver<EndpointSet>,
}

impl Feed {
    pub(crate) fn start(spec: DiscoverySpec, handle: &tokio::runtime::Handle) -> Arc<Feed> {
        let (tx, latest) = watch::channel(spec.initial());
        let status = Arc::new(Status::default());
        let backend = spec.backend();
        let task_status = Arc::clone(&status);
        handle.spawn(async move {
            tokio::select! {
                _ = backend.run(&tx, &task_status) => {}
                _ = tx.closed() => {}
            }
        });
        Arc::new(Feed {
            spec,
            status,
            started: SystemTime::now(),
            latest,
        })
    }

    /// The latest set and every later one.
    pub(crate) fn subscribe(&self) -> watch::Receiver<EndpointSet> {
        self.latest.clone()
    }

    pub(crate) fn current(&self) -> EndpointSet {
        self.latest.borrow().clone()
    }

    /// The registry has answered once, or `READY_TIMEOUT` has passed since the start (one
    /// unreachable registry must not keep a replica out of service for good).
    pub(crate) fn settled(&self) -> bool {
        self.status.last_success().is_some()
            || self
                .started
                .elapsed()
                .is_ok_and(|waited| waited >= READY_TIMEOUT)
    }
}

/// Publishes `set` when it differs from the current one.
fn publish(tx: &watch::Sender<EndpointSet>, set: EndpointSet) -> bool {
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
fn backoff(failures: u32, cap: Duration) -> Duration {
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
