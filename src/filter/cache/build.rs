//! Building a `cache` filter: one store per filter and size, carried over reloads.

use super::metrics::CacheMetrics;
use super::store::CacheStore;
use super::spec::{Cache, CacheSpec};
use crate::filter::{BuildCtx, Filter};
use std::sync::Arc;

/// The runtime filter for `spec` at `owner`/`position` (route or named filter, index in its
/// list), with the state a reload carries over when that place and the parameters are unchanged.
pub(crate) fn build(
    spec: &CacheSpec,
    ctx: &mut BuildCtx,
    owner: &str,
    position: usize,
) -> Arc<dyn Filter> {
    // One store per filter and size: other changes (ttl, key) keep the entries.
    let key = format!("cache/{owner}/{position}/{}", spec.max_size);
    let store = ctx
        .states
        .carry(ctx.prev, key, || CacheStore::new(spec.max_size));
    ctx.metrics
        .sets
        .get::<CacheMetrics>()
        .0
        .register(owner, &store);
    ctx.exposed.add(owner, &store);
    Arc::new(Cache::new(spec.clone(), store, ctx.fetch.clone(), owner))
}
