//! The `jwt` filter's and `jwt_providers:` config: YAML mirrors and validation.

use super::{JwksSpec, JwtSpec, KeyRing, KeySpec, ProviderSpec, TokenSource};
use crate::config::issues::{
    count_set, duration_field, named_entries, optional_duration, size_field, unknown, Issues,
};
use crate::config::values::Scalar;
use crate::filter::Refs;
use crate::tls::UpstreamTls;
use http::{HeaderName, Uri};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Clock skew allowed on `exp`, `nbf` and `iat`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Longer tokens are refused before any decoding.
const DEFAULT_MAX_TOKEN_BYTES: u64 = 8192;
const MIN_MAX_TOKEN_BYTES: u64 = 256;
const DEFAULT_REQUIRE_EXP: bool = true;
/// The upstream sees the token unless told otherwise.
const DEFAULT_FORWARD_TOKEN: bool = true;
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// An unknown `kid` refetches the key set at most this often.
const DEFAULT_JWKS_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long readiness waits for a key set's first load.
const DEFAULT_JWKS_READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtProvider {
    pub(crate) issuer: Option<String>,
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    #[serde(default)]
    pub(crate) algorithms: Vec<String>,
    pub(crate) secret: Option<String>,
    pub(crate) public_key_file: Option<String>,
    pub(crate) jwks_file: Option<String>,
    pub(crate) jwks_url: Option<String>,
    /// Remote key sets: how often to refetch, the floor between early refetches for unknown
    /// `kid`s, the time a fetch may take, how long readiness waits, and a private CA.
    pub(crate) refresh: Option<Scalar>,
    pub(crate) min_refetch_interval: Option<Scalar>,
    pub(crate) fetch_timeout: Option<Scalar>,
    pub(crate) ready_timeout: Option<Scalar>,
    pub(crate) jwks_ca_file: Option<String>,
    pub(crate) leeway: Option<Scalar>,
    pub(crate) max_token_bytes: Option<Scalar>,
    pub(crate) require_exp: Option<bool>,
    pub(crate) max_lifetime: Option<Scalar>,
    pub(crate) from: Option<TokenFrom>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenFrom {
    pub(crate) header: Option<String>,
    pub(crate) cookie: Option<String>,
    pub(crate) query: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtFilter {
    pub(crate) provider: Option<String>,
    #[serde(default)]
    pub(crate) providers: Vec<String>,
    pub(crate) require: Option<JwtRequire>,
    #[serde(default)]
    pub(crate) forward_claims: BTreeMap<String, String>,
    pub(crate) forward_token: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtRequire {
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    #[serde(default)]
    /// claim → accepted values: strings, numbers or booleans.
    pub(crate) claims: BTreeMap<String, Vec<serde_json::Value>>,
}

pub(crate) fn compile_providers(
    map: serde_yaml::Mapping,
    issues: &mut Issues,
) -> Vec<ProviderSpec> {
    let mut out = Vec::new();
    for (name, path, value) in named_entries(map, "jwt_providers", "provider", issues) {
        let Some(raw) = issues.item::<JwtProvider>(value, &path) else {
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
            DEFAULT_LEEWAY,
            &format!("{path}.leeway"),
            issues,
        );
        let max_token_bytes = size_field(
            raw.max_token_bytes,
            DEFAULT_MAX_TOKEN_BYTES,
            MIN_MAX_TOKEN_BYTES,
            &format!("{path}.max_token_bytes"),
            issues,
        ) as usize;
        let max_lifetime =
            optional_duration(raw.max_lifetime, &format!("{path}.max_lifetime"), issues);
        if let (true, Some(keys)) = (issues.list.len() == before, keys) {
            out.push(ProviderSpec {
                name,
                issuer: raw.issuer,
                audiences: raw.audiences,
                algorithms,
                keys,
                leeway,
                max_token_bytes,
                require_exp: raw.require_exp.unwrap_or(DEFAULT_REQUIRE_EXP),
                max_lifetime,
                sources: source.into_iter().collect(),
            });
        }
    }
    out
}

/// The provider's one key source: `secret`, `public_key_file`, `jwks_file` or `jwks_url`
/// (with its refresh settings, which mean nothing for the others).
fn compile_key_source(raw: &JwtProvider, path: &str, issues: &mut Issues) -> Option<KeySpec> {
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
    raw: &JwtProvider,
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
    let spec = JwksSpec {
        url: uri,
        refresh: duration_field(
            raw.refresh.clone(),
            DEFAULT_JWKS_REFRESH,
            &format!("{path}.refresh"),
            issues,
        ),
        min_refetch_interval: duration_field(
            raw.min_refetch_interval.clone(),
            DEFAULT_JWKS_MIN_REFETCH_INTERVAL,
            &format!("{path}.min_refetch_interval"),
            issues,
        ),
        fetch_timeout: duration_field(
            raw.fetch_timeout.clone(),
            DEFAULT_JWKS_FETCH_TIMEOUT,
            &format!("{path}.fetch_timeout"),
            issues,
        ),
        ready_timeout: duration_field(
            raw.ready_timeout.clone(),
            DEFAULT_JWKS_READY_TIMEOUT,
            &format!("{path}.ready_timeout"),
            issues,
        ),
        tls,
    };
    (issues.list.len() == before).then_some(spec)
}

pub(crate) fn compile(
    raw: JwtFilter,
    path: &str,
    refs: &Refs,
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
        match refs.providers.iter().find(|p| &p.name == name) {
            Some(provider) => chosen.push(provider),
            None => {
                let known = refs.providers.iter().map(|p| p.name.as_str());
                issues.add(
                    &format!("{path}.provider"),
                    unknown("JWT provider", name, known),
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
        forward_token: raw.forward_token.unwrap_or(DEFAULT_FORWARD_TOKEN),
    })
}
