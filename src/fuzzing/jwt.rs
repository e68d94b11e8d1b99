//! JWT: finding the one token a request carries, and verifying it with fixed keys. Tokens
//! are built from the fuzzer's choices of header and claims (many valid, most not quite)
//! and signed with the provider's secret or another, or taken raw. Oracles: a token found
//! is the only one the request carries; a token that verifies was signed with the secret,
//! by an allowed algorithm, and meets every configured rule.

use crate::filter::jwt::{
    find_token, KeyRing, KeySpec, Keys, Provider, ProviderSpec, Refusal, TokenSource,
};
use arbitrary::Unstructured;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::request::Parts;
use http::{HeaderName, Request};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const SECRET: &[u8] = b"portcullis-fuzz-secret-of-32-bytes";
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "api";
const MAX_LIFETIME: u64 = 3600;

fn provider() -> &'static Provider {
    static PROVIDER: OnceLock<Provider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let ring = Arc::new(KeyRing::from_secret(SECRET));
        let spec = ProviderSpec {
            name: "fuzz".into(),
            issuer: Some(ISSUER.into()),
            audiences: vec![AUDIENCE.into()],
            algorithms: vec![Algorithm::HS256, Algorithm::RS256],
            keys: KeySpec::Fixed {
                material: SECRET.to_vec(),
                ring: Arc::clone(&ring),
            },
            leeway: Duration::ZERO,
            max_token_bytes: 8192,
            require_exp: true,
            max_lifetime: Some(Duration::from_secs(MAX_LIFETIME)),
            sources: vec![TokenSource::Bearer],
        };
        Provider::new(spec, Keys::Fixed(ring))
    })
}

pub fn jwt(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let _ = placement(&mut input);
    let Ok(raw) = input.arbitrary::<bool>() else {
        return;
    };
    let (token, signed_with_secret) = match raw {
        true => (
            String::from_utf8_lossy(input.take_rest()).into_owned(),
            None,
        ),
        false => match built(&mut input) {
            Ok(built) => built,
            Err(_) => return,
        },
    };
    let provider = provider();
    let Keys::Fixed(ring) = &provider.keys else {
        return;
    };
    let Ok(claims) = provider.check(&token, ring) else {
        return;
    };
    assert_ne!(
        signed_with_secret,
        Some(false),
        "verified without the secret: {token}"
    );
    let header: Value = token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice(&h).ok())
        .unwrap_or(Value::Null);
    assert_eq!(header["alg"], "HS256", "verified with {}", header["alg"]);
    assert!(header.get("crit").is_none(), "crit was ignored");
    assert_eq!(claims["iss"], ISSUER, "issuer {}", claims["iss"]);
    let audience = &claims["aud"];
    assert!(
        audience == AUDIENCE
            || audience
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == AUDIENCE)),
        "audience {audience}"
    );
    let now = jsonwebtoken::get_current_timestamp();
    let exp = claims["exp"]
        .as_u64()
        .unwrap_or_else(|| panic!("exp {}", claims["exp"]));
    assert!(exp >= now, "expired at {exp}");
    if let Some(nbf) = claims.get("nbf") {
        assert!(nbf.as_u64().is_some_and(|nbf| nbf <= now), "nbf {nbf}");
    }
    let iat = claims["iat"]
        .as_u64()
        .unwrap_or_else(|| panic!("iat {}", claims["iat"]));
    assert!(
        exp.saturating_sub(iat) <= MAX_LIFETIME,
        "lifetime {}",
        exp - iat
    );
}

/// A token from the fuzzer's choices; whether it was signed with the provider's secret
/// (`None`: it has no signature made by anyone).
fn built(input: &mut Unstructured) -> arbitrary::Result<(String, Option<bool>)> {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let alg = *input.choose(&[
        "HS256", "HS384", "RS256", "none", "hs256", "ES256", "HS256 ",
    ])?;
    let mut header = json!({ "alg": alg, "typ": "JWT" });
    if input.arbitrary()? {
        header["kid"] = json!(input.arbitrary::<String>()?);
    }
    if input.ratio(1, 8)? {
        header["crit"] = json!(["exp"]);
    }
    let mut claims = json!({});
    let pick = |input: &mut Unstructured,
                choices: &[Option<Value>]|
     -> arbitrary::Result<Option<Value>> { Ok(input.choose(choices)?.clone()) };
    let fields = [
        (
            "iss",
            vec![
                Some(json!(ISSUER)),
                Some(json!("https://evil.example")),
                Some(json!([ISSUER])),
                Some(json!(1)),
                None,
            ],
        ),
        (
            "aud",
            vec![
                Some(json!(AUDIENCE)),
                Some(json!("other")),
                Some(json!(["x", AUDIENCE])),
                Some(json!([])),
                Some(json!(7)),
                None,
            ],
        ),
        (
            "exp",
            vec![
                Some(json!(now + 60)),
                Some(json!(now - 60)),
                Some(json!(now + 7200)),
                Some(json!((now + 60).to_string())),
                Some(json!(now as f64 + 0.5)),
                Some(json!(u64::MAX)),
                None,
            ],
        ),
        (
            "nbf",
            vec![
                None,
                Some(json!(now - 10)),
                Some(json!(now + 3600)),
                Some(json!("soon")),
            ],
        ),
        (
            "iat",
            vec![
                Some(json!(now)),
                Some(json!(now - 7200)),
                Some(json!(-1)),
                None,
            ],
        ),
    ];
    for (name, choices) in fields {
        if let Some(value) = pick(input, &choices)? {
            claims[name] = value;
        }
    }
    if input.arbitrary()? {
        claims["sub"] = json!(input.arbitrary::<String>()?);
    }
    let head = URL_SAFE_NO_PAD.encode(header.to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let message = format!("{head}.{body}");
    let secret: &[u8] = input.choose(&[SECRET, b"another-secret", b""])?;
    let algorithm = match alg {
        "HS384" => Algorithm::HS384,
        _ => Algorithm::HS256,
    };
    let signature = match secret.is_empty() {
        true => String::new(),
        false => jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret),
            algorithm,
        )
        .unwrap_or_default(),
    };
    let with_secret = (!secret.is_empty()).then_some(secret == SECRET);
    Ok((format!("{message}.{signature}"), with_secret))
}

/// Tokens put in the places the provider reads; the one found must be the only one carried.
fn placement(input: &mut Unstructured) -> arbitrary::Result<()> {
    let sources = [
        TokenSource::Bearer,
        TokenSource::Header(HeaderName::from_static("x-token")),
        TokenSource::Cookie("tok".into()),
        TokenSource::Query("access_token".into()),
    ];
    let tokens = ["tokA", "tokB", "", " tokA "];
    let query_names = [
        "access_token",
        "access%5Ftoken",
        "access%5ftoken",
        "access_tokenx",
        "Access_token",
    ];
    let mut request = Request::builder();
    let mut query = Vec::new();
    // Per place, the values it holds (trimmed; `None` for one the place does not count).
    let mut held: [Vec<&str>; 4] = Default::default();
    for _ in 0..input.int_in_range(0..=5)? {
        let token = *input.choose(&tokens)?;
        match input.int_in_range(0..=4)? {
            0 => {
                request = request.header("authorization", format!("Bearer {token}"));
                held[0].push(token.trim());
            }
            1 => {
                request = request.header("authorization", format!("Basic {token}"));
                held[0].push("");
            }
            2 => {
                request = request.header("x-token", token);
                held[1].push(token.trim());
            }
            3 => {
                request = request.header("cookie", format!("tok={token}"));
                held[2].push(token);
            }
            _ => {
                let name = *input.choose(&query_names)?;
                query.push(format!("{name}={token}"));
                if matches!(name, "access_token" | "access%5Ftoken" | "access%5ftoken") {
                    held[3].push(token);
                }
            }
        }
    }
    let Ok(request) = request.uri(format!("/?{}", query.join("&"))).body(()) else {
        return Ok(());
    };
    let (parts, ()): (Parts, ()) = request.into_parts();
    let found = find_token(&parts, &sources);
    let repeated = held.iter().any(|values| values.len() > 1);
    let present: Vec<&str> = held
        .iter()
        .flatten()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect();
    match found {
        Ok(token) => {
            assert!(!repeated, "{token} found in a repeated place: {held:?}");
            assert!(
                present.iter().all(|t| *t == token.trim()),
                "{token} found among {present:?}"
            );
        }
        Err(Refusal::Missing) => assert!(present.is_empty() && !repeated, "missed {held:?}"),
        Err(_) => {}
    }
    Ok(())
}
