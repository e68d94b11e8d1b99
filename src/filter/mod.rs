//! Filters: the chain a route's requests run through (`chain.rs`), a folder per filter kind,
//! and the one list below that registers the kinds.

mod build;
mod chain;
mod kinds;
mod refs;
mod state;

pub(crate) use build::BuildCtx;
pub(crate) use chain::{Chain, Fetch, Filter, Flow, Outcome, Stage};
pub(crate) use kinds::Sharing;
pub(crate) use refs::Refs;
pub(crate) use state::{Exposed, FilterStates, StateKey};

use crate::config::issues::Issues;
use std::sync::Arc;

// Every filter kind: its module (a folder of the same name, which is also its key in a
// `filters:` entry), its variant, its YAML mirror and validated spec, and how a named one is
// shared. Adding a filter is its folder and one line here.
kinds::filter_kinds! {
    pub(crate) headers: Headers(headers::config::HeadersFilter => headers::Headers), Shared;
    pub(crate) cors: Cors(cors::config::CorsFilter => cors::CorsSpec), Shared;
    pub jwt: Jwt(jwt::config::JwtFilter => jwt::JwtSpec), Shared;
    pub rate_limit: RateLimit(rate_limit::config::RateLimitFilter => rate_limit::RateLimitSpec), Shared;
    pub(crate) circuit_breaker: CircuitBreaker(circuit_breaker::config::CircuitBreakerFilter => circuit_breaker::BreakerSpec), PerRoute;
    pub(crate) cache: Cache(cache::config::CacheFilter => cache::CacheSpec), PerRouteNamedState;
    pub ip_filter: IpFilter(ip_filter::config::IpFilterConfig => ip_filter::IpFilterSpec), Shared;
    pub(crate) ext_authz: ExtAuthz(ext_authz::config::ExtAuthzConfig => ext_authz::ExtAuthzSpec), Shared;
    pub(crate) compress: Compress(compress::config::CompressFilter => compress::CompressSpec), Shared;
}

impl FilterSpec {
    /// The state this filter carries over reloads when built at `owner`/`position` for a
    /// route that sends to `upstreams`: the keys its build uses, for reporting what a reload
    /// would keep.
    pub(crate) fn state_keys(
        &self,
        owner: &str,
        position: usize,
        upstreams: &[&str],
    ) -> Vec<StateKey> {
        match self {
            FilterSpec::RateLimit(spec) => {
                vec![rate_limit::build::state_key(spec, owner, position)]
            }
            FilterSpec::Cache(spec) => vec![cache::build::state_key(spec, owner, position)],
            FilterSpec::CircuitBreaker(spec) => {
                circuit_breaker::build::state_keys(spec, owner, upstreams)
            }
            FilterSpec::IpFilter(spec) => ip_filter::build::state_keys(spec),
            FilterSpec::Headers(_)
            | FilterSpec::Cors(_)
            | FilterSpec::Jwt(_)
            | FilterSpec::ExtAuthz(_)
            | FilterSpec::Compress(_) => Vec::new(),
        }
    }
}
