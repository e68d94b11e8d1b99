//! Hostile and malformed requests, in raw bytes: the right 4xx, the connection closed where
//! the framing cannot be trusted, and nothing smuggled to the upstream.

use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_millis(1500);

/// Sends `bytes` followed by a pipelined innocent-looking GET that must never be forwarded,
/// and checks status, connection close and what the upstream saw.
async fn rejected(bytes: &str, status: u16) {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let payload = format!("{bytes}GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = raw(gw.addr(), payload.as_bytes(), WAIT).await;
    assert_eq!(reply.status(), status, "{bytes:?} → {}", reply.text);
    assert!(reply.closed, "connection left open after {bytes:?}");
    assert_eq!(
        reply.responses(),
        1,
        "a second response was sent: {}",
        reply.text
    );
    assert!(
        up.seen().iter().all(|s| !s.path.contains("smuggled")),
        "smuggled request reached the upstream"
    );
    assert_eq!(up.requests(), 0, "a rejected request reached the upstream");
}

#[tokio::test]
async fn conflicting_content_lengths() {
    rejected(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        400,
    )
    .await;
}

#[tokio::test]
async fn non_numeric_content_length() {
    rejected(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello",
        400,
    )
    .await;
    rejected(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_not_ending_in_chunked() {
    rejected(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
    )
    .await;
    rejected(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test]
async fn http10_with_transfer_encoding() {
    rejected(
        "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test]
async fn obs_fold_and_bad_bytes_in_headers() {
    rejected(
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
        400,
    )
    .await;
    rejected("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400).await;
    rejected("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400).await;
    rejected("GET / HTTP/1.1\r\nHost: x\r\nBad Name: a\r\n\r\n", 400).await;
    rejected("GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n", 400).await;
}

#[tokio::test]
async fn missing_duplicate_or_invalid_host() {
    rejected("GET / HTTP/1.1\r\n\r\n", 400).await;
    rejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400).await;
    rejected("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400).await;
    rejected("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400).await;
}

#[tokio::test]
async fn dot_segments_cannot_escape_a_prefix_route() {
    rejected("GET /public/../admin HTTP/1.1\r\nHost: x\r\n\r\n", 400).await;
    rejected("GET /public/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n", 400).await;
    // Tomcat drops `;params` before resolving dot segments: `/..;/` is `/../` to it.
    rejected("GET /public/..;/admin HTTP/1.1\r\nHost: x\r\n\r\n", 400).await;
    rejected("GET /public/..%3Bx/admin HTTP/1.1\r\nHost: x\r\n\r\n", 400).await;
    rejected("GET /public/.%2e;/admin HTTP/1.1\r\nHost: x\r\n\r\n", 400).await;
}

#[tokio::test]
async fn escaped_slashes_are_refused_unless_kept() {
    rejected("GET /admin%2Fusers HTTP/1.1\r\nHost: x\r\n\r\n", 400).await;
    rejected("GET /admin%5cusers HTTP/1.1\r\nHost: x\r\n\r\n", 400).await;
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, "limits: { escaped_slashes: keep }\n"));
    assert_eq!(get(gw.addr(), "/repos/group%2Fproject").await.status, 200);
    assert_eq!(up.last().path, "/repos/group%2Fproject");
    // Kept escaped slashes still make no dot segment.
    let reply = get(gw.addr(), "/public%2F..%2Fadmin").await;
    assert_eq!(reply.status, 400);
}

/// `/%61dmin/` is `/admin/` to every server: routed, and sent on, as that.
#[tokio::test]
async fn percent_encoded_unreserved_characters_are_routed_decoded() {
    let up = upstream().run().await;
    let admin =
        "  - name: admin\n    match: { path_prefix: /admin/ }\n    respond: { status: 403 }\n";
    let yaml = simple_yaml(up.addr, "").replace("routes:\n", &format!("routes:\n{admin}"));
    let gw = gateway(&yaml);
    assert_eq!(get(gw.addr(), "/%61dmin/users").await.status, 403);
    assert_eq!(get(gw.addr(), "/%61%64%6D%69%6E/users").await.status, 403);
    assert_eq!(
        up.requests(),
        0,
        "an encoded /admin/ passed the catch-all route"
    );
    assert_eq!(
        get(gw.addr(), "/docs/%7Euser/a%20b?q=%61").await.status,
        200
    );
    let seen = up.last();
    assert_eq!(seen.path, "/docs/~user/a%20b?q=%61");
}

#[tokio::test]
async fn invalid_chunk_size_closes_without_a_second_request() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let payload = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let reply = raw(gw.addr(), payload.as_bytes(), WAIT).await;
    assert!(reply.closed);
    assert_eq!(reply.responses(), 1, "{}", reply.text);
    assert!(reply.status() >= 400, "{}", reply.text);
    assert!(up.seen().iter().all(|s| !s.path.contains("smuggled")));
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_never_smuggled() {
    // RFC 9112 §6.3: chunked wins, and the connection is closed after the response, so the
    // bytes behind the chunked body are never read as a request.
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let payload = "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let reply = raw(gw.addr(), payload.as_bytes(), WAIT).await;
    assert!(reply.closed, "connection kept open after CL+TE");
    assert_eq!(reply.responses(), 1, "{}", reply.text);
    assert!(up.seen().iter().all(|s| !s.path.contains("smuggled")));
    assert!(up.requests() <= 1);
}

#[tokio::test]
async fn absolute_form_target_wins_over_host() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let reply = raw(
        gw.addr(),
        b"GET http://real.example/path?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(reply.status(), 200, "{}", reply.text);
    let seen = up.last();
    assert_eq!(seen.path, "/path?q=1");
    let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
    assert_eq!(hosts, ["real.example"]);
}

#[tokio::test]
async fn oversized_headers_uri_and_header_count() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(
        up.addr,
        "limits: { max_header_bytes: 4KiB, max_uri_bytes: 1KiB, max_headers: 20 }\n",
    ));
    let big = "a".repeat(8 * 1024);
    let reply = raw(
        gw.addr(),
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(reply.status(), 431);
    assert!(reply.closed);

    let long = "b".repeat(2000);
    let reply = raw(
        gw.addr(),
        format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(reply.status(), 414);
    assert!(reply.closed);

    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = raw(
        gw.addr(),
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(reply.status(), 431);
    assert!(reply.closed);
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn body_over_the_limit_is_413_up_front_and_mid_stream() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, "limits: { max_body_bytes: 1KiB }\n"));
    let reply = raw(
        gw.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(reply.status(), 413);
    assert!(reply.closed);
    assert_eq!(up.requests(), 0);

    // Chunked: no length up front; the limit trips while the body streams.
    let chunk = "c".repeat(600);
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let reply = raw(gw.addr(), chunked.as_bytes(), WAIT).await;
    assert_eq!(reply.status(), 413, "{}", reply.text);
    assert!(reply.closed);
    assert!(
        up.seen().iter().all(|s| s.body_len <= 1024),
        "an over-limit body was delivered whole"
    );
}

#[tokio::test]
async fn slowloris_clients_are_cut_off_while_normal_clients_are_served() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(
        up.addr,
        "limits: { header_read_timeout: 1s }\n",
    ));
    // 100 clients trickle a header byte at a time.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    let trickle = tokio::spawn(async move {
        let mut closed = 0;
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline && closed < slow.len() {
            closed = 0;
            for stream in &mut slow {
                if stream.write_all(b"a").await.is_err() {
                    closed += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        closed
    });
    // Meanwhile a normal client is served promptly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert_eq!(get(gw.addr(), "/").await.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "normal client stalled behind slow ones"
    );
    let closed = trickle.await.unwrap();
    assert_eq!(
        closed, 100,
        "slow clients still connected after the header timeout"
    );
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_timeout() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(
        up.addr,
        "limits: { header_read_timeout: 500ms }\n",
    ));
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    let started = Instant::now();
    let reply = read_all(&mut stream, Duration::from_secs(3)).await;
    assert!(reply.closed);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn connections_beyond_the_maximum_are_refused() {
    let up = upstream().run().await;
    let gw = gateway(&with_test_admin(&simple_yaml(
        up.addr,
        "limits: { max_connections: 2 }\n",
    )));
    let mut first = Client::http1(gw.addr()).await;
    let mut second = Client::http1(gw.addr()).await;
    assert_eq!(first.get("/").await.status, 200);
    assert_eq!(second.get("/").await.status, 200);
    let reply = raw(gw.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", WAIT).await;
    assert!(
        reply.closed && reply.text.is_empty(),
        "third connection served: {}",
        reply.text
    );
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(
        metrics
            .contains("connections_refused_total{listener=\"http\",reason=\"max_connections\"} 1"),
        "{metrics}"
    );
    drop(first);
    // A slot frees up once a connection closes.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let reply = raw(
            gw.addr(),
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            WAIT,
        )
        .await;
        if !reply.text.is_empty() {
            assert_eq!(reply.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(
        up.addr,
        "  - { name: pong, match: { path: /pong }, respond: { body: pong } }\n\
         limits: { idle_timeout: 400ms, header_read_timeout: 10s }\n",
    ));
    let mut h1 = Client::http1(gw.addr()).await;
    let mut h2 = Client::http2(gw.addr()).await;
    // After a request whose body was answered unread, an HTTP/1.1 connection waits for the
    // next one inside hyper rather than parked: the idle timeout holds there too.
    let mut after_body = Client::http1(gw.addr()).await;
    assert_eq!(h1.get("/").await.status, 200);
    assert_eq!(h2.get("/").await.status, 200);
    let post = req("POST", "/pong").body(body("a body")).unwrap();
    let reply = after_body.request(post).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "pong");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !(h1.is_closed() && h2.is_closed() && after_body.is_closed()) {
        assert!(
            Instant::now() < deadline,
            "idle connections still open after idle_timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_slow_request_in_flight_is_not_cut_by_the_idle_timeout() {
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, "limits: { idle_timeout: 300ms }\n"));
    for h2 in [false, true] {
        let mut client = if h2 {
            Client::http2(gw.addr()).await
        } else {
            Client::http1(gw.addr()).await
        };
        let reply = client.get("/delay/1000").await;
        assert_eq!(reply.status, 200, "h2: {h2}");
        assert_eq!(reply.text(), "late");
        // Nor was the connection set to close behind it.
        assert_eq!(client.get("/").await.status, 200, "h2: {h2}");
    }
}

#[tokio::test]
async fn underscore_spellings_of_framing_headers_never_reach_the_upstream() {
    // Whatever the setting: 400, connection closed, nothing forwarded.
    for mode in ["reject", "drop", "allow"] {
        for name in [
            "Transfer_Encoding",
            "Content_Length",
            "transfer_encoding",
            "CONTENT_length",
        ] {
            let up = upstream().run().await;
            let gw = gateway(&simple_yaml(
                up.addr,
                &format!("limits: {{ headers_with_underscores: {mode} }}\n"),
            ));
            let value = if name.to_ascii_lowercase().starts_with("transfer") {
                "chunked"
            } else {
                "0"
            };
            let payload = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n{name}: {value}\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
            );
            let reply = raw(gw.addr(), payload.as_bytes(), WAIT).await;
            assert_eq!(reply.status(), 400, "{mode} {name}: {}", reply.text);
            assert!(reply.closed, "{mode} {name}: connection left open");
            assert_eq!(up.requests(), 0, "{mode} {name}: forwarded");
        }
    }
}

#[tokio::test]
async fn underscore_header_names_follow_the_configured_mode() {
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nX_User_Id: admin\r\nX-Real: 1\r\n\r\n";
    // Default: dropped, the request goes on.
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let reply = raw(gw.addr(), request, WAIT).await;
    assert_eq!(reply.status(), 200, "{}", reply.text);
    let seen = up.last().headers;
    assert!(
        seen.get("x_user_id").is_none(),
        "an underscore header was forwarded"
    );
    assert_eq!(seen["x-real"], "1");
    // reject: 400 and closed.
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(
        up.addr,
        "limits: { headers_with_underscores: reject }\n",
    ));
    let reply = raw(gw.addr(), request, WAIT).await;
    assert_eq!(reply.status(), 400, "{}", reply.text);
    assert!(reply.closed);
    assert_eq!(up.requests(), 0);
    // allow: passed on as it is.
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(
        up.addr,
        "limits: { headers_with_underscores: allow }\n",
    ));
    let reply = raw(gw.addr(), request, WAIT).await;
    assert_eq!(reply.status(), 200, "{}", reply.text);
    assert_eq!(up.last().headers["x_user_id"], "admin");
    // Over HTTP/2 too.
    let up = upstream().run().await;
    let gw = gateway(&simple_yaml(up.addr, ""));
    let mut client = Client::http2(gw.addr()).await;
    let reply = client
        .request(
            req("GET", "/")
                .header("x_user_id", "admin")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(up.last().headers.get("x_user_id").is_none());
    let reply = client
        .request(
            req("POST", "/")
                .header("content_length", "0")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 400);
    // An unknown mode is a config error.
    let issues = config_errors(&simple_yaml(
        up.addr,
        "limits: { headers_with_underscores: maybe }\n",
    ));
    assert!(
        issues[0].starts_with("limits.headers_with_underscores: unknown value \"maybe\""),
        "{:?}",
        issues
    );
}
