//! An upstream's balancing and resilience settings in the config: `balance:`, `retries:`,
//! `outlier:` and `health_check:`.

use super::discovery::compile_discovery;
use super::issues::Issues;
use super::issues::{
    duration_field, methods, named_entries, one_of, optional_duration, size_field,
};
use super::raw;
use super::values::parse_duration;
use crate::upstream::{
    HashOn, HealthSpec, OutlierSpec, Protocol, RetryOn, RetryPolicy, Strategy, Timeouts,
    UpstreamSpec,
};
use std::time::Duration;

// What an upstream gets for each setting it leaves out.
/// Tries per request, the first included: no retries unless asked for.
const DEFAULT_ATTEMPTS: u32 = 1;
/// Failures worth another try on another endpoint.
const DEFAULT_RETRY_ON: [&str; 5] = ["connect_error", "reset", "502", "503", "504"];
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// A request body up to this size is kept so that it can be sent again.
const DEFAULT_RETRY_BUFFER_BYTES: u64 = 64 << 10;
const DEFAULT_OUTLIER_CONSECUTIVE_FAILURES: u32 = 5;
const DEFAULT_EJECT_FOR: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_HEALTHY_AFTER: u32 = 2;
const DEFAULT_UNHEALTHY_AFTER: u32 = 3;
/// Below this share of healthy endpoints (percent), every endpoint takes traffic again.
const DEFAULT_PANIC_THRESHOLD: u32 = 50;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_IDLE_PER_ENDPOINT: usize = 128;

pub(super) fn compile_retries(
    raw: raw::Retries,
    path: &str,
    issues: &mut Issues,
) -> Option<RetryPolicy> {
    let before = issues.list.len();
    let texts: Vec<String> = match raw.on {
        Some(items) => items.into_iter().map(|raw::Scalar(text)| text).collect(),
        None => DEFAULT_RETRY_ON.map(str::to_string).to_vec(),
    };
    let mut on = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match RetryOn::parse(text) {
            Some(condition) => on.push(condition),
            None => issues.add(
                &format!("{path}.on[{i}]"),
                format!("unknown condition {text:?}: expected connect_error, reset, timeout or a 5xx status"),
            ),
        }
    }
    let per_try_timeout = optional_duration(
        raw.per_try_timeout,
        &format!("{path}.per_try_timeout"),
        issues,
    );
    let backoff = raw.backoff.unwrap_or(raw::Backoff {
        base: None,
        max: None,
    });
    let backoff_base = duration_field(
        backoff.base,
        DEFAULT_BACKOFF_BASE,
        &format!("{path}.backoff.base"),
        issues,
    );
    let backoff_max = duration_field(
        backoff.max,
        DEFAULT_BACKOFF_MAX,
        &format!("{path}.backoff.max"),
        issues,
    );
    if backoff_max < backoff_base {
        issues.add(
            &format!("{path}.backoff.max"),
            "must not be shorter than backoff.base",
        );
    }
    let budget = match raw.budget {
        None => 0.2,
        Some(raw::Scalar(text)) => {
            let parsed = match text.trim().strip_suffix('%') {
                Some(percent) => percent.trim().parse::<f64>().ok().map(|p| p / 100.0),
                None => text.trim().parse::<f64>().ok(),
            };
            match parsed.filter(|b| *b > 0.0 && *b <= 1.0) {
                Some(budget) => budget,
                None => {
                    issues.add(
                        &format!("{path}.budget"),
                        format!("invalid budget {text:?}: expected a share such as 20% or 0.2"),
                    );
                    0.2
                }
            }
        }
    };
    let methods = match raw.methods {
        None => RetryPolicy::idempotent_methods(),
        Some(names) => methods(&names, &format!("{path}.methods"), issues),
    };
    let buffer_bytes = size_field(
        raw.retry_buffer_bytes,
        DEFAULT_RETRY_BUFFER_BYTES,
        0,
        &format!("{path}.retry_buffer_bytes"),
        issues,
    );
    (issues.list.len() == before).then(|| RetryPolicy {
        attempts: raw.attempts.unwrap_or(DEFAULT_ATTEMPTS),
        on,
        per_try_timeout,
        backoff_base,
        backoff_max,
        budget,
        methods,
        buffer_bytes,
    })
}

pub(super) fn compile_outlier(
    raw: raw::Outlier,
    path: &str,
    issues: &mut Issues,
) -> Option<OutlierSpec> {
    let before = issues.list.len();
    if raw.consecutive_failures == Some(0) {
        issues.add(
            &format!("{path}.consecutive_failures"),
            "must be at least 1",
        );
    }
    let percent = raw
        .max_ejected_percent
        .unwrap_or(DEFAULT_MAX_EJECTED_PERCENT);
    if percent > 100 {
        issues.add(
            &format!("{path}.max_ejected_percent"),
            "must be at most 100",
        );
    }
    let eject_for = duration_field(
        raw.eject_for,
        DEFAULT_EJECT_FOR,
        &format!("{path}.eject_for"),
        issues,
    );
    (issues.list.len() == before).then(|| OutlierSpec {
        consecutive_failures: raw
            .consecutive_failures
            .unwrap_or(DEFAULT_OUTLIER_CONSECUTIVE_FAILURES),
        eject_for,
        max_ejected_percent: percent,
    })
}

pub(super) fn compile_health(
    raw: raw::HealthCheck,
    path: &str,
    issues: &mut Issues,
) -> Option<HealthSpec> {
    let before = issues.list.len();
    let check_path = match raw.path.parse::<http::uri::PathAndQuery>() {
        Ok(p) if raw.path.starts_with('/') => p,
        _ => {
            issues.add(&format!("{path}.path"), "must be a path starting with /");
            http::uri::PathAndQuery::from_static("/")
        }
    };
    let host = raw.host.as_deref().and_then(|h| {
        http::HeaderValue::from_str(h)
            .map_err(|_| issues.add(&format!("{path}.host"), "not a valid Host value"))
            .ok()
    });
    let texts: Vec<String> = match raw.statuses {
        Some(items) => items.into_iter().map(|raw::Scalar(text)| text).collect(),
        None => vec!["200-399".to_string()],
    };
    let mut statuses = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match parse_status_range(text) {
            Some(range) => statuses.push(range),
            None => issues.add(
                &format!("{path}.statuses[{i}]"),
                format!("invalid status {text:?}: expected e.g. 200, 2xx or 200-399"),
            ),
        }
    }
    let interval = duration_field(
        raw.interval,
        DEFAULT_HEALTH_INTERVAL,
        &format!("{path}.interval"),
        issues,
    );
    let timeout = duration_field(
        raw.timeout,
        DEFAULT_HEALTH_TIMEOUT,
        &format!("{path}.timeout"),
        issues,
    );
    if timeout > interval {
        issues.add(
            &format!("{path}.timeout"),
            "must not be longer than interval",
        );
    }
    let jitter = match raw.jitter {
        Some(raw::Scalar(text)) if parse_duration(&text) == Ok(Duration::ZERO) => Duration::ZERO,
        value => duration_field(value, interval / 10, &format!("{path}.jitter"), issues),
    };
    for (key, value) in [
        ("healthy_after", raw.healthy_after),
        ("unhealthy_after", raw.unhealthy_after),
    ] {
        if value == Some(0) {
            issues.add(&format!("{path}.{key}"), "must be at least 1");
        }
    }
    let panic_threshold = raw.panic_threshold.unwrap_or(DEFAULT_PANIC_THRESHOLD);
    if panic_threshold > 100 {
        issues.add(
            &format!("{path}.panic_threshold"),
            "must be at most 100 (percent)",
        );
    }
    (issues.list.len() == before).then(|| HealthSpec {
        path: check_path,
        host,
        statuses,
        interval,
        timeout,
        jitter,
        healthy_after: raw.healthy_after.unwrap_or(DEFAULT_HEALTHY_AFTER),
        unhealthy_after: raw.unhealthy_after.unwrap_or(DEFAULT_UNHEALTHY_AFTER),
        panic_threshold,
    })
}

/// `200`, `2xx` or `200-399`, as an inclusive range.
fn parse_status_range(text: &str) -> Option<(u16, u16)> {
    let valid = |code: u16| (100..=599).contains(&code).then_some(code);
    if let Some(class) = text.strip_suffix("xx") {
        let class: u16 = class.parse().ok()?;
        return Some((valid(class * 100)?, class * 100 + 99));
    }
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high) = (
        valid(low.trim().parse().ok()?)?,
        valid(high.trim().parse().ok()?)?,
    );
    (low <= high).then_some((low, high))
}

pub(super) fn compile_balance(
    raw: Option<serde_yaml::Value>,
    path: &str,
    issues: &mut Issues,
) -> Strategy {
    use serde_yaml::Value;
    let expected = "expected round_robin, random, least_request or { consistent_hash: { header: NAME } } (or cookie: NAME, claim: NAME, client_ip: true)";
    match raw {
        None => Strategy::RoundRobin,
        Some(Value::String(name)) => match name.as_str() {
            "round_robin" => Strategy::RoundRobin,
            "random" => Strategy::Random,
            "least_request" => Strategy::LeastRequest,
            other => {
                issues.add(path, format!("unknown balancer {other:?}: {expected}"));
                Strategy::RoundRobin
            }
        },
        Some(Value::Mapping(map)) => {
            let hash_on = map
                .get("consistent_hash")
                .filter(|_| map.len() == 1)
                .and_then(hash_on);
            match hash_on {
                Some(on) => Strategy::ConsistentHash(on),
                None => {
                    issues.add(path, format!("invalid balancer: {expected}"));
                    Strategy::RoundRobin
                }
            }
        }
        Some(_) => {
            issues.add(path, format!("invalid balancer: {expected}"));
            Strategy::RoundRobin
        }
    }
}

/// A request key: `{ header: NAME }`, `{ cookie: NAME }`, `{ claim: NAME }` or
/// `{ client_ip: true }`, for consistent hashing and sticky splits.
pub(super) fn hash_on(value: &serde_yaml::Value) -> Option<HashOn> {
    use serde_yaml::Value;
    let on = value.as_mapping().filter(|on| on.len() == 1)?;
    let (key, value) = on.iter().next()?;
    match (key.as_str()?, value) {
        ("header", Value::String(name)) => http::HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(HashOn::Header),
        ("cookie", Value::String(name)) => Some(HashOn::Cookie(name.clone())),
        ("claim", Value::String(name)) => Some(HashOn::Claim(name.clone())),
        ("client_ip", Value::Bool(true)) => Some(HashOn::ClientIp),
        _ => None,
    }
}

pub(super) fn compile_upstreams(
    map: serde_yaml::Mapping,
    issues: &mut Issues,
) -> Vec<UpstreamSpec> {
    let mut out = Vec::new();
    for (name, path, value) in named_entries(map, "upstreams", "upstream", issues) {
        let Some(raw) = issues.item::<raw::Upstream>(value, &path) else {
            continue;
        };
        let Some((discovery, max_stale)) =
            compile_discovery(raw.discovery, &format!("{path}.discovery"), issues)
        else {
            continue;
        };
        let balance = compile_balance(raw.balance, &format!("{path}.balance"), issues);
        let protocol = one_of(
            raw.protocol.as_deref(),
            "protocol",
            &[("http1", Protocol::Http1), ("http2", Protocol::Http2)],
            Protocol::Http1,
            &format!("{path}.protocol"),
            issues,
        );
        let timeouts = Timeouts {
            connect: duration_field(
                raw.timeouts.connect,
                DEFAULT_CONNECT_TIMEOUT,
                &format!("{path}.timeouts.connect"),
                issues,
            ),
            response: duration_field(
                raw.timeouts.response,
                DEFAULT_RESPONSE_TIMEOUT,
                &format!("{path}.timeouts.response"),
                issues,
            ),
            idle: duration_field(
                raw.timeouts.idle,
                DEFAULT_IDLE_TIMEOUT,
                &format!("{path}.timeouts.idle"),
                issues,
            ),
        };
        let tls = match &raw.tls {
            None | Some(raw::UpstreamTls::Enabled(false)) => None,
            Some(raw::UpstreamTls::Enabled(true)) => Some((None, None)),
            Some(raw::UpstreamTls::Detailed(d)) => {
                Some((d.ca_file.as_deref(), d.server_name.as_deref()))
            }
        }
        .and_then(|(ca, name)| {
            let ca = ca.map(|f| issues.file(f));
            crate::tls::UpstreamTls::new(ca, name, protocol == Protocol::Http2)
                .map_err(|message| issues.add(&format!("{path}.tls"), message))
                .ok()
        });
        let retries = raw
            .retries
            .and_then(|r| compile_retries(r, &format!("{path}.retries"), issues));
        let outlier = raw
            .outlier
            .and_then(|o| compile_outlier(o, &format!("{path}.outlier"), issues));
        let health = raw
            .health_check
            .and_then(|h| compile_health(h, &format!("{path}.health_check"), issues));
        out.push(UpstreamSpec {
            name,
            discovery,
            max_stale,
            protocol,
            tls,
            timeouts,
            balance,
            max_idle_per_endpoint: raw
                .pool
                .max_idle_per_endpoint
                .unwrap_or(DEFAULT_MAX_IDLE_PER_ENDPOINT),
            retries,
            outlier,
            health,
        });
    }
    out
}
