//! `discovery: { static: [host:port, { address, weight }] }`. IP literals are known at once;
//! host names are resolved once through the system resolver (retried with backoff until they
//! resolve). For names that change, use DNS discovery.

use super::{DiscoveredEndpoint, Discovery, EndpointSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEndpoint {
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

impl StaticEndpoint {
    /// `10.0.0.5:8080`, `[::1]:8080` or `backend.internal:8080`.
    pub fn parse(text: &str, weight: u32) -> Result<StaticEndpoint, String> {
        if let Ok(address) = text.parse::<SocketAddr>() {
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

    pub(super) fn literal(&self) -> Option<DiscoveredEndpoint> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(DiscoveredEndpoint {
            address: SocketAddr::new(ip, self.port),
            weight: self.weight,
        })
    }
}

pub struct StaticList {
    endpoints: Vec<StaticEndpoint>,
}

impl StaticList {
    pub fn new(endpoints: Vec<StaticEndpoint>) -> StaticList {
        StaticList { endpoints }
    }

    /// The endpoints with names resolved, and how many names did not resolve.
    pub(super) async fn resolve(&self) -> (Vec<DiscoveredEndpoint>, usize) {
        let mut found = Vec::new();
        let mut failed = 0;
        for endpoint in &self.endpoints {
            if let Some(known) = endpoint.literal() {
                found.push(known);
                continue;
            }
            match tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await {
                Ok(addresses) => found.extend(addresses.map(|address| DiscoveredEndpoint {
                    address,
                    weight: endpoint.weight,
                })),
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
    fn kind(&self) -> &'static str {
        "static"
    }

    async fn run(&self, tx: watch::Sender<EndpointSet>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let (found, failed) = self.resolve().await;
            if !found.is_empty() {
                let set: EndpointSet = found.into();
                tx.send_if_modified(|current| {
                    let changed = *current != set;
                    *current = set;
                    changed
                });
            }
            if failed == 0 {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tx.closed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        tx.closed().await;
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
    }

    #[tokio::test]
    async fn publishes_a_resolved_set_and_stops_with_its_receivers() {
        let spec = vec![
            StaticEndpoint::parse("127.0.0.1:1", 1).unwrap(),
            StaticEndpoint::parse("localhost:2", 3).unwrap(),
        ];
        let (tx, mut rx) = watch::channel(EndpointSet::from(Vec::new()));
        let task = tokio::spawn(async move { StaticList::new(spec).run(tx).await });
        rx.changed().await.unwrap();
        let set = rx.borrow().clone();
        assert!(set
            .iter()
            .any(|e| e.address == "127.0.0.1:1".parse().unwrap()));
        assert!(set.iter().any(|e| e.address.port() == 2 && e.weight == 3));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
