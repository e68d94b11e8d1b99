//! `discovery: { zookeeper: { servers, path, format, session_timeout, auth } }`: every child of
//! `path` is one instance.
//! - `curator`: the child's data is Apache Curator's service-instance JSON (`address`, `port`,
//!   `sslPort`, `enabled` …); `port` is used, else `sslPort`; `enabled: false` leaves the
//!   instance out.
//! - `address`: the child's data is `host:port` or `{"address", "weight"}` (as etcd values);
//!   with no data, the child's name is `host:port`.
//!
//! One session per upstream with a persistent recursive watch on `path` (ZooKeeper 3.6 and
//! later): an instance added, removed or changed triggers a read of the whole set, as does a
//! reconnection (events can be lost while disconnected). While the ensemble is unreachable the
//! last set keeps serving; an expired or failed session is replaced, with backoff.

use super::backend::{backoff, publish, Discovery, EndpointSet, Status};
use super::etcd::parse_value;
use super::registered::Registered;
use super::static_list::StaticEndpoint;
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::watch;
use zookeeper_client as zk;

/// Reconnections back off up to this.
const MAX_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ZooKeeperSpec {
    /// `host:port` of the ensemble's members.
    pub(crate) servers: Vec<String>,
    pub(crate) path: String,
    pub(crate) format: ZooKeeperFormat,
    pub(crate) session_timeout: Duration,
    pub(crate) auth: Option<ZooKeeperAuth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZooKeeperFormat {
    Curator,
    Address,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ZooKeeperAuth {
    pub(crate) scheme: String,
    pub(crate) credentials: String,
}

pub(crate) struct ZooKeeperList {
    spec: ZooKeeperSpec,
    registered: Registered,
}

impl ZooKeeperList {
    pub(crate) fn new(spec: ZooKeeperSpec) -> ZooKeeperList {
        ZooKeeperList {
            spec,
            registered: Registered::default(),
        }
    }

    /// One session: connect, watch, and publish the set after every change, until the session
    /// ends. Returns why it ended.
    async fn session(
        &self,
        tx: &watch::Sender<EndpointSet>,
        status: &Status,
        failures: &mut u32,
    ) -> String {
        let mut connector = zk::Client::connector().with_session_timeout(self.spec.session_timeout);
        if let Some(auth) = &self.spec.auth {
            connector = connector.with_auth(&auth.scheme, auth.credentials.as_bytes());
        }
        let cluster = self.spec.servers.join(",");
        // The client tries every server in turn until a session is made or it times out.
        let limit = self.spec.session_timeout.saturating_mul(2);
        let client = match tokio::time::timeout(limit, connector.connect(&cluster)).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return format!("connect: {error}"),
            Err(_) => return "connect: timed out".into(),
        };
        let mut state = client.state_watcher();
        let mut changes = match client
            .watch(&self.spec.path, zk::AddWatchMode::PersistentRecursive)
            .await
        {
            Ok(watcher) => watcher,
            Err(error) => return format!("watch: {error}"),
        };
        loop {
            match self.read(&client).await {
                Ok(listed) => {
                    let found = self
                        .registered
                        .addresses(&listed.iter().collect::<Vec<_>>(), status)
                        .await;
                    let count = found.len();
                    if publish(tx, found.into()) {
                        tracing::info!(path = %self.spec.path, endpoints = count, "zookeeper endpoints changed");
                    }
                    status.succeeded();
                    status.set_up_to_date(true);
                    *failures = 0;
                }
                // Connection loss: the client reconnects; the state change below reads again.
                Err(zk::Error::ConnectionLoss) => status.set_up_to_date(false),
                Err(error) => return format!("read: {error}"),
            }
            // Wait for something that may have changed the set.
            loop {
                tokio::select! {
                    event = changes.changed() => {
                        if event.event_type != zk::EventType::Session {
                            break;
                        }
                        if event.session_state.is_terminated() {
                            return format!("session {:?}", event.session_state);
                        }
                    }
                    session = state.changed() => match session {
                        zk::SessionState::Disconnected => {
                            // The last set keeps serving; staleness counts from now.
                            status.set_up_to_date(false);
                            status.failed();
                            tracing::warn!(path = %self.spec.path, "zookeeper connection lost; keeping the last endpoints");
                        }
                        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                            tracing::info!(path = %self.spec.path, "zookeeper connection back; reading the instances again");
                            break;
                        }
                        other => return format!("session {other:?}"),
                    },
                }
            }
        }
    }

    /// Every instance under `path` now. A missing `path` has none; a child that disappears
    /// during the read is skipped.
    async fn read(&self, client: &zk::Client) -> Result<Vec<StaticEndpoint>, zk::Error> {
        let children = match client.list_children(&self.spec.path).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        // Requests go out as they are made, so the reads travel together.
        let base = self.spec.path.trim_end_matches('/');
        let reads: Vec<_> = children
            .iter()
            .map(|child| client.get_data(&format!("{base}/{child}")))
            .collect();
        let mut listed = Vec::new();
        for (child, read) in children.iter().zip(reads) {
            let data = match read.await {
                Ok((data, _)) => data,
                Err(zk::Error::NoNode) => continue,
                Err(error) => return Err(error),
            };
            match instance(self.spec.format, child, &data) {
                Ok(Some(endpoint)) => listed.push(endpoint),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(path = %self.spec.path, %child, %error, "zookeeper instance skipped")
                }
            }
        }
        Ok(listed)
    }
}

#[async_trait::async_trait]
impl Discovery for ZooKeeperList {
    async fn run(&self, tx: &watch::Sender<EndpointSet>, status: &Status) {
        let mut failures = 0;
        loop {
            let error = self.session(tx, status, &mut failures).await;
            status.set_up_to_date(false);
            status.failed();
            failures += 1;
            let wait = backoff(failures, MAX_RETRY);
            tracing::warn!(path = %self.spec.path, %error, retry_in_ms = wait.as_millis() as u64, "zookeeper discovery failed; keeping the last endpoints");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Apache Curator's `ServiceInstance` as JSON; other fields (`payload`, `id` …) are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CuratorInstance {
    address: String,
    port: Option<u16>,
    ssl_port: Option<u16>,
    #[serde(default = "enabled")]
    enabled: bool,
}

fn enabled() -> bool {
    true
}

/// The endpoint one child stands for; `None` when it takes no traffic (disabled, weight 0).
pub(crate) fn instance(
    format: ZooKeeperFormat,
    name: &str,
    data: &[u8],
) -> Result<Option<StaticEndpoint>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "data is not UTF-8".to_string())?;
    match format {
        ZooKeeperFormat::Address if text.trim().is_empty() => {
            StaticEndpoint::parse(name, super::DEFAULT_WEIGHT).map(Some)
        }
        ZooKeeperFormat::Address => parse_value(text),
        ZooKeeperFormat::Curator => {
            let found: CuratorInstance = serde_json::from_str(text)
                .map_err(|e| format!("not a Curator service instance: {e}"))?;
            if !found.enabled {
                return Ok(None);
            }
            let port = found
                .port
                .or(found.ssl_port)
                .ok_or("the instance has neither port nor sslPort")?;
            let host = if found.address.contains(':') && !found.address.starts_with('[') {
                format!("[{}]", found.address)
            } else {
                found.address
            };
            StaticEndpoint::parse(&format!("{host}:{port}"), super::DEFAULT_WEIGHT).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(format: ZooKeeperFormat, name: &str, data: &str) -> Option<(String, u16, u32)> {
        instance(format, name, data.as_bytes())
            .unwrap()
            .map(|e| (e.host, e.port, e.weight))
    }

    #[test]
    fn curator_instances() {
        let json = r#"{"name":"orders","id":"5f1","address":"10.0.0.5","port":8080,"sslPort":null,"payload":null,"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null}"#;
        let one = parsed(ZooKeeperFormat::Curator, "5f1", json);
        assert_eq!(one, Some(("10.0.0.5".into(), 8080, 1)));
        let ssl = r#"{"address":"10.0.0.6","port":null,"sslPort":8443}"#;
        assert_eq!(
            parsed(ZooKeeperFormat::Curator, "x", ssl).map(|e| e.1),
            Some(8443)
        );
        let off = r#"{"address":"10.0.0.7","port":80,"enabled":false}"#;
        assert_eq!(parsed(ZooKeeperFormat::Curator, "x", off), None);
        let v6 = r#"{"address":"::1","port":80}"#;
        assert_eq!(
            parsed(ZooKeeperFormat::Curator, "x", v6).map(|e| e.0),
            Some("::1".into())
        );
        for bad in [r#"{"address":"10.0.0.8"}"#, "10.0.0.8:80", r#"{"port":80}"#] {
            assert!(
                instance(ZooKeeperFormat::Curator, "x", bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn address_instances() {
        let from_name = parsed(ZooKeeperFormat::Address, "10.0.0.5:8080", "");
        assert_eq!(from_name, Some(("10.0.0.5".into(), 8080, 1)));
        let from_data = parsed(ZooKeeperFormat::Address, "member-1", "10.0.0.6:80\n");
        assert_eq!(from_data, Some(("10.0.0.6".into(), 80, 1)));
        let weighted = r#"{"address":"10.0.0.7:80","weight":3}"#;
        assert_eq!(
            parsed(ZooKeeperFormat::Address, "m", weighted).map(|e| e.2),
            Some(3)
        );
        assert_eq!(
            parsed(
                ZooKeeperFormat::Address,
                "m",
                r#"{"address":"10.0.0.7:80","weight":0}"#
            ),
            None
        );
        assert!(instance(ZooKeeperFormat::Address, "not-an-address", b"").is_err());
        assert!(instance(ZooKeeperFormat::Address, "m", &[0xff]).is_err());
    }
}
