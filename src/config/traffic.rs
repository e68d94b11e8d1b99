//! Where a proxying route sends its requests (one upstream or a weighted split) and what
//! answers when they fail (a fixed response or another upstream).

use super::issues::{unknown, Issues};
use super::raw;
use super::upstreams::hash_on;
use crate::snapshot::Respond;
use crate::upstream::HashOn;
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
    upstreams: &[&str],
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
            if !upstreams.contains(&name.as_str()) {
                let unknown = unknown("upstream", name, upstreams.iter().copied());
                issues.add(&at, format!("names {unknown}"));
            } else if destination.upstreams().any(|primary| primary == name) {
                issues.add(
                    &at,
                    format!("upstream {name:?} is the route's own: a fallback must be another"),
                );
            }
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
