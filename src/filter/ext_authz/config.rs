//! The `ext_authz` filter's config: its YAML mirror and validation into an [`ExtAuthzSpec`].

use super::{CacheSpec, ExtAuthzSpec, OnError};
use crate::config::issues::{duration_field, one_of, size_field, unknown, Issues};
use crate::config::values::Scalar;
use crate::filter::Refs;
use crate::upstream::Protocol;
use http::HeaderName;
use serde::Deserialize;
use std::time::Duration;

/// The service's answer must come within this unless the filter says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_PATH: &str = "/";
/// What identifies a client to most authorization services.
const DEFAULT_REQUEST_HEADERS: [&str; 2] = ["authorization", "cookie"];
const DEFAULT_CACHE_ENTRIES: usize = 10_000;
/// Headers a service may never set on the upstream request: they frame or route it.
const FORBIDDEN_UPSTREAM_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtAuthzConfig {
    pub(crate) upstream: String,
    pub(crate) path: Option<String>,
    pub(crate) request_headers: Option<Vec<String>>,
    pub(crate) upstream_headers: Option<Vec<String>>,
    pub(crate) timeout: Option<Scalar>,
    /// Send the request body, up to this size, with the check.
    pub(crate) max_body: Option<Scalar>,
    /// `deny` (default) or `allow`.
    pub(crate) on_error: Option<String>,
    pub(crate) cache: Option<DecisionCache>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionCache {
    pub(crate) ttl: Scalar,
    pub(crate) key: Option<Vec<String>>,
    pub(crate) max_entries: Option<usize>,
}

pub(crate) fn compile(
    raw: ExtAuthzConfig,
    path: &str,
    refs: &Refs,
    issues: &mut Issues,
) -> Option<ExtAuthzSpec> {
    let before = issues.list.len();
    match refs.upstreams.iter().find(|u| u.name == raw.upstream) {
        None => issues.add(
            &format!("{path}.upstream"),
            unknown("upstream", &raw.upstream, refs.upstreams.iter().map(|u| u.name.as_str())),
        ),
        Some(upstream) if upstream.protocol != Protocol::Http1 => issues.add(
            &format!("{path}.upstream"),
            "the authorization service must speak HTTP/1.1 (protocol: http1)",
        ),
        Some(_) => {}
    }
    let check_path = raw.path.unwrap_or_else(|| DEFAULT_PATH.to_string());
    if !check_path.starts_with('/') || http::uri::PathAndQuery::try_from(check_path.as_str()).is_err() {
        issues.add(
            &format!("{path}.path"),
            format!("{check_path:?} is not a path: it must start with / and be a valid request target"),
        );
    }
    let request_headers = match raw.request_headers {
        Some(names) => header_names(&names, &format!("{path}.request_headers"), issues),
        None => DEFAULT_REQUEST_HEADERS.map(HeaderName::from_static).to_vec(),
    };
    let upstream_headers = header_names(
        &raw.upstream_headers.unwrap_or_default(),
        &format!("{path}.upstream_headers"),
        issues,
    );
    for (i, name) in upstream_headers.iter().enumerate() {
        if FORBIDDEN_UPSTREAM_HEADERS.contains(&name.as_str()) {
            issues.add(
                &format!("{path}.upstream_headers[{i}]"),
                format!("{name} frames or routes the request: the service may not set it"),
            );
        }
    }
    let timeout = duration_field(raw.timeout, DEFAULT_TIMEOUT, &format!("{path}.timeout"), issues);
    let max_body = raw
        .max_body
        .map(|size| size_field(Some(size), 0, 1, &format!("{path}.max_body"), issues));
    let on_error = one_of(
        raw.on_error.as_deref(),
        "value",
        &[("deny", OnError::Deny), ("allow", OnError::Allow)],
        OnError::Deny,
        &format!("{path}.on_error"),
        issues,
    );
    let cache = raw.cache.map(|cache| {
        let cpath = format!("{path}.cache");
        let ttl = duration_field(Some(cache.ttl), Duration::ZERO, &format!("{cpath}.ttl"), issues);
        let key = match cache.key {
            Some(names) => header_names(&names, &format!("{cpath}.key"), issues),
            None => DEFAULT_REQUEST_HEADERS.map(HeaderName::from_static).to_vec(),
        };
        if key.is_empty() {
            issues.add(&format!("{cpath}.key"), "needs at least one header: decisions are kept per client");
        }
        let max_entries = cache.max_entries.unwrap_or(DEFAULT_CACHE_ENTRIES);
        if max_entries == 0 {
            issues.add(&format!("{cpath}.max_entries"), "must be at least 1");
        }
        CacheSpec { ttl, key, max_entries }
    });
    (issues.list.len() == before).then_some(ExtAuthzSpec {
        upstream: raw.upstream,
        path: check_path,
        request_headers,
        upstream_headers,
        timeout,
        max_body,
        on_error,
        cache,
    })
}

fn header_names(names: &[String], path: &str, issues: &mut Issues) -> Vec<HeaderName> {
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => out.push(name),
            Err(_) => issues.add(&format!("{path}[{i}]"), format!("invalid header name {name:?}")),
        }
    }
    out
}
