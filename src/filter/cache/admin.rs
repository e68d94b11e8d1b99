//! Purging cache entries from the admin API (`DELETE /cache`).

use super::store::CacheStore;
use super::Purge;
use crate::filter::Exposed;

/// What a purge request without a selector is told.
pub(crate) const PURGE_USAGE: &str =
    "say what to purge: key=HOST/PATH?QUERY, prefix=/PATH or HOST/PATH, and/or route=NAME";

/// Removes the entries `query` selects (`key`, `prefix`, `route`) from every cache store;
/// how many went, or `None` when the query selects nothing (a purge of everything must be
/// asked for by route).
pub(crate) fn purge(exposed: &Exposed, query: &str) -> Option<usize> {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    };
    let purge = Purge {
        owner: param("route"),
        url: param("key"),
        prefix: param("prefix"),
    };
    if purge.owner.is_none() && purge.url.is_none() && purge.prefix.is_none() {
        return None;
    }
    let purged = exposed
        .of::<CacheStore>()
        .map(|(_, store)| store.remove_where(|key| purge.matches(key)))
        .sum();
    Some(purged)
}
