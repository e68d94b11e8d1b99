//! Hot reload: no request dropped, state kept where nothing changed, bad files rejected.

use crate::support::*;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn config(upstream: std::net::SocketAddr, only: &str, response_timeout: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up:\n    discovery: {{ static: [{upstream}] }}\n    timeouts: {{ response: {response_timeout} }}\n\
         routes:\n\
         \x20 - {{ name: {only}-only, match: {{ path: /{only}-only }}, respond: {{ body: {only} }} }}\n\
         \x20 - {{ name: all, upstream: up }}\n"
    )
}

const INVALID: &str = "listeners: [{ name: http, address: 127.0.0.1:0 }]\nroutes:\n  - { name: broken, upstream: nowhere }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_across_reloads_under_load() {
    let up = upstream().run().await;
    let config_a = config(up.addr, "a", "5s");
    // B also changes the upstream's settings, so its pools and discovery start fresh.
    let config_b = config(up.addr, "b", "6s");
    let gw = gateway(&config_a);
    let addr = gw.addr();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for i in 0..8 {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        load.push(tokio::spawn(async move {
            let mut client = if i % 2 == 0 {
                Client::http1(addr).await
            } else {
                Client::http2(addr).await
            };
            while !stop.load(Ordering::Relaxed) {
                match client
                    .send(req("GET", "/load").body(empty()).unwrap())
                    .await
                {
                    Ok(response) if response.status() == 200 => {
                        match response.into_body().collect().await {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let mut reloads = 0;
    for round in 0..24 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        match round % 3 {
            0 | 2 => {
                let (yaml, live, gone) = if round % 3 == 0 {
                    (&config_b, "/b-only", "/a-only")
                } else {
                    (&config_a, "/a-only", "/b-only")
                };
                gw.reload(yaml).expect("valid config rejected");
                reloads += 1;
                let mut probe = Client::http1(addr).await;
                assert_eq!(
                    probe.get(live).await.text(),
                    &live[1..2],
                    "{live} not live after reload"
                );
                // The removed route's path now falls through to the catch-all upstream.
                assert_ne!(
                    probe.get(gone).await.text(),
                    &gone[1..2],
                    "{gone} still routed"
                );
            }
            _ => {
                assert!(gw.reload(INVALID).is_err(), "invalid config accepted");
                reloads += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("zero-drop: {ok} requests over {reloads} reloads, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 500, "too little load to mean anything: {ok}");
}

#[tokio::test]
async fn a_bad_file_changes_nothing() {
    let up = upstream().run().await;
    let gw = gateway(&config(up.addr, "a", "5s"));
    let error = gw.reload(INVALID).unwrap_err();
    assert_eq!(
        error.issues(),
        ["routes[0].upstream: route \"broken\" names unknown upstream \"nowhere\" (known: none defined) (line 3)"]
    );
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(client.get("/a-only").await.text(), "a");
    assert_eq!(client.get("/x").await.status, 200);
}

#[tokio::test]
async fn pooled_upstream_connections_survive_an_unrelated_reload() {
    let up = upstream().run().await;
    let gw = gateway(&config(up.addr, "a", "5s"));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..5 {
        assert_eq!(client.get("/x").await.status, 200);
    }
    // A route changes; the upstream does not.
    let applied = gw.reload(&config(up.addr, "z", "5s")).unwrap();
    assert_eq!(applied.generation, 2);
    assert!(
        applied.needs_restart.is_empty(),
        "{:?}",
        applied.needs_restart
    );
    for _ in 0..5 {
        assert_eq!(client.get("/x").await.status, 200);
    }
    assert_eq!(
        up.connections(),
        1,
        "the reload dropped the upstream's pooled connection"
    );
    // Changing the upstream's settings starts it fresh.
    gw.reload(&config(up.addr, "z", "7s")).unwrap();
    assert_eq!(client.get("/x").await.status, 200);
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn a_streaming_response_started_before_reloads_completes_intact() {
    let up = upstream().run().await;
    let gw = gateway(&config(up.addr, "a", "5s"));
    let mut client = Client::http1(gw.addr()).await;
    let response = client
        .send(req("GET", "/stream/20").body(empty()).unwrap())
        .await
        .unwrap();
    for timeout in ["6s", "7s", "8s"] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        gw.reload(&config(up.addr, "b", timeout)).unwrap();
    }
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let expected: String = (0..20).map(|i| format!("chunk{i};")).collect();
    assert_eq!(body, expected.as_bytes());
}

#[tokio::test]
async fn listener_changes_are_reported_as_needing_a_restart() {
    let up = upstream().run().await;
    let gw = gateway(&config(up.addr, "a", "5s"));
    let moved = config(up.addr, "b", "5s").replace("127.0.0.1:0", "127.0.0.1:1") + "workers: 3\n";
    let applied = gw.reload(&moved).unwrap();
    assert_eq!(
        applied.needs_restart,
        [
            "listener \"http\" address ".to_string() + &gw.addr().to_string() + " -> 127.0.0.1:1",
            "workers None -> Some(3)".to_string()
        ]
    );
    // The rest of the file was applied.
    assert_eq!(get(gw.addr(), "/b-only").await.status, 200);
}

#[tokio::test]
async fn a_watched_file_reloads_when_it_changes() {
    let up = upstream().run().await;
    let path = temp_path("watched.yaml");
    let watched = |only: &str| {
        config(up.addr, only, "5s")
            + "reload: { watch: true, interval: 100ms }\nadmin: { address: 127.0.0.1:0 }\n"
    };
    std::fs::write(&path, watched("a")).unwrap();
    let gw = gateway_file(&path);
    // Written the way Kubernetes updates a ConfigMap volume: a new file renamed into place.
    let staged = path.with_extension("new");
    std::fs::write(&staged, watched("b")).unwrap();
    std::fs::rename(&staged, &path).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while get(gw.addr(), "/b-only").await.text() != "b" {
        assert!(
            std::time::Instant::now() < deadline,
            "the file change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken write is rejected and the served config stays.
    std::fs::write(&path, "routes: [ {").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(get(gw.addr(), "/b-only").await.text(), "b");
    std::fs::remove_file(&path).ok();
}

/// The value of a gauge in `/metrics`.
async fn gauge(gw: &TestGateway, name: &str) -> f64 {
    let text = get(gw.admin(), "/metrics").await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn a_hundred_reloads_leave_tasks_and_connections_flat() {
    let (a, b) = (upstream().run().await, upstream().run().await);
    let yaml = |i: usize| {
        // Every reload restarts the upstream (its timeouts change); every third one also
        // changes its discovery, which starts a new discovery task.
        let weight = 1 + (i / 3) % 2;
        format!(
            "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
             upstreams:\n  up:\n    discovery: {{ static: [{}, {{ address: \"{}\", weight: {weight} }}] }}\n    \
             timeouts: {{ response: {}ms }}\n    health_check: {{ path: /health, interval: 50ms, timeout: 50ms }}\n\
             routes:\n  - name: all\n    upstream: up\n",
            a.addr,
            b.addr,
            2000 + i % 2
        )
    };
    let gw = gateway(&yaml(0));
    let mut client = Client::http1(gw.addr()).await;
    for i in 1..=5 {
        gw.reload(&yaml(i)).unwrap();
        assert_eq!(client.get("/").await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tasks_before = gauge(&gw, "background_tasks").await;
    // The upstream's discovery follower and health checker at least: the gauge counts.
    assert!(tasks_before >= 2.0, "background_tasks {tasks_before}");
    for i in 6..=105 {
        gw.reload(&yaml(i)).unwrap();
        assert_eq!(client.get("/").await.status, 200);
    }
    // Replaced upstreams stop their tasks and close their connections by themselves.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tasks_after = gauge(&gw, "background_tasks").await;
    assert!(
        tasks_after <= tasks_before + 2.0,
        "background tasks grew from {tasks_before} to {tasks_after}"
    );
    let open = a.open_connections() + b.open_connections();
    assert!(
        open <= 6,
        "{open} upstream connections still open after 100 reloads"
    );
    eprintln!(
        "tasks {tasks_before} → {tasks_after}; open upstream connections {open}; accepted {}",
        a.connections() + b.connections()
    );
}
