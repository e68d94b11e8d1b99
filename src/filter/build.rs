//! What building a filter needs besides its spec: the running JWT providers and Redis store,
//! the route's upstream, metrics, and the outgoing snapshot's filter state to carry over.

use super::jwt::Provider;
use super::{Exposed, Fetch, FilterStates};
use crate::store::RedisStore;
use crate::telemetry::ConfigMetrics;
use std::collections::HashMap;
use std::sync::Arc;

/// What building a filter needs besides its spec: the running JWT providers, and the state of
/// the outgoing snapshot's filters to carry over.
pub struct BuildCtx<'a> {
    pub providers: &'a HashMap<String, Arc<Provider>>,
    pub redis: Option<&'a Arc<RedisStore>>,
    pub metrics: &'a ConfigMetrics,
    /// The upstream of the route being built, if it proxies.
    pub upstream: Option<&'a str>,
    /// Requests to that upstream outside client requests.
    pub fetch: Option<Arc<dyn Fetch>>,
    /// What the built filters show the admin API.
    pub exposed: Exposed,
    pub prev: Option<&'a FilterStates>,
    pub states: &'a mut FilterStates,
}
