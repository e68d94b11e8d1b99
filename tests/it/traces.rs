//! Distributed tracing: W3C Trace Context in and out, spans exported over OTLP/HTTP to a real
//! receiver that decodes them with the OpenTelemetry protobuf types.

use crate::discovery::metric;
use crate::support::*;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn config(upstream: std::net::SocketAddr, collector: &str, tracing: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n\
         \x20 users: {{ discovery: {{ static: [{upstream}] }}, retries: {{ attempts: 1, on: [503], backoff: {{ base: 1ms, max: 1ms }} }} }}\n\
         tracing: {{ otlp: {{ endpoint: \"{collector}\" }}, {tracing} }}\n\
         routes:\n\
         \x20 - {{ name: limited, match: {{ path_prefix: /limited }}, upstream: users, filters: [{{ rate_limit: {{ rate: 1/m, burst: 1 }} }}] }}\n\
         \x20 - {{ name: api, match: {{ path_prefix: / }}, upstream: users }}\n"
    )
}

/// The `traceparent` fields the upstream saw on its `n`th-from-last request.
fn traceparents(up: &Upstream, back: usize) -> Vec<String> {
    let seen = up.seen();
    let request = &seen[seen.len() - 1 - back];
    request
        .headers
        .get_all("traceparent")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// A span's status code (unset when it carries none).
fn status_code(span: &Span) -> i32 {
    span.status
        .as_ref()
        .map_or(StatusCode::Unset as i32, |s| s.code)
}

fn with_trace(spans: &[Span], trace: &str) -> Vec<Span> {
    spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_spans_nest_under_the_server_span_under_the_callers() {
    let collector = Collector::start().await;
    let up = upstream().run().await;
    let tracing = "sample: 1.0, accept_parent: any, service_name: edge-test";
    let yaml = config(up.addr, &collector.url(), tracing).replace(
        "otlp: {",
        "otlp: { headers: { authorization: Bearer collector-secret },",
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    let parent = format!("00-{TRACE}-{PARENT}-01");
    let request = req("GET", "/api/x")
        .header("host", "edge.example:8443")
        .header("traceparent", &parent)
        .header("tracestate", "vendor=abc")
        .body(empty())
        .unwrap();
    let reply = client.request(request).await;
    assert_eq!(reply.status, 200);
    let request_id = reply.header("x-request-id").unwrap().to_string();

    // Upstream: the same trace, the gateway's client span as parent, the caller's state.
    let sent = traceparents(&up, 0);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (prefix, rest) = sent[0].split_at(36);
    assert_eq!(prefix, format!("00-{TRACE}-"));
    let client_span = &rest[..16];
    assert_ne!(client_span, PARENT);
    assert_eq!(&rest[16..], "-01");
    assert_eq!(up.last().headers["tracestate"], "vendor=abc");

    let spans = with_trace(&collector.wait_for(2, Duration::from_secs(10)).await, TRACE);
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let upstream_try = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(hex(&server.parent_span_id), PARENT);
    assert_eq!(server.trace_state, "vendor=abc");
    assert_eq!(upstream_try.parent_span_id, server.span_id);
    assert_eq!(hex(&upstream_try.span_id), client_span);
    assert_eq!(server.name, "GET api");
    let attr = |span: &Span, key: &str| attribute(span, key).unwrap_or_else(|| panic!("no {key}"));
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/api/x"),
        ("url.scheme", "http"),
        ("http.route", "api"),
        ("http.response.status_code", "200"),
        ("server.address", "edge.example"),
        ("server.port", "8443"),
        ("network.peer.address", "127.0.0.1"),
        ("network.protocol.version", "1.1"),
        ("portcullis.request_id", request_id.as_str()),
        ("portcullis.upstream", "users"),
    ] {
        assert_eq!(attr(server, key), value, "{key}");
    }
    assert_eq!(
        attr(upstream_try, "server.port"),
        up.addr.port().to_string()
    );
    assert_eq!(attr(upstream_try, "server.address"), "127.0.0.1");
    assert_eq!(attr(upstream_try, "portcullis.upstream"), "users");
    assert_eq!(attr(upstream_try, "http.response.status_code"), "200");
    assert!(upstream_try.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(upstream_try.end_time_unix_nano <= server.end_time_unix_nano);
    assert_eq!(status_code(server), StatusCode::Unset as i32);
    assert_eq!(collector.services(), ["edge-test"]);
    assert_eq!(
        collector.last_headers(),
        (
            "application/x-protobuf".into(),
            "Bearer collector-secret".into()
        )
    );
    // The collector's credentials never show in the admin API.
    let shown = get(gw.admin(), "/config").await.text();
    assert!(!shown.contains("collector-secret"), "{shown}");
    let config: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        config["tracing"]["otlp"]["headers"]["authorization"],
        "<redacted>"
    );

    // A retried request: one client span per try, the second marked as a resend, each id
    // the one its try carried upstream.
    let retry_trace = "0af7651916cd43dd8448eb211c80319c";
    let request = req("GET", "/status/503")
        .header(
            "traceparent",
            format!("00-{retry_trace}-b7ad6b7169203331-01"),
        )
        .body(empty())
        .unwrap();
    assert_eq!(client.request(request).await.status, 503);
    let carried = [traceparents(&up, 1), traceparents(&up, 0)];
    let spans = collector.wait_for(5, Duration::from_secs(10)).await;
    let spans = with_trace(&spans, retry_trace);
    let mut tries: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    tries.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(tries.len(), 2, "{spans:?}");
    for (attempt, carried) in tries.iter().zip(&carried) {
        assert_eq!(carried[0][36..52], hex(&attempt.span_id));
        assert_eq!(attr(attempt, "http.response.status_code"), "503");
        assert_eq!(status_code(attempt), StatusCode::Error as i32);
    }
    assert_eq!(attribute(tries[0], "http.request.resend_count"), None);
    assert_eq!(attr(tries[1], "http.request.resend_count"), "1");
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(status_code(server), StatusCode::Error as i32);

    // A filter's refusal: no client span, and the span says which filter answered.
    assert_eq!(get(gw.addr(), "/limited").await.status, 200);
    assert_eq!(get(gw.addr(), "/limited").await.status, 429);
    let spans = collector.wait_for(9, Duration::from_secs(10)).await;
    let refused = spans
        .iter()
        .find(|s| attribute(s, "http.response.status_code").as_deref() == Some("429"))
        .expect("the refused request's span");
    assert_eq!(attr(refused, "portcullis.answered_by"), "rate_limit");
    assert_eq!(attr(refused, "portcullis.rate_limited"), "true");
    assert_eq!(status_code(refused), StatusCode::Unset as i32);
    assert!(!spans
        .iter()
        .any(|s| s.kind == SpanKind::Client as i32 && s.trace_id == refused.trace_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_from_an_untrusted_or_malformed_header_is_replaced() {
    let collector = Collector::start().await;
    let up = upstream().run().await;
    // Default: only peers in trusted_proxies (none here) may continue a trace.
    let gw = gateway(&config(up.addr, &collector.url(), "sample: 1.0"));
    let valid = format!("00-{TRACE}-{PARENT}-01");
    let send = |headers: Vec<(&'static str, String)>| {
        let addr = gw.addr();
        async move {
            let mut request = req("GET", "/api/x");
            for (name, value) in headers {
                request = request.header(name, value);
            }
            Client::http1(addr)
                .await
                .request(request.body(empty()).unwrap())
                .await
        }
    };
    let fresh = |sent: &[String], refused: &str| {
        assert_eq!(sent.len(), 1, "{sent:?}");
        let value = &sent[0];
        assert_eq!(value.len(), 55, "{value}");
        assert!(
            value.starts_with("00-") && !value.contains(refused),
            "{value}"
        );
        assert!(value
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase() || b == b'-'));
    };
    send(vec![
        ("traceparent", valid.clone()),
        ("tracestate", "vendor=abc".into()),
    ])
    .await;
    fresh(&traceparents(&up, 0), TRACE);
    assert!(
        up.last().headers.get("tracestate").is_none(),
        "the state goes with its parent"
    );

    let gw_any = gateway(&config(
        up.addr,
        &collector.url(),
        "sample: 1.0, accept_parent: any",
    ));
    for bad in [
        format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
        format!("00-{TRACE}-{PARENT}-01-extra"),
        format!("ff-{TRACE}-{PARENT}-01"),
        format!("00-{TRACE}-0000000000000000-01"),
        "00-zzzz".to_string(),
    ] {
        let request = req("GET", "/api/x")
            .header("traceparent", &bad)
            .body(empty())
            .unwrap();
        assert_eq!(
            Client::http1(gw_any.addr())
                .await
                .request(request)
                .await
                .status,
            200
        );
        fresh(&traceparents(&up, 0), bad.get(3..35).unwrap_or("zzzz"));
    }
    // Two traceparent fields: neither is believed, neither goes on.
    let request = req("GET", "/api/x")
        .header("traceparent", &valid)
        .header("traceparent", format!("00-{TRACE}-b7ad6b7169203331-01"))
        .body(empty())
        .unwrap();
    assert_eq!(
        Client::http1(gw_any.addr())
            .await
            .request(request)
            .await
            .status,
        200
    );
    fresh(&traceparents(&up, 0), TRACE);
    // A valid one is continued by this gateway.
    send(vec![]).await;
    let request = req("GET", "/api/x")
        .header("traceparent", &valid)
        .body(empty())
        .unwrap();
    Client::http1(gw_any.addr()).await.request(request).await;
    assert!(traceparents(&up, 0)[0].contains(TRACE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_keeps_its_ratio_and_follows_a_parent() {
    let collector = Collector::start().await;
    let up = upstream().run().await;
    let gw = gateway(&config(
        up.addr,
        &collector.url(),
        "sample: 0.25, accept_parent: any",
    ));
    let mut client = Client::http1(gw.addr()).await;
    let total = 400;
    for _ in 0..total {
        assert_eq!(client.get("/api/x").await.status, 200);
    }
    let sampled = up
        .seen()
        .iter()
        .filter(|s| s.headers["traceparent"].to_str().unwrap().ends_with("-01"))
        .count();
    // 25% of 400 is 100; 60..=140 holds with overwhelming probability (σ ≈ 8.7).
    assert!(
        (60..=140).contains(&sampled),
        "{sampled} of {total} sampled"
    );
    let spans = collector
        .wait_for(2 * sampled, Duration::from_secs(10))
        .await;
    let servers = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .count();
    assert_eq!(
        servers, sampled,
        "exactly the sampled requests are exported"
    );

    // parent_based (the default): a sampled parent is recorded even at 0, an unsampled one
    // never, and the decision goes on upstream.
    gw.reload(&config(
        up.addr,
        &collector.url(),
        "sample: 0.0, accept_parent: any",
    ))
    .unwrap();
    for (flags, recorded) in [("01", true), ("00", false)] {
        let trace = format!("{}{flags}", &TRACE[..30]);
        let request = req("GET", "/api/x")
            .header("traceparent", format!("00-{trace}-{PARENT}-{flags}"))
            .body(empty())
            .unwrap();
        client.request(request).await;
        assert!(traceparents(&up, 0)[0].ends_with(&format!("-{flags}")));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            !with_trace(&collector.spans(), &trace).is_empty(),
            recorded,
            "{flags}"
        );
    }
    // Without a parent, nothing is sampled at 0.
    let before = collector.spans().len();
    for _ in 0..20 {
        client.get("/api/x").await;
        assert!(traceparents(&up, 0)[0].ends_with("-00"));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(collector.spans().len(), before);
}

/// Spans dropped for `reason`, from the gateway's metrics.
async fn failed(gw: &TestGateway, reason: &str) -> f64 {
    let series = format!("trace_spans_dropped_total{{reason=\"{reason}\"}}");
    metric(gw, &series).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_stuck_collector_changes_nothing_for_clients() {
    let up = upstream().run().await;
    let dead = format!("http://{}", dead_address());
    let gw = gateway(&config(up.addr, &dead, "sample: 1.0"));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..50 {
        assert_eq!(client.get("/api/x").await.status, 200);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while failed(&gw, "export_failed").await < 100.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "export failures are counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A collector that takes the export and never answers: requests go on at full speed; the
    // queue fills and the excess is dropped and counted.
    let collector = Collector::start().await;
    collector.get_stuck();
    let yaml = config(up.addr, &collector.url(), "sample: 1.0")
        .replace("otlp: {", "otlp: { queue: 20, timeout: 30s,");
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    let answered = tokio::time::timeout(Duration::from_secs(20), async {
        for round in 0..2 {
            for _ in 0..300 {
                assert_eq!(client.get("/api/x").await.status, 200);
            }
            if round == 0 {
                // The first batch goes out within a second, and the collector holds it.
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "clients were held up by the collector");
    assert!(collector.exports() >= 1);
    assert!(failed(&gw, "queue_full").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_trace_headers_pass_through_untouched() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let odd = "00-not-a-valid-context";
    let request = req("GET", "/x")
        .header("traceparent", odd)
        .body(empty())
        .unwrap();
    Client::http1(gw.addr()).await.request(request).await;
    assert_eq!(traceparents(&up, 0), [odd]);
    get(gw.addr(), "/y").await;
    assert!(traceparents(&up, 0).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_carries_the_trace_id() {
    let collector = Collector::start().await;
    let up = upstream().run().await;
    let path = temp_path("traced.yaml");
    let yaml = with_test_admin(&config(up.addr, &collector.url(), "sample: 0.0"));
    std::fs::write(&path, yaml).unwrap();
    let (mut child, http, _admin, log) = crate::signals::spawn(&path);
    assert_eq!(get(http, "/api/x").await.status, 200);
    let sent = traceparents(&up, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let access = loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("no access log line");
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        if entry["target"] == "access" {
            break entry;
        }
    };
    // Unsampled requests have a trace id too: logs and the upstream's spans still join.
    assert_eq!(access["trace_id"], sent[0][3..35], "{access}");
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_file(&path).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_outcomes_appear_on_the_server_span() {
    let collector = Collector::start().await;
    let up = upstream().run().await;
    let secret = "a-test-secret-that-is-long-enough-for-hs256";
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         trusted_proxies: [127.0.0.1/32]\n\
         upstreams:\n\
         \x20 users: {{ discovery: {{ static: [{}] }} }}\n\
         \x20 gone: {{ discovery: {{ static: [{}] }} }}\n\
         jwt_providers:\n  main: {{ algorithms: [HS256], secret: {secret} }}\n\
         tracing: {{ otlp: {{ endpoint: \"{}\" }}, jwt_subject: true }}\n\
         routes:\n\
         \x20 - {{ name: pages, match: {{ path_prefix: /pages }}, upstream: users, filters: [{{ jwt: {{ provider: main }} }}, {{ cache: {{ ttl: 1m, cache_authorized: shared }} }}] }}\n\
         \x20 - {{ name: down, match: {{ path_prefix: /down }}, upstream: gone, filters: [{{ circuit_breaker: {{ consecutive_failures: 1, open_for: 1m }} }}] }}\n",
        up.addr,
        dead_address(),
        collector.url()
    );
    let gw = gateway(&yaml);
    let claims =
        serde_json::json!({"sub": "user-42", "exp": jsonwebtoken::get_current_timestamp() + 600});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let mut client = Client::http1(gw.addr()).await;
    for forwarded in [true, false] {
        let mut request = req("GET", "/pages/a").header("authorization", format!("Bearer {token}"));
        if forwarded {
            request = request.header("x-forwarded-for", "203.0.113.9");
        }
        let request = request.body(empty()).unwrap();
        assert_eq!(client.request(request).await.status, 200);
    }
    assert_eq!(client.get("/pages/a").await.status, 401);
    assert_eq!(client.get("/down").await.status, 502);
    assert_eq!(client.get("/down").await.status, 503);

    let spans = collector.wait_for(7, Duration::from_secs(10)).await;
    let mut servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    servers.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(servers.len(), 5, "{spans:?}");
    let shown = |span: &Span, key: &str| attribute(span, key);
    assert_eq!(shown(servers[0], "enduser.id").as_deref(), Some("user-42"));
    // The client behind a trusted proxy; without one, the peer alone says who it was.
    assert_eq!(
        shown(servers[0], "client.address").as_deref(),
        Some("203.0.113.9")
    );
    assert_eq!(shown(servers[1], "client.address"), None);
    assert_eq!(
        shown(servers[1], "network.peer.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        shown(servers[0], "portcullis.cache").as_deref(),
        Some("MISS")
    );
    assert_eq!(
        shown(servers[1], "portcullis.cache").as_deref(),
        Some("HIT")
    );
    assert_eq!(
        shown(servers[1], "portcullis.answered_by").as_deref(),
        Some("cache")
    );
    assert_eq!(
        shown(servers[2], "portcullis.answered_by").as_deref(),
        Some("jwt")
    );
    assert_eq!(shown(servers[2], "enduser.id"), None);
    assert_eq!(shown(servers[3], "error.type").as_deref(), Some("upstream"));
    assert_eq!(
        shown(servers[4], "portcullis.circuit_open").as_deref(),
        Some("true")
    );
    assert_eq!(
        shown(servers[4], "portcullis.answered_by").as_deref(),
        Some("circuit_breaker")
    );
}

#[test]
fn tracing_config_errors_name_their_key() {
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        routes: [{ name: a, respond: { body: a } }]\n\
        tracing:\n\
        \x20 otlp: { endpoint: \"ftp://collector\", headers: { \"bad name\": x }, queue: 0, timeout: 0s }\n\
        \x20 sample: 1.5\n\
        \x20 accept_parent: everyone\n";
    let issues = config_errors(yaml);
    for expected in [
        "tracing.sample: must be between 0 and 1 (line 5)",
        "tracing.accept_parent: \"everyone\": expected trusted (peers in trusted_proxies) or any (line 6)",
        "tracing.otlp.endpoint: \"ftp://collector\": expected an http:// or https:// URL",
    ] {
        assert!(issues.iter().any(|i| i.starts_with(expected)), "{expected} in {issues:#?}");
    }
    let yaml = yaml
        .replace("ftp://collector", "http://collector:4318")
        .replace("queue: 0", "queue: 0, ca_file: ca.pem");
    let issues = config_errors(&yaml);
    for expected in [
        "tracing.otlp.headers.bad name: not a valid header name",
        "tracing.otlp.queue: must be at least 1",
        "tracing.otlp.timeout: must be greater than zero",
        "tracing.otlp.ca_file: only used with https endpoints",
    ] {
        assert!(
            issues.iter().any(|i| i.starts_with(expected)),
            "{expected} in {issues:#?}"
        );
    }
    let unknown = config_errors(&yaml.replace("sample:", "sampling:"));
    assert!(
        unknown[0].starts_with("tracing.sampling: unknown field"),
        "{unknown:?}"
    );
}
