//! Building a `jwt` filter from the running providers it names.

use super::{Jwt, JwtSpec, Provider};
use crate::filter::{BuildCtx, Filter};
use std::sync::Arc;

/// The runtime filter for `spec` at `owner`/`position` (route or named filter, index in its
/// list), with the state a reload carries over when that place and the parameters are unchanged.
pub(crate) fn build(
    spec: &JwtSpec,
    ctx: &mut BuildCtx,
    _owner: &str,
    _position: usize,
) -> Arc<dyn Filter> {
    let providers = ctx.providers;
    // Validation made sure every name is defined.
    let chosen: Vec<Arc<Provider>> = spec
        .providers
        .iter()
        .filter_map(|name| providers.get(name).cloned())
        .collect();
    Arc::new(Jwt {
        sources: Jwt::token_sources(&chosen),
        providers: chosen,
        require_scopes: spec.require_scopes.clone(),
        require_claims: spec.require_claims.clone(),
        forward_claims: spec.forward_claims.clone(),
        forward_token: spec.forward_token,
    })
}
