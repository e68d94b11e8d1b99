//! Remote JWK sets (`jwks_url`) served by a real HTTP server: start-up, rotation, outages,
//! unknown-kid floods and reloads.

use crate::support::*;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An ES256 signing key with its kid, as an identity provider holds it.
struct SigningKey {
    kid: String,
    pair: rcgen::KeyPair,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            pair: rcgen::KeyPair::generate().unwrap(),
        }
    }

    /// The public half as a JWK: P-256 point coordinates from the uncompressed encoding.
    fn jwk(&self) -> serde_json::Value {
        let raw = self.pair.public_key_raw();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
               "x": b64(&raw[1..33]), "y": b64(&raw[33..65])})
    }

    fn token(&self, sub: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({"iss": "https://idp.test", "sub": sub, "iat": now, "exp": now + 600});
        let key = EncodingKey::from_ec_pem(self.pair.serialize_pem().as_bytes()).unwrap();
        encode(&header, &claims, &key).unwrap()
    }
}

fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

#[derive(Default)]
struct IdpState {
    /// `None`: the endpoint answers 503.
    body: Option<String>,
    cache_control: Option<String>,
    fetches: usize,
}

/// A JWKS endpoint whose answer the test changes at will.
struct Idp {
    addr: SocketAddr,
    state: Arc<Mutex<IdpState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    async fn start(body: Option<String>) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(IdpState {
            body,
            ..IdpState::default()
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let mut state = state.lock().unwrap();
                        state.fetches += 1;
                        let mut response = http::Response::builder();
                        if let Some(cc) = &state.cache_control {
                            response = response.header("cache-control", cc.as_str());
                        }
                        let response = match &state.body {
                            Some(body) => response
                                .status(200)
                                .body(Full::new(Bytes::from(body.clone()))),
                            None => response.status(503).body(Full::new(Bytes::from("down"))),
                        };
                        async move { Ok::<_, Infallible>(response.unwrap()) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Idp { addr, state, task }
    }

    fn serve(&self, body: Option<String>) {
        self.state.lock().unwrap().body = body;
    }

    fn fetches(&self) -> usize {
        self.state.lock().unwrap().fetches
    }
}

fn config(upstream: SocketAddr, idp: SocketAddr, settings: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up: {{ discovery: {{ static: [{upstream}] }} }}\n\
         jwt_providers:\n\
         \x20 idp:\n    issuer: https://idp.test\n    algorithms: [ES256]\n    jwks_url: http://{idp}/.well-known/jwks.json\n{settings}\
         routes:\n\
         \x20 - name: api\n    upstream: up\n    filters:\n\
         \x20     - jwt: {{ provider: idp, forward_claims: {{ sub: x-user-id }} }}\n"
    )
}

async fn call(client: &mut Client, token: &str) -> Reply {
    client
        .request(
            req("GET", "/items")
                .header("authorization", format!("Bearer {token}"))
                .body(empty())
                .unwrap(),
        )
        .await
}

/// Polls until `check` holds, for at most `limit`.
async fn eventually<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn ready(gw: &TestGateway) -> bool {
    get(gw.admin(), "/ready").await.status == 200
}

#[tokio::test]
async fn keys_rotate_without_a_failed_request() {
    let up = upstream().run().await;
    let old = SigningKey::new("2026-a");
    let new = SigningKey::new("2026-b");
    let idp = Idp::start(Some(jwks(&[&old]))).await;
    let gw = gateway(&config(
        up.addr,
        idp.addr,
        "    refresh: 1h\n    min_refetch_interval: 200ms\n",
    ));
    assert!(
        eventually(Duration::from_secs(5), || ready(&gw)).await,
        "never ready"
    );
    let mut client = Client::http1(gw.addr()).await;
    let reply = call(&mut client, &old.token("alice")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(up.last().headers["x-user-id"], "alice");

    // The provider publishes the new key and starts signing with it at once, long before
    // the next scheduled refresh: the unknown kid triggers one refetch and the token passes.
    tokio::time::sleep(Duration::from_millis(250)).await;
    idp.serve(Some(jwks(&[&old, &new])));
    let fetches = idp.fetches();
    for round in 0..20 {
        let (key, name) = if round % 2 == 0 {
            (&new, "bob")
        } else {
            (&old, "alice")
        };
        let reply = call(&mut client, &key.token(name)).await;
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
    }
    assert_eq!(idp.fetches(), fetches + 1, "one refetch for the new kid");

    // The old key is withdrawn: tokens signed with it stop passing, even ones verified (and
    // cached) before, once the set is refetched.
    let cached_old = old.token("carol");
    assert_eq!(call(&mut client, &cached_old).await.status, 200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    idp.serve(Some(jwks(&[&new])));
    // A token with an unknown kid makes the gateway look again.
    let stranger = SigningKey::new("2026-z");
    assert_eq!(call(&mut client, &stranger.token("eve")).await.status, 401);
    let reply = call(&mut client, &cached_old).await;
    assert_eq!(
        reply.status, 401,
        "a withdrawn key's cached token still passed"
    );
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    assert_eq!(call(&mut client, &new.token("dave")).await.status, 200);
}

#[tokio::test]
async fn endpoint_down_at_start_answers_503_then_recovers() {
    let up = upstream().run().await;
    let key = SigningKey::new("k1");
    let idp = Idp::start(None).await;
    let gw = gateway(&config(up.addr, idp.addr, "    ready_timeout: 1s\n"));
    let mut client = Client::http1(gw.addr()).await;
    // Not a 401: the token may be perfectly good; the gateway cannot tell yet.
    let reply = call(&mut client, &key.token("alice")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["error"], "authentication keys unavailable");
    assert!(reply.header("www-authenticate").is_none());
    let not_ready = get(gw.admin(), "/ready").await;
    assert_eq!(not_ready.status, 503);
    assert!(not_ready.text().contains("JWT key sets"));
    // Readiness stops waiting after ready_timeout, so one bad IdP cannot keep a fleet down.
    assert!(eventually(Duration::from_secs(3), || ready(&gw)).await);
    assert_eq!(up.requests(), 0);

    idp.serve(Some(jwks(&[&key])));
    let token = key.token("alice");
    let recovered = eventually(Duration::from_secs(8), || {
        let addr = gw.addr();
        let token = token.clone();
        async move {
            let mut client = Client::http1(addr).await;
            call(&mut client, &token).await.status == 200
        }
    })
    .await;
    assert!(recovered, "keys never loaded after the endpoint came back");
    assert!(idp.fetches() >= 2, "the gateway retried");
}

#[tokio::test]
async fn endpoint_down_during_refresh_keeps_the_last_good_set() {
    let up = upstream().run().await;
    let key = SigningKey::new("k1");
    let idp = Idp::start(Some(jwks(&[&key]))).await;
    idp.state.lock().unwrap().cache_control = Some("public, max-age=1".into());
    // `refresh` is long; the endpoint's max-age (1 s) makes the gateway look every second.
    let gw = gateway(&config(
        up.addr,
        idp.addr,
        "    refresh: 1h\n    min_refetch_interval: 1s\n",
    ));
    assert!(eventually(Duration::from_secs(5), || ready(&gw)).await);
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(call(&mut client, &key.token("alice")).await.status, 200);
    idp.serve(None);
    let before = idp.fetches();
    assert!(
        eventually(Duration::from_secs(5), || async {
            idp.fetches() >= before + 2
        })
        .await,
        "max-age did not shorten the refresh"
    );
    // Fresh tokens (not cached) still verify against the kept set.
    for i in 0..5 {
        let reply = call(&mut client, &key.token(&format!("user{i}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

#[tokio::test]
async fn an_unknown_kid_flood_does_not_hammer_the_endpoint() {
    let up = upstream().run().await;
    let key = SigningKey::new("real");
    let idp = Idp::start(Some(jwks(&[&key]))).await;
    let gw = gateway(&config(
        up.addr,
        idp.addr,
        "    min_refetch_interval: 30s\n",
    ));
    assert!(eventually(Duration::from_secs(5), || ready(&gw)).await);
    let attacker = rcgen::KeyPair::generate().unwrap();
    let attacker_key = EncodingKey::from_ec_pem(attacker.serialize_pem().as_bytes()).unwrap();
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let addr = gw.addr();
        let attacker_key = attacker_key.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::http1(addr).await;
            let mut statuses = Vec::new();
            for i in 0..50 {
                let mut header = Header::new(Algorithm::ES256);
                header.kid = Some(format!("forged-{worker}-{i}"));
                let now = jsonwebtoken::get_current_timestamp();
                let claims = json!({"iss": "https://idp.test", "sub": "x", "exp": now + 60});
                let token = encode(&header, &claims, &attacker_key).unwrap();
                statuses.push(call(&mut client, &token).await.status);
            }
            statuses
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().iter().all(|s| *s == 401));
    }
    assert!(
        idp.fetches() <= 2,
        "{} fetches for 200 forged kids",
        idp.fetches()
    );
    assert_eq!(up.requests(), 0);
    // The real key still works.
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(call(&mut client, &key.token("alice")).await.status, 200);
}

#[tokio::test]
async fn a_reload_keeps_the_fetched_keys() {
    let up = upstream().run().await;
    let key = SigningKey::new("k1");
    let idp = Idp::start(Some(jwks(&[&key]))).await;
    let gw = gateway(&config(up.addr, idp.addr, "    refresh: 1h\n"));
    assert!(eventually(Duration::from_secs(5), || ready(&gw)).await);
    let fetches = idp.fetches();
    // The provider changes (a leeway), its key source does not: no new fetch, no 503.
    idp.serve(None);
    gw.reload(&config(
        up.addr,
        idp.addr,
        "    refresh: 1h\n    leeway: 10s\n",
    ))
    .unwrap();
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(call(&mut client, &key.token("alice")).await.status, 200);
    assert_eq!(idp.fetches(), fetches);
    assert!(ready(&gw).await);
}

#[test]
fn jwks_url_config_errors() {
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        jwt_providers:\n\
        \x20 a: { algorithms: [RS256], jwks_url: ftp://idp/keys }\n\
        \x20 b: { algorithms: [RS256], jwks_url: http://idp/keys, refresh: soon }\n\
        \x20 c: { algorithms: [HS256], secret: a-test-secret-that-is-long-enough-for-hs256, refresh: 1m }\n\
        routes:\n  - { name: a, respond: { body: a } }\n";
    let issues = config_errors(yaml);
    assert!(
        issues[0].starts_with("jwt_providers.a.jwks_url: \"ftp://idp/keys\" is not an http:// or https:// URL (line 3)"),
        "{issues:?}"
    );
    assert!(
        issues[1].starts_with("jwt_providers.b.refresh:"),
        "{issues:?}"
    );
    assert!(
        issues[2].starts_with("jwt_providers.c.refresh: only applies with jwks_url (line 5)"),
        "{issues:?}"
    );
}
