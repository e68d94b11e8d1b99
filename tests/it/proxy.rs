//! Forwarding through a real gateway to real upstreams.

use crate::support::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn forwards_method_path_query_and_body() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut client = Client::http1(gw.addr()).await;
    let reply = client
        .request(req("POST", "/items/7?x=1&y=2").body(body("hello")).unwrap())
        .await;
    assert_eq!(reply.status, 200);
    let echo = reply.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/items/7?x=1&y=2");
    assert_eq!(echo["body"], "hello");
    assert_eq!(echo["headers"]["host"][0], gw.addr().to_string());
}

/// A GET or HEAD may carry a body (search APIs do); one sent chunked arrives whole, and the
/// connection goes on with the next request.
#[tokio::test]
async fn a_chunked_body_on_a_get_or_head_is_forwarded() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let payload = "GET /search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
        HEAD /head HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
        GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let reply = raw(gw.addr(), payload.as_bytes(), Duration::from_secs(5)).await;
    assert!(reply.closed);
    assert_eq!(reply.responses(), 3, "{}", reply.text);
    let seen: Vec<_> = up
        .seen()
        .into_iter()
        .map(|s| (s.path, s.body_len))
        .collect();
    let expected = [("/search", 11), ("/head", 3), ("/next", 0)];
    let expected: Vec<_> = expected.iter().map(|(p, n)| (p.to_string(), *n)).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut client = Client::http1(gw.addr()).await;
    let request = req("GET", "/")
        .header("connection", "x-secret, keep-alive")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-normal", "kept")
        .body(empty())
        .unwrap();
    let reply = client.request(request).await;
    let headers = &reply.json()["headers"];
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "connection",
    ] {
        assert!(headers.get(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(headers["x-normal"][0], "kept");
    // The upstream's own hop-by-hop headers do not reach the client.
    assert!(reply.header("x-upstream-hop").is_none());
    assert!(reply.header("keep-alive").is_none());
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_replaced() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut client = Client::http1(gw.addr()).await;
    let request = req("GET", "/")
        .header("host", "api.example.com")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .body(empty())
        .unwrap();
    let headers = client.request(request).await.json()["headers"].clone();
    assert_eq!(headers["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    assert_eq!(headers["x-forwarded-host"][0], "api.example.com");
    assert!(headers.get("forwarded").is_none(), "{headers}");
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_peer_are_extended() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, "trusted_proxies: [127.0.0.0/8]\n"));
    let mut client = Client::http1(gw.addr()).await;
    let request = req("GET", "/")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=203.0.113.9")
        .body(empty())
        .unwrap();
    let headers = client.request(request).await.json()["headers"].clone();
    assert_eq!(headers["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"][0], "https");
    assert_eq!(headers["forwarded"][0], "for=203.0.113.9");
}

#[tokio::test]
async fn request_id_is_kept_when_sane_and_generated_otherwise() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut client = Client::http1(gw.addr()).await;
    let reply = client
        .request(
            req("GET", "/")
                .header("x-request-id", "trace-42")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.header("x-request-id"), Some("trace-42"));
    assert_eq!(reply.json()["headers"]["x-request-id"][0], "trace-42");

    let reply = client
        .request(
            req("GET", "/")
                .header("x-request-id", "no spaces allowed")
                .body(empty())
                .unwrap(),
        )
        .await;
    let generated = reply.header("x-request-id").unwrap().to_string();
    assert_eq!(generated.len(), 32);
    assert_eq!(
        reply.json()["headers"]["x-request-id"][0],
        generated.as_str()
    );
}

#[tokio::test]
async fn keep_alive_connections_to_the_upstream_are_reused() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..20 {
        assert_eq!(client.get("/").await.status, 200);
    }
    assert_eq!(up.requests(), 20);
    assert_eq!(
        up.connections(),
        1,
        "each request opened a new upstream connection"
    );
}

#[tokio::test]
async fn request_body_streams_to_the_upstream_before_it_is_complete() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, "limits: { max_body_bytes: 1GiB }\n"));
    let mut client = Client::http1(gw.addr()).await;
    let (tx, body) = channel_body();
    let response = tokio::spawn(async move {
        client
            .request(req("POST", "/upload").body(body).unwrap())
            .await
    });
    tx.send(Ok(Frame::data(Bytes::from(vec![b'a'; 64 * 1024]))))
        .await
        .unwrap();
    // The upstream sees the first chunk while the client still holds the rest.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.body_bytes_seen() < 64 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the gateway buffered the request body"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 32 MiB more, in 1 MiB chunks: nothing is held whole.
    for _ in 0..32 {
        tx.send(Ok(Frame::data(Bytes::from(vec![b'b'; 1 << 20]))))
            .await
            .unwrap();
    }
    drop(tx);
    let reply = response.await.unwrap();
    assert_eq!(reply.json()["body_len"], 64 * 1024 + (32 << 20));
}

#[tokio::test]
async fn response_body_streams_to_the_client_before_it_is_complete() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut client = Client::http1(gw.addr()).await;
    let response = client
        .send(req("GET", "/hold").body(empty()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk held back by the gateway")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first;");
    up.release();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "last");
}

#[tokio::test]
async fn http2_client_to_http1_upstream_and_back() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut client = Client::http2(gw.addr()).await;
    let reply = client
        .request(req("PUT", "/h2?q=1").body(body("over h2")).unwrap())
        .await;
    assert_eq!(reply.status, 200);
    let echo = reply.json();
    assert_eq!(echo["path"], "/h2?q=1");
    assert_eq!(echo["body"], "over h2");
    assert_eq!(echo["headers"]["host"][0], gw.addr().to_string());
}

#[tokio::test]
async fn http2_to_the_upstream() {
    let up = upstream().http2().run().await;
    let yaml =
        simple_yaml(up.addr, "").replace("    timeouts:", "    protocol: http2\n    timeouts:");
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..5 {
        let reply = client
            .request(req("POST", "/x").body(body("h2 up")).unwrap())
            .await;
        assert_eq!(reply.json()["body"], "h2 up");
    }
    assert_eq!(up.connections(), 1, "HTTP/2 upstream connection is shared");
}

#[tokio::test]
async fn rewrite_strips_prefix_and_sets_host() {
    let up = upstream().run().await;
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  users: {{ discovery: {{ static: [{}] }} }}\n\
         routes:\n\
         \x20 - name: users\n    match: {{ path_prefix: /users }}\n    upstream: users\n    rewrite: {{ strip_prefix: /users, host: users.internal }}\n\
         \x20 - name: v1\n    match: {{ path_prefix: /v1 }}\n    upstream: users\n    rewrite: {{ replace_prefix: /api/v2 }}\n",
        up.addr
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    let echo = client.get("/users/42?full=1").await.json();
    assert_eq!(echo["path"], "/42?full=1");
    assert_eq!(echo["headers"]["host"][0], "users.internal");
    let echo = client.get("/v1/items").await.json();
    assert_eq!(echo["path"], "/api/v2/items");
    // The prefix alone maps to the replacement alone: no slash appears.
    let echo = client.get("/v1").await.json();
    assert_eq!(echo["path"], "/api/v2");
    let echo = client.get("/v1?x=1").await.json();
    assert_eq!(echo["path"], "/api/v2?x=1");
    let echo = client.get("/v1/").await.json();
    assert_eq!(echo["path"], "/api/v2/");
}

#[tokio::test]
async fn websocket_style_upgrade_passes_through() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let (_tunnel, head) = open_tunnel_with_head(gw.addr()).await;
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
}

fn connections_active(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("connections_active{listener=\"http\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no connections_active in {metrics}"))
}

#[tokio::test]
async fn an_upgraded_connection_stays_counted_until_the_tunnel_closes() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, "limits: { max_connections: 1 }\n"));
    let tunnel = open_tunnel(gw.addr()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert_eq!(connections_active(&metrics), 1, "the tunnel is not counted");
    // The tunnel holds the only slot: another connection is refused.
    let reply = raw(
        gw.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(
        reply.closed && reply.text.is_empty(),
        "served beyond max_connections: {}",
        reply.text
    );
    // Once the tunnel closes, the slot is free again.
    drop(tunnel);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let reply = raw(
            gw.addr(),
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_millis(500),
        )
        .await;
        if reply.text.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shutdown_gives_a_tunnel_the_grace_period_then_closes_it() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, "shutdown_grace: 1s\n"));
    let mut tunnel = open_tunnel(gw.addr()).await;
    let started = std::time::Instant::now();
    let stopping = std::thread::spawn(move || gw.running.shutdown());
    // Within the grace period the tunnel still carries data …
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        echoes(&mut tunnel).await,
        "the tunnel was cut before shutdown_grace"
    );
    // … and at its end it is closed, and the gateway stops.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the tunnel outlived the shutdown");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed after {elapsed:?}, before the grace ended"
    );
    tokio::task::spawn_blocking(move || stopping.join().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn respond_and_redirect_routes() {
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        routes:\n\
        \x20 - name: ping\n    match: { path: /ping }\n    respond: { status: 201, headers: { x-kind: pong }, body: pong }\n\
        \x20 - name: moved\n    match: { path_prefix: /old }\n    redirect: { status: 301, location: https://example.com/new }\n\
        \x20 - name: secure\n    match: { path_prefix: /secure }\n    redirect: { scheme: https }\n";
    let gw = gateway(yaml);
    let mut client = Client::http1(gw.addr()).await;
    let reply = client.get("/ping").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (201, "pong")
    );
    assert_eq!(reply.header("x-kind"), Some("pong"));
    let reply = client.get("/old/page").await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("https://example.com/new"));
    let reply = client
        .request(
            req("GET", "/secure/a?b=c")
                .header("host", "shop.example:8080")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("location"),
        Some("https://shop.example/secure/a?b=c")
    );
    // IPv6 literals keep their brackets, with or without a port.
    for (host, location) in [
        ("[::1]:8080", "https://[::1]/secure"),
        ("[::1]", "https://[::1]/secure"),
        ("[2001:db8::7]:80", "https://[2001:db8::7]/secure"),
        ("shop.example", "https://shop.example/secure"),
    ] {
        let reply = client
            .request(
                req("GET", "/secure")
                    .header("host", host)
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.header("location"), Some(location), "Host: {host}");
    }
    let reply = client.get("/nothing-here").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"], "no route");
    assert!(reply.json()["request_id"]
        .as_str()
        .is_some_and(|id| id.len() == 32));
}

#[tokio::test]
async fn grpc_style_trailers_pass_through_http2_both_ways() {
    let up = upstream().http2().run().await;
    let yaml =
        simple_yaml(up.addr, "").replace("    timeouts:", "    protocol: http2\n    timeouts:");
    let gw = gateway(&yaml);
    let mut client = Client::http2(gw.addr()).await;
    let request = req("POST", "/trailers")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body("request"))
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers lost on the way");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
    assert_eq!(collected.to_bytes(), "payload");
    // `TE: trailers` reached the upstream (gRPC servers require it).
    assert_eq!(up.last().headers["te"], "trailers");
}

#[tokio::test]
async fn oversized_http2_headers_are_refused() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(
        up.addr,
        "limits: { max_header_bytes: 4KiB }\n",
    ));
    let mut client = Client::http2(gw.addr()).await;
    let request = req("GET", "/")
        .header("x-big", "a".repeat(16 * 1024))
        .body(empty())
        .unwrap();
    // Either a 431 answer or a refused stream; never forwarded.
    if let Ok(response) = client.send(request).await {
        assert_eq!(response.status(), 431);
    }
    assert_eq!(up.requests(), 0);
}
