//! Retries and outlier ejection across real endpoints that fail on command.

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An endpoint that answers every request with `status` after `delay`, counting requests.
struct Fixed {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fixed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fixed(status: u16, delay: Duration) -> Fixed {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"fixed")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Fixed {
        addr,
        requests,
        task,
    }
}

fn config(endpoints: &[SocketAddr], settings: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| a.to_string()).collect();
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up:\n    discovery: {{ static: [{}] }}\n    timeouts: {{ connect: 1s, response: 2s }}\n{settings}\
         routes:\n  - name: all\n    upstream: up\n",
        list.join(", ")
    )
}

async fn send(client: &mut Client, method: &str, body_bytes: usize) -> Reply {
    client
        .request(
            req(method, "/items")
                .header("content-length", body_bytes.to_string())
                .body(body(vec![b'x'; body_bytes]))
                .unwrap(),
        )
        .await
}

#[tokio::test]
async fn connect_errors_and_bad_statuses_are_retried_on_another_endpoint() {
    let good = upstream().run().await;
    let gw = gateway(&config(
        &[dead_address(), good.addr],
        "    retries: { attempts: 2, on: [connect_error, 503], backoff: { base: 1ms, max: 5ms } }\n",
    ));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..10 {
        assert_eq!(send(&mut client, "GET", 0).await.status, 200);
    }
    assert_eq!(good.requests(), 10);
    let retried =
        |reason: &str| format!("upstream_retries_total{{upstream=\"up\",reason=\"{reason}\"}} 10");
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(metrics.contains(&retried("connect_error")), "{metrics}");

    // A 503 from one endpoint: the request is tried again on the other.
    let failing = fixed(503, Duration::ZERO).await;
    let gw = gateway(&config(
        &[failing.addr, good.addr],
        "    retries: { attempts: 1, on: [503], backoff: { base: 1ms, max: 5ms } }\n",
    ));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..10 {
        assert_eq!(send(&mut client, "GET", 0).await.status, 200);
    }
    // Round robin counts the retry's pick too, so each request meets the failing endpoint
    // first, once: tried there, then answered by the other.
    assert_eq!(failing.requests.load(Ordering::SeqCst), 10);
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(metrics.contains(&retried("503")), "{metrics}");
}

#[tokio::test]
async fn bodies_are_replayed_only_when_small_and_methods_only_when_idempotent() {
    let good = upstream().run().await;
    let gw = gateway(&config(
        &[dead_address(), good.addr],
        "    retries: { attempts: 1, on: [connect_error], retry_buffer_bytes: 1KiB, backoff: { base: 1ms, max: 5ms } }\n",
    ));
    let mut client = Client::http1(gw.addr()).await;
    // PUT is idempotent: a small body is kept and sent again, whole.
    for _ in 0..4 {
        let reply = send(&mut client, "PUT", 500).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["body_len"], 500);
    }
    // Too large to keep: one try, so half fail (round robin).
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(send(&mut client, "PUT", 4096).await.status.as_u16());
        }
        out
    };
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "{statuses:?}"
    );
    // POST is not idempotent: never retried by default.
    let mut failed = 0;
    for _ in 0..4 {
        if send(&mut client, "POST", 10).await.status == 502 {
            failed += 1;
        }
    }
    assert_eq!(failed, 2);
}

#[tokio::test]
async fn a_per_try_timeout_moves_on_to_a_faster_endpoint() {
    let slow = fixed(200, Duration::from_secs(5)).await;
    let good = upstream().run().await;
    let gw = gateway(&config(
        &[slow.addr, good.addr],
        "    retries: { attempts: 1, on: [timeout], per_try_timeout: 100ms, backoff: { base: 1ms, max: 5ms } }\n",
    ));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..4 {
        let reply = send(&mut client, "GET", 0).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["path"], "/items");
    }
    // Each request was tried on the slow endpoint once, given up after 100 ms.
    assert_eq!(slow.requests.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn failing_endpoints_are_ejected_and_come_back() {
    let failing = fixed(500, Duration::ZERO).await;
    let good = upstream().run().await;
    let gw = gateway(&config(
        &[failing.addr, good.addr],
        "    outlier: { consecutive_failures: 2, eject_for: 400ms, max_ejected_percent: 50 }\n",
    ));
    let mut client = Client::http1(gw.addr()).await;
    let mut errors = 0;
    for _ in 0..20 {
        if send(&mut client, "GET", 0).await.status == 500 {
            errors += 1;
        }
    }
    // Round robin sends every other request to the failing endpoint until its second
    // failure in a row ejects it.
    assert_eq!(errors, 2);
    assert_eq!(failing.requests.load(Ordering::SeqCst), 2);
    // After eject_for it gets traffic again (and, failing again, is ejected for longer).
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..10 {
        send(&mut client, "GET", 0).await;
    }
    assert_eq!(failing.requests.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn ejection_never_takes_out_more_than_the_cap() {
    let first = fixed(502, Duration::ZERO).await;
    let second = fixed(502, Duration::ZERO).await;
    let gw = gateway(&config(
        &[first.addr, second.addr],
        "    outlier: { consecutive_failures: 1, eject_for: 1m, max_ejected_percent: 50 }\n",
    ));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..10 {
        assert_eq!(send(&mut client, "GET", 0).await.status, 502);
    }
    // One is out; the other keeps serving (badly) rather than leaving no endpoint at all.
    let served = [&first, &second].map(|f| f.requests.load(Ordering::SeqCst));
    assert!(served.contains(&1), "{served:?}");
    assert_eq!(served.iter().sum::<usize>(), 10);
}

#[test]
fn retry_config_errors() {
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        upstreams:\n  up:\n    discovery: { static: [127.0.0.1:1] }\n\
        \x20   retries: { on: [connect_error, 404], budget: 300% }\n\
        \x20   outlier: { max_ejected_percent: 150 }\n\
        routes: [ { name: a, upstream: up } ]\n";
    let issues = config_errors(yaml);
    assert!(
        issues[0].starts_with("upstreams.up.retries.on[1]: unknown condition \"404\""),
        "{issues:?}"
    );
    assert!(
        issues[1].starts_with("upstreams.up.retries.budget: invalid budget \"300%\""),
        "{issues:?}"
    );
    assert!(
        issues[2].starts_with("upstreams.up.outlier.max_ejected_percent: must be at most 100"),
        "{issues:?}"
    );
}

#[tokio::test]
async fn ejections_survive_a_reload_that_leaves_the_upstream_alone() {
    let failing = fixed(500, Duration::ZERO).await;
    let good = upstream().run().await;
    let yaml = config(
        &[failing.addr, good.addr],
        "    outlier: { consecutive_failures: 1, eject_for: 1m, max_ejected_percent: 50 }\n",
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..4 {
        send(&mut client, "GET", 0).await;
    }
    assert_eq!(failing.requests.load(Ordering::SeqCst), 1);
    let with_route = format!(
        "{yaml}  - name: ping\n    match: {{ path: /ping }}\n    respond: {{ body: pong }}\n"
    );
    gw.reload(&with_route).unwrap();
    for _ in 0..6 {
        assert_eq!(send(&mut client, "GET", 0).await.status, 200);
    }
    assert_eq!(
        failing.requests.load(Ordering::SeqCst),
        1,
        "the ejection was forgotten"
    );
    let upstreams = get(gw.admin(), "/upstreams").await.json();
    let ejected: Vec<bool> = upstreams["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ejected"].as_bool().unwrap())
        .collect();
    assert_eq!(ejected.iter().filter(|e| **e).count(), 1);
}

/// How a [`resetting`] endpoint ends each connection.
#[derive(Clone, Copy, Debug)]
enum Abort {
    /// Reads the request head, then resets (RST: ECONNRESET on our side).
    ResetAfterRequest,
    /// Resets as soon as the connection is accepted, before reading anything.
    ResetAtOnce,
    /// Reads the request head, then closes cleanly without answering (EOF).
    CloseAfterRequest,
}

/// An endpoint that accepts connections and never answers: it ends each one as `how` says.
async fn resetting(how: Abort) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            if !matches!(how, Abort::ResetAtOnce) {
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            }
            if !matches!(how, Abort::CloseAfterRequest) {
                socket2::SockRef::from(&stream)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
            drop(stream);
        }
    });
    (addr, accepted, task)
}

#[tokio::test]
async fn a_connection_reset_before_the_response_fails_over_to_another_endpoint() {
    for how in [
        Abort::ResetAfterRequest,
        Abort::ResetAtOnce,
        Abort::CloseAfterRequest,
    ] {
        let (bad, accepted, task) = resetting(how).await;
        let good = upstream().run().await;
        // A reset that lands before the connection is ready for us is a connect error (the
        // request never left); one after the request went out is a reset.
        let on = match how {
            Abort::ResetAtOnce => "[connect_error, reset]",
            Abort::ResetAfterRequest | Abort::CloseAfterRequest => "[reset]",
        };
        let gw = gateway(&config(
            &[bad, good.addr],
            &format!(
                "    retries: {{ attempts: 1, on: {on}, backoff: {{ base: 1ms, max: 5ms }} }}\n"
            ),
        ));
        let mut client = Client::http1(gw.addr()).await;
        for i in 0..10 {
            let reply = send(&mut client, "GET", 0).await;
            assert_eq!(reply.status, 200, "{how:?}, request {i}: {}", reply.text());
        }
        assert_eq!(good.requests(), 10, "{how:?}");
        assert!(
            accepted.load(Ordering::SeqCst) >= 5,
            "{how:?}: the bad endpoint was not tried"
        );
        task.abort();
    }
}

#[tokio::test]
async fn resets_count_as_outlier_failures() {
    let (bad, _accepted, task) = resetting(Abort::ResetAfterRequest).await;
    let good = upstream().run().await;
    let gw = gateway(&config(
        &[bad, good.addr],
        "    outlier: { consecutive_failures: 2, eject_for: 30s, max_ejected_percent: 50 }\n",
    ));
    let mut client = Client::http1(gw.addr()).await;
    let mut failed = 0;
    for _ in 0..20 {
        if send(&mut client, "GET", 0).await.status != 200 {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 2,
        "the resetting endpoint was not ejected after two resets"
    );
    // Counted as resets, not as generic errors.
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(
        metrics.contains("upstream_errors_total{upstream=\"up\",kind=\"reset\"} 2"),
        "{metrics}"
    );
    task.abort();
}
