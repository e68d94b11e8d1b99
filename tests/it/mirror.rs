//! Mirroring: copies of a route's requests go to another upstream; the client never waits
//! for them nor fails because of them.

use crate::support::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Route `api` (all paths) to upstream `main` at `primary`, mirrored to `shadow` with
/// `mirror` settings; route `plain` (`/plain`) to `main` without a mirror.
fn config(primary: SocketAddr, shadow: SocketAddr, mirror: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n\
         \x20 main: {{ discovery: {{ static: [{primary}] }} }}\n\
         \x20 shadow: {{ discovery: {{ static: [{shadow}] }}, timeouts: {{ connect: 1s, response: 10s, idle: 10s }} }}\n\
         routes:\n\
         \x20 - {{ name: plain, match: {{ path_prefix: /plain }}, upstream: main }}\n\
         \x20 - name: api\n    upstream: main\n    rewrite: {{ host: api.internal }}\n    mirror: {mirror}\n"
    )
}

fn copies(metrics: &str, outcome: &str) -> u64 {
    let line = format!("mirror_requests_total{{route=\"api\",outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .map_or(0, |n| n.parse().unwrap())
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_mirror_gets_a_marked_copy_of_each_request_with_its_body() {
    let (main, shadow) = (upstream().run().await, upstream().run().await);
    let gw = gateway(&config(
        main.addr,
        shadow.addr,
        "{ upstream: shadow, max_body: 1KiB, host_suffix: -shadow }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    // A client's own mark never reaches the route's upstream.
    let reply = client
        .request(
            req("POST", "/orders?id=7")
                .header("x-request-id", "abc123")
                .header("x-mirrored", "1")
                .body(body("hello"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    until("the copy", || shadow.requests() == 1).await;
    let copy = shadow.last();
    let original = main.last();
    assert_eq!(copy.path, "/orders?id=7");
    assert_eq!(copy.body_len, 5);
    assert_eq!(copy.headers["x-mirrored"], "1");
    assert_eq!(copy.headers["host"], "api.internal-shadow");
    assert_eq!(copy.headers["x-request-id"], "abc123");
    assert_eq!(copy.headers["x-forwarded-for"], "127.0.0.1");
    assert!(!original.headers.contains_key("x-mirrored"));
    assert_eq!(original.headers["host"], "api.internal");

    // A chunked body within max_body is copied once it has arrived; a larger one is not.
    let (tx, chunked) = channel_body();
    let sending = tokio::spawn(async move {
        for part in ["ab", "cd"] {
            let frame = hyper::body::Frame::data(bytes::Bytes::from(part));
            tx.send(Ok(frame)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let reply = client
        .request(req("POST", "/chunked").body(chunked).unwrap())
        .await;
    sending.await.unwrap();
    assert_eq!(reply.status, 200);
    until("the chunked copy", || shadow.requests() == 2).await;
    assert_eq!(shadow.last().body_len, 4);
    let big = client
        .request(req("POST", "/big").body(body(vec![b'x'; 2048])).unwrap())
        .await;
    assert_eq!((big.status.as_u16(), main.last().body_len), (200, 2048));
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert_eq!(copies(&metrics, "body_skipped"), 1);
    assert_eq!(copies(&metrics, "mirrored"), 2);
    assert_eq!(shadow.requests(), 2);
    // Other routes are not mirrored.
    assert_eq!(client.get("/plain").await.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(shadow.requests(), 2);
}

/// The p99 of `count` sequential GETs of `path`.
async fn p99(client: &mut Client, path: &str, count: usize) -> Duration {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        assert_eq!(client.get(path).await.status, 200);
        times.push(start.elapsed());
    }
    times.sort();
    times[count * 99 / 100]
}

/// An upstream answering after 5 s on a thread of its own, so the copies it holds load
/// neither the test's client nor its other upstreams; it stops when the guard is dropped.
fn slow_upstream_elsewhere() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let slow = upstream().delay(Duration::from_secs(5)).run().await;
            tx.send(slow.addr).unwrap();
            let _ = stopped.await;
        });
    });
    (rx.recv().unwrap(), stop)
}

#[tokio::test]
async fn a_slow_or_dead_mirror_changes_nothing_for_clients() {
    let main = upstream().run().await;
    let (slow, _stop) = slow_upstream_elsewhere();
    for (shadow, name) in [(slow, "slow"), (dead_address(), "dead")] {
        let gw = gateway(&config(main.addr, shadow, "{ upstream: shadow }"));
        let mut client = Client::http1(gw.addr()).await;
        // Warm both routes, then measure them in turns so both see the same noise.
        p99(&mut client, "/plain", 20).await;
        p99(&mut client, "/api", 20).await;
        let (mut plain, mut mirrored) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            plain.push(p99(&mut client, "/plain", 100).await);
            mirrored.push(p99(&mut client, "/api", 100).await);
        }
        plain.sort();
        mirrored.sort();
        // Medians of the rounds' p99s.
        let added = mirrored[2].saturating_sub(plain[2]);
        assert!(
            added < Duration::from_millis(5),
            "{name} mirror added {added:?} to p99 ({:?} vs {:?})",
            mirrored[2],
            plain[2]
        );
    }
}

#[tokio::test]
async fn max_in_flight_caps_the_copies_across_a_reload() {
    let main = upstream().run().await;
    let slow = upstream().delay(Duration::from_secs(5)).run().await;
    let mirror = "{ upstream: shadow, max_in_flight: 3 }";
    let gw = gateway(&config(main.addr, slow.addr, mirror));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..10 {
        assert_eq!(client.get("/api").await.status, 200);
    }
    until("three copies in flight", || slow.connections() == 3).await;
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert_eq!(copies(&metrics, "skipped"), 7);
    // A reload that keeps the mirror's settings keeps its count of copies in flight.
    gw.reload(&format!(
        "{}  - {{ name: extra, match: {{ path: /extra }}, respond: {{ body: x }} }}\n",
        config(main.addr, slow.addr, mirror)
    ))
    .unwrap();
    for _ in 0..5 {
        assert_eq!(client.get("/api").await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(slow.connections(), 3);
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert_eq!(copies(&metrics, "skipped"), 12);
    assert_eq!(main.requests(), 15);
}

#[tokio::test]
async fn percent_copies_that_share_of_requests() {
    let (main, shadow) = (upstream().run().await, upstream().run().await);
    let gw = gateway(&config(
        main.addr,
        shadow.addr,
        "{ upstream: shadow, percent: 10 }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    for i in 0..1000 {
        assert_eq!(client.get(&format!("/r/{i}")).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        (60..=140).contains(&shadow.requests()),
        "{} copies",
        shadow.requests()
    );
    let routes = get(gw.admin(), "/routes").await.json();
    assert_eq!(
        routes["routes"][1]["action"],
        "upstream main mirror shadow 10%"
    );
}

#[test]
fn mirror_mistakes_are_reported_with_key_paths() {
    let errors = config_errors(
        "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
         upstreams:\n  v1: { discovery: { static: [127.0.0.1:1] } }\n  v2: { discovery: { static: [127.0.0.1:2] } }\n  h2: { discovery: { static: [127.0.0.1:3] }, protocol: http2 }\n\
         routes:\n\
         \x20 - { name: a, upstream: v1, mirror: { upstream: v1, percent: 120, max_in_flight: 0 } }\n\
         \x20 - { name: h, upstream: v1, mirror: { upstream: h2 } }\n\
         \x20 - { name: b, upstream: v1, mirror: { upstream: v3, header: \"x y\", host_suffix: \"/x\", max_body: lots } }\n\
         \x20 - { name: c, respond: { body: x }, mirror: { upstream: v2 } }\n",
    );
    assert_eq!(
        errors,
        [
            "routes[0].mirror.upstream: upstream \"v1\" is the route's own: a mirror must be another (line 7)",
            "routes[0].mirror.percent: 120 is not a percentage: expected 0 to 100 (line 7)",
            "routes[0].mirror.max_in_flight: must be at least 1 (line 7)",
            "routes[1].mirror.upstream: upstream \"h2\" speaks HTTP/2: copies are sent over HTTP/1.1 (line 8)",
            "routes[2].mirror.upstream: names unknown upstream \"v3\" (known: v1, v2, h2) (line 9)",
            "routes[2].mirror.header: invalid header name \"x y\" (line 9)",
            "routes[2].mirror.host_suffix: invalid host suffix \"/x\": letters, digits, '-' and '.' only (line 9)",
            "routes[2].mirror.max_body: invalid size \"lots\": expected a number with an optional unit, e.g. \"64KiB\" (line 9)",
            "routes[3].mirror: mirror applies only to routes with an upstream (line 10)",
        ]
    );
}

#[tokio::test]
async fn an_underscore_spelling_of_the_mark_is_removed_too() {
    let (main, shadow) = (upstream().run().await, upstream().run().await);
    // With underscores allowed, `x_mirrored` would reach an upstream that folds it into
    // `x-mirrored`.
    let yaml = config(main.addr, shadow.addr, "{ upstream: shadow }").replace(
        "routes:",
        "limits: { headers_with_underscores: allow }\nroutes:",
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    let request = req("GET", "/x")
        .header("x_mirrored", "1")
        .header("x_other", "kept")
        .body(empty())
        .unwrap();
    assert_eq!(client.request(request).await.status, 200);
    let seen = main.last();
    assert!(
        !seen.headers.contains_key("x_mirrored"),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.headers["x_other"], "kept");
}
