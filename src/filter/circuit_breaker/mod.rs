//! `circuit_breaker`: stops sending a route's requests to an upstream that keeps failing, so
//! it can recover, and answers 503 at once meanwhile.
//!
//! `Closed`: requests pass; outcomes are counted in a sliding window. It trips to `Open` when
//! `failure_ratio` is reached over `window` (once `min_requests` were seen), or after
//! `consecutive_failures`. `Open`: 503 with `Retry-After` for `open_for`, the upstream is not
//! called. Then `HalfOpen`: `half_open_requests` probes pass; a good one closes the breaker,
//! a failed one opens it again for twice as long (up to `max_open_for`).
//!
//! Failures are connect errors, timeouts and resets on the way to the upstream, and the
//! configured statuses from it; requests the breaker (or any filter) answered itself never
//! reach the upstream and do not count. The request path reads one atomic in the closed
//! state; a lock is taken only to change state.

pub(crate) mod admin;
pub(super) mod build;
pub(crate) mod config;
pub(crate) mod metrics;

use super::{Filter, Flow, Outcome};
use crate::context::RequestCtx;
use crate::error::{error_response, CircuitOpen, ProxyError};
use crate::upstream::split::Split;
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use metrics::BreakerMetrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A validated `circuit_breaker` filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BreakerSpec {
    pub(crate) failure_ratio: f64,
    pub(crate) window: Duration,
    pub(crate) min_requests: u32,
    /// Trip after this many failures in a row, whatever the ratio; `None`: ratio only.
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_statuses: Vec<u16>,
    pub(crate) open_for: Duration,
    pub(crate) max_open_for: Duration,
    pub(crate) half_open_requests: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl State {
    fn from_u8(value: u8) -> State {
        match value {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Buckets of the sliding window.
const BUCKETS: u64 = 10;

#[derive(Default)]
struct Bucket {
    /// Which slice of time (`now / bucket length`) the counts belong to.
    slice: AtomicU64,
    total: AtomicU32,
    failures: AtomicU32,
}

/// The state of one route's breaker towards its upstream. Outlives snapshots while the
/// breaker's route, upstream and parameters are unchanged.
pub(crate) struct Breaker {
    pub(crate) route: String,
    pub(crate) upstream: String,
    spec: BreakerSpec,
    state: AtomicU8,
    /// When the breaker last opened, and for how long (nanoseconds on its clock).
    opened_at: AtomicU64,
    open_for: AtomicU64,
    /// Half-open probes admitted and not yet finished.
    probes: AtomicU32,
    consecutive: AtomicU32,
    buckets: [Bucket; BUCKETS as usize],
    transition: Mutex<()>,
    epoch: tokio::time::Instant,
    gauge: Gauge,
    transitions: Family<crate::telemetry::Labels, Counter>,
}

impl Breaker {
    pub(crate) fn new(
        route: &str,
        upstream: &str,
        spec: BreakerSpec,
        metrics: &BreakerMetrics,
    ) -> Breaker {
        let labels = vec![
            ("route", route.to_string()),
            ("upstream", upstream.to_string()),
        ];
        let gauge = metrics.state.get_or_create(&labels).clone();
        gauge.set(0);
        Breaker {
            route: route.to_string(),
            upstream: upstream.to_string(),
            open_for: AtomicU64::new(spec.open_for.as_nanos() as u64),
            spec,
            state: AtomicU8::new(State::Closed as u8),
            opened_at: AtomicU64::new(0),
            probes: AtomicU32::new(0),
            consecutive: AtomicU32::new(0),
            buckets: Default::default(),
            transition: Mutex::new(()),
            epoch: tokio::time::Instant::now(),
            gauge,
            transitions: metrics.transitions.clone(),
        }
    }

    fn now(&self) -> u64 {
        self.at(tokio::time::Instant::now())
    }

    /// `instant` on the breaker's clock.
    fn at(&self, instant: tokio::time::Instant) -> u64 {
        instant.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// While open: how long until probes are let through.
    pub(crate) fn retry_in(&self) -> Duration {
        let until = self.opened_at.load(Ordering::Acquire) + self.open_for.load(Ordering::Acquire);
        Duration::from_nanos(until.saturating_sub(self.now()))
    }

    fn slice_nanos(&self) -> u64 {
        (self.spec.window.as_nanos() as u64 / BUCKETS).max(1)
    }

    /// Failures and requests in the window.
    fn window(&self, now: u64) -> (u32, u32) {
        let current = now / self.slice_nanos();
        let mut total = 0;
        let mut failures = 0;
        for bucket in &self.buckets {
            let slice = bucket.slice.load(Ordering::Acquire);
            if slice + BUCKETS > current && slice <= current {
                total += bucket.total.load(Ordering::Relaxed);
                failures += bucket.failures.load(Ordering::Relaxed);
            }
        }
        (failures, total)
    }

    fn record(&self, now: u64, failed: bool) {
        let slice = now / self.slice_nanos();
        let bucket = &self.buckets[(slice % BUCKETS) as usize];
        let seen = bucket.slice.load(Ordering::Acquire);
        if seen != slice
            && bucket
                .slice
                .compare_exchange(seen, slice, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.total.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
        }
        bucket.total.fetch_add(1, Ordering::Relaxed);
        if failed {
            bucket.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn clear_window(&self) {
        for bucket in &self.buckets {
            bucket.total.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
        }
        self.consecutive.store(0, Ordering::Relaxed);
    }

    /// Moves to `to` if still in `from`; logs, counts and updates the gauge.
    fn transit(&self, from: State, to: State, why: &str) -> bool {
        let _guard = self.transition.lock().unwrap_or_else(|e| e.into_inner());
        if self.state() != from {
            return false;
        }
        let now = self.now();
        match to {
            State::Open => {
                let base = self.spec.open_for.as_nanos() as u64;
                let max = self.spec.max_open_for.as_nanos() as u64;
                // A failed probe doubles the time; tripping from closed starts over.
                let open_for = if from == State::HalfOpen {
                    (self.open_for.load(Ordering::Acquire).saturating_mul(2)).min(max)
                } else {
                    base
                };
                self.open_for.store(open_for, Ordering::Release);
                self.opened_at.store(now, Ordering::Release);
            }
            State::HalfOpen => self.probes.store(0, Ordering::Release),
            State::Closed => {
                self.clear_window();
                self.open_for
                    .store(self.spec.open_for.as_nanos() as u64, Ordering::Release);
            }
        }
        self.state.store(to as u8, Ordering::Release);
        self.gauge.set(to as i64);
        self.transitions
            .get_or_create(&vec![
                ("route", self.route.clone()),
                ("upstream", self.upstream.clone()),
                ("state", to.as_str().to_string()),
            ])
            .inc();
        let open_for = Duration::from_nanos(self.open_for.load(Ordering::Acquire));
        tracing::warn!(
            route = %self.route,
            upstream = %self.upstream,
            from = from.as_str(),
            to = to.as_str(),
            reason = why,
            open_for_ms = open_for.as_millis() as u64,
            "circuit breaker state change"
        );
        true
    }

    /// Whether a request may go to the upstream now; `Some(probe)` if so, where `probe` says
    /// it is a half-open probe.
    pub(crate) fn admit(&self) -> Option<bool> {
        match self.state() {
            State::Closed => Some(false),
            State::Open => {
                if self.retry_in().is_zero() {
                    self.transit(State::Open, State::HalfOpen, "open_for elapsed");
                    self.admit_probe()
                } else {
                    None
                }
            }
            State::HalfOpen => self.admit_probe(),
        }
    }

    fn admit_probe(&self) -> Option<bool> {
        if self.state() == State::Closed {
            return Some(false);
        }
        let taken = self.probes.fetch_add(1, Ordering::AcqRel);
        if taken < self.spec.half_open_requests {
            Some(true)
        } else {
            self.probes.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }

    /// The outcome of a request that was admitted at `started`. `failed: None`: it never
    /// reached the upstream (another filter answered), which says nothing about the upstream.
    pub(crate) fn finish(&self, probe: bool, failed: Option<bool>, started: tokio::time::Instant) {
        let Some(failed) = failed else {
            if probe {
                self.probes.fetch_sub(1, Ordering::AcqRel);
            }
            return;
        };
        if probe {
            if failed {
                self.transit(State::HalfOpen, State::Open, "probe failed");
            } else {
                self.transit(State::HalfOpen, State::Closed, "probe succeeded");
            }
            return;
        }
        if self.state() != State::Closed {
            return;
        }
        // The request's start stands for its time in the window: no clock read per request.
        let now = self.at(started);
        self.record(now, failed);
        if !failed {
            self.consecutive.store(0, Ordering::Relaxed);
            return;
        }
        let in_a_row = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        if self
            .spec
            .consecutive_failures
            .is_some_and(|n| in_a_row >= n)
        {
            self.transit(State::Closed, State::Open, "consecutive failures");
            return;
        }
        let (failures, total) = self.window(now);
        if total >= self.spec.min_requests
            && f64::from(failures) >= self.spec.failure_ratio * f64::from(total)
        {
            self.transit(State::Closed, State::Open, "failure ratio");
        }
    }
}

/// The `circuit_breaker` filter of one route: a breaker for each upstream it sends to.
pub(crate) struct CircuitBreaker {
    /// In the order of the route's split targets; one when the route has a single upstream.
    pub(crate) breakers: Box<[Arc<Breaker>]>,
    /// The route's split, when it has several targets: the request's target is chosen here,
    /// so its own breaker decides.
    pub(crate) split: Option<Arc<Split>>,
}

impl CircuitBreaker {
    fn breaker(&self, ctx: &RequestCtx) -> &Breaker {
        let index = ctx.target.unwrap_or(0);
        &self.breakers[index.min(self.breakers.len() - 1)]
    }
}

/// Marks a request admitted as a half-open probe.
#[derive(Clone, Copy)]
struct Probe;

#[async_trait::async_trait]
impl Filter for CircuitBreaker {
    fn kind(&self) -> &'static str {
        "circuit_breaker"
    }

    fn edits_responses(&self) -> bool {
        false
    }

    async fn on_request(&self, req: &mut Parts, ctx: &mut RequestCtx) -> Result<Flow, ProxyError> {
        if let Some(split) = &self.split {
            split.choose(&req.headers, ctx);
        }
        let breaker = self.breaker(ctx);
        match breaker.admit() {
            Some(false) => Ok(Flow::Continue),
            Some(true) => {
                ctx.extensions.insert(Probe);
                Ok(Flow::Continue)
            }
            None => {
                let mut response = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "circuit open",
                    &ctx.request_id,
                    false,
                );
                let wait = breaker.retry_in();
                let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
                response.extensions_mut().insert(CircuitOpen);
                Ok(Flow::Respond(response))
            }
        }
    }

    /// Judges the upstream's own answer, not what the client got: a cache in front of the
    /// breaker may have replaced a 5xx with a stale copy.
    fn on_complete(&self, ctx: &RequestCtx, _outcome: &Outcome) {
        let probe = ctx.extensions.get::<Probe>().is_some();
        let breaker = self.breaker(ctx);
        let failed = ctx.upstream.as_ref().map(|upstream| {
            upstream.error.is_some()
                || upstream
                    .status
                    .is_some_and(|s| breaker.spec.failure_statuses.contains(&s))
        });
        breaker.finish(probe, failed, ctx.started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            failure_ratio: 0.5,
            window: Duration::from_secs(10),
            min_requests: 4,
            consecutive_failures: None,
            failure_statuses: vec![502, 503, 504],
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(15),
            half_open_requests: 1,
        }
    }

    fn breaker(spec: BreakerSpec) -> Breaker {
        Breaker::new("r", "u", spec, &BreakerMetrics::default())
    }

    fn request(b: &Breaker, failed: bool) -> bool {
        match b.admit() {
            Some(probe) => {
                b.finish(probe, Some(failed), tokio::time::Instant::now());
                true
            }
            None => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_ratio_after_min_requests_then_probes() {
        let b = breaker(spec());
        // Three failures are below min_requests: still closed.
        for _ in 0..3 {
            assert!(request(&b, true));
        }
        assert_eq!(b.state(), State::Closed);
        assert!(request(&b, true));
        assert_eq!(b.state(), State::Open);
        assert!(!request(&b, false), "open breakers answer themselves");
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert!(!request(&b, false));
        tokio::time::advance(Duration::from_millis(1)).await;
        // One probe at a time.
        let probe = b.admit();
        assert_eq!(probe, Some(true));
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.admit(), None);
        b.finish(true, Some(false), tokio::time::Instant::now());
        assert_eq!(b.state(), State::Closed);
        assert!(request(&b, false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_longer_up_to_the_cap() {
        let b = breaker(BreakerSpec {
            consecutive_failures: Some(2),
            ..spec()
        });
        assert!(request(&b, true));
        assert!(request(&b, true));
        assert_eq!(b.state(), State::Open);
        for expected in [10, 15, 15] {
            tokio::time::advance(b.retry_in()).await;
            assert!(request(&b, true)); // the probe, failing
            assert_eq!(b.state(), State::Open);
            assert_eq!(b.retry_in(), Duration::from_secs(expected));
        }
        // Success closes and resets the open time.
        tokio::time::advance(b.retry_in()).await;
        assert!(request(&b, false));
        assert_eq!(b.state(), State::Closed);
        assert!(request(&b, true));
        assert!(request(&b, true));
        assert_eq!(b.retry_in(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn successes_dilute_and_old_failures_leave_the_window() {
        let b = breaker(spec());
        for _ in 0..3 {
            assert!(request(&b, true));
        }
        for _ in 0..4 {
            assert!(request(&b, false));
        }
        assert_eq!(b.state(), State::Closed); // 3 of 7
        tokio::time::advance(Duration::from_secs(11)).await;
        // The old outcomes are gone: 2 failures of 2 is under min_requests.
        assert!(request(&b, true));
        assert!(request(&b, true));
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.window(b.now()), (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_never_reached_the_upstream_do_not_count() {
        let b = breaker(BreakerSpec {
            consecutive_failures: Some(1),
            ..spec()
        });
        for _ in 0..10 {
            let probe = b.admit().unwrap();
            b.finish(probe, None, tokio::time::Instant::now());
        }
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.window(b.now()), (0, 0));
    }
}
