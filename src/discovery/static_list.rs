//! `discovery: { static: [host:port, { address, weight }] }`. IP literals are known at once;
//! host names are resolved once through the system resolver (retried with backoff until they
//! resolve). For names that change, use DNS discovery.

use super::backend::{backoff, publish, DiscoveredEndpoint, Discovery, EndpointSet, Status};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::sync::watch;

/// The weight of an endpoint whose registration gives none.
pub(crate) const DEFAULT_WEIGHT: u32 = 1;

/// Resolution of a host name that fails is retried, backing off up to this.
const MAX_RESOLVE_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StaticEndpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) weight: u32,
}

impl StaticEndpoint {
    /// `10.0.0.5:8080`, `[::1]:8080` or `backend.internal:8080`.
    pub(crate) fn parse(text: &str, weight: u32) -> Result<StaticEndpoint, String> {
        if let Ok(address) = text.parse::<SocketAddr>() {
            if address.port() == 0 {
                return Err(format!("invalid endpoint {text:?}: port 0"));
            }
            return Ok(StaticEndpoint {
                host: address.ip().to_string(),
                port: address.port(),
                weight,
            });
        }
        let invalid =
            || format!("invalid endpoint {text:?}: expected HOST:PORT, e.g. 127.0.0.1:9001");
        let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
        let port: u16 = port.parse().map_err(|_| invalid())?;
        let valid_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid_host || port == 0 {
            return Err(invalid());
        }
        Ok(StaticEndpoint {
            host: host.to_string(),
            port,
            weight,
        })
    }

    /// The addresses the endpoint's host resolves to now (through the system resolver).
    pub(super) async fn resolve(&self) -> std::io::Result<Vec<DiscoveredEndpoint>> {
        if let Some(known) = self.literal() {
            return Ok(vec![known]);
        }
        let addresses = tokio::net::lookup_host((self.host.as_str(), self.port)).await?;
        Ok(addresses
            .map(|address| DiscoveredEndpoint {
                address,
                weight: self.weight,
            })
            .collect())
    }

    pub(super) fn literal(&self) -> Option<DiscoveredEndpoint> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(DiscoveredEndpoint {
            address: SocketAddr::new(ip, self.port),
            weight: self.weight,
        })
    }
}

pub(crate) struct StaticList {
    endpoints: Vec<StaticEndpoint>,
}

impl StaticList {
    pub(crate) fn new(endpoints: Vec<StaticEndpoint>) -> StaticList {
        StaticList { endpoints }
    }

    /// The endpoints with names resolved, and how many names did not resolve.
    pub(super) async fn resolve(&self) -> (Vec<DiscoveredEndpoint>, usize) {
        let mut found = Vec::new();
        let mut failed = 0;
        for endpoint in &self.endpoints {
            match endpoint.resolve().await {
                Ok(addresses) => found.extend(addresses),
                Err(error) => {
                    failed += 1;
                    tracing::warn!(host = %endpoint.host, %error, "static endpoint does not resolve");
                }
            }
        }
        (found, failed)
    }
}

#[async_trait::async_trait]
impl Discovery for StaticList {
    /// Resolves names until all have resolved once, then has nothing more to say.
    async fn run(&self, tx: &watch::Sender<EndpointSet>, status: &Status) {
        let mut failures = 0;
        loop {
            let (found, failed) = self.resolve().await;
            if !found.is_empty() {
                publish(tx, found.into());
            }
            if failed == 0 {
                status.set_up_to_date(true);
                return;
            }
            status.failed();
            failures += 1;
            tokio::time::sleep(backoff(failures, MAX_RESOLVE_BACKOFF)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_names() {
        let ep = StaticEndpoint::parse("127.0.0.1:9001", 1).unwrap();
        assert_eq!((ep.host.as_str(), ep.port), ("127.0.0.1", 9001));
        let ep = StaticEndpoint::parse("[::1]:80", 2).unwrap();
        assert_eq!((ep.host.as_str(), ep.port, ep.weight), ("::1", 80, 2));
        let ep = StaticEndpoint::parse("localhost:8080", 1).unwrap();
        assert_eq!(ep.host, "localhost");
        assert!(StaticEndpoint::parse("localhost", 1).is_err());
        assert!(StaticEndpoint::parse("bad host:80", 1).is_err());
        assert!(StaticEndpoint::parse("h:0", 1).is_err());
        // Port 0 is no endpoint, written as an address too (found by fuzzing an etcd value).
        assert!(StaticEndpoint::parse("127.0.0.1:0", 1).is_err());
        assert!(StaticEndpoint::parse("[::1]:0", 1).is_err());
    }

    #[tokio::test]
    async fn a_feed_publishes_the_resolved_set() {
        let spec = vec![
            StaticEndpoint::parse("127.0.0.1:1", 1).unwrap(),
            StaticEndpoint::parse("localhost:2", 3).unwrap(),
        ];
        let feed = super::super::Feed::start(
            super::super::DiscoverySpec::Static(spec),
            &tokio::runtime::Handle::current(),
        );
        // The literal is known before any lookup; the name follows.
        assert_eq!(feed.current().len(), 1);
        let mut rx = feed.subscribe();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let set = rx.borrow().clone();
        assert!(set
            .iter()
            .any(|e| e.address == "127.0.0.1:1".parse().unwrap()));
        assert!(set.iter().any(|e| e.address.port() == 2 && e.weight == 3));
        assert!(feed.status.last_success().is_some());
        assert_eq!(feed.status.errors(), 0);
    }
}
