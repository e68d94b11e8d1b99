//! A JWT provider: its keys (fixed or fetched), the rules a token must meet, and the cache of
//! tokens it verified.

use super::cache::VerifyCache;
use super::jwks::{JwksSpec, RemoteKeys};
use super::keys::KeyRing;
use super::token::{Refusal, TokenSource};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use std::sync::Arc;
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
    pub(crate) fn fixed(&self) -> Option<Arc<KeyRing>> {
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
    pub(crate) spec: ProviderSpec,
    pub(crate) keys: Keys,
    pub(crate) cache: VerifyCache,
}

fn b64(segment: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
}

pub(super) fn json_segment(segment: &str) -> Option<Value> {
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

    pub(crate) fn remote_keys(&self) -> Option<&Arc<RemoteKeys>> {
        match &self.keys {
            Keys::Remote(remote) => Some(remote),
            Keys::Fixed(_) => None,
        }
    }

    /// Verifies `token`; a `kid` missing from a remote key set waits for a refetch (at most
    /// one per `min_refetch_interval`) before the token is refused.
    pub(crate) async fn verify(&self, token: &str) -> Result<Arc<Value>, Refusal> {
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
pub(super) fn grants_scope(claim: &Value, wanted: &str) -> bool {
    match claim {
        Value::String(s) => s.split(' ').any(|part| part == wanted),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(wanted)),
        _ => false,
    }
}

/// Whether a claim holds `wanted`: strings compared whole (never split into words), numbers
/// and booleans by value and type, arrays by element.
pub(super) fn claim_holds(claim: &Value, wanted: &Value) -> bool {
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

pub(super) fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
