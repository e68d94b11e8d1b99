//! JWT authentication through a real gateway.

use crate::support::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

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

/// A gateway whose config may name `${PORTCULLIS_TEST_JWT_SECRET}`.
fn jwt_gateway(yaml: &str) -> TestGateway {
    gateway_env(yaml, &[("PORTCULLIS_TEST_JWT_SECRET", SECRET)])
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn valid_tokens_pass_with_their_claims_forwarded() {
    let up = upstream().run().await;
    let gw = jwt_gateway(&config(up.addr, ""));
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
    let up = upstream().run().await;
    let gw = jwt_gateway(&config(up.addr, ""));
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
    let gw = jwt_gateway(&yaml);
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
    let issues = config_errors(yaml);
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

/// A gateway config with one HS256 provider per token place and a route `/{letter}` for each:
/// `b` bearer, `c` cookie `session`, `q` query `access_token`, `h` header `x-token`.
fn by_place(upstream: std::net::SocketAddr, letters: &str) -> String {
    let places = [
        ('b', "bearer", ""),
        ('c', "cookie", ", from: { cookie: session }"),
        ('q', "query", ", from: { query: access_token }"),
        ('h', "header", ", from: { header: x-token }"),
    ];
    let chosen: Vec<_> = places
        .iter()
        .filter(|(l, _, _)| letters.contains(*l))
        .collect();
    let mut yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up: {{ discovery: {{ static: [{upstream}] }} }}\njwt_providers:\n"
    );
    for (_, name, from) in &chosen {
        yaml += &format!(
            "  {name}: {{ issuer: https://auth.example.com, algorithms: [HS256], secret: \"${{PORTCULLIS_TEST_JWT_SECRET}}\"{from} }}\n"
        );
    }
    yaml += "routes:\n";
    for (letter, name, _) in &chosen {
        yaml += &format!(
            "  - {{ name: {letter}, match: {{ path_prefix: /{letter} }}, upstream: up, filters: [ {{ jwt: {{ provider: {name}, forward_claims: {{ sub: x-user-id }} }} }} ] }}\n"
        );
    }
    yaml
}

#[tokio::test]
async fn tokens_from_a_cookie_or_a_query_parameter() {
    let up = upstream().run().await;
    let yaml = by_place(up.addr, "cq");
    let gw = jwt_gateway(&yaml);
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

/// One signing key per algorithm family, and the provider lines that verify it.
struct Family {
    route: &'static str,
    alg: Algorithm,
    key: EncodingKey,
    /// `secret: …` or `public_key_file: …`.
    verify_with: String,
}

fn families() -> Vec<Family> {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/keys");
    let rsa_private = std::fs::read(format!("{keys}/rsa-bench-private.pem")).unwrap();
    let rsa_public = format!("public_key_file: {keys}/rsa-bench-public.pem");
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let public_file = |name: &str, pem: String| {
        let path = temp_path(name);
        std::fs::write(&path, pem).unwrap();
        format!("public_key_file: {}", path.display())
    };
    vec![
        Family {
            route: "hs",
            alg: Algorithm::HS256,
            key: EncodingKey::from_secret(SECRET.as_bytes()),
            verify_with: format!("secret: {SECRET}"),
        },
        Family {
            route: "rs",
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
            verify_with: rsa_public.clone(),
        },
        Family {
            route: "ps",
            alg: Algorithm::PS256,
            key: EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
            verify_with: rsa_public,
        },
        Family {
            route: "es",
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
            verify_with: public_file("ec.pem", ec.public_key_pem()),
        },
        Family {
            route: "ed",
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(),
            verify_with: public_file("ed.pem", ed.public_key_pem()),
        },
    ]
}

#[tokio::test]
async fn a_configured_issuer_or_audience_must_be_present_for_every_algorithm() {
    let up = upstream().run().await;
    let families = families();
    let mut yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up: {{ discovery: {{ static: [{}] }} }}\njwt_providers:\n",
        up.addr
    );
    for f in &families {
        yaml += &format!(
            "  {}: {{ issuer: https://auth.example.com, audiences: [api], algorithms: [{:?}], {} }}\n",
            f.route, f.alg, f.verify_with
        );
    }
    yaml += "routes:\n";
    for f in &families {
        yaml += &format!(
            "  - {{ name: {0}, match: {{ path: /{0} }}, upstream: up, filters: [ {{ jwt: {{ provider: {0} }} }} ] }}\n",
            f.route
        );
    }
    let gw = jwt_gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    for f in &families {
        let sign = |claims: &Value| encode(&Header::new(f.alg), claims, &f.key).unwrap();
        let good = claims("alice", "read");
        let mut no_iss = good.clone();
        no_iss.as_object_mut().unwrap().remove("iss");
        let mut no_aud = good.clone();
        no_aud.as_object_mut().unwrap().remove("aud");
        let mut listed_iss = good.clone();
        listed_iss["iss"] = json!(["https://auth.example.com", "https://evil.example.com"]);
        let mut null_aud = good.clone();
        null_aud["aud"] = Value::Null;
        let cases = [
            ("good", good, 200),
            ("no iss", no_iss, 401),
            ("no aud", no_aud, 401),
            ("iss as a list", listed_iss, 401),
            ("aud null", null_aud, 401),
        ];
        for (what, claims, status) in cases {
            let reply = client
                .request(
                    req("GET", &format!("/{}", f.route))
                        .header("authorization", bearer(&sign(&claims)))
                        .body(empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(reply.status, status, "{:?} {what}: {}", f.alg, reply.text());
        }
    }
    assert_eq!(
        up.requests(),
        families.len(),
        "only good tokens reach the upstream"
    );
}

#[tokio::test]
async fn a_repeated_token_field_is_refused_and_never_forwarded() {
    let up = upstream().run().await;
    let yaml = by_place(up.addr, "bcqh");
    let gw = jwt_gateway(&yaml);
    let good = hs256(claims("alice", "read"));
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let forged = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(
            json!({"iss": "https://auth.example.com", "sub": "admin", "exp": now() + 600})
                .to_string()
                .as_bytes()
        )
    );
    let attempts: Vec<(String, Vec<(&str, String)>)> = vec![
        (
            "/b".into(),
            vec![
                ("authorization", bearer(&good)),
                ("authorization", bearer(&forged)),
            ],
        ),
        // The same token twice is still two fields.
        (
            "/b".into(),
            vec![
                ("authorization", bearer(&good)),
                ("authorization", bearer(&good)),
            ],
        ),
        (
            "/b".into(),
            vec![
                ("authorization", bearer(&good)),
                ("authorization", "Basic YTpi".into()),
            ],
        ),
        (
            "/c".into(),
            vec![("cookie", format!("session={good}; session={forged}"))],
        ),
        (
            "/c".into(),
            vec![
                ("cookie", format!("session={good}")),
                ("cookie", format!("session={forged}")),
            ],
        ),
        (
            format!("/q?access_token={good}&access_token={forged}"),
            vec![],
        ),
        (
            format!("/q?access_token={good}&access%5Ftoken={forged}"),
            vec![],
        ),
        (
            "/h".into(),
            vec![("x-token", good.clone()), ("x-token", forged.clone())],
        ),
    ];
    for http2 in [false, true] {
        let mut client = if http2 {
            Client::http2(gw.addr()).await
        } else {
            Client::http1(gw.addr()).await
        };
        for (path, headers) in &attempts {
            let mut request = req("GET", path);
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            let reply = client.request(request.body(empty()).unwrap()).await;
            assert_eq!(reply.status, 400, "{path} {headers:?}: {}", reply.text());
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer error=\"invalid_request\"")
            );
        }
        assert_eq!(
            up.requests(),
            0,
            "a request with a repeated token reached the upstream"
        );
    }
    // Each place alone still works.
    let mut client = Client::http1(gw.addr()).await;
    for (path, header) in [
        ("/b".to_string(), Some(("authorization", bearer(&good)))),
        (
            "/c".to_string(),
            Some(("cookie", format!("theme=dark; session={good}"))),
        ),
        (format!("/q?access_token={good}&a=1"), None),
        ("/h".to_string(), Some(("x-token", good.clone()))),
    ] {
        let mut request = req("GET", &path);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let reply = client.request(request.body(empty()).unwrap()).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
}

#[tokio::test]
async fn required_claims_match_whole_values_never_words() {
    let up = upstream().run().await;
    let yaml = config(up.addr, "").replace(
        "provider: main, forward_claims: { sub: x-user-id }",
        "provider: main, require: { claims: { role: [admin], level: [3], staff: [true] } }",
    );
    let gw = jwt_gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    let with = |extra: Value| {
        let mut c = claims("alice", "read");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        hs256(c)
    };
    let base = json!({"role": "admin", "level": 3, "staff": true});
    let merge = |over: Value| {
        let mut b = base.clone();
        for (k, v) in over.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        (base.clone(), 200),
        (merge(json!({"role": ["user", "admin"]})), 200),
        (merge(json!({"level": 3.0})), 200),
        (merge(json!({"role": ["admin"]})), 200),
        // The bypasses: words of a string, near values, other types.
        (merge(json!({"role": "not admin"})), 403),
        (merge(json!({"role": "admin user"})), 403),
        (merge(json!({"role": "administrator"})), 403),
        (merge(json!({"role": [["admin"]]})), 403),
        (merge(json!({"role": {"admin": true}})), 403),
        (merge(json!({"level": 30})), 403),
        (merge(json!({"level": [4, 5]})), 403),
        (merge(json!({"staff": false})), 403),
        (merge(json!({"staff": "yes"})), 403),
        (merge(json!({"staff": "true"})), 403),
        (merge(json!({"level": "3"})), 403),
        (merge(json!({"staff": null})), 403),
    ];
    for (extra, status) in cases {
        let reply = client
            .request(
                req("GET", "/items")
                    .header("authorization", bearer(&with(extra.clone())))
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, status, "{extra}: {}", reply.text());
    }
    // A space-delimited scope is still split: "read admin" grants admin.
    let reply = client
        .request(
            req("GET", "/admin/x")
                .header("authorization", bearer(&hs256(claims("a", "read admin"))))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
}
