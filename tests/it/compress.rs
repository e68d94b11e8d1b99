//! `compress`: what is sent decodes to what the upstream sent, negotiation follows the client's
//! q-values, responses that must stay as they are do, and a slow stream arrives as it comes.

use crate::support::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// About 20 KiB of JSON, compressible but not trivially.
fn document() -> String {
    let items: Vec<String> = (0..400)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"name\":\"item {i}\",\"tags\":[\"a{}\",\"b\"]}}",
                i % 7
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// Paths: `/json` (ETag "v1"), `/small`, `/png`, `/encoded` (gzip already), `/no-transform`,
/// `/partial` (206), `/stream` (three text chunks 300 ms apart).
async fn site() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let doc = document();
                    let full = |text: String| body(text);
                    let response = http::Response::builder();
                    let response = match req.uri().path() {
                        "/json" => response
                            .header("content-type", "application/json; charset=utf-8")
                            .header("etag", "\"v1\"")
                            .header("content-length", doc.len())
                            .body(full(doc)),
                        "/small" => response
                            .header("content-type", "application/json")
                            .body(full("{\"ok\":true}".into())),
                        "/png" => response.header("content-type", "image/png").body(full(doc)),
                        "/encoded" => response
                            .header("content-type", "text/plain")
                            .header("content-encoding", "gzip")
                            .body(full(doc)),
                        "/no-transform" => response
                            .header("content-type", "text/plain")
                            .header("cache-control", "public, No-Transform")
                            .body(full(doc)),
                        "/partial" => response
                            .status(206)
                            .header("content-type", "text/plain")
                            .header("content-range", format!("bytes 0-{}/99999", doc.len() - 1))
                            .body(full(doc)),
                        _ => {
                            let (tx, stream) = channel_body();
                            tokio::spawn(async move {
                                for n in 0..3 {
                                    if n > 0 {
                                        tokio::time::sleep(Duration::from_millis(300)).await;
                                    }
                                    let text = format!("chunk {n} {}\n", "lorem ipsum ".repeat(50));
                                    let frame = hyper::body::Frame::data(Bytes::from(text));
                                    if tx.send(Ok(frame)).await.is_err() {
                                        return;
                                    }
                                }
                            });
                            response.header("content-type", "text/plain").body(stream)
                        }
                    };
                    Ok::<_, std::convert::Infallible>(response.unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn yaml(site: SocketAddr, filters: &str) -> String {
    with_test_admin(&format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  site: {{ discovery: {{ static: [{site}] }} }}\n\
         routes:\n  - {{ name: site, upstream: site, filters: [ {filters} ] }}\n"
    ))
}

fn decode(encoding: &str, bytes: &[u8]) -> String {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(bytes).unwrap(),
        other => panic!("unexpected encoding {other}"),
    }
    String::from_utf8(out).unwrap()
}

async fn fetch_with(client: &mut Client, path: &str, accept: &str) -> Reply {
    client
        .request(
            req("GET", path)
                .header("accept-encoding", accept)
                .body(empty())
                .unwrap(),
        )
        .await
}

#[tokio::test]
async fn each_algorithm_decodes_to_the_original() {
    let site = site().await;
    let gw = gateway(&yaml(site, "{ compress: {} }"));
    let mut client = Client::http1(gw.addr()).await;
    let mut sent_out = Vec::new();
    for encoding in ["br", "zstd", "gzip"] {
        let reply = fetch_with(&mut client, "/json", encoding).await;
        sent_out.push((encoding, reply.body.len()));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-encoding"), Some(encoding));
        assert_eq!(reply.header("vary"), Some("Accept-Encoding"));
        assert_eq!(
            reply.header("etag"),
            Some("W/\"v1\""),
            "a strong tag is weakened"
        );
        assert!(reply.header("content-length").is_none());
        assert!(
            reply.body.len() < document().len() / 3,
            "{encoding}: {} bytes",
            reply.body.len()
        );
        assert_eq!(decode(encoding, &reply.body), document(), "{encoding}");
    }
    let metrics = get(gw.admin(), "/metrics").await.text();
    for (encoding, bytes) in sent_out {
        let line_in = format!(
            "compress_bytes_in_total{{algorithm=\"{encoding}\"}} {}",
            document().len()
        );
        let line_out = format!("compress_bytes_out_total{{algorithm=\"{encoding}\"}} {bytes}");
        assert!(metrics.contains(&line_in), "{line_in}\n{metrics}");
        assert!(metrics.contains(&line_out), "{line_out}\n{metrics}");
    }
}

#[tokio::test]
async fn the_clients_q_values_choose_and_a_refusal_of_everything_gets_identity() {
    let site = site().await;
    let gw = gateway(&yaml(site, "{ compress: { algorithms: [gzip, br] } }"));
    let mut client = Client::http1(gw.addr()).await;
    let cases = [
        ("gzip;q=1, br;q=0.5", Some("gzip")),
        ("gzip;q=0.5, br", Some("br")),
        ("br, gzip", Some("gzip")), // a tie: the configured order decides
        ("zstd", None),             // not configured here
        ("identity;q=1, *;q=0", None),
        ("gzip;q=0", None),
    ];
    for (accept, expected) in cases {
        let reply = fetch_with(&mut client, "/json", accept).await;
        assert_eq!(reply.header("content-encoding"), expected, "{accept}");
        assert_eq!(reply.header("vary"), Some("Accept-Encoding"), "{accept}");
        if expected.is_none() {
            assert_eq!(reply.text(), document(), "{accept}");
            assert_eq!(reply.header("etag"), Some("\"v1\""));
        }
    }
}

#[tokio::test]
async fn responses_that_must_stay_as_they_are_do() {
    let site = site().await;
    let gw = gateway(&yaml(site, "{ compress: {} }"));
    let mut client = Client::http1(gw.addr()).await;
    // Each comes through byte for byte, with the upstream's own Content-Encoding (if any).
    let cases = [
        ("/small", None, "{\"ok\":true}".to_string()),
        ("/png", None, document()),
        ("/encoded", Some("gzip"), document()),
        ("/no-transform", None, document()),
        ("/partial", None, document()),
    ];
    for (path, encoding, sent) in cases {
        let reply = fetch_with(&mut client, path, "gzip, br, zstd").await;
        assert_eq!(reply.header("content-encoding"), encoding, "{path}");
        assert_eq!(reply.text(), sent, "{path}");
    }
    let head = client
        .request(
            req("HEAD", "/json")
                .header("accept-encoding", "gzip")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert!(head.header("content-encoding").is_none());
    assert_eq!(
        head.header("content-length"),
        Some(document().len().to_string().as_str())
    );
}

#[tokio::test]
async fn a_slow_stream_arrives_as_it_comes_compressed() {
    let site = site().await;
    let gw = gateway(&yaml(site, "{ compress: {} }"));
    let mut client = Client::http1(gw.addr()).await;
    let started = Instant::now();
    let response = client
        .send(
            req("GET", "/stream")
                .header("accept-encoding", "gzip")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push(started.elapsed());
            bytes.extend_from_slice(&data);
        }
    }
    assert!(
        arrivals[0] < Duration::from_millis(250),
        "the first chunk waited for the rest: {arrivals:?}"
    );
    assert!(arrivals.len() >= 3, "{arrivals:?}");
    let text = decode("gzip", &bytes);
    assert!(
        text.starts_with("chunk 0 ") && text.contains("chunk 2 "),
        "{text}"
    );
}

#[tokio::test]
async fn before_a_cache_it_compresses_stored_answers_on_the_way_out() {
    let site = site().await;
    let gw = gateway(&yaml(site, "{ compress: {} }, { cache: { ttl: 60s } }"));
    let mut client = Client::http1(gw.addr()).await;
    let first = fetch_with(&mut client, "/json", "gzip").await;
    assert_eq!(first.header("content-encoding"), Some("gzip"));
    let hit = fetch_with(&mut client, "/json", "br").await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("content-encoding"), Some("br"));
    assert_eq!(decode("br", &hit.body), document());
    let plain = fetch_with(&mut client, "/json", "identity").await;
    assert_eq!(plain.header("x-cache"), Some("HIT"));
    assert_eq!(plain.text(), document());
}

#[test]
fn config_errors_name_the_key() {
    assert_eq!(
        config_errors(
            "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
             routes:\n  - name: a\n    respond: { body: a }\n    filters:\n\
             \x20     - compress: { algorithms: [br, deflate, br], types: [json], levels: { gzip: 10, zstd: 0 } }\n"
        ),
        [
            "routes[0].filters[0].compress.algorithms[1]: unknown algorithm \"deflate\": expected br, zstd or gzip (line 6)",
            "routes[0].filters[0].compress.algorithms[2]: br is listed twice (line 6)",
            "routes[0].filters[0].compress.types[0]: \"json\" is not a media type, range or suffix: e.g. text/html, text/*, application/*+json (line 6)",
            "routes[0].filters[0].compress.levels.gzip: must be 1 to 9 (line 6)",
            "routes[0].filters[0].compress.levels.zstd: must be 1 to 19 (line 6)",
        ]
    );
}
