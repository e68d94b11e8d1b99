//! The `cache` filter's config: its YAML mirror and validation into a [`CacheSpec`].

use super::policy::{AuthorizedAnswers, Lifetimes};
use super::targeted::Target;
use super::spec::{CacheSpec, QueryKey};
use crate::config::issues::{duration_field, optional_duration, size_field, Issues};
use crate::config::values::{OneOrMany, Scalar};
use crate::filter::rate_limit::config::key_part;
use crate::filter::rate_limit::KeyPart;
use crate::filter::Refs;
use http::HeaderName;
use serde::Deserialize;
use serde_yaml::Value;
use std::time::Duration;

const DEFAULT_MAX_SIZE: u64 = 256 << 20;
const MIN_MAX_SIZE: u64 = 1 << 16;
const DEFAULT_MAX_OBJECT_SIZE: u64 = 8 << 20;
/// Tells the client `HIT`, `MISS`, `STALE`…
const DEFAULT_STATUS_HEADER: &str = "x-cache";
/// How long requests for a key being filled wait for the fill before going upstream themselves.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CacheFilter {
    pub(crate) ttl: Option<Scalar>,
    pub(crate) ttl_override: Option<Scalar>,
    pub(crate) max_size: Option<Scalar>,
    pub(crate) max_object_size: Option<Scalar>,
    /// `false`, `per_credential` (or `true`), or `shared`.
    pub(crate) cache_authorized: Option<serde_yaml::Value>,
    pub(crate) query: Option<CacheQuery>,
    /// Extra key parts: `header:NAME`, `claim:NAME`.
    pub(crate) key: Option<OneOrMany>,
    pub(crate) status_header: Option<String>,
    pub(crate) lock_timeout: Option<Scalar>,
    pub(crate) stale_if_error: Option<Scalar>,
    pub(crate) stale_while_revalidate: Option<Scalar>,
    /// Targeted cache-control fields (RFC 9213) that override `Cache-Control`, in order.
    pub(crate) targeted: Option<OneOrMany>,
    pub(crate) strip_targeted: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CacheQuery {
    pub(crate) sort: Option<bool>,
    #[serde(default)]
    pub(crate) ignore: Vec<String>,
}

pub(crate) fn compile(
    raw: CacheFilter,
    path: &str,
    _refs: &Refs,
    issues: &mut Issues,
) -> Option<CacheSpec> {
    let before = issues.list.len();
    let ttl = optional_duration(raw.ttl, &format!("{path}.ttl"), issues);
    let ttl_override = optional_duration(raw.ttl_override, &format!("{path}.ttl_override"), issues);
    let max_size = size_field(
        raw.max_size,
        DEFAULT_MAX_SIZE,
        MIN_MAX_SIZE,
        &format!("{path}.max_size"),
        issues,
    );
    let max_object_size = size_field(
        raw.max_object_size,
        DEFAULT_MAX_OBJECT_SIZE,
        1,
        &format!("{path}.max_object_size"),
        issues,
    );
    if max_object_size > max_size / 4 {
        issues.add(
            &format!("{path}.max_object_size"),
            "must be at most a quarter of max_size",
        );
    }
    let mut key = Vec::new();
    let texts = raw.key.map(OneOrMany::into_vec).unwrap_or_default();
    for (i, text) in texts.iter().enumerate() {
        match key_part(text).filter(|p| matches!(p, KeyPart::Header(_) | KeyPart::Claim(_))) {
            Some(part) => key.push(part),
            None => issues.add(
                &format!("{path}.key[{i}]"),
                format!("invalid key part {text:?}: expected header:NAME or claim:NAME"),
            ),
        }
    }
    let status_header = match HeaderName::from_bytes(
        raw.status_header
            .as_deref()
            .unwrap_or(DEFAULT_STATUS_HEADER)
            .as_bytes(),
    ) {
        Ok(name) => name,
        Err(_) => {
            issues.add(&format!("{path}.status_header"), "invalid header name");
            HeaderName::from_static(DEFAULT_STATUS_HEADER)
        }
    };
    let query = raw.query.unwrap_or_default();
    let lock_timeout = duration_field(
        raw.lock_timeout,
        DEFAULT_LOCK_TIMEOUT,
        &format!("{path}.lock_timeout"),
        issues,
    );
    let stale_if_error = optional_duration(
        raw.stale_if_error,
        &format!("{path}.stale_if_error"),
        issues,
    );
    let stale_while_revalidate = optional_duration(
        raw.stale_while_revalidate,
        &format!("{path}.stale_while_revalidate"),
        issues,
    );
    let authorized = match raw.cache_authorized {
        None | Some(Value::Bool(false)) => AuthorizedAnswers::Never,
        Some(Value::Bool(true)) => AuthorizedAnswers::PerCredential,
        Some(Value::String(mode)) if mode == "per_credential" => AuthorizedAnswers::PerCredential,
        Some(Value::String(mode)) if mode == "shared" => AuthorizedAnswers::Shared,
        Some(_) => {
            issues.add(
                &format!("{path}.cache_authorized"),
                "expected false, per_credential (or true) or shared",
            );
            AuthorizedAnswers::Never
        }
    };
    let targeted = targeted_fields(raw.targeted, &format!("{path}.targeted"), issues);
    (issues.list.len() == before).then(|| CacheSpec {
        lifetimes: Lifetimes {
            ttl,
            ttl_override,
            authorized,
        },
        max_size,
        max_object_size,
        query: QueryKey {
            sort: query.sort.unwrap_or(false),
            ignore: query.ignore,
        },
        key,
        status_header,
        lock_timeout,
        stale_if_error,
        stale_while_revalidate,
        targeted,
        strip_targeted: raw.strip_targeted.unwrap_or(false),
    })
}

/// The targeted cache-control fields a cache follows when the route names none.
const DEFAULT_TARGETED: &str = "cdn-cache-control";

/// `targeted`: field names, first first; `Cache-Control` itself is not one.
fn targeted_fields(raw: Option<OneOrMany>, path: &str, issues: &mut Issues) -> Vec<Target> {
    let names = raw.map_or_else(|| vec![DEFAULT_TARGETED.to_string()], OneOrMany::into_vec);
    let mut targets = Vec::with_capacity(names.len());
    for (i, text) in names.iter().enumerate() {
        match HeaderName::from_bytes(text.as_bytes()) {
            Ok(name) if name == http::header::CACHE_CONTROL => issues.add(
                &format!("{path}[{i}]"),
                "Cache-Control is what targeted fields override; it cannot be one",
            ),
            Ok(name) => targets.push(Target::of(name)),
            Err(_) => issues.add(
                &format!("{path}[{i}]"),
                format!("invalid header name {text:?}"),
            ),
        }
    }
    targets
}
