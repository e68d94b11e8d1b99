//! What building a filter needs besides its spec: the running JWT providers and Redis store,
//! the route's upstream, metrics, and the outgoing snapshot's filter state to carry over.

use super::jwt::Provider;
use super::{Exposed, Fetch, FilterStates};
use crate::store::RedisStore;
use crate::telemetry::ConfigMetrics;
use crate::upstream::split::Split;
use std::collections::HashMap;
use std::sync::Arc;

/// What building a filter needs besides its spec: the running JWT providers, and the state of
/// the outgoing snapshot's filters to carry over.
pub(crate) struct BuildCtx<'a> {
    pub(crate) providers: &'a HashMap<String, Arc<Provider>>,
    pub(crate) redis: Option<&'a Arc<RedisStore>>,
    pub(crate) metrics: &'a ConfigMetrics,
    /// The control runtime, for a filter's background work (watching a file); a task there
    /// should end once the filter state it serves is dropped.
    pub(crate) control: &'a tokio::runtime::Handle,
    /// Where the route being built sends its requests, if it proxies.
    pub(crate) split: Option<Arc<Split>>,
    /// Requests to that upstream outside client requests.
    pub(crate) fetch: Option<Arc<dyn Fetch>>,
    /// Requests to any upstream by name, for filters that call a service of their own.
    pub(crate) fetch_to: &'a dyn Fn(&str) -> Option<Arc<dyn Fetch>>,
    /// What the built filters show the admin API.
    pub(crate) exposed: Exposed,
    pub(crate) prev: Option<&'a FilterStates>,
    pub(crate) states: &'a mut FilterStates,
}
