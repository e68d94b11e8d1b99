//! Passive outlier ejection (`outlier:` on an upstream): an endpoint that fails
//! `consecutive_failures` times in a row is skipped by the balancer for `eject_for`, longer
//! each time it is ejected again, while at most `max_ejected_percent` of the endpoints are out.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// A validated `outlier:` block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutlierSpec {
    pub(crate) consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times as long (up to ten times).
    pub(crate) eject_for: Duration,
    pub(crate) max_ejected_percent: u32,
}

/// One endpoint's record, on the upstream's clock (nanoseconds).
#[derive(Default)]
pub(crate) struct OutlierState {
    consecutive: AtomicU32,
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

impl OutlierState {
    pub(crate) fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Acquire) > now
    }

    /// Records a success or failure; `true` when this failure should eject the endpoint
    /// (the caller checks the ejection cap and then calls `eject`).
    pub(crate) fn record(&self, spec: &OutlierSpec, failed: bool) -> bool {
        if !failed {
            self.consecutive.store(0, Ordering::Relaxed);
            return false;
        }
        let in_a_row = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        in_a_row >= spec.consecutive_failures
    }

    pub(crate) fn eject(&self, spec: &OutlierSpec, now: u64) -> Duration {
        self.consecutive.store(0, Ordering::Relaxed);
        let times = (self.ejections.fetch_add(1, Ordering::AcqRel) + 1).min(10);
        let length = spec.eject_for * times;
        self.ejected_until
            .store(now + length.as_nanos() as u64, Ordering::Release);
        length
    }

    /// Back in service after a success: later ejections start short again.
    pub(crate) fn forgive(&self) {
        // Read first: most successes find nothing to forgive and leave the line unwritten.
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejections_follow_consecutive_failures_and_grow() {
        let spec = OutlierSpec {
            consecutive_failures: 3,
            eject_for: Duration::from_secs(10),
            max_ejected_percent: 50,
        };
        let state = OutlierState::default();
        assert!(!state.record(&spec, true));
        assert!(!state.record(&spec, true));
        assert!(!state.record(&spec, false)); // a success resets the run
        assert!(!state.record(&spec, true));
        assert!(!state.record(&spec, true));
        assert!(state.record(&spec, true));
        assert_eq!(state.eject(&spec, 0), Duration::from_secs(10));
        assert!(state.is_ejected(9_999_999_999));
        assert!(!state.is_ejected(10_000_000_000));
        for _ in 0..3 {
            state.record(&spec, true);
        }
        assert_eq!(state.eject(&spec, 0), Duration::from_secs(20));
        state.forgive();
        assert_eq!(state.eject(&spec, 0), Duration::from_secs(10));
    }
}
