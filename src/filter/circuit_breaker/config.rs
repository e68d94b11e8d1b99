//! The `circuit_breaker` filter's config: its YAML mirror and validation.

use super::BreakerSpec;
use crate::config::issues::{duration_field, Issues};
use crate::config::values::Scalar;
use crate::filter::Refs;
use serde::Deserialize;
use std::time::Duration;

/// Share of failed requests in the window that opens the breaker.
const DEFAULT_FAILURE_RATIO: f64 = 0.5;
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Fewer requests in the window than this never open the breaker.
const DEFAULT_MIN_REQUESTS: u32 = 20;
const DEFAULT_FAILURE_STATUSES: [u16; 3] = [502, 503, 504];
const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);
/// Each failed probe doubles the open time, up to this.
const DEFAULT_MAX_OPEN_FOR: Duration = Duration::from_secs(300);
const DEFAULT_HALF_OPEN_REQUESTS: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CircuitBreakerFilter {
    pub(crate) failure_ratio: Option<f64>,
    pub(crate) window: Option<Scalar>,
    pub(crate) min_requests: Option<u32>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_statuses: Option<Vec<u16>>,
    pub(crate) open_for: Option<Scalar>,
    pub(crate) max_open_for: Option<Scalar>,
    pub(crate) half_open_requests: Option<u32>,
}

pub(crate) fn compile(
    raw: CircuitBreakerFilter,
    path: &str,
    _refs: &Refs,
    issues: &mut Issues,
) -> Option<BreakerSpec> {
    let before = issues.list.len();
    let failure_ratio = raw.failure_ratio.unwrap_or(DEFAULT_FAILURE_RATIO);
    if !(failure_ratio > 0.0 && failure_ratio <= 1.0) {
        issues.add(
            &format!("{path}.failure_ratio"),
            "must be above 0 and at most 1, e.g. 0.5",
        );
    }
    let window = duration_field(
        raw.window,
        DEFAULT_WINDOW,
        &format!("{path}.window"),
        issues,
    );
    let open_for = duration_field(
        raw.open_for,
        DEFAULT_OPEN_FOR,
        &format!("{path}.open_for"),
        issues,
    );
    let max_open_for = duration_field(
        raw.max_open_for,
        DEFAULT_MAX_OPEN_FOR,
        &format!("{path}.max_open_for"),
        issues,
    );
    if max_open_for < open_for {
        issues.add(
            &format!("{path}.max_open_for"),
            "must not be shorter than open_for",
        );
    }
    let failure_statuses = raw
        .failure_statuses
        .unwrap_or_else(|| DEFAULT_FAILURE_STATUSES.to_vec());
    for (i, status) in failure_statuses.iter().enumerate() {
        if !(100..=599).contains(status) {
            issues.add(
                &format!("{path}.failure_statuses[{i}]"),
                format!("{status} is not an HTTP status"),
            );
        }
    }
    for (key, value) in [
        ("min_requests", raw.min_requests),
        ("consecutive_failures", raw.consecutive_failures),
        ("half_open_requests", raw.half_open_requests),
    ] {
        if value == Some(0) {
            issues.add(&format!("{path}.{key}"), "must be at least 1");
        }
    }
    (issues.list.len() == before).then(|| BreakerSpec {
        failure_ratio,
        window,
        min_requests: raw.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS),
        consecutive_failures: raw.consecutive_failures,
        failure_statuses,
        open_for,
        max_open_for,
        half_open_requests: raw.half_open_requests.unwrap_or(DEFAULT_HALF_OPEN_REQUESTS),
    })
}
