//! What a filter's config may name besides other filters, checked when it is validated.

use super::jwt::ProviderSpec;
use crate::upstream::UpstreamSpec;

/// What a filter entry may refer to, besides named filters: JWT providers and stores.
pub(crate) struct Refs<'a> {
    pub(crate) providers: &'a [ProviderSpec],
    /// The upstreams, for filters that call a service of their own (`ext_authz`).
    pub(crate) upstreams: &'a [UpstreamSpec],
    /// `stores.redis` is configured.
    pub(crate) redis: bool,
}
