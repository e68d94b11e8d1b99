//! JWT authentication through a real gateway.

mod support;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: &str, scope: &str) -> Value {
    json!({"iss": "https://auth.example.com", "aud": "api", "sub": sub, "scope": scope, "exp": now() + 600, "iat": now()})
}

fn config(upstream: std::net::SocketAddr, extra_provider: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up: {{ discovery: {{ static: [{upstream}] }} }}\n\
         jwt_providers:\n\
         \x20 main:\n    issuer: https://auth.example.com\n    audiences: [api]\n    algorithms: [HS256]\n    secret: ${{PORTCULLIS_TEST_JWT_SECRET}}\n\
         {extra_provider}\
         routes:\n\
         \x20 - name: admin\n    match: {{ path_prefix: /admin }}\n    upstream: up\n    filters:\n\
         \x20     - jwt: {{ provider: main, require: {{ scopes: [admin] }}, forward_token: false }}\n\
         \x20 - name: api\n    upstream: up\n    filters:\n\
         \x20     - jwt: {{ provider: main, forward_claims: {{ sub: x-user-id }} }}\n"
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn valid_tokens_pass_with_their_claims_forwarded() {
    std::env::set_var("PORTCULLIS_TEST_JWT_SECRET", SECRET);
    let up = upstream().run().await;
    let gw = gateway(&config(up.addr, ""));
    let mut client = Client::http1(gw.addr()).await;
    let token = hs256(claims("alice", "read"));
    let reply = client
        .request(
            req("GET", "/items")
                .header("authorization", bearer(&token))
                .header("x-user-id", "mallory") // a spoof: replaced by the verified claim
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last();
    assert_eq!(
        seen.headers.get_all("x-user-id").iter().collect::<Vec<_>>(),
        ["alice"]
    );
    assert_eq!(seen.headers["authorization"], bearer(&token).as_str());
}

#[tokio::test]
async fn missing_invalid_and_insufficient_tokens() {
    std::env::set_var("PORTCULLIS_TEST_JWT_SECRET", SECRET);
    let up = upstream().run().await;
    let gw = gateway(&config(up.addr, ""));
    let mut client = Client::http1(gw.addr()).await;

    let reply = client.get("/items").await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert_eq!(reply.json()["error"], "authentication required");

    let mut expired = claims("alice", "read");
    expired["exp"] = json!(now() - 3600);
    for token in [
        hs256(expired),
        "garbage".to_string(),
        hs256(claims("alice", "read")) + "x",
    ] {
        let reply = client
            .request(
                req("GET", "/items")
                    .header("authorization", bearer(&token))
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(reply.json()["error"], "invalid token");
    }

    // Valid, but without the admin scope.
    let reply = client
        .request(
            req("GET", "/admin/users")
                .header("authorization", bearer(&hs256(claims("alice", "read"))))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer error=\"insufficient_scope\"")
    );
    assert_eq!(up.requests(), 0, "a refused request reached the upstream");

    // With it: through, and the token itself stays at the gateway (forward_token: false).
    let reply = client
        .request(
            req("GET", "/admin/users")
                .header(
                    "authorization",
                    bearer(&hs256(claims("root", "read admin"))),
                )
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(up.last().headers.get("authorization").is_none());
}

#[tokio::test]
async fn the_issuer_picks_the_provider_and_jwks_files_work() {
    std::env::set_var("PORTCULLIS_TEST_JWT_SECRET", SECRET);
    // An ES256 key published in a JWKS file.
    let pair = rcgen::KeyPair::generate().unwrap();
    // Uncompressed SEC1 point: 0x04 || x || y.
    let der = pair.public_key_raw();
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "x": b64(&der[1..33]), "y": b64(&der[33..65])}]});
    let path = temp_path("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();

    let up = upstream().run().await;
    let second = format!(
        "\x20 partner:\n    issuer: https://partner.example.com\n    algorithms: [ES256]\n    jwks_file: {}\n",
        path.display()
    );
    let yaml = config(up.addr, &second).replace(
        "provider: main, forward_claims",
        "providers: [main, partner], forward_claims",
    );
    let gw = gateway(&yaml);
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let partner_token = encode(
        &header,
        &json!({"iss": "https://partner.example.com", "sub": "bob", "exp": now() + 600}),
        &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let mut client = Client::http1(gw.addr()).await;
    for (token, user) in [
        (partner_token, "bob"),
        (hs256(claims("alice", "read")), "alice"),
    ] {
        let reply = client
            .request(
                req("GET", "/x")
                    .header("authorization", bearer(&token))
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, 200, "{user}: {}", reply.text());
        assert_eq!(up.last().headers["x-user-id"], user);
    }
    std::fs::remove_file(&path).ok();
}

#[test]
fn provider_config_errors() {
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        jwt_providers:\n\
        \x20 weak: { algorithms: [HS256], secret: short }\n\
        \x20 odd: { algorithms: [XS999], secret: a-test-secret-that-is-long-enough-for-hs256 }\n\
        routes:\n  - { name: a, respond: { body: a }, filters: [ { jwt: { provider: nope } } ] }\n";
    let error = portcullis::config::parse(yaml, "t", &|_| None).unwrap_err();
    let issues = error.issues();
    assert!(
        issues[0].starts_with("jwt_providers.weak.secret: an HMAC secret needs at least 32 bytes"),
        "{issues:?}"
    );
    assert!(
        issues[1].starts_with("jwt_providers.odd.algorithms[0]: unknown algorithm \"XS999\""),
        "{issues:?}"
    );
    assert!(
        issues[2].starts_with("routes[0].filters[0].jwt.provider: unknown JWT provider \"nope\""),
        "{issues:?}"
    );
}

#[tokio::test]
async fn tokens_from_a_cookie_or_a_query_parameter() {
    std::env::set_var("PORTCULLIS_TEST_JWT_SECRET", SECRET);
    let up = upstream().run().await;
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up: {{ discovery: {{ static: [{}] }} }}\n\
         jwt_providers:\n\
         \x20 cookie: {{ issuer: https://auth.example.com, algorithms: [HS256], secret: \"${{PORTCULLIS_TEST_JWT_SECRET}}\", from: {{ cookie: session }} }}\n\
         \x20 query: {{ issuer: https://auth.example.com, algorithms: [HS256], secret: \"${{PORTCULLIS_TEST_JWT_SECRET}}\", from: {{ query: access_token }} }}\n\
         routes:\n\
         \x20 - {{ name: c, match: {{ path_prefix: /c }}, upstream: up, filters: [ {{ jwt: {{ provider: cookie, forward_claims: {{ sub: x-user-id }} }} }} ] }}\n\
         \x20 - {{ name: q, match: {{ path_prefix: /q }}, upstream: up, filters: [ {{ jwt: {{ provider: query, forward_claims: {{ sub: x-user-id }} }} }} ] }}\n",
        up.addr
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    let token = hs256(claims("carol", "read"));

    let reply = client
        .request(
            req("GET", "/c")
                .header("cookie", format!("theme=dark; session={token}"))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(up.last().headers["x-user-id"], "carol");
    // A bearer header is not where this provider looks.
    let reply = client
        .request(
            req("GET", "/c")
                .header("authorization", bearer(&token))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 401);

    let reply = client.get(&format!("/q?page=2&access_token={token}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(up.last().headers["x-user-id"], "carol");
    let reply = client.get("/q?access_token=").await;
    assert_eq!(reply.status, 401);
}
