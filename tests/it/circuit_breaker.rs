//! The `circuit_breaker` filter against real upstreams that fail on command.

use crate::support::*;
use std::time::Duration;

fn config(upstream: std::net::SocketAddr, breaker: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up:\n    discovery: {{ static: [{upstream}] }}\n    timeouts: {{ connect: 1s, response: 300ms }}\n\
         routes:\n\
         \x20 - name: api\n    upstream: up\n    filters:\n\
         \x20     - circuit_breaker: {breaker}\n"
    )
}

async fn breaker_state(gw: &TestGateway) -> String {
    let upstreams = get(gw.admin(), "/upstreams").await.json();
    upstreams["upstreams"][0]["circuit_breakers"][0]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn failing_statuses_open_the_breaker_and_a_good_probe_closes_it() {
    let up = upstream().run().await;
    let gw = gateway(&config(
        up.addr,
        "{ consecutive_failures: 3, open_for: 300ms, max_open_for: 1s }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..3 {
        assert_eq!(client.get("/status/503").await.status, 503);
    }
    assert_eq!(breaker_state(&gw).await, "open");
    let seen = up.requests();
    let refused = client.get("/items").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"], "circuit open");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        up.requests(),
        seen,
        "an open breaker must not call the upstream"
    );
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(
        metrics.contains("circuit_breaker_state{route=\"api\",upstream=\"up\"} 1"),
        "{metrics}"
    );

    // After open_for one probe goes through; it succeeds and the breaker closes.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(client.get("/items").await.status, 200);
    assert_eq!(breaker_state(&gw).await, "closed");
    assert_eq!(client.get("/items").await.status, 200);
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(metrics.contains(
        "circuit_breaker_transitions_total{route=\"api\",upstream=\"up\",state=\"half_open\"} 1"
    ));
}

#[tokio::test]
async fn timeouts_and_connection_failures_count_and_ratios_trip() {
    let up = upstream().run().await;
    let gw = gateway(&config(
        up.addr,
        "{ failure_ratio: 0.5, min_requests: 6, window: 10s, open_for: 10s }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    // 3 good, 2 timeouts (504): 2 of 5, and under min_requests anyway.
    for _ in 0..3 {
        assert_eq!(client.get("/items").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(client.get("/delay/1000").await.status, 504);
    }
    assert_eq!(breaker_state(&gw).await, "closed");
    // A sixth request, failing: 3 of 6 reaches the ratio.
    assert_eq!(client.get("/status/502").await.status, 502);
    assert_eq!(breaker_state(&gw).await, "open");

    // Nothing listening: connect errors count the same way.
    let dead = dead_address();
    let gw = gateway(&config(dead, "{ consecutive_failures: 2, open_for: 10s }"));
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(client.get("/").await.status, 502);
    assert_eq!(client.get("/").await.status, 502);
    let refused = client.get("/").await;
    assert_eq!(refused.json()["error"], "circuit open");
}

#[tokio::test]
async fn an_open_breaker_stays_open_across_a_reload() {
    let up = upstream().run().await;
    let breaker = "{ consecutive_failures: 1, open_for: 1m }";
    let gw = gateway(&config(up.addr, breaker));
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(client.get("/status/504").await.status, 504);
    assert_eq!(breaker_state(&gw).await, "open");
    // An unrelated change keeps the breaker's state.
    let with_route = format!(
        "{}\x20 - name: ping\n    match: {{ path: /ping }}\n    respond: {{ body: pong }}\n",
        config(up.addr, breaker)
    );
    gw.reload(&with_route).unwrap();
    assert_eq!(client.get("/items").await.json()["error"], "circuit open");
    assert_eq!(breaker_state(&gw).await, "open");
    // New breaker settings start closed.
    gw.reload(&config(
        up.addr,
        "{ consecutive_failures: 2, open_for: 1m }",
    ))
    .unwrap();
    assert_eq!(client.get("/items").await.status, 200);
}

#[test]
fn breaker_config_errors() {
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        routes:\n\
        \x20 - name: a\n    respond: { body: a }\n    filters:\n\
        \x20     - circuit_breaker: { failure_ratio: 2 }\n\
        \x20     - circuit_breaker: { open_for: 1m, max_open_for: 10s }\n";
    let issues = config_errors(yaml);
    assert!(
        issues[0]
            .starts_with("routes[0].filters[0].circuit_breaker.failure_ratio: must be above 0"),
        "{issues:?}"
    );
    assert!(
        issues[1]
            .starts_with("routes[0].filters[1].circuit_breaker.max_open_for: must not be shorter"),
        "{issues:?}"
    );
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        routes:\n\
        \x20 - name: a\n    respond: { body: a }\n    filters:\n\
        \x20     - circuit_breaker: {}\n";
    let issues = config_errors(yaml);
    assert!(
        issues[0]
            .starts_with("routes[0].filters[0]: circuit_breaker needs a route with an upstream"),
        "{:?}",
        issues
    );
}
