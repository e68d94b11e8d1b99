//! RFC 9111 conformance of the `cache` filter, a module per section, each test named by the
//! rule it checks. The origin's answers are scripted by the query (see `support::origin`):
//! `cc` is Cache-Control (`:` for `=`), `etag`, and `h.NAME=VALUE` any header line.

mod support;

use std::time::{Duration, SystemTime};
use support::origin::*;
use support::*;

/// Percent-encodes a header value for an `h.NAME=` query parameter.
fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn age_of(reply: &Reply) -> u64 {
    reply
        .header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no Age on {:?}", reply.headers))
}

/// §4.2.3 and §5.1: the age a response arrives with counts toward its freshness.
mod age_on_arrival {
    use super::*;

    #[tokio::test]
    async fn a_received_age_past_the_freshness_lifetime_is_never_served_as_fresh() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
        let mut client = Client::http1(gw.addr()).await;
        let now = httpdate::fmt_http_date(SystemTime::now());
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        let cases = [
            // (path, query, stored and served from the cache)
            ("/young", "cc=max-age:60&h.age=10".to_string(), true),
            ("/old", "cc=max-age:60&h.age=100".to_string(), false),
            ("/old-s", "cc=s-maxage:60&h.age=61".to_string(), false),
            (
                "/expires-young",
                format!(
                    "h.date={}&h.expires={}&h.age=10",
                    enc(&now),
                    enc(&in_a_minute)
                ),
                true,
            ),
            (
                "/expires-old",
                format!(
                    "h.date={}&h.expires={}&h.age=100",
                    enc(&now),
                    enc(&in_a_minute)
                ),
                false,
            ),
            // The route's ttl (heuristic freshness) is no exception.
            ("/ttl-old", "h.age=31".to_string(), false),
        ];
        for (path, query, stored) in &cases {
            let target = format!("{path}?{query}");
            fetch(&mut client, &target, &[]).await;
            let second = fetch(&mut client, &target, &[]).await;
            let expected = if *stored { "HIT" } else { "MISS" };
            assert_eq!(x_cache(&second), expected, "{target}");
            assert_eq!(origin.count(path), if *stored { 1 } else { 2 }, "{target}");
        }
    }

    #[tokio::test]
    async fn an_invalid_age_makes_the_response_stale_never_new() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
        let mut client = Client::http1(gw.addr()).await;
        let invalid = [
            "abc", "-5", "1.5", "10, 20", "10;x=1", "+10", "0x10", "1e3", "10 s",
        ];
        for (i, age) in invalid.iter().enumerate() {
            let target = format!("/invalid-{i}?cc=max-age:600&h.age={}", enc(age));
            fetch(&mut client, &target, &[]).await;
            let second = fetch(&mut client, &target, &[]).await;
            assert_eq!(x_cache(&second), "MISS", "Age: {age:?}");
        }
        // Two field lines, each valid alone.
        let target = "/two-lines?cc=max-age:600&h.age=10&h.age=10";
        fetch(&mut client, target, &[]).await;
        assert_eq!(x_cache(&fetch(&mut client, target, &[]).await), "MISS");
        // A huge value is stale, not an overflow to zero.
        let target = "/huge?cc=max-age:600&h.age=99999999999999999999999";
        fetch(&mut client, target, &[]).await;
        assert_eq!(x_cache(&fetch(&mut client, target, &[]).await), "MISS");
    }
}

/// §4.2.3 and §5.1: the `Age` sent with a stored response includes the age it arrived with.
mod age_on_the_way_out {
    use super::*;

    #[tokio::test]
    async fn a_hit_carries_the_age_the_response_arrived_with() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
        let mut client = Client::http1(gw.addr()).await;
        fetch(&mut client, "/a?cc=max-age:600&h.age=42", &[]).await;
        let hit = fetch(&mut client, "/a?cc=max-age:600&h.age=42", &[]).await;
        assert_eq!(x_cache(&hit), "HIT");
        let age = age_of(&hit);
        assert!((42..45).contains(&age), "Age {age}");
        assert_eq!(hit.headers.get_all("age").iter().count(), 1);
    }

    #[tokio::test]
    async fn after_a_304_the_age_is_the_304s() {
        let origin = origin().await;
        // `h.age` is left out of the key, so one URL gets answers of different ages.
        let gw = gateway(&config(origin.addr, "{ query: { ignore: [h.age] } }"));
        let mut client = Client::http1(gw.addr()).await;
        // Stored one second before it goes stale.
        fetch(&mut client, "/r?cc=max-age:60&etag=v1&h.age=59", &[]).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // Revalidated: the origin's 304 says the response is 7 seconds old.
        let revalidated = fetch(&mut client, "/r?cc=max-age:60&etag=v1&h.age=7", &[]).await;
        assert_eq!(x_cache(&revalidated), "REVALIDATED");
        assert_eq!(origin.count("/r 304"), 1);
        let age = age_of(&revalidated);
        assert!((7..10).contains(&age), "Age {age} after a 304 with Age 7");
        let hit = fetch(&mut client, "/r?cc=max-age:60&etag=v1&h.age=7", &[]).await;
        assert_eq!(x_cache(&hit), "HIT");
        assert!((7..10).contains(&age_of(&hit)));
    }
}

/// §4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10: a shared cache never serves these stale, whatever
/// the route allows; when revalidation fails the client gets an error.
mod no_stale_without_permission {
    use super::*;

    #[tokio::test]
    async fn must_revalidate_proxy_revalidate_and_s_maxage_get_504_when_the_origin_is_down() {
        let origin = origin().await;
        // The route would allow an hour of stale copies on errors.
        let gw = gateway(&config(
            origin.addr,
            "{ stale_if_error: 1h, stale_while_revalidate: 1h }",
        ));
        let mut client = Client::http1(gw.addr()).await;
        let cases = [
            ("/must", "cc=max-age:1,must-revalidate", 504),
            ("/proxy", "cc=max-age:1,proxy-revalidate", 504),
            ("/shared", "cc=s-maxage:1", 504),
            // Without such a directive the route's windows apply.
            ("/plain", "cc=max-age:1", 200),
        ];
        for (path, query, _) in &cases {
            let first = fetch(&mut client, &format!("{path}?{query}"), &[]).await;
            assert_eq!(x_cache(&first), "MISS");
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        origin.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for (path, query, status) in &cases {
            let mut client = Client::http1(gw.addr()).await;
            let reply = fetch(&mut client, &format!("{path}?{query}"), &[]).await;
            assert_eq!(reply.status, *status, "{path}: {}", reply.text());
            if *status == 504 {
                assert_ne!(x_cache(&reply), "STALE", "{path}");
                assert_eq!(
                    reply.json()["error"],
                    "stored response could not be revalidated"
                );
            } else {
                assert_eq!(x_cache(&reply), "STALE", "{path}");
            }
        }
    }

    #[tokio::test]
    async fn must_revalidate_is_revalidated_not_served_stale_while_revalidating() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ stale_while_revalidate: 1h }"));
        let mut client = Client::http1(gw.addr()).await;
        for cc in ["max-age:1,must-revalidate", "s-maxage:1"] {
            let path = format!("/swr-{}?cc={cc}&etag=e", cc.len());
            fetch(&mut client, &path, &[]).await;
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let reply = fetch(&mut client, &path, &[]).await;
            assert_eq!(x_cache(&reply), "REVALIDATED", "{cc}");
        }
    }
}

/// §4.4: a non-error response to an unsafe method invalidates what is stored for its target,
/// and for its `Location` and `Content-Location` on the same host.
mod invalidation {
    use super::*;

    async fn send(
        client: &mut Client,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = req(method, path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        client.request(request.body(empty()).unwrap()).await
    }

    async fn stored(client: &mut Client, path: &str, headers: &[(&str, &str)]) -> bool {
        x_cache(&fetch(client, path, headers).await) == "HIT"
    }

    #[tokio::test]
    async fn unsafe_methods_invalidate_the_target_uri() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 1h }"));
        let mut client = Client::http1(gw.addr()).await;
        for method in ["POST", "PUT", "DELETE", "PATCH", "FROBNICATE"] {
            let path = format!("/doc-{method}?cc=max-age:600");
            fetch(&mut client, &path, &[]).await;
            assert!(stored(&mut client, &path, &[]).await, "{method}");
            let reply = send(&mut client, method, &path, &[]).await;
            assert_eq!(reply.status, 200, "{method}");
            assert!(
                !stored(&mut client, &path, &[]).await,
                "{method} left the entry"
            );
        }
        // Safe methods do not.
        let path = "/safe?cc=max-age:600";
        fetch(&mut client, path, &[]).await;
        send(&mut client, "OPTIONS", path, &[]).await;
        assert!(stored(&mut client, path, &[]).await);
    }

    #[tokio::test]
    async fn an_error_response_invalidates_nothing() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 1h }"));
        let mut client = Client::http1(gw.addr()).await;
        let path = "/kept?cc=max-age:600";
        fetch(&mut client, path, &[]).await;
        origin
            .fail_with
            .store(500, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(send(&mut client, "POST", path, &[]).await.status, 500);
        origin
            .fail_with
            .store(0, std::sync::atomic::Ordering::SeqCst);
        assert!(stored(&mut client, path, &[]).await);
    }

    #[tokio::test]
    async fn every_variant_and_key_part_of_the_uri_goes() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 1h, key: [header:x-tenant] }"));
        let mut client = Client::http1(gw.addr()).await;
        let path = "/v?cc=max-age:600&vary=accept-encoding";
        let callers: [&[(&str, &str)]; 3] = [
            &[("x-tenant", "a"), ("accept-encoding", "gzip")],
            &[("x-tenant", "a")],
            &[("x-tenant", "b"), ("accept-encoding", "br")],
        ];
        for caller in callers {
            fetch(&mut client, path, caller).await;
            assert!(stored(&mut client, path, caller).await, "{caller:?}");
        }
        send(&mut client, "POST", path, &[("x-tenant", "a")]).await;
        for caller in callers {
            assert!(
                !stored(&mut client, path, caller).await,
                "{caller:?} survived"
            );
        }
    }

    #[tokio::test]
    async fn location_and_content_location_on_the_same_host() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 1h }"));
        let mut client = Client::http1(gw.addr()).await;
        let host = format!("{}", gw.addr());
        for path in ["/items/1", "/items/2", "/items/3", "/items/4"] {
            fetch(&mut client, path, &[]).await;
            assert!(stored(&mut client, path, &[]).await);
        }
        let other = enc("http://elsewhere.example/items/3");
        let absolute = enc(&format!("http://{host}/items/4"));
        send(
            &mut client,
            "POST",
            &format!("/items?h.location=%2Fitems%2F1&h.content-location=%2Fitems%2F2&h.x={other}"),
            &[],
        )
        .await;
        send(
            &mut client,
            "POST",
            &format!("/new?h.location={other}"),
            &[],
        )
        .await;
        send(
            &mut client,
            "POST",
            &format!("/new?h.content-location={absolute}"),
            &[],
        )
        .await;
        assert!(!stored(&mut client, "/items/1", &[]).await, "Location");
        assert!(
            !stored(&mut client, "/items/2", &[]).await,
            "Content-Location"
        );
        assert!(
            stored(&mut client, "/items/3", &[]).await,
            "another host's URI was invalidated"
        );
        assert!(
            !stored(&mut client, "/items/4", &[]).await,
            "absolute URI on the same host"
        );
    }
}

/// §3.2 and §4.3.4: a 304 freshens the stored response with its header fields, except those
/// that describe the stored body; its cookies go to the one client.
mod freshening_with_304 {
    use super::*;

    #[tokio::test]
    async fn a_304_updates_headers_but_not_body_fields_etag_or_cookies() {
        let origin = origin().await;
        let ignore =
            "[cc, h.x-version, h.content-encoding, h.content-range, h.set-cookie, etag304]";
        let gw = gateway(&config(
            origin.addr,
            &format!("{{ query: {{ ignore: {ignore} }} }}"),
        ));
        let mut client = Client::http1(gw.addr()).await;
        let first = fetch(&mut client, "/f?etag=v1&cc=max-age:1&h.x-version=1", &[]).await;
        assert_eq!(x_cache(&first), "MISS");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let revalidate = format!(
            "/f?etag=v1&cc=max-age:60&h.x-version=2&h.content-encoding=gzip&h.content-range={}&h.set-cookie={}&etag304=v2",
            enc("bytes 0-1/2"),
            enc("session=for-this-client")
        );
        let reply = fetch(&mut client, &revalidate, &[]).await;
        assert_eq!(x_cache(&reply), "REVALIDATED");
        assert_eq!(
            reply.text(),
            first.text(),
            "the stored body is what is served"
        );
        assert_eq!(
            reply.header("x-version"),
            Some("2"),
            "headers from the 304 win"
        );
        assert_eq!(reply.header("content-encoding"), None);
        assert_eq!(reply.header("content-range"), None);
        assert_eq!(
            reply.header("etag"),
            Some("\"v1\""),
            "a different ETag replaced the stored one"
        );
        assert_eq!(reply.header("set-cookie"), Some("session=for-this-client"));
        // The next client gets the freshened entry, without the first client's cookie.
        let hit = fetch(&mut client, "/f?etag=v1", &[]).await;
        assert_eq!(x_cache(&hit), "HIT");
        assert_eq!(hit.header("x-version"), Some("2"));
        assert_eq!(hit.header("set-cookie"), None, "a 304's cookie was stored");
        assert_eq!(hit.header("etag"), Some("\"v1\""));
        assert_eq!(hit.header("content-encoding"), None);
    }
}

/// §5.2.2.3: with `must-understand`, a response whose status the cache does not know is not
/// stored.
mod must_understand {
    use super::*;

    #[tokio::test]
    async fn unknown_statuses_are_not_stored_known_ones_are() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
        let mut client = Client::http1(gw.addr()).await;
        let cases = [
            ("/known", "cc=max-age:600,must-understand", true),
            (
                "/unknown",
                "cc=max-age:600,must-understand&status=299",
                false,
            ),
            // Without the directive a 299 with explicit freshness is stored.
            ("/plain", "cc=max-age:600&status=299", true),
        ];
        for (path, query, stored) in cases {
            let target = format!("{path}?{query}");
            fetch(&mut client, &target, &[]).await;
            let second = fetch(&mut client, &target, &[]).await;
            assert_eq!(x_cache(&second) == "HIT", stored, "{target}");
        }
    }
}

/// §5.2.1: what a client's own `Cache-Control` asks of the cache.
mod request_directives {
    use super::*;

    fn cc(value: &str) -> [(&str, &str); 1] {
        [("cache-control", value)]
    }

    #[tokio::test]
    async fn max_stale_accepts_stale_copies_unless_the_response_forbids_it() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
        let mut client = Client::http1(gw.addr()).await;
        fetch(&mut client, "/ms?cc=max-age:1", &[]).await;
        fetch(&mut client, "/strict?cc=max-age:1,must-revalidate", &[]).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for value in ["max-stale=60", "max-stale"] {
            let reply = fetch(&mut client, "/ms?cc=max-age:1", &cc(value)).await;
            assert_eq!(x_cache(&reply), "STALE", "{value}");
        }
        assert_eq!(origin.count("/ms"), 1);
        // Not stale enough to pass a max-stale of 0; must-revalidate ignores max-stale.
        let reply = fetch(&mut client, "/ms?cc=max-age:1", &cc("max-stale=0")).await;
        assert_eq!(x_cache(&reply), "MISS");
        let reply = fetch(
            &mut client,
            "/strict?cc=max-age:1,must-revalidate",
            &cc("max-stale"),
        )
        .await;
        assert_eq!(x_cache(&reply), "MISS");
        assert_eq!(origin.count("/strict"), 2);
    }

    #[tokio::test]
    async fn min_fresh_and_max_age_refuse_copies_too_close_to_stale_or_too_old() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
        let mut client = Client::http1(gw.addr()).await;
        fetch(&mut client, "/mf?cc=max-age:600&h.age=100", &[]).await;
        assert_eq!(
            x_cache(
                &fetch(
                    &mut client,
                    "/mf?cc=max-age:600&h.age=100",
                    &cc("min-fresh=10")
                )
                .await
            ),
            "HIT"
        );
        assert_eq!(
            x_cache(
                &fetch(
                    &mut client,
                    "/mf?cc=max-age:600&h.age=100",
                    &cc("min-fresh=550")
                )
                .await
            ),
            "MISS"
        );
        fetch(&mut client, "/ma?cc=max-age:600&h.age=100", &[]).await;
        assert_eq!(
            x_cache(
                &fetch(
                    &mut client,
                    "/ma?cc=max-age:600&h.age=100",
                    &cc("max-age=200")
                )
                .await
            ),
            "HIT"
        );
        assert_eq!(
            x_cache(
                &fetch(
                    &mut client,
                    "/ma?cc=max-age:600&h.age=100",
                    &cc("max-age=50")
                )
                .await
            ),
            "MISS"
        );
    }

    #[tokio::test]
    async fn only_if_cached_never_asks_the_upstream() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
        let mut client = Client::http1(gw.addr()).await;
        let reply = fetch(&mut client, "/oic?cc=max-age:600", &cc("only-if-cached")).await;
        assert_eq!(reply.status, 504);
        assert_eq!(origin.count("/oic"), 0);
        fetch(&mut client, "/oic?cc=max-age:600", &[]).await;
        let reply = fetch(&mut client, "/oic?cc=max-age:600", &cc("only-if-cached")).await;
        assert_eq!((reply.status.as_u16(), x_cache(&reply)), (200, "HIT"));
        assert_eq!(origin.count("/oic"), 1);
    }

    #[tokio::test]
    async fn no_cache_revalidates_the_stored_copy_instead_of_refetching() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 30s, stale_if_error: 1h }"));
        let mut client = Client::http1(gw.addr()).await;
        let first = fetch(&mut client, "/nc?cc=max-age:600&etag=t", &[]).await;
        for value in ["no-cache", "max-age=0"] {
            let reply = fetch(&mut client, "/nc?cc=max-age:600&etag=t", &cc(value)).await;
            assert_eq!(x_cache(&reply), "REVALIDATED", "{value}");
            assert_eq!(reply.text(), first.text());
        }
        assert_eq!(origin.count("/nc 304"), 2);
        // Without a validator to ask with, the answer is fetched again.
        fetch(&mut client, "/nv?cc=max-age:600", &[]).await;
        let reply = fetch(&mut client, "/nv?cc=max-age:600", &cc("no-cache")).await;
        assert_eq!(x_cache(&reply), "MISS");
        assert_eq!(origin.count("/nv"), 2);
        // A client that asked for validation gets the error, not the unvalidated copy.
        origin.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut client = Client::http1(gw.addr()).await;
        let reply = fetch(&mut client, "/nc?cc=max-age:600&etag=t", &cc("no-cache")).await;
        assert_eq!(reply.status, 502);
        // Without no-cache, the fresh copy is served as usual.
        let reply = fetch(&mut client, "/nc?cc=max-age:600&etag=t", &[]).await;
        assert_eq!(x_cache(&reply), "HIT");
    }
}

/// §2 (the cache key): the scheme and the authority with its port are part of the key.
mod cache_key {
    use super::*;
    use http_body_util::BodyExt;

    /// One GET over TLS (trusting `cert_pem`), answering the `x-cache` label.
    async fn tls_fetch(
        addr: std::net::SocketAddr,
        cert_pem: &str,
        host: &str,
        path: &str,
    ) -> String {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes()).unwrap();
        roots.add(der).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, stream)
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = http::Request::builder()
            .uri(path)
            .header("host", host)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let label = response.headers()["x-cache"].to_str().unwrap().to_string();
        response.into_body().collect().await.unwrap();
        label
    }

    #[tokio::test]
    async fn an_answer_fetched_over_one_scheme_is_never_served_on_the_other() {
        let origin = origin().await;
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert_file = temp_path("cache-tls.pem");
        let key_file = temp_path("cache-tls.key");
        std::fs::write(&cert_file, issued.cert.pem()).unwrap();
        std::fs::write(&key_file, issued.signing_key.serialize_pem()).unwrap();
        let yaml = config(origin.addr, "{ ttl: 1h }").replace(
            "listeners: [{ name: http, address: 127.0.0.1:0 }]",
            &format!(
                "listeners:\n  - {{ name: http, address: 127.0.0.1:0 }}\n  - {{ name: https, address: 127.0.0.1:0, tls: {{ certificates: [{{ cert_file: {}, key_file: {} }}] }} }}",
                cert_file.display(),
                key_file.display()
            ),
        );
        let gw = gateway(&yaml);
        let host = [("host", "shop.example")];
        let mut client = Client::http1(gw.addr()).await;
        fetch(&mut client, "/page", &host).await;
        assert_eq!(x_cache(&fetch(&mut client, "/page", &host).await), "HIT");
        let https = gw.addr_of("https");
        let pem = issued.cert.pem();
        assert_eq!(
            tls_fetch(https, &pem, "shop.example", "/page").await,
            "MISS"
        );
        assert_eq!(tls_fetch(https, &pem, "shop.example", "/page").await, "HIT");
        assert_eq!(origin.count("/page"), 2);
        // The port is part of the authority: another port, another entry.
        let other_port = [("host", "shop.example:8443")];
        assert_eq!(
            x_cache(&fetch(&mut client, "/page", &other_port).await),
            "MISS"
        );
    }
}

/// §4.1: equivalent values of a selecting header select the same stored variant.
mod vary_normalisation {
    use super::*;

    #[tokio::test]
    async fn whitespace_line_splits_order_and_case_do_not_split_variants() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 1h }"));
        let mut client = Client::http1(gw.addr()).await;
        let path = "/n?cc=max-age:600&vary=accept-encoding";
        fetch(&mut client, path, &[("accept-encoding", "gzip, br")]).await;
        let same: [&[(&str, &str)]; 4] = [
            &[("accept-encoding", "br,gzip")],
            &[("accept-encoding", "BR ,  GZIP")],
            &[("accept-encoding", "gzip"), ("accept-encoding", "br")],
            &[("accept-encoding", "gzip,, br")],
        ];
        for headers in same {
            assert_eq!(
                x_cache(&fetch(&mut client, path, headers).await),
                "HIT",
                "{headers:?}"
            );
        }
        assert_eq!(
            x_cache(&fetch(&mut client, path, &[("accept-encoding", "gzip")]).await),
            "MISS"
        );
        // Other headers: whitespace and line splits are folded, order still counts.
        let path = "/f?cc=max-age:600&vary=x-flavour";
        fetch(&mut client, path, &[("x-flavour", "a,b")]).await;
        assert_eq!(
            x_cache(&fetch(&mut client, path, &[("x-flavour", "a, b")]).await),
            "HIT"
        );
        assert_eq!(
            x_cache(&fetch(&mut client, path, &[("x-flavour", "a"), ("x-flavour", "b")]).await),
            "HIT"
        );
        assert_eq!(
            x_cache(&fetch(&mut client, path, &[("x-flavour", "b,a")]).await),
            "MISS"
        );
    }
}

/// RFC 9110 §13.1.2: `If-None-Match` is answered from the cache with the weak comparison.
/// (`If-Modified-Since` against the stored `Date` when there is no `Last-Modified`, RFC 9111
/// §4.3.2, is checked in tests/cache.rs.)
mod conditional_requests {
    use super::*;

    #[tokio::test]
    async fn if_none_match_is_a_weak_comparison() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ ttl: 1h }"));
        let mut client = Client::http1(gw.addr()).await;
        fetch(&mut client, "/e?cc=max-age:600&etag=v1", &[]).await;
        for (header, status) in [
            ("\"v1\"", 304),
            ("W/\"v1\"", 304),
            ("\"x\", W/\"v1\"", 304),
            ("*", 304),
            ("\"v2\"", 200),
            ("v1", 200),
        ] {
            let reply = fetch(
                &mut client,
                "/e?cc=max-age:600&etag=v1",
                &[("if-none-match", header)],
            )
            .await;
            assert_eq!(reply.status, status, "If-None-Match: {header}");
        }
    }
}

/// §4.2.2: without explicit freshness, a heuristically cacheable response is fresh for a tenth
/// of the time since its `Last-Modified`, at most a day (the route's `ttl` wins when set).
mod heuristic_freshness {
    use super::*;

    fn ago(seconds: u64) -> String {
        enc(&httpdate::fmt_http_date(
            SystemTime::now() - Duration::from_secs(seconds),
        ))
    }

    #[tokio::test]
    async fn a_tenth_of_the_time_since_last_modified_capped_at_a_day() {
        let origin = origin().await;
        let gw = gateway(&config(origin.addr, "{ lock_timeout: 1s }"));
        let mut client = Client::http1(gw.addr()).await;
        let stored = |reply: &Reply| x_cache(reply) == "HIT";
        let cases = [
            // (path, query, stored)
            ("/lm100", format!("h.last-modified={}", ago(100)), true),
            ("/none", String::new(), false),
            (
                "/unknown",
                format!("h.last-modified={}&status=299", ago(100)),
                false,
            ),
            // 30 days old: 3 days by the fraction, a day by the cap, so an arrival age over
            // a day is already stale.
            (
                "/capped",
                format!("h.last-modified={}&h.age=90000", ago(30 * 86400)),
                false,
            ),
            (
                "/in-cap",
                format!("h.last-modified={}&h.age=80000", ago(30 * 86400)),
                true,
            ),
        ];
        for (path, query, expected) in &cases {
            let target = format!("{path}?{query}");
            fetch(&mut client, &target, &[]).await;
            let second = fetch(&mut client, &target, &[]).await;
            assert_eq!(stored(&second), *expected, "{target}");
        }
        // Modified 5 s ago: fresh for half a second.
        let target = format!("/recent?h.last-modified={}", ago(5));
        fetch(&mut client, &target, &[]).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(x_cache(&fetch(&mut client, &target, &[]).await), "MISS");
    }
}
