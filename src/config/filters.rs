//! Filters in the config: route `filters:` entries, named filters, and JWT providers.

use super::issues::{count_set, Issues};
use super::raw;
use crate::filter::cache::CacheSpec;
use crate::filter::circuit_breaker::BreakerSpec;
use crate::filter::jwt::{JwtSpec, ProviderSpec};
use crate::filter::rate_limit::RateLimitSpec;
use crate::filter::{cache, circuit_breaker, cors, headers, jwt, rate_limit};
use crate::filter::{CorsSpec, Headers};

/// A validated filter, ready to build.
#[derive(Debug, Clone)]
pub enum FilterSpec {
    Headers(Headers),
    Cors(CorsSpec),
    Jwt(JwtSpec),
    RateLimit(RateLimitSpec),
    CircuitBreaker(BreakerSpec),
    Cache(CacheSpec),
}

impl FilterSpec {
    /// Built once per route even when named: it works for the route's upstream (a breaker's
    /// state, a cache's background refreshes). A named cache still shares one store.
    pub fn per_route(&self) -> bool {
        matches!(self, FilterSpec::CircuitBreaker(_) | FilterSpec::Cache(_))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            FilterSpec::Headers(_) => "headers",
            FilterSpec::Cors(_) => "cors",
            FilterSpec::Jwt(_) => "jwt",
            FilterSpec::RateLimit(_) => "rate_limit",
            FilterSpec::CircuitBreaker(_) => "circuit_breaker",
            FilterSpec::Cache(_) => "cache",
        }
    }
}

/// A route's filter: its own, or a named one shared with other routes.
#[derive(Debug, Clone)]
pub enum FilterRef {
    Named(String),
    Inline(FilterSpec),
}

/// What filter entries may refer to: named filters (for `use`), JWT providers, stores.
pub(super) struct FilterRefs<'a> {
    /// Named filters defined so far, for `use`.
    pub named: &'a [(String, FilterSpec)],
    pub providers: &'a [ProviderSpec],
    pub redis: bool,
}

pub(super) fn compile_named_filters(
    map: serde_yaml::Mapping,
    refs: &FilterRefs,
    issues: &mut Issues,
) -> Vec<(String, FilterSpec)> {
    let mut out = Vec::new();
    for (key, value) in map {
        let Some(name) = key.as_str().map(str::to_string) else {
            issues.add("filters", "filter names must be strings");
            continue;
        };
        let path = format!("filters.{name}");
        let Some(entry) = issues.item::<raw::FilterEntry>(value, &path) else {
            continue;
        };
        let refs = FilterRefs {
            named: &[],
            ..*refs
        };
        match compile_filter(entry, &path, &refs, issues) {
            Some(FilterRef::Inline(spec)) => out.push((name, spec)),
            Some(FilterRef::Named(_)) => {
                issues.add(&path, "a named filter cannot itself be a `use`")
            }
            None => {}
        }
    }
    out
}

/// One `filters:` entry.
pub(super) fn compile_filter(
    entry: raw::FilterEntry,
    path: &str,
    refs: &FilterRefs,
    issues: &mut Issues,
) -> Option<FilterRef> {
    let known = refs.named;
    let given = count_set(&[
        entry.use_name.is_some(),
        entry.headers.is_some(),
        entry.cors.is_some(),
        entry.jwt.is_some(),
        entry.rate_limit.is_some(),
        entry.circuit_breaker.is_some(),
        entry.cache.is_some(),
    ]);
    if given != 1 {
        issues.add(
            path,
            "a filter entry needs exactly one of use, headers, cors, jwt, rate_limit, circuit_breaker, cache",
        );
        return None;
    }
    if let Some(name) = entry.use_name {
        if !known.iter().any(|(known, _)| *known == name) {
            let list = if known.is_empty() {
                "none defined".to_string()
            } else {
                let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
                names.join(", ")
            };
            issues.add(
                &format!("{path}.use"),
                format!("unknown filter {name:?} (known: {list})"),
            );
            return None;
        }
        return Some(FilterRef::Named(name));
    }
    let spec = if let Some(raw) = entry.headers {
        headers::config::compile(raw, &format!("{path}.headers"), issues).map(FilterSpec::Headers)
    } else if let Some(raw) = entry.cache {
        cache::config::compile(raw, &format!("{path}.cache"), issues).map(FilterSpec::Cache)
    } else if let Some(raw) = entry.circuit_breaker {
        circuit_breaker::config::compile(raw, &format!("{path}.circuit_breaker"), issues)
            .map(FilterSpec::CircuitBreaker)
    } else if let Some(raw) = entry.rate_limit {
        rate_limit::config::compile(raw, &format!("{path}.rate_limit"), refs.redis, issues)
            .map(FilterSpec::RateLimit)
    } else if let Some(raw) = entry.jwt {
        jwt::config::compile(raw, &format!("{path}.jwt"), refs.providers, issues)
            .map(FilterSpec::Jwt)
    } else {
        cors::config::compile(entry.cors?, &format!("{path}.cors"), issues).map(FilterSpec::Cors)
    };
    spec.map(FilterRef::Inline)
}
