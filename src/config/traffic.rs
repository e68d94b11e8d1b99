//! Where a proxying route sends its requests (one upstream or a weighted split), where it
//! sends copies (a mirror), and what answers when they fail (a fixed response or another
//! upstream).

use super::issues::{size_field, unknown, Issues};
use super::raw;
use super::upstreams::hash_on;
use crate::snapshot::Respond;
use crate::upstream::{HashOn, Protocol, UpstreamSpec};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::collections::HashSet;

/// Where a proxying route sends its requests.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Destination {
    Upstream(String),
    /// Weighted, in config order; `sticky` keeps a key on one target while weights hold.
    Split {
        targets: Vec<(String, u32)>,
        sticky: Option<HashOn>,
    },
}

/// `upstream: NAME` or `upstream: { split: [{ upstream, weight }, ...], sticky }`.
impl Destination {
    /// Every upstream it may send to.
    pub(crate) fn upstreams(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Destination::Upstream(name) => (Some(name.as_str()), &[][..]),
            Destination::Split { targets, .. } => (None, targets.as_slice()),
        };
        one.into_iter()
            .chain(many.iter().map(|(name, _)| name.as_str()))
    }
}

pub(super) fn compile_destination(
    raw: &raw::Destination,
    route: &str,
    upstreams: &[&str],
    path: &str,
    issues: &mut Issues,
) -> Destination {
    let upath = format!("{path}.upstream");
    let check = |name: &str, at: &str, issues: &mut Issues| {
        if !upstreams.contains(&name) {
            let unknown = unknown("upstream", name, upstreams.iter().copied());
            issues.add(at, format!("route {route:?} names {unknown}"));
        }
    };
    let raw = match raw {
        raw::Destination::Name(name) => {
            check(name, &upath, issues);
            return Destination::Upstream(name.clone());
        }
        raw::Destination::Split(split) => split,
    };
    if raw.split.is_empty() {
        issues.add(&format!("{upath}.split"), "must list at least one upstream");
    }
    let mut seen = HashSet::new();
    for (i, target) in raw.split.iter().enumerate() {
        let at = format!("{upath}.split[{i}].upstream");
        check(&target.upstream, &at, issues);
        if !seen.insert(target.upstream.as_str()) {
            issues.add(
                &at,
                format!("upstream {:?} is listed twice", target.upstream),
            );
        }
    }
    let total: u64 = raw.split.iter().map(|t| u64::from(t.weight)).sum();
    if total == 0 && !raw.split.is_empty() {
        issues.add(
            &format!("{upath}.split"),
            "weights sum to 0: at least one upstream needs a weight above 0",
        );
    }
    let sticky = raw.sticky.as_ref().and_then(|value| {
        let on = hash_on(value);
        if on.is_none() {
            issues.add(
                &format!("{upath}.sticky"),
                "expected { header: NAME }, { cookie: NAME }, { claim: NAME } or { client_ip: true }",
            );
        }
        on
    });
    Destination::Split {
        targets: raw
            .split
            .iter()
            .map(|t| (t.upstream.clone(), t.weight))
            .collect(),
        sticky,
    }
}

/// What answers a proxying route's request when its upstream fails.
#[derive(Debug, Clone)]
pub(crate) struct FallbackSpec {
    pub(crate) answer: FallbackAnswer,
    /// Upstream statuses that count as failures too; connection errors, timeouts, an open
    /// breaker and no endpoint always do.
    pub(crate) statuses: Vec<u16>,
}

#[derive(Debug, Clone)]
pub(crate) enum FallbackAnswer {
    Respond(Respond),
    Upstream(String),
}

pub(super) fn compile_fallback(
    raw: &raw::Fallback,
    destination: &Destination,
    upstreams: &[UpstreamSpec],
    path: &str,
    issues: &mut Issues,
) -> Option<FallbackSpec> {
    for (i, status) in raw.statuses.iter().enumerate() {
        if !(500..=599).contains(status) {
            issues.add(
                &format!("{path}.statuses[{i}]"),
                format!("invalid status {status}: expected 500-599"),
            );
        }
    }
    let answer = match (&raw.respond, &raw.upstream) {
        (Some(respond), None) => {
            FallbackAnswer::Respond(compile_respond(respond, &format!("{path}.respond"), issues))
        }
        (None, Some(name)) => {
            let at = format!("{path}.upstream");
            other_upstream(name, "a fallback", destination, upstreams, &at, issues);
            FallbackAnswer::Upstream(name.clone())
        }
        _ => {
            issues.add(path, "needs exactly one of respond or upstream");
            return None;
        }
    };
    Some(FallbackSpec {
        answer,
        statuses: raw.statuses.clone(),
    })
}

/// Requests copied to another upstream whose answers are dropped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MirrorSpec {
    pub(crate) upstream: String,
    /// The share of requests copied, 0 to 1.
    pub(crate) fraction: f64,
    /// Larger bodies are not copied, and neither are their requests.
    pub(crate) max_body: u64,
    pub(crate) max_in_flight: usize,
    /// Set to `1` on every copy.
    pub(crate) header: HeaderName,
    /// Appended to the copy's host name (`api.example.com-shadow`), as Envoy does.
    pub(crate) host_suffix: Option<String>,
}

pub(crate) const DEFAULT_MIRROR_PERCENT: f64 = 100.0;
pub(crate) const DEFAULT_MIRROR_MAX_BODY: u64 = 64 << 10;
pub(crate) const DEFAULT_MIRROR_MAX_IN_FLIGHT: usize = 100;
pub(crate) const DEFAULT_MIRROR_HEADER: &str = "x-mirrored";

pub(super) fn compile_mirror(
    raw: &raw::Mirror,
    destination: &Destination,
    upstreams: &[UpstreamSpec],
    path: &str,
    issues: &mut Issues,
) -> MirrorSpec {
    let at = format!("{path}.upstream");
    let name = &raw.upstream;
    let upstream = other_upstream(name, "a mirror", destination, upstreams, &at, issues);
    if upstream.is_some_and(|u| u.protocol != Protocol::Http1) {
        issues.add(
            &at,
            format!("upstream {name:?} speaks HTTP/2: copies are sent over HTTP/1.1"),
        );
    }
    let percent = raw.percent.unwrap_or(DEFAULT_MIRROR_PERCENT);
    if !(0.0..=100.0).contains(&percent) {
        issues.add(
            &format!("{path}.percent"),
            format!("{percent} is not a percentage: expected 0 to 100"),
        );
    }
    let max_in_flight = raw.max_in_flight.unwrap_or(DEFAULT_MIRROR_MAX_IN_FLIGHT);
    if max_in_flight == 0 {
        issues.add(&format!("{path}.max_in_flight"), "must be at least 1");
    }
    let header_name = raw.header.as_deref().unwrap_or(DEFAULT_MIRROR_HEADER);
    let header = HeaderName::from_bytes(header_name.as_bytes()).unwrap_or_else(|_| {
        issues.add(
            &format!("{path}.header"),
            format!("invalid header name {header_name:?}"),
        );
        HeaderName::from_static(DEFAULT_MIRROR_HEADER)
    });
    let host_suffix = raw.host_suffix.clone().filter(|suffix| {
        let valid = !suffix.is_empty()
            && suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            issues.add(
                &format!("{path}.host_suffix"),
                format!("invalid host suffix {suffix:?}: letters, digits, '-' and '.' only"),
            );
        }
        valid
    });
    MirrorSpec {
        upstream: name.clone(),
        fraction: percent.clamp(0.0, 100.0) / 100.0,
        max_body: size_field(
            raw.max_body.clone(),
            DEFAULT_MIRROR_MAX_BODY,
            0,
            &format!("{path}.max_body"),
            issues,
        ),
        max_in_flight,
        header,
        host_suffix,
    }
}

/// The upstream `name` that `what` (a mirror, a fallback) sends to: known, and not one the
/// route sends to already.
fn other_upstream<'u>(
    name: &str,
    what: &str,
    destination: &Destination,
    upstreams: &'u [UpstreamSpec],
    at: &str,
    issues: &mut Issues,
) -> Option<&'u UpstreamSpec> {
    let Some(upstream) = upstreams.iter().find(|u| u.name == name) else {
        let known = upstreams.iter().map(|u| u.name.as_str());
        issues.add(at, format!("names {}", unknown("upstream", name, known)));
        return None;
    };
    if destination.upstreams().any(|primary| primary == name) {
        issues.add(
            at,
            format!("upstream {name:?} is the route's own: {what} must be another"),
        );
        return None;
    }
    Some(upstream)
}

/// A fixed answer: `{ status, headers, body }`.
pub(super) fn compile_respond(respond: &raw::Respond, path: &str, issues: &mut Issues) -> Respond {
    let status = match StatusCode::from_u16(respond.status) {
        Ok(status) if status.as_u16() >= 200 => status,
        _ => {
            issues.add(
                &format!("{path}.status"),
                format!("invalid status {}: expected 200-599", respond.status),
            );
            StatusCode::OK
        }
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &respond.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => issues.add(
                &format!("{path}.headers.{name}"),
                "invalid header name or value",
            ),
        }
    }
    Respond {
        status,
        headers,
        body: Bytes::from(respond.body.clone()),
    }
}
