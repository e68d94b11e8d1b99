//! Active health checks (`health_check:` on an upstream): every `interval` (plus jitter, so
//! that replicas do not probe in step) each endpoint gets `GET path` on a fresh connection.
//! An endpoint turns unhealthy after `unhealthy_after` failed checks in a row and healthy again
//! after `healthy_after` passed ones. A new endpoint is unchecked until its first check, which
//! runs as soon as it appears; until then it takes no traffic, unless too few endpoints are
//! healthy (see `panic_threshold` in `Upstream`).
//!
//! State is kept per endpoint address, so it survives endpoint-set updates and reloads.

use http::StatusCode;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HealthSpec {
    pub(crate) path: http::uri::PathAndQuery,
    /// The Host header of checks; default: the endpoint's address.
    pub(crate) host: Option<http::HeaderValue>,
    /// Inclusive status ranges that count as passed.
    pub(crate) statuses: Vec<(u16, u16)>,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    /// Up to this much is added to each interval, at random.
    pub(crate) jitter: Duration,
    pub(crate) healthy_after: u32,
    pub(crate) unhealthy_after: u32,
    /// Below this percentage of healthy endpoints, balance over all of them.
    pub(crate) panic_threshold: u32,
}

impl HealthSpec {
    pub(crate) fn passes(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        self.statuses
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&code))
    }

    /// The wait before the next round.
    pub(crate) fn next_round(&self) -> Duration {
        self.interval + self.jitter.mul_f64(fastrand::f64())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthState {
    Unchecked,
    Healthy,
    Unhealthy,
}

impl HealthState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HealthState::Unchecked => "unchecked",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// One endpoint's check record. Written by its upstream's checker task only.
#[derive(Debug, Default)]
pub(crate) struct Health {
    state: AtomicU8,
    passed_in_a_row: AtomicU32,
    failed_in_a_row: AtomicU32,
}

impl Health {
    pub(crate) fn state(&self) -> HealthState {
        match self.state.load(Ordering::Acquire) {
            1 => HealthState::Healthy,
            2 => HealthState::Unhealthy,
            _ => HealthState::Unchecked,
        }
    }

    fn set(&self, state: HealthState) {
        let value = match state {
            HealthState::Unchecked => 0,
            HealthState::Healthy => 1,
            HealthState::Unhealthy => 2,
        };
        self.state.store(value, Ordering::Release);
    }

    /// Records one check; returns the new state when it changed. The first check decides at
    /// once; later ones need the thresholds.
    pub(crate) fn record(&self, spec: &HealthSpec, passed: bool) -> Option<HealthState> {
        let (same, other) = if passed {
            (&self.passed_in_a_row, &self.failed_in_a_row)
        } else {
            (&self.failed_in_a_row, &self.passed_in_a_row)
        };
        other.store(0, Ordering::Relaxed);
        let in_a_row = same.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let current = self.state();
        let next = match (current, passed) {
            (HealthState::Unchecked, true) => HealthState::Healthy,
            (HealthState::Unchecked, false) => HealthState::Unhealthy,
            (HealthState::Unhealthy, true) if in_a_row >= spec.healthy_after => {
                HealthState::Healthy
            }
            (HealthState::Healthy, false) if in_a_row >= spec.unhealthy_after => {
                HealthState::Unhealthy
            }
            _ => current,
        };
        (next != current).then(|| {
            self.set(next);
            next
        })
    }

    /// Takes over another record of the same address (a re-weighted endpoint, a reloaded
    /// upstream).
    pub(crate) fn copy_from(&self, other: &Health) {
        self.state
            .store(other.state.load(Ordering::Acquire), Ordering::Release);
        for (mine, theirs) in [
            (&self.passed_in_a_row, &other.passed_in_a_row),
            (&self.failed_in_a_row, &other.failed_in_a_row),
        ] {
            mine.store(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> HealthSpec {
        HealthSpec {
            path: http::uri::PathAndQuery::from_static("/health"),
            host: None,
            statuses: vec![(200, 299)],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            jitter: Duration::ZERO,
            healthy_after: 2,
            unhealthy_after: 3,
            panic_threshold: 50,
        }
    }

    #[test]
    fn thresholds_decide_after_the_first_check() {
        let spec = spec();
        let health = Health::default();
        assert_eq!(health.state(), HealthState::Unchecked);
        assert_eq!(health.record(&spec, true), Some(HealthState::Healthy));
        assert_eq!(health.record(&spec, false), None);
        assert_eq!(health.record(&spec, false), None);
        assert_eq!(
            health.record(&spec, true),
            None,
            "a pass resets the failures"
        );
        assert_eq!(health.record(&spec, false), None);
        assert_eq!(health.record(&spec, false), None);
        assert_eq!(health.record(&spec, false), Some(HealthState::Unhealthy));
        assert_eq!(health.record(&spec, true), None);
        assert_eq!(health.record(&spec, true), Some(HealthState::Healthy));
        let fresh = Health::default();
        assert_eq!(fresh.record(&spec, false), Some(HealthState::Unhealthy));
        assert!(spec.passes(StatusCode::NO_CONTENT));
        assert!(!spec.passes(StatusCode::SERVICE_UNAVAILABLE));
    }
}
