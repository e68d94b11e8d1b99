//! HTTP/1.1 keep-alive connections that fall idle between requests give their buffers back
//! and wait with their socket alone; they must come back exactly as they were: later
//! requests, pipelined ones (also one cut in two by the pause), and an upgrade are served on
//! the same connection, and a request body the gateway answered without reading is never
//! taken for the next request. Between requests `idle_timeout` governs, whether the client
//! was slow (parked at once) or quick (parked once quiet); `header_read_timeout` counts from
//! a request's first byte, except after a request whose body was answered unread, which does
//! not park.

use crate::support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough for an idle connection to have given its buffers back.
const PAUSE: Duration = Duration::from_millis(300);

/// Reads one response with a length from `stream`; returns its status and body.
async fn response(stream: &mut TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed after {:?}",
            String::from_utf8_lossy(&received)
        );
        received.push(byte[0]);
    }
    let head = String::from_utf8(received).unwrap().to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .unwrap_or_else(|| panic!("no length in {head}"))
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut body))
        .await
        .expect("body in time")
        .expect("read");
    (
        head[9..12].parse().unwrap(),
        String::from_utf8(body).unwrap(),
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: portcullis.test\r\n\r\n")
}

/// The path the test upstream saw, from its echo.
fn echoed_path(body: &str) -> String {
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    echo["path"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_connection_idle_between_requests_serves_the_next_ones() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    for path in ["/a", "/b", "/c"] {
        stream.write_all(get(path).as_bytes()).await.unwrap();
        let (status, body) = response(&mut stream).await;
        assert_eq!((status, echoed_path(&body).as_str()), (200, path));
        tokio::time::sleep(PAUSE).await;
    }
    assert_eq!(up.requests(), 3);
}

/// `header_read_timeout` well under `idle_timeout`, and a pause between them.
const TIMEOUTS: &str = "limits: { header_read_timeout: 500ms, idle_timeout: 30s }\n";
const LONGER_THAN_HEADER_TIMEOUT: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn between_requests_the_idle_timeout_governs_not_the_header_timeout() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, TIMEOUTS));
    // One request, then a pause: the connection parks as soon as the response is out.
    let mut slow = TcpStream::connect(gw.addr()).await.unwrap();
    // Requests back to back, then a pause: the connection parks once quiet for a while.
    let mut quick = TcpStream::connect(gw.addr()).await.unwrap();
    slow.write_all(get("/slow").as_bytes()).await.unwrap();
    assert_eq!(response(&mut slow).await.0, 200);
    for _ in 0..3 {
        quick.write_all(get("/quick").as_bytes()).await.unwrap();
        assert_eq!(response(&mut quick).await.0, 200);
    }
    tokio::time::sleep(LONGER_THAN_HEADER_TIMEOUT).await;
    for stream in [&mut slow, &mut quick] {
        stream.write_all(get("/again").as_bytes()).await.unwrap();
        let (status, body) = response(stream).await;
        assert_eq!((status, echoed_path(&body).as_str()), (200, "/again"));
    }
}

#[tokio::test]
async fn a_body_read_to_its_end_lets_the_connection_park_one_answered_unread_does_not() {
    let up = upstream().run().await;
    let yaml = format!(
        "listeners:\n  - {{ name: http, address: 127.0.0.1:0 }}\n{TIMEOUTS}\
         upstreams:\n  up: {{ discovery: {{ static: [{}] }} }}\n\
         routes:\n  - {{ name: pong, match: {{ path: /pong }}, respond: {{ body: pong }} }}\n\
         \x20 - {{ name: all, upstream: up }}\n",
        up.addr
    );
    let gw = gateway(&yaml);
    let post = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: portcullis.test\r\nContent-Length: 4\r\n\r\nbody")
    };
    let chunked = "POST /b HTTP/1.1\r\nHost: portcullis.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                   4\r\nbody\r\n0\r\n\r\n";
    // Bodies the upstream read to their end, with a length and chunked: the connections park
    // and outlive the header timeout.
    let mut sized = TcpStream::connect(gw.addr()).await.unwrap();
    sized.write_all(post("/a").as_bytes()).await.unwrap();
    assert_eq!(response(&mut sized).await.0, 200);
    let mut streamed = TcpStream::connect(gw.addr()).await.unwrap();
    streamed.write_all(chunked.as_bytes()).await.unwrap();
    assert_eq!(response(&mut streamed).await.0, 200);
    // A body the gateway answered without reading: hyper drains it, unseen, so the
    // connection keeps hyper's state and its header timer, which runs from the end of the
    // response.
    let mut unread = TcpStream::connect(gw.addr()).await.unwrap();
    unread.write_all(post("/pong").as_bytes()).await.unwrap();
    assert_eq!(response(&mut unread).await, (200, "pong".to_string()));
    tokio::time::sleep(LONGER_THAN_HEADER_TIMEOUT).await;
    for stream in [&mut sized, &mut streamed] {
        stream.write_all(get("/c").as_bytes()).await.unwrap();
        let (status, body) = response(stream).await;
        assert_eq!((status, echoed_path(&body).as_str()), (200, "/c"));
    }
    let reply = read_all(&mut unread, Duration::from_millis(500)).await;
    assert!(
        reply.closed,
        "idle past the header timeout after a body left unread: {}",
        reply.text
    );
}

#[tokio::test]
async fn a_head_begun_after_an_idle_pause_must_still_arrive_in_time() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, TIMEOUTS));
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream.write_all(get("/a").as_bytes()).await.unwrap();
    assert_eq!(response(&mut stream).await.0, 200);
    tokio::time::sleep(PAUSE).await;
    stream
        .write_all(b"GET /b HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let reply = read_all(&mut stream, Duration::from_secs(3)).await;
    assert!(
        reply.closed,
        "a stalled head was waited for: {}",
        reply.text
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "closed only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn pipelined_requests_are_served_in_order_across_idle_pauses() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream
        .write_all(format!("{}{}", get("/a"), get("/b")).as_bytes())
        .await
        .unwrap();
    for path in ["/a", "/b"] {
        let (status, body) = response(&mut stream).await;
        assert_eq!((status, echoed_path(&body).as_str()), (200, path));
    }
    tokio::time::sleep(PAUSE).await;

    // The second request arrives cut in two, the pause between its halves: what the gateway
    // had read of it when the connection fell idle is kept for when the rest comes.
    let (c, d) = (get("/c"), get("/d"));
    let (first, rest) = d.split_at(20);
    stream
        .write_all(format!("{c}{first}").as_bytes())
        .await
        .unwrap();
    let (status, body) = response(&mut stream).await;
    assert_eq!((status, echoed_path(&body).as_str()), (200, "/c"));
    tokio::time::sleep(PAUSE).await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    let (status, body) = response(&mut stream).await;
    assert_eq!((status, echoed_path(&body).as_str()), (200, "/d"));
}

#[tokio::test]
async fn a_body_answered_unread_is_never_read_as_the_next_request() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, "limits: { max_body_bytes: 8 }\n"));
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    // The body is itself a request: should the connection be reused past it, the upstream
    // would see it.
    let smuggled = get("/smuggled");
    stream
        .write_all(
            format!(
                "POST /a HTTP/1.1\r\nHost: portcullis.test\r\nContent-Length: {}\r\n\r\n",
                smuggled.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (status, _) = response(&mut stream).await;
    assert_eq!(status, 413);
    tokio::time::sleep(PAUSE).await;
    let _ = stream.write_all(smuggled.as_bytes()).await;
    let after = read_all(&mut stream, Duration::from_millis(500)).await;
    assert!(!after.text.contains("HTTP/1.1"), "{}", after.text);
    assert!(
        up.seen().iter().all(|seen| seen.path != "/smuggled"),
        "the body reached the upstream as a request"
    );
}

#[tokio::test]
async fn an_upgrade_works_on_a_connection_that_was_idle() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream.write_all(get("/a").as_bytes()).await.unwrap();
    assert_eq!(response(&mut stream).await.0, 200);
    tokio::time::sleep(PAUSE).await;
    upgrade(&mut stream).await;
}
