//! Building a `circuit_breaker` filter: one breaker per owner, upstream and parameters (on
//! a split route, one for each of its upstreams).

use super::metrics::BreakerMetrics;
use super::{Breaker, BreakerSpec, CircuitBreaker};
use crate::filter::{BuildCtx, Filter, StateKey};
use std::sync::Arc;

/// The runtime filter for `spec` at `owner`/`position` (route or named filter, index in its
/// list), with the state a reload carries over when that place and the parameters are unchanged.
pub(crate) fn build(
    spec: &BreakerSpec,
    ctx: &mut BuildCtx,
    owner: &str,
    _position: usize,
) -> Arc<dyn Filter> {
    let metrics = ctx.metrics.sets.get::<BreakerMetrics>();
    let split = ctx.split.clone();
    let names: Vec<&str> = match &split {
        Some(split) => split.targets().iter().map(|t| &*t.upstream.name).collect(),
        None => Vec::new(),
    };
    let breakers = state_keys(spec, owner, &names)
        .into_iter()
        .map(|key| {
            let upstream = key.slot.clone();
            let breaker = ctx.states.carry(ctx.prev, key, || {
                Breaker::new(owner, &upstream, spec.clone(), &metrics)
            });
            ctx.exposed.add(owner, &breaker);
            breaker
        })
        .collect();
    Arc::new(CircuitBreaker {
        breakers,
        split: split.filter(|split| split.is_split()),
    })
}

/// The breakers' keys, one per upstream the route sends to (`-` when it proxies nowhere): the
/// owner, the upstream and every parameter.
pub(crate) fn state_keys(spec: &BreakerSpec, owner: &str, upstreams: &[&str]) -> Vec<StateKey> {
    let upstreams = if upstreams.is_empty() {
        &["-"][..]
    } else {
        upstreams
    };
    upstreams
        .iter()
        .map(|upstream| StateKey {
            kind: "circuit_breaker",
            owner: owner.to_string(),
            slot: upstream.to_string(),
            id: format!("circuit_breaker/{owner}/{upstream}/{spec:?}"),
        })
        .collect()
}
