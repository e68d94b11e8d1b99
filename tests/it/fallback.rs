//! A route's fallback: a fixed answer or another upstream when the route's upstream fails.

use crate::support::origin::*;
use crate::support::*;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

const BUSY: &str = "{ status: 503, headers: { content-type: application/json, retry-after: \"5\" }, body: '{\"busy\":true}' }";

/// Route `api` to upstream `up` at `primary` (response timeout 300 ms) with `fallback` and
/// `filters`; upstream `old` at `other`.
fn config(primary: &str, other: SocketAddr, fallback: &str, filters: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n\
         \x20 up: {{ discovery: {{ static: [{primary}] }}, timeouts: {{ connect: 1s, response: 300ms, idle: 2s }} }}\n\
         \x20 old: {{ discovery: {{ static: [{other}] }} }}\n\
         routes:\n\
         \x20 - name: api\n    upstream: up\n    fallback: {fallback}\n    filters: [{filters}]\n"
    )
}

fn fallback_count(metrics: &str, reason: &str) -> u64 {
    let line = format!("fallback_responses_total{{route=\"api\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .map_or(0, |n| n.parse().unwrap())
}

async fn assert_busy(reply: Reply) {
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(reply.text(), "{\"busy\":true}");
}

#[tokio::test]
async fn a_fixed_answer_stands_in_for_each_kind_of_failure_and_never_for_success() {
    let origin = origin().await;
    let spare = upstream().run().await;
    let fallback = format!("{{ respond: {BUSY}, statuses: [503] }}");
    let gw = gateway(&config(&origin.addr.to_string(), spare.addr, &fallback, ""));
    let mut client = Client::http1(gw.addr()).await;

    let ok = client.get("/ok").await;
    assert_eq!(
        (ok.status.as_u16(), ok.text().as_str()),
        (200, "/ok #1 enc=")
    );
    // A listed status: the fallback; another 5xx passes through as it came.
    origin.fail_with.store(503, Ordering::SeqCst);
    assert_busy(client.get("/listed").await).await;
    origin.fail_with.store(500, Ordering::SeqCst);
    assert_eq!(client.get("/unlisted").await.status, 500);
    origin.fail_with.store(0, Ordering::SeqCst);
    // The connection breaks without an answer.
    origin.down.store(true, Ordering::SeqCst);
    let mut client = Client::http1(gw.addr()).await;
    assert_busy(client.get("/reset").await).await;
    origin.down.store(false, Ordering::SeqCst);

    let metrics = get(gw.admin(), "/metrics").await.text();
    assert_eq!(fallback_count(&metrics, "status"), 1);
    assert_eq!(fallback_count(&metrics, "reset"), 1);
    assert_eq!(spare.requests(), 0);

    // Refused connections, timeouts, and an upstream with no endpoints.
    for (primary, path, reason) in [
        (dead_address().to_string(), "/x", "connect_error"),
        (origin.addr.to_string(), "/slow?delay=1000", "timeout"),
    ] {
        let gw = gateway(&config(&primary, spare.addr, &fallback, ""));
        let reply = get(gw.addr(), path).await;
        assert_busy(reply).await;
        let metrics = get(gw.admin(), "/metrics").await.text();
        assert_eq!(fallback_count(&metrics, reason), 1, "{reason}");
    }
}

#[tokio::test]
async fn a_fixed_answer_stands_in_when_no_endpoint_is_healthy() {
    let sick = upstream().run().await;
    sick.set_health(503);
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n\
         \x20 up:\n    discovery: {{ static: [{}] }}\n    health_check: {{ path: /health, interval: 100ms, timeout: 100ms, panic_threshold: 0 }}\n\
         routes:\n  - name: api\n    upstream: up\n    fallback: {{ respond: {BUSY} }}\n",
        sick.addr
    );
    let gw = gateway(&yaml);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let metrics = get(gw.admin(), "/metrics").await.text();
        if fallback_count(&metrics, "no_endpoint") > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no fallback for no endpoint"
        );
        let reply = get(gw.addr(), "/").await;
        if reply.status == 503 {
            assert_busy(reply).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sick.requests(), 0);
}

#[tokio::test]
async fn an_open_breaker_is_answered_by_the_fallback() {
    let dead = dead_address();
    let spare = upstream().run().await;
    let gw = gateway(&config(
        &dead.to_string(),
        spare.addr,
        &format!("{{ respond: {BUSY} }}"),
        "{ circuit_breaker: { consecutive_failures: 2, open_for: 1m } }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..4 {
        assert_busy(client.get("/").await).await;
    }
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert_eq!(fallback_count(&metrics, "connect_error"), 2);
    assert_eq!(fallback_count(&metrics, "circuit_open"), 2);
    // The breaker judged the route's own upstream, not the fallback's answer.
    assert!(metrics.contains("circuit_breaker_state{route=\"api\",upstream=\"up\"} 1"));
}

#[tokio::test]
async fn another_upstream_answers_requests_it_can_be_given() {
    let dead = dead_address();
    let old = upstream().run().await;
    let gw = gateway(&config(
        &dead.to_string(),
        old.addr,
        "{ upstream: old }",
        "{ circuit_breaker: { consecutive_failures: 2, open_for: 1m } }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    let reply = client.get("/page?x=1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["path"], "/page?x=1");
    assert_eq!(old.last().headers["x-forwarded-for"], "127.0.0.1");
    // A body that streamed to the failed upstream cannot be sent again: the failure stands.
    let post = client
        .request(req("POST", "/form").body(body("a=1")).unwrap())
        .await;
    assert_eq!(post.status, 502);
    assert_eq!(old.requests(), 1);
    // Two failures opened the breaker: the request never left, and the fallback takes it.
    let refused = client.get("/after").await;
    assert_eq!(refused.status, 200);
    assert_eq!(old.last().path, "/after");
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert_eq!(fallback_count(&metrics, "connect_error"), 1);
    assert_eq!(fallback_count(&metrics, "circuit_open"), 1);
    // Each upstream keeps its own figures: the route's failed, the fallback's answered.
    assert!(
        metrics.contains("upstream_errors_total{upstream=\"up\",kind=\"connect_error\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("upstream_request_duration_seconds_count{upstream=\"old\"} 2"));
}

#[tokio::test]
async fn a_stale_cached_copy_comes_before_the_fallback() {
    let origin = origin().await;
    let spare = upstream().run().await;
    // A storable-looking fallback answer, for a status that is no error to the cache.
    let fallback = "{ respond: { status: 200, headers: { cache-control: max-age=60 }, body: fallback }, statuses: [503] }";
    let gw = gateway(&config(
        &origin.addr.to_string(),
        spare.addr,
        fallback,
        "{ cache: { stale_if_error: 1h } }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    let first = client.get("/s?cc=max-age:1").await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    origin.fail_with.store(503, Ordering::SeqCst);
    let stale = client.get("/s?cc=max-age:1").await;
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    assert_eq!(stale.text(), first.text());
    // Nothing stored for this one: the fallback answers, and is never stored.
    let answer = client.get("/new?cc=max-age:60").await;
    assert_eq!(
        (answer.status.as_u16(), answer.text().as_str()),
        (200, "fallback")
    );
    origin.fail_with.store(0, Ordering::SeqCst);
    let fresh = client.get("/new?cc=max-age:60").await;
    assert_eq!(fresh.header("x-cache"), Some("MISS"));
    assert_eq!(fresh.text(), "/new #1 enc=");
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert_eq!(
        fallback_count(&metrics, "status"),
        1,
        "the stale answer was counted"
    );
}

#[test]
fn fallback_mistakes_are_reported_with_key_paths() {
    let errors = config_errors(
        "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
         upstreams:\n  v1: { discovery: { static: [127.0.0.1:1] } }\n  v2: { discovery: { static: [127.0.0.1:2] } }\n\
         routes:\n\
         \x20 - { name: a, upstream: v1, fallback: { upstream: v1, statuses: [404] } }\n\
         \x20 - { name: b, upstream: { split: [{ upstream: v1, weight: 1 }, { upstream: v2, weight: 1 }] }, fallback: { upstream: v2 } }\n\
         \x20 - { name: c, upstream: v1, fallback: { upstream: v3 } }\n\
         \x20 - { name: d, upstream: v1, fallback: { respond: { body: x }, upstream: v2 } }\n\
         \x20 - { name: e, respond: { body: x }, fallback: { upstream: v2 } }\n",
    );
    assert_eq!(
        errors,
        [
            "routes[0].fallback.statuses[0]: invalid status 404: expected 500-599 (line 6)",
            "routes[0].fallback.upstream: upstream \"v1\" is the route's own: a fallback must be another (line 6)",
            "routes[1].fallback.upstream: upstream \"v2\" is the route's own: a fallback must be another (line 7)",
            "routes[2].fallback.upstream: names unknown upstream \"v3\" (known: v1, v2) (line 8)",
            "routes[3].fallback: needs exactly one of respond or upstream (line 9)",
            "routes[4].fallback: fallback applies only to routes with an upstream (line 10)",
        ]
    );
}

#[tokio::test]
async fn the_route_table_shows_the_fallback() {
    let spare = upstream().run().await;
    let gw = gateway(&config(
        &spare.addr.to_string(),
        spare.addr,
        &format!("{{ respond: {BUSY} }}"),
        "",
    ));
    let routes = get(gw.admin(), "/routes").await.json();
    assert_eq!(
        routes["routes"][0]["action"],
        "upstream up fallback respond 503"
    );
}

#[tokio::test]
async fn a_body_a_filter_read_whole_goes_to_the_fallback_upstream_too() {
    let (auth, _) = crate::ext_authz::auth_service().await;
    let old = upstream().run().await;
    // ext_authz with max_body reads the body before the route's upstream is tried.
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n\
         \x20 up: {{ discovery: {{ static: [{}] }} }}\n\
         \x20 old: {{ discovery: {{ static: [{}] }} }}\n\
         \x20 auth: {{ discovery: {{ static: [{auth}] }} }}\n\
         routes:\n\
         \x20 - name: api\n    upstream: up\n    fallback: {{ upstream: old }}\n\
         \x20   filters: [{{ ext_authz: {{ upstream: auth, path: /check, max_body: 1KiB }} }}]\n",
        dead_address(),
        old.addr
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    let request = req("POST", "/form")
        .header("authorization", "Bearer good")
        .body(body("a=1"))
        .unwrap();
    let reply = client.request(request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = old.last();
    assert_eq!((seen.path.as_str(), seen.body_len), ("/form", 3));
}
