//! Building a `circuit_breaker` filter: one breaker per owner, upstream and parameters.

use super::metrics::BreakerMetrics;
use super::{Breaker, BreakerSpec, CircuitBreaker};
use crate::filter::{BuildCtx, Filter};
use std::sync::Arc;

/// The runtime filter for `spec` at `owner`/`position` (route or named filter, index in its
/// list), with the state a reload carries over when that place and the parameters are unchanged.
pub(crate) fn build(
    spec: &BreakerSpec,
    ctx: &mut BuildCtx,
    owner: &str,
    _position: usize,
) -> Arc<dyn Filter> {
    let upstream = ctx.upstream.unwrap_or("-");
    let key = format!("circuit_breaker/{owner}/{upstream}/{spec:?}");
    let metrics = ctx.metrics.filters.get::<BreakerMetrics>();
    let breaker = ctx.states.carry(ctx.prev, key, || {
        Breaker::new(owner, upstream, spec.clone(), &metrics)
    });
    ctx.exposed.add(owner, &breaker);
    Arc::new(CircuitBreaker { breaker })
}
