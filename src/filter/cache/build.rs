//! Building a `cache` filter: one store per filter and size, carried over reloads.

use super::metrics::CacheMetrics;
use super::store::CacheStore;
use super::spec::{Cache, CacheSpec};
use crate::filter::{BuildCtx, Filter, StateKey};
use std::sync::Arc;

/// The runtime filter for `spec` at `owner`/`position` (route or named filter, index in its
/// list), with the state a reload carries over when that place and the parameters are unchanged.
pub(crate) fn build(
    spec: &CacheSpec,
    ctx: &mut BuildCtx,
    owner: &str,
    position: usize,
) -> Arc<dyn Filter> {
    let store = ctx
        .states
        .carry(ctx.prev, state_key(spec, owner, position), || {
            CacheStore::new(spec.max_size)
        });
    ctx.metrics
        .sets
        .get::<CacheMetrics>()
        .0
        .register(owner, &store);
    ctx.exposed.add(owner, &store);
    Arc::new(Cache::new(spec.clone(), store, ctx.fetch.clone(), owner))
}

/// The store's key: one store per filter and size, so other changes (ttl, key) keep the
/// entries.
pub(crate) fn state_key(spec: &CacheSpec, owner: &str, position: usize) -> StateKey {
    StateKey {
        kind: "cache",
        owner: owner.to_string(),
        slot: format!("#{position}"),
        id: format!("cache/{owner}/{position}/{}", spec.max_size),
    }
}
