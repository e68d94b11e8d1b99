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

use super::{Filter, Flow};
use crate::body::Body;
use crate::context::RequestCtx;
use crate::error::{error_response, ProxyError};
use base64::Engine as _;
use http::header::{AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Where a provider's tokens are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

/// One verification key with the algorithms it may verify.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub key: DecodingKey,
    /// The provider's allowed algorithms that fit this key's type.
    pub algorithms: Vec<Algorithm>,
}

/// Recently verified tokens, so a repeated token costs a lookup instead of a signature check
/// (an RS256 verification costs more than a whole proxied request). One shard per worker, so
/// no lock is shared across cores; bounded, oldest first out; an entry is served only while
/// its `exp` is in the future. Keyed by a hash of the whole token, and the token is compared in
/// full on a hit, so a hash collision can never let a different token through. A provider's
/// keys are fixed for its lifetime; a reload builds a new provider with an empty cache.
pub struct VerifyCache {
    shards: Box<[std::sync::Mutex<CacheShard>]>,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
    pub hits: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct CacheShard {
    entries: std::collections::HashMap<u64, (Box<str>, Arc<Value>, u64)>,
    order: std::collections::VecDeque<u64>,
}

impl VerifyCache {
    pub fn new(capacity: usize, shards: usize) -> VerifyCache {
        let shards = shards.max(1);
        VerifyCache {
            shards: (0..shards)
                .map(|_| std::sync::Mutex::new(CacheShard::default()))
                .collect(),
            per_shard: (capacity / shards).max(1),
            hasher: foldhash::fast::RandomState::default(),
            hits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn shard(&self) -> std::sync::MutexGuard<'_, CacheShard> {
        let index = crate::worker::index() % self.shards.len();
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, token: &str, now: u64) -> Option<Arc<Value>> {
        use std::hash::BuildHasher;
        let key = self.hasher.hash_one(token);
        let shard = self.shard();
        let (stored, claims, exp) = shard.entries.get(&key)?;
        if &**stored != token || *exp <= now {
            return None;
        }
        self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Arc::clone(claims))
    }

    fn put(&self, token: &str, claims: Arc<Value>, exp: u64) {
        use std::hash::BuildHasher;
        let key = self.hasher.hash_one(token);
        let mut shard = self.shard();
        if shard
            .entries
            .insert(key, (token.into(), claims, exp))
            .is_none()
        {
            shard.order.push_back(key);
        }
        while shard.entries.len() > self.per_shard {
            let Some(oldest) = shard.order.pop_front() else {
                break;
            };
            shard.entries.remove(&oldest);
        }
    }
}

pub struct Provider {
    pub name: String,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub keys: Vec<Key>,
    pub leeway: Duration,
    pub max_token_bytes: usize,
    pub require_exp: bool,
    pub max_lifetime: Option<Duration>,
    pub sources: Vec<TokenSource>,
    pub cache: VerifyCache,
}

/// Claims of a verified token, for later filters (`claim:sub` rate limiting, …).
#[derive(Clone, Debug)]
pub struct VerifiedClaims(pub Arc<Value>);

pub struct Jwt {
    pub providers: Vec<Arc<Provider>>,
    pub require_scopes: Vec<String>,
    /// claim → accepted values (any one).
    pub require_claims: Vec<(String, Vec<String>)>,
    /// claim → upstream header; such headers from the client are always removed.
    pub forward_claims: Vec<(String, HeaderName)>,
    pub forward_token: bool,
}

/// Why a token was refused: logged, never told to the client in detail.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Invalid(&'static str),
    Forbidden(&'static str),
}

fn b64(segment: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
}

fn json_segment(segment: &str) -> Option<Value> {
    serde_json::from_slice(&b64(segment)?).ok()
}

fn tokens(req: &Parts, sources: &[TokenSource]) -> Vec<String> {
    let mut found = Vec::new();
    for source in sources {
        let token = match source {
            TokenSource::Bearer => req
                .headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.get(..7)
                        .filter(|p| p.eq_ignore_ascii_case("bearer "))
                        .map(|_| v[7..].trim())
                }),
            TokenSource::Header(name) => req
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim),
            TokenSource::Cookie(name) => req
                .headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v),
            TokenSource::Query(name) => req.uri.query().and_then(|q| {
                q.split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v)
            }),
        };
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            if !found.iter().any(|f| f == token) {
                found.push(token.to_string());
            }
        }
    }
    found
}

impl Provider {
    /// Verifies `token` (from the cache when it was verified before); the claims on success.
    pub fn verify(&self, token: &str) -> Result<Arc<Value>, Refusal> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Arc<Value>, Refusal> {
        if token.len() > self.max_token_bytes {
            return Err(Refusal::Invalid("token too large"));
        }
        if let Some(claims) = self.cache.get(token, now) {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_uncached(token)?);
        // Without an exp there is no safe end to caching: such tokens are checked every time.
        if let Some(exp) = claims["exp"].as_u64() {
            self.cache.put(token, Arc::clone(&claims), exp);
        }
        Ok(claims)
    }

    /// The full check, bypassing the cache.
    pub fn verify_uncached(&self, token: &str) -> Result<Value, Refusal> {
        if token.len() > self.max_token_bytes {
            return Err(Refusal::Invalid("token too large"));
        }
        let mut parts = token.split('.');
        let (Some(head), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::Invalid("malformed token"));
        };
        let header = json_segment(head).ok_or(Refusal::Invalid("malformed header"))?;
        if header.get("crit").is_some() {
            return Err(Refusal::Invalid("unsupported critical header parameter"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::Invalid("unsupported header or algorithm"))?;
        let candidates = self.keys.iter().filter(|k| {
            k.algorithms.contains(&header.alg)
                && match (&header.kid, &k.kid) {
                    (Some(wanted), Some(have)) => wanted == have,
                    (Some(_), None) => true,
                    (None, _) => true,
                }
        });
        let mut last = Refusal::Invalid("no key for this token's kid and algorithm");
        for key in candidates {
            let mut validation = Validation::new(header.alg);
            validation.algorithms = key.algorithms.clone();
            validation.leeway = self.leeway.as_secs();
            validation.validate_nbf = true;
            validation.validate_aud = !self.audiences.is_empty();
            if !self.audiences.is_empty() {
                validation.set_audience(&self.audiences);
            }
            if let Some(issuer) = &self.issuer {
                validation.set_issuer(&[issuer]);
            }
            let mut required = vec![];
            if self.require_exp {
                required.push("exp");
            }
            validation.set_required_spec_claims(&required);
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    if let Some(max) = self.max_lifetime {
                        let (Some(iat), Some(exp)) =
                            (claims["iat"].as_u64(), claims["exp"].as_u64())
                        else {
                            return Err(Refusal::Invalid("max_lifetime needs iat and exp"));
                        };
                        if exp.saturating_sub(iat) > max.as_secs() {
                            return Err(Refusal::Invalid("token lifetime exceeds max_lifetime"));
                        }
                    }
                    return Ok(claims);
                }
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = Refusal::Invalid(match error.kind() {
                        ErrorKind::ExpiredSignature => "token expired",
                        ErrorKind::ImmatureSignature => "token not yet valid",
                        ErrorKind::InvalidIssuer => "wrong issuer",
                        ErrorKind::InvalidAudience => "wrong audience",
                        ErrorKind::MissingRequiredClaim(_) => "missing required claim",
                        ErrorKind::InvalidSignature => "bad signature",
                        ErrorKind::InvalidAlgorithm => "algorithm not allowed for the key",
                        _ => "invalid token",
                    });
                }
            }
        }
        Err(last)
    }
}

fn has_value(claim: &Value, wanted: &str) -> bool {
    match claim {
        Value::String(s) => s == wanted || s.split(' ').any(|part| part == wanted),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(wanted)),
        _ => false,
    }
}

fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Jwt {
    fn authenticate(&self, req: &Parts) -> Result<Arc<Value>, Refusal> {
        let sources: Vec<TokenSource> = self
            .providers
            .iter()
            .flat_map(|p| p.sources.iter().cloned())
            .collect();
        let found = tokens(req, &sources);
        let token = match found.as_slice() {
            [] => return Err(Refusal::Missing),
            [one] => one,
            _ => return Err(Refusal::Invalid("different tokens in several places")),
        };
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
                .find(|p| p.issuer.is_some() && p.issuer == issuer)
                .ok_or(Refusal::Invalid("no provider for this issuer"))?
        };
        let claims = provider.verify(token)?;
        for scope in &self.require_scopes {
            let granted = has_value(&claims["scope"], scope) || has_value(&claims["scp"], scope);
            if !granted {
                return Err(Refusal::Forbidden("missing scope"));
            }
        }
        for (name, accepted) in &self.require_claims {
            if !accepted
                .iter()
                .any(|a| has_value(&claims[name.as_str()], a))
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
            Refusal::Invalid(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid token",
                "Bearer error=\"invalid_token\"",
            ),
            Refusal::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "insufficient scope",
                "Bearer error=\"insufficient_scope\"",
            ),
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
    fn name(&self) -> &'static str {
        "jwt"
    }

    async fn on_request(&self, req: &mut Parts, ctx: &mut RequestCtx) -> Result<Flow, ProxyError> {
        // Never let a client supply the headers that carry verified claims.
        for (_, header) in &self.forward_claims {
            req.headers.remove(header);
        }
        let claims = match self.authenticate(req) {
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
        ctx.extensions.insert(VerifiedClaims(claims));
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"a-test-secret-of-reasonable-length";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn provider() -> Provider {
        Provider {
            name: "main".into(),
            issuer: Some("https://auth.example.com".into()),
            audiences: vec!["api".into()],
            keys: vec![Key {
                kid: None,
                key: DecodingKey::from_secret(SECRET),
                algorithms: vec![Algorithm::HS256],
            }],
            leeway: Duration::from_secs(30),
            max_token_bytes: 8192,
            require_exp: true,
            max_lifetime: None,
            sources: vec![TokenSource::Bearer],
            cache: VerifyCache::new(100, 1),
        }
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
        provider().verify(token)
    }

    #[test]
    fn repeated_tokens_come_from_the_cache_until_they_expire() {
        let p = provider();
        let token = sign(good());
        let exp = now() + 600;
        assert!(p.verify(&token).is_ok());
        assert!(p.verify(&token).is_ok());
        assert_eq!(p.cache.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Past exp the cache does not answer; a full verification decides.
        assert!(p.cache.get(&token, exp + 1).is_none());
        assert!(p.cache.get(&token, exp - 1).is_some());
        // A token differing in its last byte never hits another's entry.
        let forged = format!("{}x", &token[..token.len() - 1]);
        assert!(p.verify(&forged).is_err());
        // Bounded: the oldest entries leave first.
        for i in 0..150 {
            let mut c = good();
            c["sub"] = json!(format!("u{i}"));
            p.verify(&sign(c)).unwrap();
        }
        assert!(p.cache.shard().entries.len() <= 100);
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
        let mut p = provider();
        p.keys = vec![Key {
            kid: None,
            key: DecodingKey::from_ec_pem(public_pem.as_bytes()).unwrap(),
            algorithms: vec![Algorithm::ES256],
        }];
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        assert!(p.verify(&forged).is_err());
        let genuine = encode(
            &Header::new(Algorithm::ES256),
            &good(),
            &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(p.verify(&genuine).is_ok());
    }

    #[test]
    fn max_lifetime() {
        let mut p = provider();
        p.max_lifetime = Some(Duration::from_secs(3600));
        let mut c = good();
        c["exp"] = json!(now() + 7200);
        assert_eq!(
            p.verify(&sign(c)),
            Err(Refusal::Invalid("token lifetime exceeds max_lifetime"))
        );
    }
}
