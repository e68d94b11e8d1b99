//! Filters in the config: route `filters:` entries, named filters, and JWT providers.

use super::compile::{
    count_set, duration_field, size_field, FilterRef, FilterSpec, Issues, JwtSpec,
};
use super::raw;
use crate::filter::cors::OriginMatch;
use crate::filter::jwt::{self, Key, Provider, TokenSource};

/// Verified tokens remembered per provider, and the shards they are spread over (one per
/// worker index in use; more shards than workers only cost a little memory).
const CACHE_ENTRIES: usize = 65_536;
const CACHE_SHARDS: usize = 16;
use crate::filter::{CorsSpec, HeaderEdits, Headers};
use http::{HeaderName, HeaderValue, Method};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn compile_named_filters(
    map: serde_yaml::Mapping,
    providers: &[(String, Arc<Provider>)],
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
        match compile_filter(entry, &path, &[], providers, issues) {
            Some(FilterRef::Inline(spec)) => out.push((name, spec)),
            Some(FilterRef::Named(_)) => {
                issues.add(&path, "a named filter cannot itself be a `use`")
            }
            None => {}
        }
    }
    out
}

/// One `filters:` entry. `known`: the named filters a `use` may refer to.
pub(super) fn compile_filter(
    entry: raw::FilterEntry,
    path: &str,
    known: &[&str],
    providers: &[(String, Arc<Provider>)],
    issues: &mut Issues,
) -> Option<FilterRef> {
    let given = count_set(&[
        entry.use_name.is_some(),
        entry.headers.is_some(),
        entry.cors.is_some(),
        entry.jwt.is_some(),
    ]);
    if given != 1 {
        issues.add(
            path,
            "a filter entry needs exactly one of use, headers, cors, jwt",
        );
        return None;
    }
    if let Some(name) = entry.use_name {
        if !known.contains(&name.as_str()) {
            let list = if known.is_empty() {
                "none defined".to_string()
            } else {
                known.join(", ")
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
    if let Some(raw) = entry.jwt {
        return compile_jwt_filter(raw, &format!("{path}.jwt"), providers, issues)
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
) -> Vec<(String, Arc<Provider>)> {
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
        let fitting = |family: jsonwebtoken::AlgorithmFamily| -> Vec<Algorithm> {
            algorithms
                .iter()
                .copied()
                .filter(|a| a.family() == family)
                .collect()
        };
        let sources = count_set(&[
            raw.secret.is_some(),
            raw.public_key_file.is_some(),
            raw.jwks_file.is_some(),
        ]);
        let mut keys = Vec::new();
        if sources != 1 {
            issues.add(
                &path,
                "needs exactly one key source: secret, public_key_file or jwks_file",
            );
        } else if let Some(secret) = &raw.secret {
            if secret.len() < 32 {
                issues.add(
                    &format!("{path}.secret"),
                    "an HMAC secret needs at least 32 bytes",
                );
            }
            keys.push(Key {
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
                algorithms: fitting(jsonwebtoken::AlgorithmFamily::Hmac),
            });
        } else if let Some(file) = &raw.public_key_file {
            let file_path = issues.file(file);
            match std::fs::read(&file_path) {
                Err(e) => issues.add(
                    &format!("{path}.public_key_file"),
                    format!("cannot read {}: {e}", file_path.display()),
                ),
                Ok(pem) => {
                    let parsed = DecodingKey::from_rsa_pem(&pem)
                        .map(|k| (k, jsonwebtoken::AlgorithmFamily::Rsa))
                        .or_else(|_| {
                            DecodingKey::from_ec_pem(&pem)
                                .map(|k| (k, jsonwebtoken::AlgorithmFamily::Ec))
                        })
                        .or_else(|_| {
                            DecodingKey::from_ed_pem(&pem)
                                .map(|k| (k, jsonwebtoken::AlgorithmFamily::Ed))
                        });
                    match parsed {
                        Ok((key, family)) => keys.push(Key {
                            kid: None,
                            key,
                            algorithms: fitting(family),
                        }),
                        Err(_) => issues.add(
                            &format!("{path}.public_key_file"),
                            format!(
                                "{} is not an RSA, EC or Ed25519 public key in PEM",
                                file_path.display()
                            ),
                        ),
                    }
                }
            }
        } else if let Some(file) = &raw.jwks_file {
            let file_path = issues.file(file);
            let set = std::fs::read(&file_path)
                .map_err(|e| format!("cannot read {}: {e}", file_path.display()))
                .and_then(|bytes| {
                    serde_json::from_slice::<JwkSet>(&bytes)
                        .map_err(|e| format!("{} is not a JWK set: {e}", file_path.display()))
                });
            match set {
                Err(message) => issues.add(&format!("{path}.jwks_file"), message),
                Ok(set) => {
                    for jwk in &set.keys {
                        let family = match &jwk.algorithm {
                            AlgorithmParameters::RSA(_) => jsonwebtoken::AlgorithmFamily::Rsa,
                            AlgorithmParameters::EllipticCurve(_) => {
                                jsonwebtoken::AlgorithmFamily::Ec
                            }
                            AlgorithmParameters::OctetKeyPair(_) => {
                                jsonwebtoken::AlgorithmFamily::Ed
                            }
                            AlgorithmParameters::OctetKey(_) => jsonwebtoken::AlgorithmFamily::Hmac,
                            _ => continue,
                        };
                        if let Ok(key) = DecodingKey::from_jwk(jwk) {
                            keys.push(Key {
                                kid: jwk.common.key_id.clone(),
                                key,
                                algorithms: fitting(family),
                            });
                        }
                    }
                    if keys.is_empty() {
                        issues.add(&format!("{path}.jwks_file"), "holds no usable key");
                    }
                }
            }
        }
        if issues.list.len() == before
            && !keys.is_empty()
            && keys.iter().all(|k| k.algorithms.is_empty())
        {
            issues.add(
                &format!("{path}.algorithms"),
                "none of these algorithms fits the configured key",
            );
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
        if issues.list.len() == before {
            out.push((
                name.clone(),
                Arc::new(Provider {
                    name,
                    issuer: raw.issuer,
                    audiences: raw.audiences,
                    keys,
                    leeway,
                    max_token_bytes,
                    require_exp: raw.require_exp.unwrap_or(true),
                    max_lifetime,
                    sources: source.into_iter().collect(),
                    cache: jwt::VerifyCache::new(CACHE_ENTRIES, CACHE_SHARDS),
                }),
            ));
        }
    }
    out
}

fn compile_jwt_filter(
    raw: raw::JwtFilter,
    path: &str,
    providers: &[(String, Arc<Provider>)],
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
        match providers.iter().find(|(n, _)| n == name) {
            Some((_, provider)) => chosen.push(Arc::clone(provider)),
            None => {
                let known: Vec<&str> = providers.iter().map(|(n, _)| n.as_str()).collect();
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
    (issues.list.len() == before).then(|| JwtSpec {
        providers: chosen,
        require_scopes: require.scopes,
        require_claims: require.claims.into_iter().collect(),
        forward_claims,
        forward_token: raw.forward_token.unwrap_or(true),
    })
}
