//! Upstream failures become quick 502/503/504 answers with a JSON body, and never harm the
//! client's keep-alive connection.

use crate::support::*;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A port with nothing listening: bind, note the port, close.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A raw TCP "upstream" that answers every connection with `reply` and closes.
async fn raw_upstream(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(reply).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

fn assert_json_error(reply: &Reply, status: u16, message: &str) {
    assert_eq!(reply.status.as_u16(), status, "body: {}", reply.text());
    let json = reply.json();
    assert_eq!(json["error"], message);
    assert_eq!(
        json["request_id"].as_str(),
        reply.header("x-request-id"),
        "the body names the request id the client got"
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn refused_connection_is_502_and_the_client_connection_survives() {
    let dead = closed_port().await;
    let up = upstream().run().await;
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  dead: {{ discovery: {{ static: [{dead}] }} }}\n  live: {{ discovery: {{ static: [{}] }} }}\n\
         routes:\n  - {{ name: dead, match: {{ path_prefix: /dead }}, upstream: dead }}\n  - {{ name: live, upstream: live }}\n",
        up.addr
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    let started = Instant::now();
    let reply = client.get("/dead").await;
    assert_json_error(&reply, 502, "upstream connection failed");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Same connection, next request: served.
    assert!(!client.is_closed());
    assert_eq!(client.get("/fine").await.status, 200);
}

#[tokio::test]
async fn slow_upstream_is_504_within_the_response_timeout() {
    let up = upstream().run().await;
    let yaml = simple_yaml(up.addr, "").replace("response: 2s", "response: 300ms");
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    let started = Instant::now();
    let reply = client.get("/delay/5000").await;
    let took = started.elapsed();
    assert_json_error(&reply, 504, "upstream timeout");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(client.get("/").await.status, 200);
}

#[tokio::test]
async fn unresolvable_endpoints_are_503() {
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        upstreams:\n  ghost: { discovery: { static: [no-such-host.invalid:80] } }\n\
        routes:\n  - { name: ghost, upstream: ghost }\n";
    let gw = gateway(yaml);
    let reply = get(gw.addr(), "/").await;
    assert_json_error(&reply, 503, "no upstream endpoint available");
}

#[tokio::test]
async fn a_response_that_is_not_http_is_502() {
    let addr = raw_upstream(b"SSH-2.0-OpenSSH_9.0\r\n\r\n").await;
    let gw = gateway(&simple_yaml(addr, ""));
    assert_json_error(&get(gw.addr(), "/").await, 502, "upstream error");
}

#[tokio::test]
async fn conflicting_content_length_from_upstream_is_502() {
    let addr =
        raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello")
            .await;
    let gw = gateway(&simple_yaml(addr, ""));
    assert_json_error(&get(gw.addr(), "/").await, 502, "upstream error");
}

#[tokio::test]
async fn upstream_dying_mid_body_aborts_the_client_response() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut client = Client::http1(gw.addr()).await;
    let response = client
        .send(req("GET", "/die-mid-body").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let result = response.into_body().collect().await;
    assert!(result.is_err(), "a truncated body must not look complete");
}

#[tokio::test]
async fn upstream_dying_mid_body_resets_the_http2_stream_only() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut client = Client::http2(gw.addr()).await;
    let response = client
        .send(req("GET", "/die-mid-body").body(empty()).unwrap())
        .await
        .unwrap();
    assert!(response.into_body().collect().await.is_err());
    // Other streams on the same connection are unaffected.
    assert_eq!(client.get("/").await.status, 200);
}

#[tokio::test]
async fn stalled_upstream_body_is_aborted_after_the_idle_timeout() {
    let up = upstream().run().await;
    let yaml = simple_yaml(up.addr, "").replace("idle: 2s", "idle: 300ms");
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    let response = client
        .send(req("GET", "/hold").body(empty()).unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    let result = response.into_body().collect().await;
    assert!(result.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_upstream_is_replaced_transparently() {
    // The upstream closes each connection after one response ("Connection: close" is not
    // sent, so the gateway pools the connection and finds it dead on the next request).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    let gw = gateway(&simple_yaml(addr, ""));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..5 {
        let reply = client.get("/").await;
        assert_eq!(reply.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
