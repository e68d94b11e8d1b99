//! Filters in the config: route `filters:` entries, named filters, and JWT providers.

use super::issues::{count_set, duration_field, size_field, Issues};
use super::raw;
use crate::filter::cache::policy::{AuthorizedAnswers, Lifetimes};
use crate::filter::cache::targeted::Target;
use crate::filter::cache::{CacheSpec, QueryKey};
use crate::filter::circuit_breaker::BreakerSpec;
use crate::filter::cors::OriginMatch;
use crate::filter::jwt::JwtSpec;
use crate::filter::jwt::{JwksSpec, KeyRing, KeySpec, ProviderSpec, TokenSource};
use crate::filter::rate_limit::{
    KeyPart, OnMissingKey, OnStoreError, Rate, RateLimitSpec, StoreChoice,
};
use crate::filter::{CorsSpec, HeaderEdits, Headers};
use crate::tls::UpstreamTls;
use http::Uri;
use http::{HeaderName, HeaderValue, Method};
use jsonwebtoken::Algorithm;
use serde_yaml::Value;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

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
    if let Some(raw) = entry.headers {
        let before = issues.list.len();
        let headers = Headers {
            request: header_edits(
                raw.request.unwrap_or_default(),
                &format!("{path}.headers.request"),
                issues,
            ),
            response: header_edits(
                raw.response.unwrap_or_default(),
                &format!("{path}.headers.response"),
                issues,
            ),
        };
        return (issues.list.len() == before)
            .then_some(FilterRef::Inline(FilterSpec::Headers(headers)));
    }
    if let Some(raw) = entry.cache {
        return compile_cache(raw, &format!("{path}.cache"), issues)
            .map(|s| FilterRef::Inline(FilterSpec::Cache(s)));
    }
    if let Some(raw) = entry.circuit_breaker {
        return compile_circuit_breaker(raw, &format!("{path}.circuit_breaker"), issues)
            .map(|s| FilterRef::Inline(FilterSpec::CircuitBreaker(s)));
    }
    if let Some(raw) = entry.rate_limit {
        return compile_rate_limit(raw, &format!("{path}.rate_limit"), refs.redis, issues)
            .map(|s| FilterRef::Inline(FilterSpec::RateLimit(s)));
    }
    if let Some(raw) = entry.jwt {
        return compile_jwt_filter(raw, &format!("{path}.jwt"), refs.providers, issues)
            .map(|s| FilterRef::Inline(FilterSpec::Jwt(s)));
    }
    let raw = entry.cors?;
    let before = issues.list.len();
    let cpath = format!("{path}.cors");
    if raw.allow_origins.is_empty() {
        issues.add(
            &format!("{cpath}.allow_origins"),
            "needs at least one origin (or \"*\")",
        );
    }
    let mut origins = Vec::new();
    for (i, origin) in raw.allow_origins.iter().enumerate() {
        match OriginMatch::parse(origin) {
            Ok(m) => origins.push(m),
            Err(message) => issues.add(&format!("{cpath}.allow_origins[{i}]"), message),
        }
    }
    let mut methods = Vec::new();
    for (i, name) in raw.allow_methods.iter().enumerate() {
        match Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
            Ok(method) => methods.push(method),
            Err(_) => issues.add(
                &format!("{cpath}.allow_methods[{i}]"),
                format!("invalid method {name:?}"),
            ),
        }
    }
    for (i, name) in raw.allow_headers.iter().enumerate() {
        if name != "*" && HeaderName::from_bytes(name.as_bytes()).is_err() {
            issues.add(
                &format!("{cpath}.allow_headers[{i}]"),
                format!("invalid header name {name:?}"),
            );
        }
    }
    let mut expose = Vec::new();
    for (i, name) in raw.expose_headers.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => expose.push(header),
            Err(_) => issues.add(
                &format!("{cpath}.expose_headers[{i}]"),
                format!("invalid header name {name:?}"),
            ),
        }
    }
    let max_age = raw.max_age.map(|age| {
        duration_field(
            Some(age),
            Duration::from_secs(0),
            &format!("{cpath}.max_age"),
            issues,
        )
    });
    let spec = CorsSpec {
        origins,
        methods,
        headers: raw.allow_headers,
        expose,
        credentials: raw.allow_credentials,
        max_age,
    };
    (issues.list.len() == before).then_some(FilterRef::Inline(FilterSpec::Cors(spec)))
}

fn header_edits(raw: raw::HeaderEdits, path: &str, issues: &mut Issues) -> HeaderEdits {
    let mut edits = HeaderEdits::default();
    let pairs =
        |map: std::collections::BTreeMap<String, String>, key: &str, issues: &mut Issues| {
            let mut out = Vec::new();
            for (name, value) in map {
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    (Ok(name), Ok(value)) => out.push((name, value)),
                    _ => issues.add(
                        &format!("{path}.{key}.{name}"),
                        "invalid header name or value",
                    ),
                }
            }
            out
        };
    edits.set = pairs(raw.set, "set", issues);
    edits.add = pairs(raw.add, "add", issues);
    for (i, name) in raw.remove.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => edits.remove.push(name),
            Err(_) => issues.add(
                &format!("{path}.remove[{i}]"),
                format!("invalid header name {name:?}"),
            ),
        }
    }
    edits
}

pub(super) fn compile_jwt_providers(
    map: serde_yaml::Mapping,
    issues: &mut Issues,
) -> Vec<ProviderSpec> {
    let mut out = Vec::new();
    for (key, value) in map {
        let Some(name) = key.as_str().map(str::to_string) else {
            issues.add("jwt_providers", "provider names must be strings");
            continue;
        };
        let path = format!("jwt_providers.{name}");
        let Some(raw) = issues.item::<raw::JwtProvider>(value, &path) else {
            continue;
        };
        let before = issues.list.len();
        let mut algorithms = Vec::new();
        if raw.algorithms.is_empty() {
            issues.add(
                &format!("{path}.algorithms"),
                "list the accepted algorithms, e.g. [RS256]",
            );
        }
        for (i, text) in raw.algorithms.iter().enumerate() {
            match Algorithm::from_str(text) {
                Ok(alg) => algorithms.push(alg),
                Err(_) => issues.add(
                    &format!("{path}.algorithms[{i}]"),
                    format!("unknown algorithm {text:?}: expected HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA"),
                ),
            }
        }
        let keys = compile_key_source(&raw, &path, issues);
        let fixed = keys.as_ref().and_then(KeySpec::fixed);
        if let (true, Some(ring)) = (issues.list.len() == before, fixed) {
            if !ring
                .keys
                .iter()
                .any(|k| algorithms.iter().any(|&alg| k.fits(alg)))
            {
                issues.add(
                    &format!("{path}.algorithms"),
                    "none of these algorithms fits the configured key",
                );
            }
        }
        let source = match &raw.from {
            None => Some(TokenSource::Bearer),
            Some(from) => match (&from.header, &from.cookie, &from.query) {
                (Some(h), None, None) => match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(name) => Some(TokenSource::Header(name)),
                    Err(_) => {
                        issues.add(
                            &format!("{path}.from.header"),
                            format!("invalid header name {h:?}"),
                        );
                        None
                    }
                },
                (None, Some(c), None) => Some(TokenSource::Cookie(c.clone())),
                (None, None, Some(q)) => Some(TokenSource::Query(q.clone())),
                _ => {
                    issues.add(
                        &format!("{path}.from"),
                        "needs exactly one of header, cookie, query",
                    );
                    None
                }
            },
        };
        let leeway = duration_field(
            raw.leeway,
            Duration::from_secs(30),
            &format!("{path}.leeway"),
            issues,
        );
        let max_token_bytes = size_field(
            raw.max_token_bytes,
            8192,
            256,
            &format!("{path}.max_token_bytes"),
            issues,
        ) as usize;
        let max_lifetime = raw.max_lifetime.map(|v| {
            duration_field(
                Some(v),
                Duration::from_secs(1),
                &format!("{path}.max_lifetime"),
                issues,
            )
        });
        if let (true, Some(keys)) = (issues.list.len() == before, keys) {
            out.push(ProviderSpec {
                name,
                issuer: raw.issuer,
                audiences: raw.audiences,
                algorithms,
                keys,
                leeway,
                max_token_bytes,
                require_exp: raw.require_exp.unwrap_or(true),
                max_lifetime,
                sources: source.into_iter().collect(),
            });
        }
    }
    out
}

/// The provider's one key source: `secret`, `public_key_file`, `jwks_file` or `jwks_url`
/// (with its refresh settings, which mean nothing for the others).
fn compile_key_source(raw: &raw::JwtProvider, path: &str, issues: &mut Issues) -> Option<KeySpec> {
    let sources = count_set(&[
        raw.secret.is_some(),
        raw.public_key_file.is_some(),
        raw.jwks_file.is_some(),
        raw.jwks_url.is_some(),
    ]);
    if sources != 1 {
        issues.add(
            path,
            "needs exactly one key source: secret, public_key_file, jwks_file or jwks_url",
        );
        return None;
    }
    if raw.jwks_url.is_none() {
        let remote_only = [
            ("refresh", raw.refresh.is_some()),
            ("min_refetch_interval", raw.min_refetch_interval.is_some()),
            ("fetch_timeout", raw.fetch_timeout.is_some()),
            ("ready_timeout", raw.ready_timeout.is_some()),
            ("jwks_ca_file", raw.jwks_ca_file.is_some()),
        ];
        for (key, _) in remote_only.iter().filter(|(_, set)| *set) {
            issues.add(&format!("{path}.{key}"), "only applies with jwks_url");
        }
    }
    if let Some(secret) = &raw.secret {
        if secret.len() < 32 {
            issues.add(
                &format!("{path}.secret"),
                "an HMAC secret needs at least 32 bytes",
            );
        }
        return Some(KeySpec::Fixed {
            material: secret.as_bytes().to_vec(),
            ring: Arc::new(KeyRing::from_secret(secret.as_bytes())),
        });
    }
    if let Some(url) = &raw.jwks_url {
        return compile_jwks_url(raw, url, path, issues)
            .map(|spec| KeySpec::Remote(Box::new(spec)));
    }
    type Parse = fn(&[u8]) -> Result<KeyRing, String>;
    let (key, file, parse): (_, _, Parse) = match (&raw.public_key_file, &raw.jwks_file) {
        (Some(file), _) => ("public_key_file", file, |pem| {
            KeyRing::from_pem(pem)
                .ok_or_else(|| "is not an RSA, EC or Ed25519 public key in PEM".to_string())
        }),
        (None, Some(file)) => ("jwks_file", file, |json| KeyRing::from_jwks(json, 0)),
        (None, None) => return None,
    };
    let file_path = issues.file(file);
    let parsed = std::fs::read(&file_path)
        .map_err(|e| format!("cannot read {}: {e}", file_path.display()))
        .and_then(|bytes| {
            let ring = parse(&bytes).map_err(|e| format!("{}: {e}", file_path.display()))?;
            Ok((bytes, ring))
        });
    match parsed {
        Ok((material, ring)) => Some(KeySpec::Fixed {
            material,
            ring: Arc::new(ring),
        }),
        Err(message) => {
            issues.add(&format!("{path}.{key}"), message);
            None
        }
    }
}

fn compile_jwks_url(
    raw: &raw::JwtProvider,
    url: &str,
    path: &str,
    issues: &mut Issues,
) -> Option<JwksSpec> {
    let before = issues.list.len();
    let parsed = Uri::try_from(url).ok().filter(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    });
    let Some(uri) = parsed else {
        issues.add(
            &format!("{path}.jwks_url"),
            format!("{url:?} is not an http:// or https:// URL"),
        );
        return None;
    };
    let tls = if uri.scheme_str() == Some("https") {
        let ca = raw.jwks_ca_file.as_deref().map(|f| issues.file(f));
        match UpstreamTls::new(ca, None, false) {
            Ok(tls) => Some(tls),
            Err(message) => {
                issues.add(&format!("{path}.jwks_ca_file"), message);
                None
            }
        }
    } else {
        if raw.jwks_ca_file.is_some() {
            issues.add(
                &format!("{path}.jwks_ca_file"),
                "only applies to an https:// jwks_url",
            );
        }
        None
    };
    let seconds = |value: &Option<raw::Scalar>, default: u64, key: &str, issues: &mut Issues| {
        duration_field(
            value.clone(),
            Duration::from_secs(default),
            &format!("{path}.{key}"),
            issues,
        )
    };
    let spec = JwksSpec {
        url: uri,
        refresh: seconds(&raw.refresh, 300, "refresh", issues),
        min_refetch_interval: seconds(
            &raw.min_refetch_interval,
            30,
            "min_refetch_interval",
            issues,
        ),
        fetch_timeout: seconds(&raw.fetch_timeout, 5, "fetch_timeout", issues),
        ready_timeout: seconds(&raw.ready_timeout, 10, "ready_timeout", issues),
        tls,
    };
    (issues.list.len() == before).then_some(spec)
}

fn compile_jwt_filter(
    raw: raw::JwtFilter,
    path: &str,
    providers: &[ProviderSpec],
    issues: &mut Issues,
) -> Option<JwtSpec> {
    let before = issues.list.len();
    let mut names: Vec<String> = raw.providers;
    if let Some(one) = raw.provider {
        names.insert(0, one);
    }
    if names.is_empty() {
        issues.add(path, "needs provider (or providers)");
    }
    let mut chosen = Vec::new();
    for name in &names {
        match providers.iter().find(|p| &p.name == name) {
            Some(provider) => chosen.push(provider),
            None => {
                let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
                let list = if known.is_empty() {
                    "none defined".to_string()
                } else {
                    known.join(", ")
                };
                issues.add(
                    &format!("{path}.provider"),
                    format!("unknown JWT provider {name:?} (known: {list})"),
                );
            }
        }
    }
    if chosen.len() > 1 && chosen.iter().any(|p| p.issuer.is_none()) {
        issues.add(
            path,
            "with several providers, each needs an issuer (the token's iss picks one)",
        );
    }
    let mut forward_claims = Vec::new();
    for (claim, header) in raw.forward_claims {
        match HeaderName::from_bytes(header.as_bytes()) {
            Ok(name) => forward_claims.push((claim, name)),
            Err(_) => issues.add(
                &format!("{path}.forward_claims.{claim}"),
                format!("invalid header name {header:?}"),
            ),
        }
    }
    let require = raw.require.unwrap_or_default();
    for (claim, values) in &require.claims {
        for (i, value) in values.iter().enumerate() {
            if !(value.is_string() || value.is_number() || value.is_boolean()) {
                issues.add(
                    &format!("{path}.require.claims.{claim}[{i}]"),
                    "expected a string, number or boolean",
                );
            }
        }
    }
    (issues.list.len() == before).then(|| JwtSpec {
        providers: names,
        require_scopes: require.scopes,
        require_claims: require.claims.into_iter().collect(),
        forward_claims,
        forward_token: raw.forward_token.unwrap_or(true),
    })
}

/// Keys tracked per `rate_limit` filter unless `max_keys` says otherwise.
const DEFAULT_MAX_KEYS: usize = 100_000;

fn compile_rate_limit(
    raw: raw::RateLimitFilter,
    path: &str,
    redis: bool,
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
        .map(raw::OneOrMany::into_vec)
        .unwrap_or_else(|| vec!["client_ip".into()]);
    for (i, text) in texts.iter().enumerate() {
        match key_part(text) {
            Some(part) => key.push(part),
            None => issues.add(
                &format!("{path}.key[{i}]"),
                format!("invalid key part {text:?}: expected client_ip, route, header:NAME or claim:NAME"),
            ),
        }
    }
    let on_missing_key = match raw.on_missing_key.as_deref() {
        None | Some("shared") => OnMissingKey::Shared,
        Some("skip") => OnMissingKey::Skip,
        Some("reject") => OnMissingKey::Reject,
        Some(other) => {
            issues.add(
                &format!("{path}.on_missing_key"),
                format!("unknown value {other:?}: expected reject, skip or shared"),
            );
            OnMissingKey::Shared
        }
    };
    if raw.max_keys == Some(0) {
        issues.add(&format!("{path}.max_keys"), "must be at least 1");
    }
    let on_store_error = match raw.on_store_error.as_deref() {
        None | Some("local") => OnStoreError::Local,
        Some("fail_open") => OnStoreError::FailOpen,
        Some("fail_closed") => OnStoreError::FailClosed,
        Some(other) => {
            issues.add(
                &format!("{path}.on_store_error"),
                format!("unknown value {other:?}: expected fail_open, fail_closed or local"),
            );
            OnStoreError::Local
        }
    };
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
            if !redis {
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
                replicas_hint: raw.replicas_hint.unwrap_or(1).max(1),
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

fn compile_circuit_breaker(
    raw: raw::CircuitBreakerFilter,
    path: &str,
    issues: &mut Issues,
) -> Option<BreakerSpec> {
    let before = issues.list.len();
    let failure_ratio = raw.failure_ratio.unwrap_or(0.5);
    if !(failure_ratio > 0.0 && failure_ratio <= 1.0) {
        issues.add(
            &format!("{path}.failure_ratio"),
            "must be above 0 and at most 1, e.g. 0.5",
        );
    }
    let duration = |value: Option<raw::Scalar>, default: u64, key: &str, issues: &mut Issues| {
        duration_field(
            value,
            Duration::from_secs(default),
            &format!("{path}.{key}"),
            issues,
        )
    };
    let window = duration(raw.window, 10, "window", issues);
    let open_for = duration(raw.open_for, 30, "open_for", issues);
    let max_open_for = duration(raw.max_open_for, 300, "max_open_for", issues);
    if max_open_for < open_for {
        issues.add(
            &format!("{path}.max_open_for"),
            "must not be shorter than open_for",
        );
    }
    let failure_statuses = raw.failure_statuses.unwrap_or_else(|| vec![502, 503, 504]);
    for (i, status) in failure_statuses.iter().enumerate() {
        if !(100..=599).contains(status) {
            issues.add(
                &format!("{path}.failure_statuses[{i}]"),
                format!("{status} is not an HTTP status"),
            );
        }
    }
    for (key, value) in [
        ("min_requests", raw.min_requests),
        ("consecutive_failures", raw.consecutive_failures),
        ("half_open_requests", raw.half_open_requests),
    ] {
        if value == Some(0) {
            issues.add(&format!("{path}.{key}"), "must be at least 1");
        }
    }
    (issues.list.len() == before).then(|| BreakerSpec {
        failure_ratio,
        window,
        min_requests: raw.min_requests.unwrap_or(20),
        consecutive_failures: raw.consecutive_failures,
        failure_statuses,
        open_for,
        max_open_for,
        half_open_requests: raw.half_open_requests.unwrap_or(1),
    })
}

/// `client_ip`, `route`, `header:NAME` or `claim:NAME`.
fn key_part(text: &str) -> Option<KeyPart> {
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

fn compile_cache(raw: raw::CacheFilter, path: &str, issues: &mut Issues) -> Option<CacheSpec> {
    let before = issues.list.len();
    let lifetime = |value: Option<raw::Scalar>, key: &str, issues: &mut Issues| {
        value.map(|v| {
            duration_field(
                Some(v),
                Duration::from_secs(1),
                &format!("{path}.{key}"),
                issues,
            )
        })
    };
    let ttl = lifetime(raw.ttl, "ttl", issues);
    let ttl_override = lifetime(raw.ttl_override, "ttl_override", issues);
    let max_size = size_field(
        raw.max_size,
        256 << 20,
        1 << 16,
        &format!("{path}.max_size"),
        issues,
    );
    let max_object_size = size_field(
        raw.max_object_size,
        8 << 20,
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
    let texts = raw.key.map(raw::OneOrMany::into_vec).unwrap_or_default();
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
        raw.status_header.as_deref().unwrap_or("x-cache").as_bytes(),
    ) {
        Ok(name) => name,
        Err(_) => {
            issues.add(&format!("{path}.status_header"), "invalid header name");
            HeaderName::from_static("x-cache")
        }
    };
    let query = raw.query.unwrap_or_default();
    let lock_timeout = duration_field(
        raw.lock_timeout,
        Duration::from_secs(5),
        &format!("{path}.lock_timeout"),
        issues,
    );
    let stale_if_error = lifetime(raw.stale_if_error, "stale_if_error", issues);
    let stale_while_revalidate =
        lifetime(raw.stale_while_revalidate, "stale_while_revalidate", issues);
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
fn targeted_fields(raw: Option<raw::OneOrMany>, path: &str, issues: &mut Issues) -> Vec<Target> {
    let names = raw.map_or_else(
        || vec![DEFAULT_TARGETED.to_string()],
        raw::OneOrMany::into_vec,
    );
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
