//! Where an upstream's endpoints come from. Each backend publishes COMPLETE endpoint sets
//! through a `watch` channel; the upstream (`upstream/`) follows the channel and rebuilds its
//! balancer on each change. Backends know nothing of proxying.
//!
//! A running backend is a [`Feed`]: it lives as long as some upstream holds it, so a reload that
//! leaves an upstream's `discovery` block alone keeps the same task and its last known set.

mod backend;
mod dns;
mod etcd;
mod file;
mod registered;
mod static_list;
mod zookeeper;

pub(crate) use backend::{Discovery, EndpointSet, Status};
pub(crate) use dns::{DnsSpec, RecordKind};
pub(crate) use etcd::EtcdSpec;
pub(crate) use file::{FileFormat, FileSpec};
pub(crate) use static_list::{StaticEndpoint, DEFAULT_WEIGHT};
pub(crate) use zookeeper::{ZooKeeperAuth, ZooKeeperFormat, ZooKeeperSpec};
/// The payload parsers, for the fuzz targets.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use {dns::best_srv, etcd::parse_value, file::parse as parse_file, zookeeper::instance};

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Validated discovery settings of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DiscoverySpec {
    Static(Vec<StaticEndpoint>),
    File(FileSpec),
    Dns(DnsSpec),
    Etcd(EtcdSpec),
    ZooKeeper(ZooKeeperSpec),
}

impl DiscoverySpec {
    fn backend(&self) -> Box<dyn Discovery> {
        match self {
            DiscoverySpec::Static(list) => Box::new(static_list::StaticList::new(list.clone())),
            DiscoverySpec::File(spec) => Box::new(file::FileList::new(spec.clone())),
            DiscoverySpec::Dns(spec) => Box::new(dns::DnsList::new(spec.clone())),
            DiscoverySpec::Etcd(spec) => Box::new(etcd::EtcdList::new(spec.clone())),
            DiscoverySpec::ZooKeeper(spec) => Box::new(zookeeper::ZooKeeperList::new(spec.clone())),
        }
    }

    /// The backend's name in the config.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            DiscoverySpec::Static(_) => "static",
            DiscoverySpec::File(_) => "file",
            DiscoverySpec::Dns(_) => "dns",
            DiscoverySpec::Etcd(_) => "etcd",
            DiscoverySpec::ZooKeeper(_) => "zookeeper",
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
            DiscoverySpec::Dns(_) | DiscoverySpec::Etcd(_) | DiscoverySpec::ZooKeeper(_) => {
                EndpointSet::from(Vec::new())
            }
        }
    }
}

/// How long readiness waits for a registry's first answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

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
