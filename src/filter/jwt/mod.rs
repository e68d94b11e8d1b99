//! `jwt`: bearer-token authentication against configured providers (`jwt_providers:`), then
//! optional authorization (`require`), claim forwarding and token stripping.
//!
//! What is checked, in order, before any claim is believed: the token's size (before any
//! decoding), the header (`alg` in the provider's allow-list AND of the key's type, so an
//! RSA public key is never used as an HMAC secret; no `crit` parameter, since none is
//! understood; keys are never taken from the token: `jku`, `x5u` and `jwk` are ignored), the
//! signature, `exp` (required unless a provider says otherwise) and `nbf` with `leeway`, `iss`
//! and `aud` when configured, and `max_lifetime`. jsonwebtoken skips `nbf` unless told to and
//! does not look at `crit`: both are done here.

pub(super) mod build;
mod cache;
pub(crate) mod config;
mod jwks;
mod keys;
mod provider;
mod token;

use provider::{claim_holds, claim_text, grants_scope, json_segment};
pub use provider::{KeySpec, Keys, Provider, ProviderSpec};

pub use jwks::{JwksSpec, RemoteKeys};
pub use keys::KeyRing;
pub(crate) use token::find_token;
pub use token::{Refusal, TokenSource};

use super::{Filter, Flow};
use crate::body::Body;
use crate::context::RequestCtx;
use crate::error::{error_response, ProxyError};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use serde_json::Value;
use std::sync::Arc;

/// A validated `jwt` filter.
#[derive(Debug, Clone)]
pub(crate) struct JwtSpec {
    /// Names in `jwt_providers`.
    pub(crate) providers: Vec<String>,
    pub(crate) require_scopes: Vec<String>,
    pub(crate) require_claims: Vec<(String, Vec<serde_json::Value>)>,
    pub(crate) forward_claims: Vec<(String, HeaderName)>,
    pub(crate) forward_token: bool,
}

pub(crate) struct Jwt {
    pub(crate) providers: Vec<Arc<Provider>>,
    /// Every place the providers read tokens from, in order, without repeats.
    pub(crate) sources: Vec<TokenSource>,
    pub(crate) require_scopes: Vec<String>,
    /// claim → accepted values (any one): strings, numbers or booleans.
    pub(crate) require_claims: Vec<(String, Vec<Value>)>,
    /// claim → upstream header; such headers from the client are always removed.
    pub(crate) forward_claims: Vec<(String, HeaderName)>,
    pub(crate) forward_token: bool,
}

impl Jwt {
    /// Every place `providers` read tokens from, in order, without repeats.
    pub(crate) fn token_sources(providers: &[Arc<Provider>]) -> Vec<TokenSource> {
        let mut sources: Vec<TokenSource> = Vec::new();
        for source in providers.iter().flat_map(|p| &p.spec.sources) {
            if !sources.contains(source) {
                sources.push(source.clone());
            }
        }
        sources
    }

    async fn authenticate(&self, req: &Parts) -> Result<Arc<Value>, Refusal> {
        let token = find_token(req, &self.sources)?;
        // Several providers: the token's (unverified) issuer picks the one to verify with.
        let provider = if self.providers.len() == 1 {
            &self.providers[0]
        } else {
            let issuer = token
                .split('.')
                .nth(1)
                .and_then(json_segment)
                .and_then(|claims| claims["iss"].as_str().map(str::to_string));
            self.providers
                .iter()
                .find(|p| p.spec.issuer.is_some() && p.spec.issuer == issuer)
                .ok_or(Refusal::Invalid("no provider for this issuer"))?
        };
        let claims = provider.verify(token).await?;
        for scope in &self.require_scopes {
            let granted =
                grants_scope(&claims["scope"], scope) || grants_scope(&claims["scp"], scope);
            if !granted {
                return Err(Refusal::Forbidden("missing scope"));
            }
        }
        for (name, accepted) in &self.require_claims {
            if !accepted
                .iter()
                .any(|a| claim_holds(&claims[name.as_str()], a))
            {
                return Err(Refusal::Forbidden("missing claim value"));
            }
        }
        Ok(claims)
    }

    fn refuse(&self, refusal: &Refusal, ctx: &RequestCtx) -> Response<Body> {
        let (status, message, challenge) = match refusal {
            Refusal::Missing => (
                StatusCode::UNAUTHORIZED,
                "authentication required",
                "Bearer",
            ),
            Refusal::Malformed(_) => (
                StatusCode::BAD_REQUEST,
                "ambiguous credentials",
                "Bearer error=\"invalid_request\"",
            ),
            Refusal::Invalid(_) | Refusal::UnknownKid => (
                StatusCode::UNAUTHORIZED,
                "invalid token",
                "Bearer error=\"invalid_token\"",
            ),
            Refusal::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "insufficient scope",
                "Bearer error=\"insufficient_scope\"",
            ),
            // The client's token may be fine: no challenge, and a status that says "retry".
            Refusal::Unavailable => {
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authentication keys unavailable",
                    &ctx.request_id,
                    false,
                )
            }
        };
        let mut response = error_response(status, message, &ctx.request_id, false);
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        response
    }
}

#[async_trait::async_trait]
impl Filter for Jwt {
    fn kind(&self) -> &'static str {
        "jwt"
    }

    fn edits_responses(&self) -> bool {
        false
    }

    async fn on_request(&self, req: &mut Parts, ctx: &mut RequestCtx) -> Result<Flow, ProxyError> {
        // Never let a client supply the headers that carry verified claims.
        for (_, header) in &self.forward_claims {
            req.headers.remove(header);
        }
        let claims = match self.authenticate(req).await {
            Ok(claims) => claims,
            Err(refusal) => {
                tracing::debug!(request_id = ctx.request_id.to_str().unwrap_or("-"), reason = ?refusal, "token refused");
                return Ok(Flow::Respond(self.refuse(&refusal, ctx)));
            }
        };
        for (claim, header) in &self.forward_claims {
            if let Some(value) =
                claim_text(&claims[claim.as_str()]).and_then(|v| HeaderValue::try_from(v).ok())
            {
                req.headers.insert(header.clone(), value);
            }
        }
        if !self.forward_token {
            req.headers.remove(AUTHORIZATION);
        }
        ctx.claims = Some(claims);
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::cache::VerifyCache;
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::Algorithm;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;
    use std::time::Duration;

    const SECRET: &[u8] = b"a-test-secret-of-reasonable-length";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn spec(ring: KeyRing, algorithms: Vec<Algorithm>) -> ProviderSpec {
        ProviderSpec {
            name: "main".into(),
            issuer: Some("https://auth.example.com".into()),
            audiences: vec!["api".into()],
            algorithms,
            keys: KeySpec::Fixed {
                material: Vec::new(),
                ring: Arc::new(ring),
            },
            leeway: Duration::from_secs(30),
            max_token_bytes: 8192,
            require_exp: true,
            max_lifetime: None,
            sources: vec![TokenSource::Bearer],
        }
    }

    fn provider_of(spec: ProviderSpec) -> Provider {
        let ring = spec.keys.fixed().unwrap();
        let mut provider = Provider::new(spec, Keys::Fixed(ring));
        provider.cache = VerifyCache::new(100, 1);
        provider
    }

    fn provider() -> Provider {
        provider_of(spec(KeyRing::from_secret(SECRET), vec![Algorithm::HS256]))
    }

    fn sign(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn good() -> Value {
        json!({"iss": "https://auth.example.com", "aud": "api", "sub": "u1", "exp": now() + 600, "iat": now()})
    }

    fn reason(token: &str) -> Result<Arc<Value>, Refusal> {
        provider().verify_now(token)
    }

    #[test]
    fn repeated_tokens_come_from_the_cache_until_they_expire() {
        let p = provider();
        let token = sign(good());
        let exp = now() + 600;
        assert!(p.verify_now(&token).is_ok());
        assert!(p.verify_now(&token).is_ok());
        assert_eq!(p.cache.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Past exp the cache does not answer; a full verification decides.
        assert!(p.cache.get(&token, exp + 1, 0).is_none());
        assert!(p.cache.get(&token, exp - 1, 0).is_some());
        // Nor under another key set.
        assert!(p.cache.get(&token, exp - 1, 1).is_none());
        // A token differing in its last byte never hits another's entry.
        let forged = format!("{}x", &token[..token.len() - 1]);
        assert!(p.verify_now(&forged).is_err());
        // Bounded: the oldest entries leave first.
        for i in 0..150 {
            let mut c = good();
            c["sub"] = json!(format!("u{i}"));
            p.verify_now(&sign(c)).unwrap();
        }
        assert!(p.cache.shard_len() <= 100);
    }

    #[test]
    fn accepts_a_good_token() {
        assert_eq!(reason(&sign(good())).unwrap()["sub"], "u1");
    }

    #[test]
    fn time_claims_with_leeway() {
        let mut c = good();
        c["exp"] = json!(now() - 10); // within the 30 s leeway
        assert!(reason(&sign(c.clone())).is_ok());
        c["exp"] = json!(now() - 120);
        assert_eq!(reason(&sign(c)), Err(Refusal::Invalid("token expired")));
        let mut c = good();
        c["nbf"] = json!(now() + 600);
        assert_eq!(
            reason(&sign(c)),
            Err(Refusal::Invalid("token not yet valid"))
        );
        let mut c = good();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            reason(&sign(c)),
            Err(Refusal::Invalid("missing required claim"))
        );
    }

    #[test]
    fn issuer_and_audience() {
        let mut c = good();
        c["iss"] = json!("https://evil.example.com");
        assert_eq!(reason(&sign(c)), Err(Refusal::Invalid("wrong issuer")));
        let mut c = good();
        c["aud"] = json!("other");
        assert_eq!(reason(&sign(c)), Err(Refusal::Invalid("wrong audience")));
    }

    #[test]
    fn attack_tokens() {
        let token = sign(good());
        let parts: Vec<&str> = token.split('.').collect();
        // alg none, with and without a signature
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(reason(&format!("{none}.{}.", parts[1])).is_err());
        // tampered payload
        let mut claims = good();
        claims["sub"] = json!("admin");
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        assert_eq!(
            reason(&format!("{}.{forged}.{}", parts[0], parts[2])),
            Err(Refusal::Invalid("bad signature"))
        );
        // stripped signature
        assert!(reason(&format!("{}.{}.", parts[0], parts[1])).is_err());
        // malformed base64 and shapes
        assert!(reason("not-a-token").is_err());
        assert!(reason(&format!("{}!.{}.{}", parts[0], parts[1], parts[2])).is_err());
        // oversized, refused before decoding
        assert_eq!(
            reason(&"a".repeat(9000)),
            Err(Refusal::Invalid("token too large"))
        );
        // crit
        let crit = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"HS256","crit":["exp"],"exp":1}"#);
        assert_eq!(
            reason(&format!("{crit}.{}.{}", parts[1], parts[2])),
            Err(Refusal::Invalid("unsupported critical header parameter"))
        );
        // an algorithm outside the allow-list
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &good(),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(reason(&hs384).is_err());
    }

    #[test]
    fn alg_confusion_hmac_with_a_public_key_is_refused() {
        // An ES256 provider: a token "signed" with HS256 using the public key as secret fails.
        let pair = rcgen::KeyPair::generate().unwrap();
        let public_pem = pair.public_key_pem();
        let ring = KeyRing::from_pem(public_pem.as_bytes()).unwrap();
        // Even with HS256 on the allow-list, the EC key is never used as an HMAC secret.
        let p = provider_of(spec(ring, vec![Algorithm::ES256, Algorithm::HS256]));
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        assert!(p.verify_now(&forged).is_err());
        let genuine = encode(
            &Header::new(Algorithm::ES256),
            &good(),
            &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(p.verify_now(&genuine).is_ok());
    }

    #[test]
    fn max_lifetime() {
        let mut s = spec(KeyRing::from_secret(SECRET), vec![Algorithm::HS256]);
        s.max_lifetime = Some(Duration::from_secs(3600));
        let p = provider_of(s);
        let mut c = good();
        c["exp"] = json!(now() + 7200);
        assert_eq!(
            p.verify_now(&sign(c)),
            Err(Refusal::Invalid("token lifetime exceeds max_lifetime"))
        );
    }
}
