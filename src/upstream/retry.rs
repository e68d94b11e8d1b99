//! Retries (`retries:` on an upstream): which failures are retried, how long to wait between
//! tries, and a budget so that retries cannot multiply the load on an upstream that is
//! already struggling.

use crate::error::{ProxyError, UpstreamFailure};
use crate::telemetry::{encode_family, Labels, MetricSet};
use http::Method;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A failure that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RetryOn {
    /// Refused or failed to connect (also a connect timeout): the request never left.
    ConnectError,
    /// The connection broke before a response head arrived.
    Reset,
    /// No response head within the (per-try) timeout.
    Timeout,
    /// The upstream answered with this status.
    Status(u16),
}

impl RetryOn {
    pub(crate) fn parse(text: &str) -> Option<RetryOn> {
        match text {
            "connect_error" => Some(RetryOn::ConnectError),
            "reset" => Some(RetryOn::Reset),
            "timeout" => Some(RetryOn::Timeout),
            other => other
                .parse::<u16>()
                .ok()
                .filter(|s| (500..=599).contains(s))
                .map(RetryOn::Status),
        }
    }

    /// As written in `retry_on`: `connect_error`, `reset`, `timeout` or the status.
    pub(crate) fn label(self) -> String {
        match self {
            RetryOn::ConnectError => "connect_error".into(),
            RetryOn::Reset => "reset".into(),
            RetryOn::Timeout => "timeout".into(),
            RetryOn::Status(status) => status.to_string(),
        }
    }

    /// What kind of failure `error` is, if it is one of the retryable kinds.
    pub(crate) fn of_error(error: &ProxyError) -> Option<RetryOn> {
        match error.upstream_failure()? {
            UpstreamFailure::ConnectError | UpstreamFailure::ConnectTimeout => {
                Some(RetryOn::ConnectError)
            }
            UpstreamFailure::Reset => Some(RetryOn::Reset),
            UpstreamFailure::Timeout => Some(RetryOn::Timeout),
            UpstreamFailure::NoEndpoint | UpstreamFailure::Protocol | UpstreamFailure::Other => {
                None
            }
        }
    }
}

/// A validated `retries:` block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first try.
    pub(crate) attempts: u32,
    pub(crate) on: Vec<RetryOn>,
    /// Each try's limit for the response head; `None`: the upstream's response timeout.
    pub(crate) per_try_timeout: Option<Duration>,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    /// Retries in flight may be at most this share of the requests in flight.
    pub(crate) budget: f64,
    /// Methods that may be retried: the idempotent ones unless configured.
    pub(crate) methods: Vec<Method>,
    /// Request bodies up to this size are kept so they can be sent again; larger or
    /// unknown-length bodies are never retried.
    pub(crate) buffer_bytes: u64,
}

impl RetryPolicy {
    pub(crate) fn idempotent_methods() -> Vec<Method> {
        vec![
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ]
    }

    pub(crate) fn retries(&self, failure: RetryOn) -> bool {
        self.on.contains(&failure)
    }

    /// The wait before retry number `retry` (1-based): exponential from `backoff_base`,
    /// capped at `backoff_max`, with full jitter so that retrying clients spread out.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1 << (retry.saturating_sub(1)).min(16));
        let cap = exp.min(self.backoff_max);
        cap.mul_f64(fastrand::f64())
    }
}

/// Retries in flight allowed whatever the traffic, so a lone request can always be retried.
const MIN_CONCURRENT_RETRIES: u64 = 3;

/// Like Envoy's retry budget: retries in flight may be at most a share of the requests in
/// flight (and at least a few). Under a storm of failures retries stop multiplying the load;
/// a lone failing request is still retried. Lock-free counters.
#[derive(Default)]
pub(crate) struct RetryBudget {
    requests: AtomicU64,
    retries: AtomicU64,
}

/// Counts while alive.
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RetryBudget {
    /// A request with a retry policy is under way.
    pub(crate) fn request(&self) -> InFlight<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.requests)
    }

    /// A retry, if the budget has room; it counts until the guard is dropped.
    pub(crate) fn try_retry(&self, share: f64) -> Option<InFlight<'_>> {
        let requests = self.requests.load(Ordering::Relaxed);
        let allowed = ((requests as f64 * share) as u64).max(MIN_CONCURRENT_RETRIES);
        let taken = self.retries.fetch_add(1, Ordering::Relaxed);
        if taken < allowed {
            Some(InFlight(&self.retries))
        } else {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            on: vec![RetryOn::ConnectError, RetryOn::Status(503)],
            per_try_timeout: None,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            budget: 0.2,
            methods: RetryPolicy::idempotent_methods(),
            buffer_bytes: 65536,
        }
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let p = policy();
        for retry in 1..10 {
            let cap = Duration::from_millis(10 * (1 << (retry - 1))).min(Duration::from_millis(50));
            for _ in 0..50 {
                assert!(p.backoff(retry) <= cap);
            }
        }
    }

    #[test]
    fn the_budget_caps_retries_in_flight_at_a_share_of_requests_in_flight() {
        let budget = RetryBudget::default();
        let lone = budget.request();
        // Few requests: the floor still allows a few retries at once.
        let floor: Vec<_> = (0..3).map_while(|_| budget.try_retry(0.2)).collect();
        assert_eq!(floor.len(), 3);
        assert!(budget.try_retry(0.2).is_none());
        drop(floor);
        drop(lone);
        // 100 requests in flight: 20 retries at once, no more.
        let requests: Vec<_> = (0..100).map(|_| budget.request()).collect();
        let retries: Vec<_> = (0..50).filter_map(|_| budget.try_retry(0.2)).collect();
        assert_eq!(retries.len(), 20);
        drop(retries);
        // Finished retries make room again.
        assert!(budget.try_retry(0.2).is_some());
        drop(requests);
    }

    #[test]
    fn conditions_parse() {
        assert_eq!(RetryOn::parse("reset"), Some(RetryOn::Reset));
        assert_eq!(RetryOn::parse("503"), Some(RetryOn::Status(503)));
        assert_eq!(RetryOn::parse("404"), None);
        assert_eq!(RetryOn::parse("sometimes"), None);
    }
}

/// What retries report: retries made, by upstream and reason.
#[derive(Default)]
pub(crate) struct RetryMetrics {
    pub(crate) retried: Family<Labels, Counter>,
}

impl MetricSet for RetryMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            encoder,
            "upstream_retries",
            "Retries made, by upstream and the failure retried (connect_error, reset, timeout or the status)",
            &self.retried,
        )
    }
}
