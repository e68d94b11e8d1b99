//! Building a `cors` filter.

use super::{Cors, CorsSpec};
use crate::filter::{BuildCtx, Filter};
use std::sync::Arc;

/// The runtime filter for `spec` at `owner`/`position` (route or named filter, index in its
/// list), with the state a reload carries over when that place and the parameters are unchanged.
pub(crate) fn build(
    spec: &CorsSpec,
    _ctx: &mut BuildCtx,
    _owner: &str,
    _position: usize,
) -> Arc<dyn Filter> {
    Arc::new(Cors::new(spec.clone()))
}
