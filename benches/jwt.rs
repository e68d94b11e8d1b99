//! One JWT verification: HS256, ES256 and RS256 (2048-bit), uncached and from the cache.
//! The RSA key pair under benches/keys exists for this benchmark only.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use portcullis::filter::jwt::{KeyRing, KeySpec, Keys, Provider, ProviderSpec, TokenSource};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn provider(ring: KeyRing, alg: Algorithm) -> (Provider, Arc<KeyRing>) {
    let ring = Arc::new(ring);
    let spec = ProviderSpec {
        name: "bench".into(),
        issuer: Some("https://auth.example.com".into()),
        audiences: vec!["api".into()],
        algorithms: vec![alg],
        keys: KeySpec::Fixed {
            material: Vec::new(),
            ring: Arc::clone(&ring),
        },
        leeway: Duration::from_secs(30),
        max_token_bytes: 8192,
        require_exp: true,
        max_lifetime: None,
        sources: vec![TokenSource::Bearer],
    };
    (Provider::new(spec, Keys::Fixed(Arc::clone(&ring))), ring)
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"iss": "https://auth.example.com", "aud": "api", "sub": "user-42", "scope": "read write", "iat": now, "exp": now + 3600});
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn bench(c: &mut Criterion) {
    let secret = b"a-benchmark-secret-of-sufficient-length";
    let ec = rcgen::KeyPair::generate().unwrap();
    let rsa_private = std::fs::read("benches/keys/rsa-bench-private.pem").unwrap();
    let rsa_public = std::fs::read("benches/keys/rsa-bench-public.pem").unwrap();
    let cases = [
        (
            "HS256",
            provider(KeyRing::from_secret(secret), Algorithm::HS256),
            token(Algorithm::HS256, &EncodingKey::from_secret(secret)),
        ),
        (
            "ES256",
            provider(
                KeyRing::from_pem(ec.public_key_pem().as_bytes()).unwrap(),
                Algorithm::ES256,
            ),
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
            ),
        ),
        (
            "RS256",
            provider(KeyRing::from_pem(&rsa_public).unwrap(), Algorithm::RS256),
            token(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
            ),
        ),
    ];
    for (name, (provider, ring), token) in &cases {
        c.bench_function(&format!("jwt_verify/{name}/uncached"), |b| {
            b.iter(|| provider.check(black_box(token), ring).unwrap())
        });
        c.bench_function(&format!("jwt_verify/{name}/cached"), |b| {
            b.iter(|| provider.verify_now(black_box(token)).unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
