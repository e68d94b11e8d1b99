//! Global rate limits on a real Redis, shared by several gateway replicas, and what each
//! `on_store_error` mode does while Redis is away.

use crate::support::*;
use std::time::{Duration, Instant};

fn config(upstream: std::net::SocketAddr, redis: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         stores:\n  redis: {{ url: \"{redis}\", timeout: 50ms }}\n\
         upstreams:\n  up: {{ discovery: {{ static: [{upstream}] }} }}\n\
         routes:\n\
         \x20 - name: global\n    match: {{ path: /global }}\n    upstream: up\n    filters:\n\
         \x20     - rate_limit: {{ rate: 100/s, burst: 20, key: route, store: redis }}\n\
         \x20 - name: open\n    match: {{ path: /open }}\n    upstream: up\n    filters:\n\
         \x20     - rate_limit: {{ rate: 1/m, burst: 1, key: route, store: redis, on_store_error: fail_open }}\n\
         \x20 - name: closed\n    match: {{ path: /closed }}\n    upstream: up\n    filters:\n\
         \x20     - rate_limit: {{ rate: 1/m, burst: 1, key: route, store: redis, on_store_error: fail_closed }}\n\
         \x20 - name: local\n    match: {{ path: /local }}\n    upstream: up\n    filters:\n\
         \x20     - rate_limit: {{ rate: 3/m, burst: 3, key: route, store: redis, on_store_error: local, replicas_hint: 3 }}\n"
    )
}

async fn statuses(client: &mut Client, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(client.get(path).await.status.as_u16());
    }
    out
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Waits until the gateway's store connection is up (it connects in the background).
async fn until_admitted_once(gw: &TestGateway, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = Client::http1(gw.addr()).await;
        if client.get(path).await.status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never admitted a request");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_budget() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = upstream().run().await;
    let replicas: Vec<TestGateway> = (0..3)
        .map(|_| gateway(&config(up.addr, &redis.url())))
        .collect();
    // Connected once the `open` route is limited by Redis (its single request passes).
    for gw in &replicas {
        let mut client = Client::http1(gw.addr()).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.get("/closed").await.status == 503 {
            assert!(
                Instant::now() < deadline,
                "replica never connected to redis"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // All three hammer /global for two seconds: 100/s with a burst of 20 means
    // 20 + 100 x elapsed admissions in total, whichever replica they arrive at.
    let started = Instant::now();
    let window = Duration::from_secs(2);
    let mut tasks = Vec::new();
    for gw in &replicas {
        let addr = gw.addr();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::http1(addr).await;
            let mut admitted = 0usize;
            let mut refused = 0usize;
            while started.elapsed() < window {
                match client.get("/global").await.status.as_u16() {
                    200 => admitted += 1,
                    429 => refused += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            (admitted, refused)
        }));
    }
    let mut admitted = 0;
    let mut refused = 0;
    for task in tasks {
        let (a, r) = task.await.unwrap();
        admitted += a;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let expected = 20.0 + 100.0 * elapsed;
    let error = (admitted as f64 - expected).abs() / expected;
    assert!(
        error <= 0.05,
        "admitted {admitted} of {} (expected {expected:.0} over {elapsed:.2} s)",
        admitted + refused
    );
    assert!(
        refused > admitted,
        "the replicas were not pushed past the limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_mode_holds_while_redis_is_down_and_limits_resume_after() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = upstream().run().await;
    let gw = gateway(&config(up.addr, &redis.url()));
    until_admitted_once(&gw, "/closed").await;
    let mut client = Client::http1(gw.addr()).await;
    // With Redis up, each route's budget (1 or 3 per minute) holds.
    assert_eq!(statuses(&mut client, "/closed", 3).await, [429, 429, 429]);
    assert_eq!(count(&statuses(&mut client, "/open", 4).await, 429), 3);

    // Until the first connection is made, /closed may have been refused for the store too.
    let closed_errors = |metrics: &str| {
        let series = "rate_limit_decisions_total{filter=\"closed\",result=\"store_error\"} ";
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = closed_errors(&get(gw.admin(), "/metrics").await.text());
    redis.stop();
    // fail_open: everything passes; the gateway keeps serving.
    let open = statuses(&mut client, "/open", 20).await;
    assert_eq!(count(&open, 200), 20, "{open:?}");
    // fail_closed: 503 with Retry-After, never a 500.
    let closed = client.get("/closed").await;
    assert_eq!(closed.status, 503);
    assert_eq!(closed.json()["error"], "rate limit store unavailable");
    assert_eq!(closed.header("retry-after"), Some("1"));
    // local: this replica's share, 3/m over replicas_hint 3 = 1 at once.
    let local = statuses(&mut client, "/local", 5).await;
    assert_eq!(local, [200, 429, 429, 429, 429]);
    // Counted, by filter and mode.
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(
        metrics.contains("rate_limit_store_failures_total{filter=\"open\",mode=\"fail_open\"} 20"),
        "{metrics}"
    );
    // Decided without the store: fail_open and fail_closed count as store_error; local
    // counts its own decisions.
    assert_eq!(closed_errors(&metrics), before + 1);
    for (filter, result, count) in [("open", "store_error", 20), ("local", "limited", 4)] {
        let line = format!(
            "rate_limit_decisions_total{{filter=\"{filter}\",result=\"{result}\"}} {count}"
        );
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }

    // Redis is back: the gateway reconnects in the background and limits globally again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = client.get("/closed").await.status.as_u16();
        if status != 503 {
            // A fresh Redis holds no buckets: the first request passes, the next is limited.
            assert_eq!(status, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "limits never resumed after redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.get("/closed").await.status, 429);
}

#[test]
fn store_config_errors() {
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        routes:\n\
        \x20 - name: a\n    respond: { body: a }\n    filters:\n\
        \x20     - rate_limit: { rate: 10/s, store: redis }\n\
        \x20     - rate_limit: { rate: 10/s, on_store_error: fail_open }\n";
    let issues = config_errors(yaml);
    assert!(
        issues[0]
            .starts_with("routes[0].filters[0].rate_limit.store: store: redis needs stores.redis"),
        "{issues:?}"
    );
    assert!(
        issues[1].starts_with(
            "routes[0].filters[1].rate_limit.on_store_error: only applies with store: redis"
        ),
        "{issues:?}"
    );
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        stores: { redis: { url: \"http://nope\", timeout: 20ms } }\n\
        routes: [ { name: a, respond: { body: a } } ]\n";
    let issues = config_errors(yaml);
    assert!(
        issues[0].starts_with("stores.redis.url: \"http://nope\" is not a Redis URL"),
        "{:?}",
        issues
    );
}

/// How long each of `n` requests to `path` took, and their statuses.
async fn timed(client: &mut Client, path: &str, n: usize) -> (Vec<Duration>, Vec<u16>) {
    let mut took = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        out.push(client.get(path).await.status.as_u16());
        took.push(started.elapsed());
    }
    (took, out)
}

/// fail_open admits at once and fail_closed refuses at once: 40 checks that each waited for
/// the 50 ms timeout would take 2 s.
async fn failure_modes_apply_at_once(client: &mut Client) {
    let (open_took, open) = timed(client, "/open", 20).await;
    let (closed_took, closed) = timed(client, "/closed", 20).await;
    assert_eq!(count(&open, 200), 20, "{open:?}");
    assert_eq!(count(&closed, 503), 20, "{closed:?}");
    let total: Duration = open_took.iter().chain(&closed_took).sum();
    assert!(
        total < Duration::from_millis(600),
        "40 checks against a silent Redis took {total:?}: requests are waiting on it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_accepts_and_never_answers_costs_one_timeout_then_nothing() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = upstream().run().await;
    // timeout: 50ms (see config).
    let timeout = Duration::from_millis(50);
    let gw = gateway(&config(up.addr, &redis.url()));
    until_admitted_once(&gw, "/closed").await;
    let mut client = Client::http1(gw.addr()).await;
    // Baseline with Redis answering.
    let (_, warm) = timed(&mut client, "/open", 3).await;
    assert!(warm.iter().all(|s| *s == 200 || *s == 429), "{warm:?}");

    redis.freeze();
    // The first check waits for the timeout, no longer; then fail_open admits.
    let (took, statuses) = timed(&mut client, "/open", 1).await;
    assert_eq!(statuses, [200]);
    assert!(
        took[0] >= timeout,
        "the first check did not wait for Redis: {:?}",
        took[0]
    );
    assert!(
        took[0] < timeout + Duration::from_millis(400),
        "the first check waited {:?}",
        took[0]
    );
    // From then on no request waits on Redis.
    failure_modes_apply_at_once(&mut client).await;

    // Answering again: limits resume without a restart.
    redis.thaw();
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.get("/closed").await.status == 503 {
        assert!(
            Instant::now() < deadline,
            "limits never resumed after redis answered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.get("/closed").await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_listener_in_place_of_redis_never_delays_requests() {
    // Accepts connections and reads whatever comes, never answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(tokio::spawn(async move {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                while tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
                    .await
                    .is_ok_and(|n| n > 0)
                {}
            }));
        }
    });
    let up = upstream().run().await;
    let gw = gateway(&config(up.addr, &format!("redis://{addr}")));
    let mut client = Client::http1(gw.addr()).await;
    failure_modes_apply_at_once(&mut client).await;
    silent.abort();
}
