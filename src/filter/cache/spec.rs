//! The `cache` filter's validated spec, and the fields of the running filter, whose phases
//! are written across `mod.rs` (the hooks), `key`, `serve` and `fill`.

use super::policy::{self, Lifetimes};
use super::store::CacheStore;
use super::targeted::{self, Target};
use crate::filter::rate_limit::KeyPart;
use crate::filter::Fetch;
use http::{HeaderMap, HeaderName};
use std::sync::Arc;
use std::time::Duration;

/// How the query string takes part in the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryKey {
    /// `a=1&b=2` and `b=2&a=1` are one key.
    pub(crate) sort: bool,
    /// Parameters left out of the key (tracking tags and the like).
    pub(crate) ignore: Vec<String>,
}

/// A validated `cache` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheSpec {
    pub(crate) lifetimes: Lifetimes,
    pub(crate) max_size: u64,
    pub(crate) max_object_size: u64,
    pub(crate) query: QueryKey,
    /// Extra key parts: request headers or JWT claims.
    pub(crate) key: Vec<KeyPart>,
    pub(crate) status_header: HeaderName,
    /// How long a miss waits for another request already fetching the same key.
    pub(crate) lock_timeout: Duration,
    /// How long past its freshness a stored response may stand in for an upstream failure
    /// (a response's own `stale-if-error` wins).
    pub(crate) stale_if_error: Option<Duration>,
    /// How long past its freshness a stored response is served while one refresh runs in the
    /// background (a response's own `stale-while-revalidate` wins).
    pub(crate) stale_while_revalidate: Option<Duration>,
    /// Targeted fields (RFC 9213) that override `Cache-Control` for this cache, first first.
    pub(crate) targeted: Vec<Target>,
    /// Remove those fields from responses before they leave.
    pub(crate) strip_targeted: bool,
}

impl CacheSpec {
    /// The caching rules `response` gives this cache.
    pub(super) fn rules(&self, response: &HeaderMap) -> policy::Rules {
        targeted::rules(response, &self.targeted)
    }

    /// Removes the targeted fields when the route says so.
    pub(super) fn strip_targeted(&self, headers: &mut HeaderMap) {
        if self.strip_targeted {
            for target in &self.targeted {
                headers.remove(target.name());
            }
        }
    }
}

pub(crate) struct Cache {
    pub(crate) spec: Arc<CacheSpec>,
    pub(crate) store: Arc<CacheStore>,
    /// The route's upstream, for refreshes in the background (stale-while-revalidate).
    pub(super) fetch: Option<Arc<dyn Fetch>>,
    /// Keys start with the owner (route or named filter), so two routes never share entries.
    pub(super) owner: String,
}

impl Cache {
    pub(crate) fn new(
        spec: CacheSpec,
        store: Arc<CacheStore>,
        fetch: Option<Arc<dyn Fetch>>,
        owner: &str,
    ) -> Cache {
        Cache {
            spec: Arc::new(spec),
            store,
            fetch,
            owner: owner.to_string(),
        }
    }
}
