//! Serde structs that mirror `gateway.yaml` one to one. No logic lives here: parsing of
//! durations, sizes and addresses, cross-references and defaults belong to `compile.rs`.
//!
//! Sections that hold many items (`listeners`, `upstreams`, `routes`) are first read as raw YAML
//! values so that each item is deserialised on its own: one bad route does not hide the errors
//! of the next one.

use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

pub use super::values::{OneOrMany, Scalar};
use crate::filter;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Top {
    /// Worker threads, one single-threaded runtime each. Default: the number of cores.
    pub workers: Option<usize>,
    #[serde(default)]
    pub listeners: Vec<Value>,
    pub admin: Option<Admin>,
    pub reload: Option<Reload>,
    /// One log line per request; default on.
    pub access_log: Option<bool>,
    /// How long in-flight requests may take to finish on SIGTERM.
    pub shutdown_grace: Option<Scalar>,
    #[serde(default)]
    pub limits: Option<Value>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub upstreams: Mapping,
    #[serde(default)]
    pub jwt_providers: Mapping,
    /// External state shared by replicas.
    pub stores: Option<Value>,
    /// Named filters, used by routes as `- use: NAME`.
    #[serde(default)]
    pub filters: Mapping,
    #[serde(default)]
    pub routes: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub address: String,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub certificates: Vec<CertificateFiles>,
    pub client_ca_file: Option<String>,
    /// `required` (default with a client CA) or `optional`.
    pub client_auth: Option<String>,
    /// `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert_file: String,
    pub key_file: String,
}

/// `tls: true`, or the details.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum UpstreamTls {
    Enabled(bool),
    Detailed(UpstreamTlsDetails),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsDetails {
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    #[serde(default)]
    pub watch: bool,
    pub interval: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: Option<String>,
    /// Required (as `Authorization: Bearer TOKEN`) by every admin request that changes
    /// something.
    pub token: Option<String>,
    /// Allows a non-loopback address without a token.
    #[serde(default)]
    pub insecure: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_header_bytes: Option<Scalar>,
    pub max_headers: Option<usize>,
    pub max_uri_bytes: Option<Scalar>,
    pub max_body_bytes: Option<Scalar>,
    pub header_read_timeout: Option<Scalar>,
    pub idle_timeout: Option<Scalar>,
    pub max_connections: Option<usize>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_max_pending_reset_streams: Option<usize>,
    pub h2_max_local_reset_streams: Option<usize>,
    /// `reject`, `drop` or `allow`.
    pub headers_with_underscores: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub discovery: Discovery,
    /// `round_robin`, `random`, `least_request`, or `{ consistent_hash: { header: NAME } }`
    /// (or `cookie: NAME`, `claim: NAME`, `client_ip: true`).
    #[serde(default)]
    pub balance: Option<Value>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub pool: Pool,
    pub tls: Option<UpstreamTls>,
    pub retries: Option<Retries>,
    pub outlier: Option<Outlier>,
    pub health_check: Option<HealthCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    /// The Host header of checks (default: the endpoint's address).
    pub host: Option<String>,
    /// Passing statuses: `200`, `2xx` or `200-399` (default `200-399`).
    pub statuses: Option<Vec<Scalar>>,
    pub interval: Option<Scalar>,
    pub timeout: Option<Scalar>,
    /// Up to this much is added to each interval at random (default a tenth of it).
    pub jitter: Option<Scalar>,
    pub healthy_after: Option<u32>,
    pub unhealthy_after: Option<u32>,
    /// Percent of endpoints that must be healthy for unhealthy ones to be left out (default 50).
    pub panic_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    pub attempts: Option<u32>,
    /// `connect_error`, `reset`, `timeout` or a 5xx status.
    pub on: Option<Vec<Scalar>>,
    pub per_try_timeout: Option<Scalar>,
    pub backoff: Option<Backoff>,
    /// `20%` or `0.2`.
    pub budget: Option<Scalar>,
    pub methods: Option<Vec<String>>,
    pub retry_buffer_bytes: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub base: Option<Scalar>,
    pub max: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    pub consecutive_failures: Option<u32>,
    pub eject_for: Option<Scalar>,
    pub max_ejected_percent: Option<u32>,
}

/// Exactly one backend key must be set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    #[serde(rename = "static")]
    pub static_list: Option<Vec<StaticEndpoint>>,
    pub file: Option<FileDiscovery>,
    pub dns: Option<DnsDiscovery>,
    pub etcd: Option<EtcdDiscovery>,
    /// With no successful read of the registry for this long, the upstream is reported
    /// degraded (it keeps its last endpoints).
    pub max_stale: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscovery {
    pub name: String,
    /// Required for A and AAAA; SRV records carry the port.
    pub port: Option<u16>,
    /// `A` (default), `AAAA` or `SRV`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The longest time between two lookups (default 30s).
    pub refresh: Option<Scalar>,
    /// The shortest time between two lookups, whatever the TTL (default 1s).
    pub min_ttl: Option<Scalar>,
    /// `IP` or `IP:PORT` (default port 53); default: the system's resolvers.
    pub nameservers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdDiscovery {
    /// Client URLs, e.g. `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA bundle for `https` endpoints (default: the system's roots).
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDiscovery {
    pub path: String,
    /// `yaml` (default, also reads JSON) or `json`.
    pub format: Option<String>,
    /// How often the file is read again (default 1s).
    pub interval: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StaticEndpoint {
    Address(String),
    Weighted(WeightedEndpoint),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedEndpoint {
    pub address: String,
    pub weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub connect: Option<Scalar>,
    pub response: Option<Scalar>,
    pub idle: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub max_idle_per_endpoint: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: Match,
    pub upstream: Option<String>,
    pub rewrite: Option<Rewrite>,
    pub respond: Option<Respond>,
    pub redirect: Option<Redirect>,
    #[serde(default)]
    pub filters: Vec<filter::FilterEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stores {
    pub redis: Option<RedisStore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisStore {
    pub url: String,
    pub timeout: Option<Scalar>,
    pub pool_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    /// Exact value. With neither `value` nor `regex`, the header only has to be present.
    pub value: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    pub strip_prefix: Option<String>,
    pub replace_prefix: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

fn default_status() -> u16 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub status: Option<u16>,
    pub location: Option<String>,
    pub scheme: Option<String>,
}
