//! What a filter's config may name besides other filters, checked when it is validated.

use super::jwt::ProviderSpec;

/// What a filter entry may refer to, besides named filters: JWT providers and stores.
pub(crate) struct Refs<'a> {
    pub(crate) providers: &'a [ProviderSpec],
    /// `stores.redis` is configured.
    pub(crate) redis: bool,
}
