//! `ext_authz`: a real authorization service in the test decides; allowed requests carry its
//! headers (never the client's copies), refusals reach the client as the service sent them,
//! and a slow or dead service fails closed (or open, when configured).

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the service saw of each check.
pub(crate) struct Check {
    path: String,
    method: http::Method,
    headers: http::HeaderMap,
    body: Bytes,
}

pub(crate) type Checks = Arc<Mutex<Vec<Check>>>;

/// The service: `Bearer good` → 200 with `x-user-id: 42` and `x-other: 1`; `Bearer slow` →
/// the same after two seconds; a body containing `forbidden` → 403; anything else → 401 with
/// `WWW-Authenticate` and a JSON body.
pub(crate) async fn auth_service() -> (SocketAddr, Checks) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let checks: Checks = Arc::default();
    let seen = Arc::clone(&checks);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let path = req.uri().to_string();
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let (parts, body) = req.into_parts();
                        let body = http_body_util::BodyExt::collect(body)
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let forbidden = body.windows(9).any(|w| w == b"forbidden");
                        seen.lock().unwrap().push(Check {
                            path,
                            method: parts.method,
                            headers: parts.headers,
                            body,
                        });
                        if auth == "Bearer slow" {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        let response = if forbidden {
                            http::Response::builder()
                                .status(403)
                                .body(Full::new(Bytes::from_static(b"not that")))
                        } else if auth == "Bearer good" || auth == "Bearer slow" {
                            http::Response::builder()
                                .header("x-user-id", "42")
                                .header("x-other", "1")
                                .body(Full::new(Bytes::new()))
                        } else {
                            http::Response::builder()
                                .status(401)
                                .header("www-authenticate", "Bearer realm=\"api\"")
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(
                                    b"{\"error\":\"who are you\"}",
                                )))
                        };
                        Ok::<_, std::convert::Infallible>(response.unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, checks)
}

/// `GET /api` with `Authorization: Bearer TOKEN`.
fn bearer(token: &str) -> http::Request<BoxBody> {
    req("GET", "/api")
        .header("authorization", format!("Bearer {token}"))
        .body(empty())
        .unwrap()
}

fn yaml(up: SocketAddr, auth: SocketAddr, filter: &str) -> String {
    with_test_admin(&format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up: {{ discovery: {{ static: [{up}] }} }}\n  auth: {{ discovery: {{ static: [{auth}] }} }}\n\
         routes:\n  - name: api\n    upstream: up\n    filters: [ {{ ext_authz: {{ upstream: auth, path: /check, upstream_headers: [x-user-id, x-user-roles]{filter} }} }} ]\n"
    ))
}

#[tokio::test]
async fn an_allowed_request_carries_the_services_headers_and_never_the_clients() {
    let up = upstream().run().await;
    let (auth, checks) = auth_service().await;
    let gw = gateway(&yaml(up.addr, auth, ""));
    let mut client = Client::http1(gw.addr()).await;
    let reply = client
        .request(
            req("POST", "/api/items?x=1")
                .header("host", "api.example")
                .header("authorization", "Bearer good")
                .header("x-user-id", "1")
                .header("x-user-roles", "admin")
                .body(body("payload"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let seen = up.last();
    assert_eq!(
        seen.headers.get_all("x-user-id").iter().collect::<Vec<_>>(),
        ["42"]
    );
    assert!(
        seen.headers.get("x-user-roles").is_none(),
        "a spoofed header the service did not set"
    );
    assert!(
        seen.headers.get("x-other").is_none(),
        "only the configured headers are copied"
    );
    // What the service was asked.
    let checks = checks.lock().unwrap();
    assert_eq!(checks.len(), 1);
    let Check {
        path,
        method,
        headers,
        body,
    } = &checks[0];
    assert_eq!(path, "/check");
    assert_eq!(method, http::Method::GET);
    assert!(body.is_empty(), "no body without max_body");
    assert_eq!(headers["authorization"], "Bearer good");
    assert_eq!(headers["x-forwarded-method"], "POST");
    assert_eq!(headers["x-forwarded-uri"], "/api/items?x=1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "api.example");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(
        headers.get("x-user-id").is_none(),
        "the client's copy never reaches the service"
    );
}

#[tokio::test]
async fn a_refusal_reaches_the_client_as_the_service_sent_it() {
    let up = upstream().run().await;
    let (auth, _) = auth_service().await;
    let gw = gateway(&yaml(up.addr, auth, ""));
    let mut client = Client::http1(gw.addr()).await;
    let reply = client.request(bearer("bad")).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"api\"")
    );
    assert_eq!(reply.text(), "{\"error\":\"who are you\"}");
    let reply = client.get("/api").await;
    assert_eq!(reply.status, 401, "no credentials at all");
    assert_eq!(up.requests(), 0);
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(
        metrics.contains("ext_authz_decisions_total{filter=\"api\",decision=\"denied\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ext_authz_duration_seconds_count{filter=\"api\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_slow_or_dead_service_fails_closed_quickly_or_open_when_configured() {
    let up = upstream().run().await;
    let (auth, _) = auth_service().await;
    let gw = gateway(&yaml(up.addr, auth, ", timeout: 200ms"));
    let mut client = Client::http1(gw.addr()).await;
    let started = Instant::now();
    let reply = client.request(bearer("slow")).await;
    assert_eq!(reply.status, 503);
    assert!(reply.text().contains("authorization service unavailable"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let dead = gateway(&yaml(up.addr, dead_address(), ""));
    let mut client = Client::http1(dead.addr()).await;
    let reply = client.request(bearer("good")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(up.requests(), 0);

    let open = gateway(&yaml(up.addr, dead_address(), ", on_error: allow"));
    let mut client = Client::http1(open.addr()).await;
    let reply = client
        .request(
            req("GET", "/api")
                .header("x-user-id", "1")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        up.last().headers.get("x-user-id").is_none(),
        "fail open never trusts the client's copy"
    );
}

#[tokio::test]
async fn allow_decisions_are_kept_per_credential_refusals_never() {
    let up = upstream().run().await;
    let (auth, checks) = auth_service().await;
    let gw = gateway(&yaml(
        up.addr,
        auth,
        ", cache: { ttl: 60s, key: [authorization] }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..3 {
        assert_eq!(client.request(bearer("good")).await.status, 200);
        assert_eq!(
            up.last().headers["x-user-id"],
            "42",
            "cached allows copy the headers too"
        );
    }
    assert_eq!(checks.lock().unwrap().len(), 1);
    for _ in 0..2 {
        assert_eq!(client.request(bearer("bad")).await.status, 401);
    }
    assert_eq!(
        checks.lock().unwrap().len(),
        3,
        "refusals are asked every time"
    );
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(
        metrics.contains("ext_authz_decisions_total{filter=\"api\",decision=\"cached\"} 2"),
        "{metrics}"
    );
}

#[test]
fn config_errors_name_the_key() {
    let errors = config_errors(
        "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
         upstreams:\n  h2: { discovery: { static: [127.0.0.1:1] }, protocol: http2 }\n\
         routes:\n  - name: a\n    respond: { body: a }\n    filters:\n\
         \x20     - ext_authz: { upstream: nope }\n\
         \x20     - ext_authz: { upstream: h2, path: check, upstream_headers: [host, \"bad name\"], on_error: maybe, cache: { ttl: 0s, key: [] } }\n",
    );
    assert_eq!(
        errors,
        [
            "routes[0].filters[0].ext_authz.upstream: unknown upstream \"nope\" (known: h2) (line 8)",
            "routes[0].filters[1].ext_authz.upstream: the authorization service must speak HTTP/1.1 (protocol: http1) (line 9)",
            "routes[0].filters[1].ext_authz.path: \"check\" is not a path: it must start with / and be a valid request target (line 9)",
            "routes[0].filters[1].ext_authz.upstream_headers[1]: invalid header name \"bad name\" (line 9)",
            "routes[0].filters[1].ext_authz.upstream_headers[0]: host frames or routes the request: the service may not set it (line 9)",
            "routes[0].filters[1].ext_authz.on_error: unknown value \"maybe\": expected deny or allow (line 9)",
            "routes[0].filters[1].ext_authz.cache.ttl: must be greater than zero (line 9)",
            "routes[0].filters[1].ext_authz.cache.key: needs at least one header: decisions are kept per client (line 9)",
        ]
    );
}

#[tokio::test]
async fn an_underscore_spelling_of_a_service_header_never_reaches_the_upstream() {
    // With underscores allowed through, an upstream that folds `_` into `-` would read
    // `x_user_id` as the service's `x-user-id`.
    let up = upstream().run().await;
    let (auth, _) = auth_service().await;
    let config = yaml(up.addr, auth, "").replacen(
        "upstreams:",
        "limits: { headers_with_underscores: allow }\nupstreams:",
        1,
    );
    let gw = gateway(&config);
    let mut client = Client::http1(gw.addr()).await;
    let reply = client
        .request(
            req("GET", "/api")
                .header("authorization", "Bearer good")
                .header("x_user_id", "1")
                .header("X_User_Roles", "admin")
                .header("x_trace", "kept")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let seen = up.last();
    assert_eq!(
        seen.headers.get_all("x-user-id").iter().collect::<Vec<_>>(),
        ["42"]
    );
    assert!(seen.headers.get("x_user_id").is_none());
    assert!(seen.headers.get("x_user_roles").is_none());
    assert_eq!(
        seen.headers["x_trace"], "kept",
        "other underscore headers pass as configured"
    );
}

#[tokio::test]
async fn with_max_body_the_check_carries_the_body_and_the_upstream_still_gets_it() {
    let up = upstream().run().await;
    let (auth, checks) = auth_service().await;
    let gw = gateway(&yaml(up.addr, auth, ", max_body: 1KiB"));
    let mut client = Client::http1(gw.addr()).await;
    let post = |text: &'static str| {
        req("POST", "/api/orders")
            .header("authorization", "Bearer good")
            .header("content-type", "text/plain")
            .body(body(text))
            .unwrap()
    };
    assert_eq!(client.request(post("an order")).await.status, 200);
    {
        let checks = checks.lock().unwrap();
        let check = &checks[0];
        assert_eq!(check.method, http::Method::POST);
        assert_eq!(check.body, "an order");
        assert_eq!(check.headers["content-type"], "text/plain");
        assert_eq!(check.headers["x-forwarded-method"], "POST");
    }
    assert_eq!(up.last().body_len, 8, "the upstream gets the body too");
    // The service decides on the body.
    let refused = client.request(post("a forbidden order")).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.text(), "not that");
    assert_eq!(up.requests(), 1);

    // Longer than max_body: 413, with or without a Content-Length, and nobody is asked.
    let long = "x".repeat(2048);
    let reply = client
        .request(
            req("POST", "/api/orders")
                .header("authorization", "Bearer good")
                .body(body(long.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 413);
    let mut client = Client::http1(gw.addr()).await;
    let (tx, chunked) = channel_body();
    let sending = tokio::spawn(async move {
        for _ in 0..3 {
            let frame = hyper::body::Frame::data(Bytes::from(vec![b'y'; 800]));
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    let reply = client
        .request(
            req("POST", "/api/orders")
                .header("authorization", "Bearer good")
                .body(chunked)
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 413);
    let _ = sending.await;
    assert_eq!(checks.lock().unwrap().len(), 2);
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn a_body_read_for_the_check_is_replayed_by_retries() {
    let up = upstream().run().await;
    let (auth, _) = auth_service().await;
    let config = yaml(up.addr, auth, ", max_body: 1KiB").replacen(
        &format!("up: {{ discovery: {{ static: [{}] }} }}", up.addr),
        &format!(
            "up: {{ discovery: {{ static: [{}, {}] }}, retries: {{ attempts: 2, on: [connect_error] }} }}",
            dead_address(),
            up.addr
        ),
        1,
    );
    assert!(config.contains("retries"), "{config}");
    let gw = gateway(&config);
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..4 {
        let reply = client
            .request(
                req("PUT", "/api/item")
                    .header("authorization", "Bearer good")
                    .body(body("twelve bytes"))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(up.last().body_len, 12);
    }
}
