//! The `rate_limit` filter's config: its YAML mirror, validation, and the key-part syntax
//! (`client_ip`, `header:NAME`, `claim:NAME`, `route`) the cache shares.

use super::{KeyPart, OnMissingKey, OnStoreError, Rate, RateLimitSpec, StoreChoice};
use crate::config::issues::{one_of, Issues};
use crate::config::values::OneOrMany;
use crate::filter::Refs;
use http::HeaderName;
use serde::Deserialize;

/// Without a key, each client address has its own budget.
const DEFAULT_KEY: &str = "client_ip";
/// How many gateways share a Redis budget, for the local fallback's share of it.
const DEFAULT_REPLICAS_HINT: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitFilter {
    pub(crate) rate: String,
    pub(crate) burst: Option<u64>,
    pub(crate) key: Option<OneOrMany>,
    pub(crate) on_missing_key: Option<String>,
    pub(crate) headers: Option<bool>,
    pub(crate) max_keys: Option<usize>,
    /// `local` (default) or `redis` (`stores.redis`, one budget across replicas).
    pub(crate) store: Option<String>,
    pub(crate) on_store_error: Option<String>,
    pub(crate) replicas_hint: Option<u32>,
}

/// Keys tracked per `rate_limit` filter unless `max_keys` says otherwise.
const DEFAULT_MAX_KEYS: usize = 100_000;

pub(crate) fn compile(
    raw: RateLimitFilter,
    path: &str,
    refs: &Refs,
    issues: &mut Issues,
) -> Option<RateLimitSpec> {
    let before = issues.list.len();
    let rate = Rate::parse(&raw.rate)
        .map_err(|message| issues.add(&format!("{path}.rate"), message))
        .ok();
    if raw.burst == Some(0) {
        issues.add(&format!("{path}.burst"), "must be at least 1");
    }
    let mut key = Vec::new();
    let texts = raw
        .key
        .map(OneOrMany::into_vec)
        .unwrap_or_else(|| vec![DEFAULT_KEY.into()]);
    for (i, text) in texts.iter().enumerate() {
        match key_part(text) {
            Some(part) => key.push(part),
            None => issues.add(
                &format!("{path}.key[{i}]"),
                format!("invalid key part {text:?}: expected client_ip, route, header:NAME or claim:NAME"),
            ),
        }
    }
    let on_missing_key = one_of(
        raw.on_missing_key.as_deref(),
        "value",
        &[
            ("reject", OnMissingKey::Reject),
            ("skip", OnMissingKey::Skip),
            ("shared", OnMissingKey::Shared),
        ],
        OnMissingKey::Shared,
        &format!("{path}.on_missing_key"),
        issues,
    );
    if raw.max_keys == Some(0) {
        issues.add(&format!("{path}.max_keys"), "must be at least 1");
    }
    let on_store_error = one_of(
        raw.on_store_error.as_deref(),
        "value",
        &[
            ("fail_open", OnStoreError::FailOpen),
            ("fail_closed", OnStoreError::FailClosed),
            ("local", OnStoreError::Local),
        ],
        OnStoreError::Local,
        &format!("{path}.on_store_error"),
        issues,
    );
    let store = match raw.store.as_deref() {
        None | Some("local") => {
            for (key, set) in [
                ("on_store_error", raw.on_store_error.is_some()),
                ("replicas_hint", raw.replicas_hint.is_some()),
            ] {
                if set {
                    issues.add(&format!("{path}.{key}"), "only applies with store: redis");
                }
            }
            StoreChoice::Local
        }
        Some("redis") => {
            if !refs.redis {
                issues.add(
                    &format!("{path}.store"),
                    "store: redis needs stores.redis (url, timeout) at the top level",
                );
            }
            if raw.replicas_hint == Some(0) {
                issues.add(&format!("{path}.replicas_hint"), "must be at least 1");
            }
            StoreChoice::Redis {
                on_error: on_store_error,
                replicas_hint: raw.replicas_hint.unwrap_or(DEFAULT_REPLICAS_HINT).max(1),
            }
        }
        Some(other) => {
            issues.add(
                &format!("{path}.store"),
                format!("unknown store {other:?}: expected local or redis"),
            );
            StoreChoice::Local
        }
    };
    let rate = rate?;
    (issues.list.len() == before).then(|| RateLimitSpec {
        // By default a client may send one period's worth at once, capped for long periods.
        burst: raw
            .burst
            .unwrap_or_else(|| rate.per_second().clamp(1, rate.count)),
        rate,
        key,
        on_missing_key,
        headers: raw.headers.unwrap_or(false),
        max_keys: raw.max_keys.unwrap_or(DEFAULT_MAX_KEYS),
        store,
    })
}

/// `client_ip`, `route`, `header:NAME` or `claim:NAME`.
pub(crate) fn key_part(text: &str) -> Option<KeyPart> {
    match text.split_once(':') {
        None if text == "client_ip" => Some(KeyPart::ClientIp),
        None if text == "route" => Some(KeyPart::Route),
        Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(KeyPart::Header),
        Some(("claim", name)) if !name.is_empty() => Some(KeyPart::Claim(name.to_string())),
        _ => None,
    }
}
