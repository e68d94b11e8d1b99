//! Active health checks: endpoints failing their checks leave the balancer and come back when
//! they pass; too few healthy endpoints means balancing over all of them; health survives
//! reloads by address.

use crate::support::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn config(endpoints: &[&Upstream], health: &str, timeouts: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|u| u.addr.to_string()).collect();
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  api:\n    discovery: {{ static: [{}] }}\n    timeouts: {timeouts}\n    health_check: {health}\n\
         routes:\n  - name: all\n    upstream: api\n",
        list.join(", ")
    )
}

const FAST: &str = "{ path: /health, interval: 100ms, timeout: 100ms, jitter: 0s, healthy_after: 2, unhealthy_after: 2 }";
const TIMEOUTS: &str = "{ connect: 1s, response: 2s }";

async fn endpoint_states(gw: &TestGateway) -> (Vec<String>, bool) {
    let answer = get(gw.admin(), "/upstreams").await.json();
    let api = &answer["upstreams"][0];
    let states = api["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["health"].as_str().unwrap_or("").to_string())
        .collect();
    (states, api["panic"] == Value::Bool(true))
}

async fn until_states(gw: &TestGateway, expected: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (states, _) = endpoint_states(gw).await;
        if states == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health stuck at {states:?}, wanted {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn served(client: &mut Client, upstreams: &[&Upstream], count: usize) -> Vec<usize> {
    let before: Vec<usize> = upstreams.iter().map(|u| u.requests()).collect();
    for _ in 0..count {
        let reply = client.get("/").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    upstreams
        .iter()
        .zip(before)
        .map(|(u, b)| u.requests() - b)
        .collect()
}

#[tokio::test]
async fn failing_endpoints_leave_and_recovered_ones_return() {
    let (a, b, c) = (
        upstream().run().await,
        upstream().run().await,
        upstream().run().await,
    );
    let gw = gateway(&config(&[&a, &b, &c], FAST, TIMEOUTS));
    until_states(&gw, &["healthy"; 3]).await;
    let mut client = Client::http1(gw.addr()).await;
    assert!(served(&mut client, &[&a, &b, &c], 30)
        .await
        .iter()
        .all(|n| *n == 10));

    b.set_health(503);
    until_states(&gw, &["healthy", "unhealthy", "healthy"]).await;
    assert_eq!(served(&mut client, &[&a, &b, &c], 30).await, [15, 0, 15]);
    let metrics = get(gw.admin(), "/metrics").await.text();
    let series = format!(
        "upstream_endpoint_healthy{{upstream=\"api\",endpoint=\"{}\"}} 0",
        b.addr
    );
    assert!(metrics.contains(&series), "{metrics}");

    b.set_health(200);
    until_states(&gw, &["healthy"; 3]).await;
    assert!(served(&mut client, &[&a, &b, &c], 30)
        .await
        .iter()
        .all(|n| *n == 10));
    assert!(
        b.health_checks() >= 4,
        "checked {} times",
        b.health_checks()
    );
}

#[tokio::test]
async fn below_the_panic_threshold_traffic_goes_to_every_endpoint() {
    let ups = [
        upstream().run().await,
        upstream().run().await,
        upstream().run().await,
        upstream().run().await,
    ];
    let refs: Vec<&Upstream> = ups.iter().collect();
    let gw = gateway(&config(&refs, FAST, TIMEOUTS));
    until_states(&gw, &["healthy"; 4]).await;
    let mut client = Client::http1(gw.addr()).await;

    // Two of four healthy is 50%: not below the threshold, so the two take everything.
    ups[0].set_health(500);
    ups[1].set_health(500);
    until_states(&gw, &["unhealthy", "unhealthy", "healthy", "healthy"]).await;
    assert_eq!(served(&mut client, &refs, 40).await, [0, 0, 20, 20]);

    // One of four is 25%: all four share the load rather than crush the last one.
    ups[2].set_health(500);
    until_states(&gw, &["unhealthy", "unhealthy", "unhealthy", "healthy"]).await;
    // The balancer is rebuilt just after the states change: wait for it too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !endpoint_states(&gw).await.1 {
        assert!(Instant::now() < deadline, "not reported as panicking");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served(&mut client, &refs, 40).await, [10, 10, 10, 10]);
}

#[tokio::test]
async fn without_a_panic_threshold_no_healthy_endpoint_means_503() {
    let a = upstream().run().await;
    a.set_health(503);
    let health = "{ path: /health, interval: 100ms, timeout: 100ms, panic_threshold: 0 }";
    let gw = gateway(&config(&[&a], health, TIMEOUTS));
    until_states(&gw, &["unhealthy"]).await;
    let reply = get(gw.addr(), "/").await;
    assert_eq!(reply.status, 503);
    assert_eq!(a.requests(), 0);
}

#[tokio::test]
async fn a_new_endpoint_takes_traffic_once_its_first_check_passes() {
    let (a, b) = (upstream().run().await, upstream().run().await);
    let path = temp_path("endpoints.yaml");
    std::fs::write(&path, format!("- {}\n", a.addr)).unwrap();
    // A long interval: only the check on arrival can bring the new endpoint in.
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  api:\n    discovery: {{ file: {{ path: {}, interval: 50ms }} }}\n    health_check: {{ path: /health, interval: 1h, timeout: 1s }}\n\
         routes:\n  - name: all\n    upstream: api\n",
        path.display()
    );
    let gw = gateway(&yaml);
    until_states(&gw, &["healthy"]).await;
    std::fs::write(&path, format!("- {}\n- {}\n", a.addr, b.addr)).unwrap();
    until_states(&gw, &["healthy", "healthy"]).await;
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(served(&mut client, &[&a, &b], 10).await, [5, 5]);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn health_survives_a_reload_that_restarts_the_upstream() {
    let (a, b) = (upstream().run().await, upstream().run().await);
    b.set_health(503);
    // Checked once at start, then not for an hour: after the reload only carried-over
    // health can keep `b` out (unchecked endpoints would all take traffic).
    let slow = "{ path: /health, interval: 1h, timeout: 1s }";
    let gw = gateway(&config(&[&a, &b], slow, TIMEOUTS));
    until_states(&gw, &["healthy", "unhealthy"]).await;
    let checks = b.health_checks();

    gw.reload(&config(&[&a, &b], slow, "{ connect: 2s, response: 3s }"))
        .unwrap();
    let (states, panicking) = endpoint_states(&gw).await;
    assert_eq!(states, ["healthy", "unhealthy"]);
    assert!(!panicking);
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(served(&mut client, &[&a, &b], 10).await, [10, 0]);
    assert_eq!(
        b.health_checks(),
        checks,
        "the reload re-checked known endpoints"
    );
}

#[tokio::test]
async fn checks_speak_http2_to_http2_upstreams() {
    let (a, b) = (
        upstream().http2().run().await,
        upstream().http2().run().await,
    );
    let yaml = config(&[&a, &b], FAST, TIMEOUTS)
        .replace("    timeouts:", "    protocol: http2\n    timeouts:");
    let gw = gateway(&yaml);
    until_states(&gw, &["healthy", "healthy"]).await;
    a.set_health(503);
    until_states(&gw, &["unhealthy", "healthy"]).await;
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(served(&mut client, &[&a, &b], 10).await, [0, 10]);
}

#[test]
fn health_check_config_errors_name_the_key() {
    let cases = [
        (
            "{ path: health }",
            "upstreams.api.health_check.path: must be a path",
        ),
        (
            "{ path: /h, statuses: [700] }",
            "upstreams.api.health_check.statuses[0]: invalid status",
        ),
        (
            "{ path: /h, interval: 1s, timeout: 5s }",
            "upstreams.api.health_check.timeout: must not be longer",
        ),
        (
            "{ path: /h, healthy_after: 0 }",
            "upstreams.api.health_check.healthy_after: must be at least 1",
        ),
        (
            "{ path: /h, panic_threshold: 150 }",
            "upstreams.api.health_check.panic_threshold: must be at most 100",
        ),
        (
            "{ path: /h, every: 1s }",
            "upstreams.api.health_check.every: unknown field",
        ),
    ];
    for (health, expected) in cases {
        let yaml = format!(
            "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
             upstreams:\n  api:\n    discovery: {{ static: [127.0.0.1:1] }}\n    health_check: {health}\n\
             routes:\n  - name: all\n    upstream: api\n"
        );
        let issues = config_errors(&yaml);
        assert!(
            issues.iter().any(|i| i.starts_with(expected)),
            "{health}: {:?}",
            issues
        );
    }
}
