//! Building a `rate_limit` filter: its local buckets carried over reloads, and its Redis budget.

use super::metrics::RateLimitMetrics;
use super::{LocalLimiter, OnStoreError, RateLimit, RateLimitSpec, RedisLimit, StoreChoice};
use crate::filter::{BuildCtx, Filter, StateKey};
use std::sync::Arc;

/// The runtime filter for `spec` at `owner`/`position` (route or named filter, index in its
/// list), with the state a reload carries over when that place and the parameters are unchanged.
pub(crate) fn build(
    spec: &RateLimitSpec,
    ctx: &mut BuildCtx,
    owner: &str,
    position: usize,
) -> Arc<dyn Filter> {
    let limiter = ctx.states.carry(ctx.prev, state_key(spec, owner, position), || {
        LocalLimiter::new(spec.local_gcra(), spec.max_keys)
    });
    let redis = match (spec.store, ctx.redis) {
        (StoreChoice::Redis { on_error, .. }, Some(store)) => {
            let mode = match on_error {
                OnStoreError::FailOpen => "fail_open",
                OnStoreError::FailClosed => "fail_closed",
                OnStoreError::Local => "local",
            };
            let labels = vec![("filter", owner.to_string()), ("mode", mode.to_string())];
            Some(RedisLimit {
                store: Arc::clone(store),
                prefix: format!(
                    "portcullis:rl:{owner}:{position}:{}/{}ms:{}",
                    spec.rate.count,
                    spec.rate.period.as_millis(),
                    spec.burst
                ),
                on_error,
                failures: ctx
                    .metrics
                    .sets
                    .get::<RateLimitMetrics>()
                    .store_failures
                    .get_or_create(&labels)
                    .clone(),
            })
        }
        _ => None,
    };
    let decisions = ctx.metrics.sets.get::<RateLimitMetrics>().decisions(owner);
    Arc::new(RateLimit::new(spec.clone(), limiter, redis, owner, decisions))
}

/// The local buckets' key: the filter's place and every parameter, so any change of rate,
/// burst, key or store starts the buckets empty.
pub(crate) fn state_key(spec: &RateLimitSpec, owner: &str, position: usize) -> StateKey {
    StateKey {
        kind: "rate_limit",
        owner: owner.to_string(),
        slot: format!("#{position}"),
        id: format!("rate_limit/{owner}/{position}/{spec:?}"),
    }
}
