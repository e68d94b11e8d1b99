//! The config parser and validator: from any bytes (`config`), and from YAML documents made
//! of the schema's own keys and typical values (`config_yaml`), which get past the YAML
//! syntax to the validation of each section. Oracles: no panic, and every problem reported
//! names its key path.

use crate::config::{parse_in, ConfigError};
use arbitrary::{Arbitrary, Unstructured};
use serde_yaml::{Mapping, Value};
use std::path::Path;

/// Relative files named by a config are looked for here: nowhere.
const NO_FOLDER: &str = "/nonexistent/portcullis-fuzz";

pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
}

pub fn config_yaml(data: &[u8]) {
    let Ok(document) = Document::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut top = match document.on_base {
        true => base(),
        false => Mapping::new(),
    };
    for (key, node) in document.sections {
        top.insert(
            Value::from(SECTIONS[usize::from(key) % SECTIONS.len()]),
            node.value(0),
        );
    }
    if let Ok(text) = serde_yaml::to_string(&Value::Mapping(top)) {
        check(&text);
    }
}

fn check(text: &str) {
    if let Err(ConfigError::Invalid(issues)) =
        parse_in(text, "gateway.yaml", &|_| None, Path::new(NO_FOLDER))
    {
        assert!(!issues.is_empty(), "invalid without an issue");
        for issue in issues {
            assert!(!issue.path.is_empty(), "no key path: {issue}\n{text}");
            assert!(!issue.message.is_empty(), "no message at {}", issue.path);
        }
    }
}

/// A gateway file: top-level sections, each a tree of the schema's keys; `on_base` lays them
/// over a valid minimal file, so that one section's mistakes are checked in a file that is
/// otherwise right.
#[derive(Debug, Arbitrary)]
struct Document {
    on_base: bool,
    sections: Vec<(u8, Node)>,
}

#[derive(Debug, Arbitrary)]
enum Node {
    Word(u8),
    Text(String),
    Number(i64),
    Flag(bool),
    List(Vec<Node>),
    Map(Vec<(u8, Node)>),
}

/// Deeper than any section of the schema.
const MAX_DEPTH: usize = 8;

impl Node {
    fn value(&self, depth: usize) -> Value {
        match self {
            Node::Word(i) => Value::from(WORDS[usize::from(*i) % WORDS.len()]),
            Node::Text(text) => Value::from(text.as_str()),
            Node::Number(n) => Value::from(*n),
            Node::Flag(b) => Value::from(*b),
            _ if depth >= MAX_DEPTH => Value::Null,
            Node::List(items) => {
                Value::Sequence(items.iter().map(|n| n.value(depth + 1)).collect())
            }
            Node::Map(entries) => Value::Mapping(
                entries
                    .iter()
                    .map(|(k, n)| {
                        (
                            Value::from(KEYS[usize::from(*k) % KEYS.len()]),
                            n.value(depth + 1),
                        )
                    })
                    .collect(),
            ),
        }
    }
}

fn base() -> Mapping {
    serde_yaml::from_str(
        "listeners: [{ name: http, address: 127.0.0.1:8080 }]\n\
         upstreams: { app: { discovery: { static: [127.0.0.1:9000] } } }\n\
         routes: [{ name: all, upstream: app }]\n",
    )
    .unwrap_or_default()
}

const SECTIONS: &[&str] = &[
    "listeners",
    "upstreams",
    "routes",
    "filters",
    "jwt_providers",
    "limits",
    "admin",
    "reload",
    "tracing",
    "stores",
    "trusted_proxies",
    "access_log",
    "workers",
    "shutdown_grace",
];

/// The schema's keys (and the filter kinds, which are keys too).
const KEYS: &[&str] = &[
    "name",
    "address",
    "tls",
    "certificates",
    "cert_file",
    "key_file",
    "server_name",
    "protocol",
    "client_auth",
    "client_ca_file",
    "min_version",
    "discovery",
    "static",
    "file",
    "dns",
    "etcd",
    "zookeeper",
    "endpoints",
    "balance",
    "health_check",
    "outlier",
    "retries",
    "pool",
    "timeouts",
    "connect",
    "request",
    "idle",
    "path",
    "interval",
    "timeout",
    "healthy_after",
    "unhealthy_after",
    "consecutive_failures",
    "eject_for",
    "max_ejected_percent",
    "attempts",
    "on",
    "per_try_timeout",
    "budget",
    "backoff",
    "match",
    "host",
    "host_suffix",
    "path_prefix",
    "path_regex",
    "methods",
    "headers",
    "query",
    "cookies",
    "upstream",
    "split",
    "sticky",
    "weight",
    "mirror",
    "percent",
    "fallback",
    "respond",
    "status",
    "body",
    "redirect",
    "location",
    "scheme",
    "rewrite",
    "strip_prefix",
    "replace_prefix",
    "filters",
    "use",
    "rate_limit",
    "rate",
    "burst",
    "key",
    "store",
    "circuit_breaker",
    "failure_ratio",
    "min_requests",
    "open_for",
    "half_open_requests",
    "cache",
    "ttl",
    "ttl_override",
    "max_entries",
    "max_object_size",
    "cache_authorized",
    "cors",
    "allow_origins",
    "allow_methods",
    "allow_headers",
    "allow_credentials",
    "max_age",
    "jwt",
    "provider",
    "providers",
    "issuer",
    "audiences",
    "algorithms",
    "secret",
    "public_key_file",
    "jwks_url",
    "require_claims",
    "require_scopes",
    "forward_claims",
    "ip_filter",
    "allow",
    "deny",
    "ext_authz",
    "compress",
    "gzip",
    "br",
    "zstd",
    "request_headers",
    "response_headers",
    "set",
    "add",
    "remove",
    "max_header_bytes",
    "max_headers",
    "max_uri_bytes",
    "max_body_bytes",
    "header_read_timeout",
    "idle_timeout",
    "max_connections",
    "max_connections_per_ip",
    "connection_rate_per_ip",
    "headers_with_underscores",
    "otlp",
    "endpoint",
    "sample",
    "service_name",
    "redis",
    "url",
    "prefix",
    "watch",
    "format",
    "refresh",
    "nameservers",
    "type",
    "port",
    "value",
    "regex",
    "leeway",
    "max_lifetime",
    "sources",
    "cookie",
    "stale_while_revalidate",
    "stale_if_error",
    "queue",
];

/// Values of the kinds the schema takes: durations, sizes, rates, addresses, URLs, patterns.
const WORDS: &[&str] = &[
    "10s",
    "1h",
    "500ms",
    "0s",
    "-1s",
    "1.5s",
    "1MiB",
    "64KiB",
    "0",
    "100/s",
    "10/min",
    "0/s",
    "127.0.0.1:9000",
    "[::1]:443",
    "localhost:80",
    "0.0.0.0:8080",
    "host:99999",
    ":8080",
    "http://127.0.0.1:2379",
    "https://idp.example/jwks",
    "redis://127.0.0.1:6379",
    "/api/",
    "/",
    "",
    "^/v[0-9]+/",
    "(",
    "GET",
    "POST",
    "get",
    "HS256",
    "RS256",
    "none",
    "round_robin",
    "least_request",
    "random",
    "header:x-user",
    "cookie:id",
    "ip",
    "all",
    "reject",
    "drop",
    "allow",
    "http",
    "https",
    "h2",
    "10.0.0.0/8",
    "::/0",
    "1.2.3.4/33",
    "${UNSET}",
    "api",
    "app",
    "missing",
    "5xx",
    "503",
    "200",
    "1.0",
    "2.5",
    "yaml",
    "json",
];
