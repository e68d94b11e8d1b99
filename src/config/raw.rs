//! Serde structs that mirror `gateway.yaml` one to one. No logic lives here: parsing of
//! durations, sizes and addresses, cross-references and defaults belong to `compile.rs`.
//!
//! Sections that hold many items (`listeners`, `upstreams`, `routes`) are first read as raw YAML
//! values so that each item is deserialised on its own: one bad route does not hide the errors
//! of the next one.

use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

pub(crate) use super::values::Scalar;
use crate::filter;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Top {
    /// Worker threads, one single-threaded runtime each. Default: the number of cores.
    pub(crate) workers: Option<usize>,
    #[serde(default)]
    pub(crate) listeners: Vec<Value>,
    pub(crate) admin: Option<Admin>,
    pub(crate) reload: Option<Reload>,
    /// One log line per request; default on.
    pub(crate) access_log: Option<bool>,
    /// How long in-flight requests may take to finish on SIGTERM.
    pub(crate) shutdown_grace: Option<Scalar>,
    #[serde(default)]
    pub(crate) limits: Option<Value>,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
    #[serde(default)]
    pub(crate) upstreams: Mapping,
    #[serde(default)]
    pub(crate) jwt_providers: Mapping,
    /// External state shared by replicas.
    pub(crate) stores: Option<Value>,
    /// Named filters, used by routes as `- use: NAME`.
    #[serde(default)]
    pub(crate) filters: Mapping,
    #[serde(default)]
    pub(crate) routes: Vec<Value>,
    /// OpenTelemetry traces; off unless set.
    pub(crate) tracing: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tracing {
    pub(crate) otlp: Otlp,
    pub(crate) sample: Option<f64>,
    pub(crate) parent_based: Option<bool>,
    pub(crate) service_name: Option<String>,
    /// `trusted` (default) or `any`: whose `traceparent` is continued.
    pub(crate) accept_parent: Option<String>,
    pub(crate) jwt_subject: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Otlp {
    pub(crate) endpoint: String,
    #[serde(default)]
    pub(crate) headers: std::collections::BTreeMap<String, String>,
    pub(crate) timeout: Option<Scalar>,
    pub(crate) queue: Option<usize>,
    pub(crate) ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) tls: Option<ListenerTls>,
    /// Run for every request on this listener, before routing.
    #[serde(default)]
    pub(crate) filters: Vec<filter::FilterEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerTls {
    pub(crate) certificates: Vec<CertificateFiles>,
    pub(crate) client_ca_file: Option<String>,
    /// `required` (default with a client CA) or `optional`.
    pub(crate) client_auth: Option<String>,
    /// `"1.2"` (default) or `"1.3"`.
    pub(crate) min_version: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateFiles {
    pub(crate) cert_file: String,
    pub(crate) key_file: String,
}

/// `tls: true`, or the details.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum UpstreamTls {
    Enabled(bool),
    Detailed(UpstreamTlsDetails),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamTlsDetails {
    pub(crate) ca_file: Option<String>,
    pub(crate) server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reload {
    #[serde(default)]
    pub(crate) watch: bool,
    pub(crate) interval: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    pub(crate) address: Option<String>,
    /// Required (as `Authorization: Bearer TOKEN`) by every admin request that changes
    /// something.
    pub(crate) token: Option<String>,
    /// Allows a non-loopback address without a token.
    #[serde(default)]
    pub(crate) insecure: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    pub(crate) max_header_bytes: Option<Scalar>,
    pub(crate) max_headers: Option<usize>,
    pub(crate) max_uri_bytes: Option<Scalar>,
    pub(crate) max_body_bytes: Option<Scalar>,
    pub(crate) header_read_timeout: Option<Scalar>,
    pub(crate) idle_timeout: Option<Scalar>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_ip: Option<u32>,
    /// `COUNT/PERIOD`, e.g. `20/s`.
    pub(crate) connection_rate_per_ip: Option<String>,
    pub(crate) connection_burst_per_ip: Option<u64>,
    pub(crate) h2_max_concurrent_streams: Option<u32>,
    pub(crate) h2_max_pending_reset_streams: Option<usize>,
    pub(crate) h2_max_local_reset_streams: Option<usize>,
    /// `reject`, `drop` or `allow`.
    pub(crate) headers_with_underscores: Option<String>,
    /// `reject` or `keep`.
    pub(crate) escaped_slashes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upstream {
    pub(crate) discovery: Discovery,
    /// `round_robin`, `random`, `least_request`, or `{ consistent_hash: { header: NAME } }`
    /// (or `cookie: NAME`, `claim: NAME`, `client_ip: true`).
    #[serde(default)]
    pub(crate) balance: Option<Value>,
    #[serde(default)]
    pub(crate) protocol: Option<String>,
    #[serde(default)]
    pub(crate) timeouts: Timeouts,
    #[serde(default)]
    pub(crate) pool: Pool,
    pub(crate) tls: Option<UpstreamTls>,
    pub(crate) retries: Option<Retries>,
    pub(crate) outlier: Option<Outlier>,
    pub(crate) health_check: Option<HealthCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheck {
    pub(crate) path: String,
    /// The Host header of checks (default: the endpoint's address).
    pub(crate) host: Option<String>,
    /// Passing statuses: `200`, `2xx` or `200-399` (default `200-399`).
    pub(crate) statuses: Option<Vec<Scalar>>,
    pub(crate) interval: Option<Scalar>,
    pub(crate) timeout: Option<Scalar>,
    /// Up to this much is added to each interval at random (default a tenth of it).
    pub(crate) jitter: Option<Scalar>,
    pub(crate) healthy_after: Option<u32>,
    pub(crate) unhealthy_after: Option<u32>,
    /// Percent of endpoints that must be healthy for unhealthy ones to be left out (default 50).
    pub(crate) panic_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retries {
    pub(crate) attempts: Option<u32>,
    /// `connect_error`, `reset`, `timeout` or a 5xx status.
    pub(crate) on: Option<Vec<Scalar>>,
    pub(crate) per_try_timeout: Option<Scalar>,
    pub(crate) backoff: Option<Backoff>,
    /// `20%` or `0.2`.
    pub(crate) budget: Option<Scalar>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) retry_buffer_bytes: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Backoff {
    pub(crate) base: Option<Scalar>,
    pub(crate) max: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Outlier {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) eject_for: Option<Scalar>,
    pub(crate) max_ejected_percent: Option<u32>,
}

/// Exactly one backend key must be set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Discovery {
    #[serde(rename = "static")]
    pub(crate) static_list: Option<Vec<StaticEndpoint>>,
    pub(crate) file: Option<FileDiscovery>,
    pub(crate) dns: Option<DnsDiscovery>,
    pub(crate) etcd: Option<EtcdDiscovery>,
    pub(crate) zookeeper: Option<ZooKeeperDiscovery>,
    /// With no successful read of the registry for this long, the upstream is reported
    /// degraded (it keeps its last endpoints).
    pub(crate) max_stale: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DnsDiscovery {
    pub(crate) name: String,
    /// Required for A and AAAA; SRV records carry the port.
    pub(crate) port: Option<u16>,
    /// `A` (default), `AAAA` or `SRV`.
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    /// The longest time between two lookups (default 30s).
    pub(crate) refresh: Option<Scalar>,
    /// The shortest time between two lookups, whatever the TTL (default 1s).
    pub(crate) min_ttl: Option<Scalar>,
    /// `IP` or `IP:PORT` (default port 53); default: the system's resolvers.
    pub(crate) nameservers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EtcdDiscovery {
    /// Client URLs, e.g. `http://10.0.0.1:2379`.
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    /// CA bundle for `https` endpoints (default: the system's roots).
    pub(crate) ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ZooKeeperDiscovery {
    /// `host:port` of the ensemble's members.
    pub(crate) servers: Vec<String>,
    /// The znode whose children are the instances.
    pub(crate) path: String,
    /// `curator` (default) or `address`.
    pub(crate) format: Option<String>,
    pub(crate) session_timeout: Option<Scalar>,
    pub(crate) auth: Option<ZooKeeperAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ZooKeeperAuth {
    /// `digest` (`user:password`).
    pub(crate) scheme: String,
    pub(crate) credentials: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDiscovery {
    pub(crate) path: String,
    /// `yaml` (default, also reads JSON) or `json`.
    pub(crate) format: Option<String>,
    /// How often the file is read again (default 1s).
    pub(crate) interval: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum StaticEndpoint {
    Address(String),
    Weighted(WeightedEndpoint),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightedEndpoint {
    pub(crate) address: String,
    pub(crate) weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Timeouts {
    pub(crate) connect: Option<Scalar>,
    pub(crate) response: Option<Scalar>,
    pub(crate) idle: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pool {
    pub(crate) max_idle_per_endpoint: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub(crate) name: String,
    #[serde(rename = "match", default)]
    pub(crate) matcher: Match,
    pub(crate) upstream: Option<Destination>,
    pub(crate) rewrite: Option<Rewrite>,
    pub(crate) respond: Option<Respond>,
    pub(crate) redirect: Option<Redirect>,
    pub(crate) fallback: Option<Fallback>,
    pub(crate) mirror: Option<Mirror>,
    #[serde(default)]
    pub(crate) filters: Vec<filter::FilterEntry>,
}

/// `mirror: { upstream: NAME, percent, max_body, max_in_flight, header, host_suffix }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mirror {
    pub(crate) upstream: String,
    pub(crate) percent: Option<f64>,
    pub(crate) max_body: Option<Scalar>,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) header: Option<String>,
    pub(crate) host_suffix: Option<String>,
}

/// `fallback: { respond: {...} | upstream: NAME, statuses: [503] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fallback {
    pub(crate) respond: Option<Respond>,
    pub(crate) upstream: Option<String>,
    #[serde(default)]
    pub(crate) statuses: Vec<u16>,
}

/// `upstream: NAME`, or `upstream: { split: [...], sticky: { cookie: NAME } }`.
#[derive(Debug)]
pub(crate) enum Destination {
    Name(String),
    Split(Split),
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = Destination;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an upstream's name or { split: [{ upstream: NAME, weight: N }, ...] }")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Destination, E> {
                Ok(Destination::Name(name.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Destination, A::Error> {
                let split = Split::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Destination::Split(split))
            }
        }
        deserializer.deserialize_any(Either)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Split {
    pub(crate) split: Vec<SplitTarget>,
    /// What keeps one user on one target: `{ header | cookie | claim: NAME }` or
    /// `{ client_ip: true }`, as for a consistent-hash balancer.
    pub(crate) sticky: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SplitTarget {
    pub(crate) upstream: String,
    pub(crate) weight: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Stores {
    pub(crate) redis: Option<RedisStore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisStore {
    pub(crate) url: String,
    pub(crate) timeout: Option<Scalar>,
    pub(crate) pool_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Match {
    pub(crate) host: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) path_prefix: Option<String>,
    pub(crate) path_regex: Option<String>,
    pub(crate) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) headers: Vec<FieldMatch>,
    #[serde(default)]
    pub(crate) cookies: Vec<FieldMatch>,
    #[serde(default)]
    pub(crate) query: Vec<FieldMatch>,
}

/// A header field, cookie or query parameter a route requires.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FieldMatch {
    pub(crate) name: String,
    /// Exact value. With neither `value` nor `regex`, the field only has to be present.
    pub(crate) value: Option<String>,
    pub(crate) regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rewrite {
    pub(crate) strip_prefix: Option<String>,
    pub(crate) replace_prefix: Option<String>,
    pub(crate) host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Respond {
    #[serde(default = "default_status")]
    pub(crate) status: u16,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) body: String,
}

fn default_status() -> u16 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redirect {
    pub(crate) status: Option<u16>,
    pub(crate) location: Option<String>,
    pub(crate) scheme: Option<String>,
}
