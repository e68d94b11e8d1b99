//! `rate_limit`: GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp
//! per key) over a key built from the client address, headers, JWT claims and the route.
//!
//! Each key stores its "theoretical arrival time" (TAT): the moment its bucket would be full
//! again. A request at `now` is admitted when `max(TAT, now) + interval <= now + burst *
//! interval`, and then moves the TAT by one interval. `burst` requests pass at once from a
//! full bucket; afterwards one per `interval`. A key whose TAT is in the past holds a full
//! bucket, exactly as a key never seen: such entries can be dropped at any time, which is what
//! keeps the table bounded.

pub(super) mod build;
pub(crate) mod config;
mod local;
pub(crate) mod metrics;

use super::{Filter, Flow};
use crate::body::Body;
use crate::context::RequestCtx;
use crate::error::{error_response, ProxyError};
use crate::store::RedisStore;
use metrics::Decisions;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Response, StatusCode};
pub use local::{Decision, Gcra, LocalLimiter, Rate};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// One part of a limiter key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyPart {
    /// The client address as `trusted_proxies` let the gateway see it.
    ClientIp,
    Header(HeaderName),
    /// A claim of the token verified by an earlier `jwt` filter.
    Claim(String),
    Route,
}

/// What to do with a request that lacks a part of the key (no such header or claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnMissingKey {
    /// 400: the request cannot be told apart from others.
    Reject,
    /// Not limited by this filter.
    Skip,
    /// Limited with every other request that lacks it, in one shared bucket.
    Shared,
}

/// What a `store: redis` limit does when Redis cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnStoreError {
    /// Admit the request.
    FailOpen,
    /// 503 with `Retry-After`.
    FailClosed,
    /// Limit in memory at the same rate divided by `replicas_hint`.
    Local,
}

/// Where the buckets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreChoice {
    Local,
    /// One budget across replicas.
    Redis {
        on_error: OnStoreError,
        replicas_hint: u32,
    },
}

/// A validated `rate_limit` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateLimitSpec {
    pub(crate) rate: Rate,
    pub(crate) burst: u64,
    pub(crate) key: Vec<KeyPart>,
    pub(crate) on_missing_key: OnMissingKey,
    /// Send `RateLimit-Policy` / `RateLimit` on admitted responses too (always on 429).
    pub(crate) headers: bool,
    /// Keys tracked at most; beyond, new keys share one overflow bucket until idle keys expire.
    pub(crate) max_keys: usize,
    pub(crate) store: StoreChoice,
}

impl RateLimitSpec {
    /// The in-memory limiter's arithmetic: the full limit, or with a shared store the
    /// fallback's share of it (rate and burst divided by `replicas_hint`).
    pub(crate) fn local_gcra(&self) -> Gcra {
        match self.store {
            StoreChoice::Local => Gcra::new(self.rate, self.burst),
            StoreChoice::Redis { replicas_hint, .. } => {
                let replicas = u64::from(replicas_hint.max(1));
                let share = Rate {
                    count: self.rate.count,
                    period: self.rate.period * replicas as u32,
                };
                Gcra::new(share, (self.burst / replicas).max(1))
            }
        }
    }
}

/// The shared side of a `store: redis` limit.
pub(crate) struct RedisLimit {
    pub(crate) store: std::sync::Arc<RedisStore>,
    /// Names the filter and its limit, so replicas with the same config share buckets and a
    /// changed limit starts fresh ones.
    pub(crate) prefix: String,
    pub(crate) on_error: OnStoreError,
    /// Counts checks the store could not answer.
    pub(crate) failures: prometheus_client::metrics::counter::Counter,
}

/// The `rate_limit` filter.
pub(crate) struct RateLimit {
    pub(crate) spec: RateLimitSpec,
    /// The limit itself, or with a shared store the `local` fallback.
    pub(crate) limiter: std::sync::Arc<LocalLimiter>,
    pub(crate) redis: Option<RedisLimit>,
    /// `RateLimit-Policy`, computed once.
    pub(crate) policy: HeaderValue,
    /// The policy's name in `RateLimit`.
    pub(crate) policy_name: String,
    pub(crate) decisions: Decisions,
}

/// The admitted request's numbers, for the response headers.
#[derive(Clone, Copy)]
struct Admitted(Decision);

impl RateLimit {
    /// `owner`: the route or named filter, used as the policy's name.
    pub(crate) fn new(
        spec: RateLimitSpec,
        limiter: std::sync::Arc<LocalLimiter>,
        redis: Option<RedisLimit>,
        owner: &str,
        decisions: Decisions,
    ) -> RateLimit {
        let policy_name: String = owner
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
            .collect();
        let window = spec.rate.period.as_secs().max(1);
        let policy = HeaderValue::try_from(format!(
            "\"{policy_name}\";q={};w={window}",
            spec.rate.count
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("\"default\""));
        RateLimit {
            spec,
            limiter,
            redis,
            policy,
            policy_name,
            decisions,
        }
    }

    /// Feeds each part of the request's key to `sink`; `false` when a part is missing.
    fn key_parts(&self, req: &Parts, ctx: &RequestCtx, mut sink: impl FnMut(&[u8])) -> bool {
        for part in &self.spec.key {
            match part {
                KeyPart::ClientIp => match ctx.client_ip {
                    std::net::IpAddr::V4(ip) => sink(&ip.octets()),
                    std::net::IpAddr::V6(ip) => sink(&ip.octets()),
                },
                KeyPart::Header(name) => match req.headers.get(name) {
                    Some(value) => sink(value.as_bytes()),
                    None => return false,
                },
                KeyPart::Claim(name) => match ctx.claim(name) {
                    Some(value) => sink(value.as_bytes()),
                    None => return false,
                },
                KeyPart::Route => sink(ctx.route_name().unwrap_or("").as_bytes()),
            }
        }
        true
    }

    /// The key's hash for the in-memory table, `None` when a part is missing. No allocation:
    /// parts are hashed as they are found, with a separator so ("ab","c") and ("a","bc")
    /// differ.
    fn key(&self, req: &Parts, ctx: &RequestCtx) -> Option<u64> {
        let mut hasher = self.limiter.hasher.build_hasher();
        let complete = self.key_parts(req, ctx, |bytes| {
            hasher.write(bytes);
            hasher.write_u8(0xff);
        });
        complete.then(|| hasher.finish())
    }

    /// The key as Redis sees it: the same on every replica. Binary parts are hex-encoded.
    fn shared_key(&self, prefix: &str, req: &Parts, ctx: &RequestCtx) -> String {
        use std::fmt::Write as _;
        let mut key = String::with_capacity(prefix.len() + 64);
        key.push_str(prefix);
        let complete = self.key_parts(req, ctx, |bytes| {
            key.push(':');
            for byte in bytes {
                let _ = write!(key, "{byte:02x}");
            }
        });
        if !complete {
            key.truncate(prefix.len());
            key.push_str(":*");
        }
        key
    }

    fn rate_limit_header(&self, decision: &Decision) -> Option<HeaderValue> {
        let seconds = decision.wait.as_secs() + u64::from(decision.wait.subsec_nanos() > 0);
        HeaderValue::try_from(format!(
            "\"{}\";r={};t={seconds}",
            self.policy_name, decision.remaining
        ))
        .ok()
    }

    fn refuse(&self, decision: &Decision, ctx: &RequestCtx) -> Response<Body> {
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded",
            &ctx.request_id,
            false,
        );
        let seconds = decision.wait.as_secs() + u64::from(decision.wait.subsec_nanos() > 0);
        let headers = response.headers_mut();
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        headers.insert(RATELIMIT_POLICY, self.policy.clone());
        if let Some(value) = self.rate_limit_header(decision) {
            headers.insert(RATELIMIT, value);
        }
        response
    }
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

#[async_trait::async_trait]
impl Filter for RateLimit {
    fn kind(&self) -> &'static str {
        "rate_limit"
    }

    fn edits_responses(&self) -> bool {
        self.spec.headers
    }

    async fn on_request(&self, req: &mut Parts, ctx: &mut RequestCtx) -> Result<Flow, ProxyError> {
        let key = match (self.key(req, ctx), self.spec.on_missing_key) {
            (Some(key), _) => key,
            (None, OnMissingKey::Skip) => {
                self.decisions.no_key.inc();
                return Ok(Flow::Continue);
            }
            (None, OnMissingKey::Shared) => 0,
            (None, OnMissingKey::Reject) => {
                self.decisions.no_key.inc();
                return Ok(Flow::Respond(error_response(
                    StatusCode::BAD_REQUEST,
                    "missing rate limit key",
                    &ctx.request_id,
                    false,
                )))
            }
        };
        let decision = match &self.redis {
            // The request's arrival is its time: no clock read per check.
            None => self.limiter.check(key, self.limiter.at(ctx.started)),
            Some(redis) => {
                let shared_key = self.shared_key(&redis.prefix, req, ctx);
                let gcra = Gcra::new(self.spec.rate, self.spec.burst);
                match redis
                    .store
                    .gcra(
                        &shared_key,
                        Duration::from_nanos(gcra.interval),
                        Duration::from_nanos(gcra.tolerance),
                    )
                    .await
                {
                    Ok((allowed, remaining, wait)) => Decision {
                        allowed,
                        remaining,
                        wait,
                    },
                    Err(_) => {
                        redis.failures.inc();
                        match redis.on_error {
                            OnStoreError::FailOpen => {
                                self.decisions.store_error.inc();
                                return Ok(Flow::Continue);
                            }
                            OnStoreError::FailClosed => {
                                self.decisions.store_error.inc();
                                let mut response = error_response(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "rate limit store unavailable",
                                    &ctx.request_id,
                                    false,
                                );
                                response
                                    .headers_mut()
                                    .insert(http::header::RETRY_AFTER, HeaderValue::from(1u32));
                                return Ok(Flow::Respond(response));
                            }
                            OnStoreError::Local => self.limiter.check(key, self.limiter.now()),
                        }
                    }
                }
            }
        };
        if !decision.allowed {
            self.decisions.limited.inc();
            return Ok(Flow::Respond(self.refuse(&decision, ctx)));
        }
        self.decisions.allowed.inc();
        if self.spec.headers {
            ctx.extensions.insert(Admitted(decision));
        }
        Ok(Flow::Continue)
    }

    async fn on_response(
        &self,
        res: &mut Response<Body>,
        ctx: &mut RequestCtx,
    ) -> Result<(), ProxyError> {
        if let Some(Admitted(decision)) = ctx.extensions.get::<Admitted>() {
            if let Some(value) = self.rate_limit_header(decision) {
                res.headers_mut()
                    .insert(RATELIMIT_POLICY, self.policy.clone());
                res.headers_mut().insert(RATELIMIT, value);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::local::SHARDS;
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn gcra(rate: &str, burst: u64) -> Gcra {
        Gcra::new(Rate::parse(rate).unwrap(), burst)
    }

    fn filter(rate: &str, burst: u64) -> RateLimit {
        let spec = RateLimitSpec {
            rate: Rate::parse(rate).unwrap(),
            burst,
            key: vec![KeyPart::ClientIp],
            on_missing_key: OnMissingKey::Shared,
            headers: false,
            max_keys: 1000,
            store: StoreChoice::Local,
        };
        let limiter = LocalLimiter::new(spec.local_gcra(), spec.max_keys);
        let decisions = metrics::RateLimitMetrics::default().decisions("r");
        RateLimit::new(spec, std::sync::Arc::new(limiter), None, "r", decisions)
    }

    async fn admitted(filter: &RateLimit, n: usize) -> usize {
        let mut passed = 0;
        for _ in 0..n {
            let mut parts = http::Request::new(()).into_parts().0;
            let mut ctx = RequestCtx::new(HeaderValue::from_static("t"), [10, 0, 0, 1].into());
            if let Ok(Flow::Continue) = filter.on_request(&mut parts, &mut ctx).await {
                passed += 1;
            }
        }
        passed
    }

    #[tokio::test(start_paused = true)]
    async fn the_filter_refills_on_the_clock() {
        let filter = filter("2/s", 4);
        assert_eq!(admitted(&filter, 10).await, 4);
        tokio::time::advance(Duration::from_millis(499)).await;
        assert_eq!(admitted(&filter, 10).await, 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(admitted(&filter, 10).await, 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(admitted(&filter, 10).await, 4);
    }

    #[test]
    fn rates_parse() {
        assert_eq!(
            Rate::parse("6000/m").unwrap(),
            Rate {
                count: 6000,
                period: Duration::from_secs(60)
            }
        );
        assert_eq!(
            Rate::parse("5/10s").unwrap().period,
            Duration::from_secs(10)
        );
        assert!(Rate::parse("0/s").is_err());
        assert!(Rate::parse("fast").is_err());
        assert!(Rate::parse("10/fortnight").is_err());
    }

    #[test]
    fn a_full_bucket_admits_exactly_burst_then_one_per_interval() {
        let limiter = LocalLimiter::new(gcra("10/s", 5), 100);
        let t0 = 10 * SECOND;
        let admitted = (0..20).filter(|_| limiter.check(1, t0).allowed).count();
        assert_eq!(admitted, 5);
        // 100 ms later exactly one more.
        assert!(!limiter.check(1, t0 + SECOND / 10 - 1).allowed);
        assert!(limiter.check(1, t0 + SECOND / 10).allowed);
        assert!(!limiter.check(1, t0 + SECOND / 10).allowed);
        // After a full second idle, the whole burst again, no more.
        let t1 = t0 + 2 * SECOND;
        assert_eq!((0..20).filter(|_| limiter.check(1, t1).allowed).count(), 5);
        // Another key has its own bucket.
        assert!(limiter.check(2, t1).allowed);
    }

    #[test]
    fn decisions_report_remaining_and_waits() {
        let g = gcra("10/s", 3);
        let (d, tat) = g.decide(0, SECOND);
        assert_eq!((d.allowed, d.remaining), (true, 2));
        let (d, tat) = g.decide(tat, SECOND);
        assert_eq!(d.remaining, 1);
        let (d, tat) = g.decide(tat, SECOND);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.wait, Duration::from_millis(300)); // until full again
        let (d, _) = g.decide(tat, SECOND);
        assert!(!d.allowed);
        assert_eq!(d.wait, Duration::from_millis(100)); // until the next one may pass
    }

    #[test]
    fn a_sustained_rate_is_admitted_exactly() {
        // 100/s with burst 1, requests every 5 ms over 10 s: exactly one per 10 ms passes.
        let limiter = LocalLimiter::new(gcra("100/s", 1), 10);
        let admitted = (0..2000)
            .filter(|i| limiter.check(7, SECOND + i * 5_000_000).allowed)
            .count();
        assert_eq!(admitted, 1000);
    }

    #[test]
    fn the_key_table_is_bounded_and_idle_keys_expire() {
        let limiter = LocalLimiter::new(gcra("1/s", 1), SHARDS * 2);
        // A flood of distinct keys fills the table, then shares the overflow bucket.
        let admitted = (0..10_000u64)
            .filter(|k| {
                limiter
                    .check(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), SECOND)
                    .allowed
            })
            .count();
        assert!(limiter.len() <= SHARDS * 2);
        assert!(admitted <= SHARDS * 2 + SHARDS, "{admitted}");
        // Once the keys' buckets are full again, their entries make room for new keys.
        assert!(limiter.check(12345, 5 * SECOND).allowed);
        assert!(limiter.len() <= SHARDS * 2);
    }
}
