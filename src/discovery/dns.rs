//! `discovery: { dns: { name, port, type, refresh, min_ttl, nameservers } }`: endpoints are the
//! addresses a name resolves to (`A`, `AAAA`), or the targets of its `SRV` records.
//!
//! The name is looked up again when its records expire: after the smallest TTL of the answer,
//! but never sooner than `min_ttl` nor later than `refresh`. A failed lookup, and an answer with
//! no records, keep the last set (a resolver that blinks must not empty an upstream) and are
//! retried with backoff. SRV answers use the records of the best (lowest) priority, each
//! target weighted by its record's weight.

use super::backend::{backoff, publish, DiscoveredEndpoint, Discovery, EndpointSet, Status};
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

/// One DNS query's wait for an answer, and how many times it is sent.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const QUERY_ATTEMPTS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    A,
    Aaaa,
    Srv,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsSpec {
    pub(crate) name: String,
    /// The endpoints' port for A/AAAA (SRV records carry their own).
    pub(crate) port: u16,
    pub(crate) kind: RecordKind,
    /// The longest time between two lookups.
    pub(crate) refresh: Duration,
    /// The shortest time between two lookups, whatever the TTL.
    pub(crate) min_ttl: Duration,
    /// Empty: the system's resolvers (`/etc/resolv.conf`).
    pub(crate) nameservers: Vec<SocketAddr>,
}

pub(crate) struct DnsList {
    spec: DnsSpec,
}

impl DnsList {
    pub(crate) fn new(spec: DnsSpec) -> DnsList {
        DnsList { spec }
    }

    fn resolver(&self) -> Result<TokioResolver, String> {
        let mut builder = if self.spec.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| format!("system resolver: {e}"))?
        } else {
            let servers = self
                .spec
                .nameservers
                .iter()
                .map(|address| {
                    let mut server = NameServerConfig::udp_and_tcp(address.ip());
                    for connection in &mut server.connections {
                        connection.port = address.port();
                    }
                    server
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        options.timeout = QUERY_TIMEOUT;
        options.attempts = QUERY_ATTEMPTS;
        builder.build().map_err(|e| format!("resolver: {e}"))
    }

    /// The endpoints and the smallest TTL of the records they came from.
    async fn lookup(
        &self,
        resolver: &TokioResolver,
    ) -> Result<(Vec<DiscoveredEndpoint>, u32), String> {
        let name = self.spec.name.as_str();
        let failed = |e: hickory_resolver::net::NetError| format!("{name}: {e}");
        let (kind, port) = match self.spec.kind {
            RecordKind::A => (RecordType::A, self.spec.port),
            RecordKind::Aaaa => (RecordType::AAAA, self.spec.port),
            RecordKind::Srv => return self.lookup_srv(resolver).await,
        };
        let answer = resolver.lookup(name, kind).await.map_err(failed)?;
        let mut ttl = u32::MAX;
        let mut found = Vec::new();
        for record in answer.answers() {
            let ip = match &record.data {
                RData::A(a) => a.0.into(),
                RData::AAAA(aaaa) => aaaa.0.into(),
                _ => continue,
            };
            ttl = ttl.min(record.ttl);
            found.push(DiscoveredEndpoint {
                address: SocketAddr::new(ip, port),
                weight: 1,
            });
        }
        Ok((found, ttl))
    }

    async fn lookup_srv(
        &self,
        resolver: &TokioResolver,
    ) -> Result<(Vec<DiscoveredEndpoint>, u32), String> {
        let name = self.spec.name.as_str();
        let answer = resolver
            .lookup(name, RecordType::SRV)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let (best, mut ttl) = best_srv(answer.answers());
        let mut found = Vec::new();
        for srv in best {
            let target = resolver
                .lookup_ip(srv.target.clone())
                .await
                .map_err(|e| format!("{name}: target {}: {e}", srv.target))?;
            let remaining = target
                .valid_until()
                .saturating_duration_since(std::time::Instant::now());
            ttl = ttl.min(remaining.as_secs() as u32);
            found.extend(target.iter().map(|ip| DiscoveredEndpoint {
                address: SocketAddr::new(ip, srv.port),
                // Weight 0 means "rarely" (RFC 2782), not "never".
                weight: u32::from(srv.weight.max(1)),
            }));
        }
        Ok((found, ttl))
    }
}

/// The SRV records of the best (lowest) priority among `answers`, and the shortest TTL among
/// them (`u32::MAX` when there are none).
pub(crate) fn best_srv(answers: &[Record]) -> (Vec<&SRV>, u32) {
    let records: Vec<(u32, &SRV)> = answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((r.ttl, srv)),
            _ => None,
        })
        .collect();
    let Some(best) = records.iter().map(|(_, srv)| srv.priority).min() else {
        return (Vec::new(), u32::MAX);
    };
    let chosen = records.iter().filter(|(_, srv)| srv.priority == best);
    let ttl = chosen
        .clone()
        .map(|(ttl, _)| *ttl)
        .min()
        .unwrap_or(u32::MAX);
    (chosen.map(|(_, srv)| *srv).collect(), ttl)
}

#[async_trait::async_trait]
impl Discovery for DnsList {
    async fn run(&self, tx: &watch::Sender<EndpointSet>, status: &Status) {
        let spec = &self.spec;
        let mut failures = 0;
        let resolver = loop {
            match self.resolver() {
                Ok(resolver) => break resolver,
                Err(error) => {
                    status.failed();
                    failures += 1;
                    tracing::warn!(name = %spec.name, %error, "DNS discovery cannot start; retrying");
                    tokio::time::sleep(backoff(failures, spec.refresh)).await;
                }
            }
        };
        loop {
            // Each lookup asks the servers: the refresh schedule below is the cache.
            resolver.clear_cache();
            let wait = match self.lookup(&resolver).await {
                Ok((found, ttl)) if !found.is_empty() => {
                    status.succeeded();
                    failures = 0;
                    let set: EndpointSet = found.into();
                    let count = set.len();
                    if publish(tx, set) {
                        tracing::info!(name = %spec.name, endpoints = count, ttl, "DNS endpoints changed");
                    }
                    Duration::from_secs(u64::from(ttl)).clamp(spec.min_ttl, spec.refresh)
                }
                outcome => {
                    let error = match outcome {
                        Err(error) => error,
                        Ok(_) => format!("{}: no usable records", spec.name),
                    };
                    status.failed();
                    failures += 1;
                    let wait = backoff(failures, spec.refresh);
                    tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "DNS lookup failed; keeping the last endpoints");
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}
