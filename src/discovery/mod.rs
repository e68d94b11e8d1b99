//! Where an upstream's endpoints come from. Each backend publishes COMPLETE endpoint sets
//! through a `watch` channel; the upstream (`upstream/`) follows the channel and rebuilds its
//! balancer on each change. Backends know nothing of proxying.

mod file;
mod static_list;

pub use file::{FileList, FileSpec};
pub use static_list::{StaticEndpoint, StaticList};

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// One endpoint as discovered: where it is and its share of the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DiscoveredEndpoint {
    pub address: SocketAddr,
    pub weight: u32,
}

/// A complete set: the latest one replaces the previous one whole.
pub type EndpointSet = Arc<[DiscoveredEndpoint]>;

/// Validated discovery settings of one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoverySpec {
    Static(Vec<StaticEndpoint>),
    File(FileSpec),
}

impl DiscoverySpec {
    pub fn backend(&self) -> Box<dyn Discovery> {
        match self {
            DiscoverySpec::Static(list) => Box::new(StaticList::new(list.clone())),
            DiscoverySpec::File(spec) => Box::new(FileList::new(spec.clone())),
        }
    }

    /// The set known without any I/O (IP literals), published before the backend first runs
    /// so that the first requests after start-up have endpoints.
    pub fn initial(&self) -> EndpointSet {
        match self {
            DiscoverySpec::Static(list) => {
                list.iter().filter_map(StaticEndpoint::literal).collect()
            }
            // The file as it is now, if it lists addresses (names wait for the backend).
            DiscoverySpec::File(spec) => std::fs::read_to_string(&spec.path)
                .ok()
                .and_then(|text| file::parse(&text).ok())
                .map(|list| list.iter().filter_map(StaticEndpoint::literal).collect())
                .unwrap_or_else(|| EndpointSet::from(Vec::new())),
        }
    }
}

#[async_trait::async_trait]
pub trait Discovery: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    /// Publishes complete endpoint sets until every receiver is gone. On a transient error it
    /// keeps the last set, logs and retries with backoff: it never publishes an empty set
    /// because a registry is unreachable.
    async fn run(&self, tx: watch::Sender<EndpointSet>);
}
