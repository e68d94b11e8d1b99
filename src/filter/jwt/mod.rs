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
pub mod config;
mod jwks;
mod keys;
mod token;

pub use cache::VerifyCache;
pub use jwks::{JwksSpec, RemoteKeys};
pub use keys::{Key, KeyRing};
use token::find_token;
pub use token::TokenSource;

use super::{Filter, Flow};
use crate::body::Body;
use crate::context::RequestCtx;
use crate::error::{error_response, ProxyError};
use base64::Engine as _;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use std::sync::Arc;

/// A validated `jwt` filter.
#[derive(Debug, Clone)]
pub struct JwtSpec {
    /// Names in `jwt_providers`.
    pub providers: Vec<String>,
    pub require_scopes: Vec<String>,
    pub require_claims: Vec<(String, Vec<serde_json::Value>)>,
    pub forward_claims: Vec<(String, HeaderName)>,
    pub forward_token: bool,
}

use std::time::Duration;

/// Verified tokens remembered per provider, and the shards they are spread over (one per
/// worker index in use; more shards than workers only cost a little memory).
const CACHE_ENTRIES: usize = 65_536;
const CACHE_SHARDS: usize = 16;

/// A validated `jwt_providers:` entry. Equal specs share one provider across a reload, so
/// its cache of verified tokens survives.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSpec {
    pub name: String,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    /// The allow-list; a token's `alg` must also fit the key it is verified with.
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySpec,
    pub leeway: Duration,
    pub max_token_bytes: usize,
    pub require_exp: bool,
    pub max_lifetime: Option<Duration>,
    pub sources: Vec<TokenSource>,
}

impl ProviderSpec {
    /// The registered claims a token must carry: `exp` unless turned off, and `iss` / `aud`
    /// whenever the provider names an issuer / audiences (RFC 8725 §3.8, §3.9): a check that
    /// applies only when the claim is present is no check.
    fn required_claims(&self) -> Vec<&'static str> {
        let mut required = Vec::with_capacity(3);
        if self.require_exp {
            required.push("exp");
        }
        if self.issuer.is_some() {
            required.push("iss");
        }
        if !self.audiences.is_empty() {
            required.push("aud");
        }
        required
    }

    /// `iss` must be one string equal to the issuer (RFC 7519 §4.1.1: a StringOrURI, never a
    /// list); `aud` a string or a list naming one of the audiences.
    fn check_issuer_and_audience(&self, claims: &Value) -> Result<(), Refusal> {
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(Refusal::Invalid("wrong issuer"));
            }
        }
        if !self.audiences.is_empty() {
            let ours = |aud: &Value| {
                aud.as_str()
                    .is_some_and(|a| self.audiences.iter().any(|x| x == a))
            };
            let accepted = match claims.get("aud") {
                Some(Value::Array(items)) => items.iter().any(ours),
                Some(aud) => ours(aud),
                None => false,
            };
            if !accepted {
                return Err(Refusal::Invalid("wrong audience"));
            }
        }
        Ok(())
    }
}

/// Where a provider's keys come from: loaded at config load, or fetched from a URL.
#[derive(Clone)]
pub enum KeySpec {
    /// `material`: the secret or file content the ring was parsed from, to compare specs.
    Fixed {
        material: Vec<u8>,
        ring: Arc<KeyRing>,
    },
    Remote(Box<JwksSpec>),
}

impl KeySpec {
    /// The keys, when they are fixed at load.
    pub fn fixed(&self) -> Option<Arc<KeyRing>> {
        match self {
            KeySpec::Fixed { ring, .. } => Some(Arc::clone(ring)),
            KeySpec::Remote(_) => None,
        }
    }
}

impl PartialEq for KeySpec {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (KeySpec::Fixed { material: a, .. }, KeySpec::Fixed { material: b, .. }) => a == b,
            (KeySpec::Remote(a), KeySpec::Remote(b)) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySpec::Fixed { ring, .. } => write!(f, "Fixed({} keys)", ring.keys.len()),
            KeySpec::Remote(spec) => write!(f, "Remote({})", spec.url),
        }
    }
}

/// A provider's live keys.
pub enum Keys {
    Fixed(Arc<KeyRing>),
    Remote(Arc<RemoteKeys>),
}

pub struct Provider {
    pub spec: ProviderSpec,
    pub keys: Keys,
    pub cache: VerifyCache,
}

pub struct Jwt {
    pub providers: Vec<Arc<Provider>>,
    /// Every place the providers read tokens from, in order, without repeats.
    pub sources: Vec<TokenSource>,
    pub require_scopes: Vec<String>,
    /// claim → accepted values (any one): strings, numbers or booleans.
    pub require_claims: Vec<(String, Vec<Value>)>,
    /// claim → upstream header; such headers from the client are always removed.
    pub forward_claims: Vec<(String, HeaderName)>,
    pub forward_token: bool,
}

/// Why a token was refused: logged, never told to the client in detail.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    /// The request carries its token ambiguously (a repeated field, several places).
    Malformed(&'static str),
    Invalid(&'static str),
    /// The token names a `kid` no current key has.
    UnknownKid,
    Forbidden(&'static str),
    /// No key set has ever been loaded (the JWKS endpoint has been unreachable).
    Unavailable,
}

fn b64(segment: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
}

fn json_segment(segment: &str) -> Option<Value> {
    serde_json::from_slice(&b64(segment)?).ok()
}

impl Provider {
    /// `keys`: the spec's fixed ring, or the running remote set for its `jwks_url`.
    pub fn new(spec: ProviderSpec, keys: Keys) -> Provider {
        Provider {
            spec,
            keys,
            cache: VerifyCache::new(CACHE_ENTRIES, CACHE_SHARDS),
        }
    }

    pub fn remote_keys(&self) -> Option<&Arc<RemoteKeys>> {
        match &self.keys {
            Keys::Remote(remote) => Some(remote),
            Keys::Fixed(_) => None,
        }
    }

    /// Verifies `token`; a `kid` missing from a remote key set waits for a refetch (at most
    /// one per `min_refetch_interval`) before the token is refused.
    pub async fn verify(&self, token: &str) -> Result<Arc<Value>, Refusal> {
        match self.verify_now(token) {
            Err(Refusal::UnknownKid) => match self.remote_keys() {
                Some(remote) => match remote.refetch().await {
                    Some(ring) => self.verify_with(token, &ring),
                    None => Err(Refusal::UnknownKid),
                },
                None => Err(Refusal::UnknownKid),
            },
            other => other,
        }
    }

    /// Verifies `token` against the keys at hand (from the cache when it was verified before
    /// under the same keys).
    pub fn verify_now(&self, token: &str) -> Result<Arc<Value>, Refusal> {
        let ring = match &self.keys {
            Keys::Fixed(ring) => Arc::clone(ring),
            Keys::Remote(remote) => remote.current().ok_or(Refusal::Unavailable)?,
        };
        self.verify_with(token, &ring)
    }

    fn verify_with(&self, token: &str, ring: &KeyRing) -> Result<Arc<Value>, Refusal> {
        if token.len() > self.spec.max_token_bytes {
            return Err(Refusal::Invalid("token too large"));
        }
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(claims) = self.cache.get(token, now, ring.version) {
            return Ok(claims);
        }
        let claims = Arc::new(self.check(token, ring)?);
        // Without an exp there is no safe end to caching: such tokens are checked every time.
        if let Some(exp) = claims["exp"].as_u64() {
            self.cache
                .put(token, Arc::clone(&claims), exp, ring.version);
        }
        Ok(claims)
    }

    /// The full check against `ring`, bypassing the cache.
    pub fn check(&self, token: &str, ring: &KeyRing) -> Result<Value, Refusal> {
        let spec = &self.spec;
        if token.len() > spec.max_token_bytes {
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
        if !spec.algorithms.contains(&header.alg) {
            return Err(Refusal::Invalid("algorithm not allowed"));
        }
        let kid = header.kid.as_deref();
        let unknown_kid = kid.is_some_and(|kid| ring.lacks_kid(kid));
        let mut last = Refusal::Invalid("no key for this token's kid and algorithm");
        for key in ring.candidates(header.alg, kid) {
            let mut validation = Validation::new(header.alg);
            validation.leeway = spec.leeway.as_secs();
            validation.validate_nbf = true;
            validation.validate_aud = !spec.audiences.is_empty();
            if !spec.audiences.is_empty() {
                validation.set_audience(&spec.audiences);
            }
            if let Some(issuer) = &spec.issuer {
                validation.set_issuer(&[issuer]);
            }
            validation.set_required_spec_claims(&spec.required_claims());
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    spec.check_issuer_and_audience(&claims)?;
                    if let Some(max) = spec.max_lifetime {
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
        if unknown_kid {
            return Err(Refusal::UnknownKid);
        }
        Err(last)
    }
}

/// Whether a space-delimited scope claim (`scope`, RFC 8693 §4.2; or an array, as `scp` often
/// is) grants `wanted`.
fn grants_scope(claim: &Value, wanted: &str) -> bool {
    match claim {
        Value::String(s) => s.split(' ').any(|part| part == wanted),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(wanted)),
        _ => false,
    }
}

/// Whether a claim holds `wanted`: strings compared whole (never split into words), numbers
/// and booleans by value and type, arrays by element.
fn claim_holds(claim: &Value, wanted: &Value) -> bool {
    match claim {
        Value::Array(items) => items.iter().any(|item| same_scalar(item, wanted)),
        scalar => same_scalar(scalar, wanted),
    }
}

fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
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
    /// Every place `providers` read tokens from, in order, without repeats.
    pub fn token_sources(providers: &[Arc<Provider>]) -> Vec<TokenSource> {
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
    fn name(&self) -> &'static str {
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
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

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
