//! The `cache` filter against an origin that sets its caching headers on command.

use crate::support::origin::*;
use crate::support::*;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn fresh_responses_are_served_from_the_cache_with_their_age() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
    let mut client = Client::http1(gw.addr()).await;
    let first = fetch(&mut client, "/a?cc=max-age:60", &[]).await;
    assert_eq!((first.status.as_u16(), x_cache(&first)), (200, "MISS"));
    let second = fetch(&mut client, "/a?cc=max-age:60", &[]).await;
    assert_eq!(x_cache(&second), "HIT");
    assert_eq!(second.text(), first.text());
    assert_eq!(second.header("age"), Some("0"));
    assert_eq!(second.header("cache-control"), Some("max-age=60"));
    assert_eq!(origin.count("/a"), 1);
    // HEAD is answered from the GET's entry; POST always goes through.
    let head = client
        .request(req("HEAD", "/a?cc=max-age:60").body(empty()).unwrap())
        .await;
    assert_eq!((x_cache(&head), head.text().len()), ("HIT", 0));
    let post = client
        .request(req("POST", "/a?cc=max-age:60").body(empty()).unwrap())
        .await;
    assert_eq!(x_cache(&post), "BYPASS");
    assert_eq!(origin.count("/a"), 2);
    // A client asking for a fresh copy goes upstream (and refreshes the entry).
    let fresh = fetch(
        &mut client,
        "/a?cc=max-age:60",
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(x_cache(&fresh), "MISS");
    assert_eq!(origin.count("/a"), 3);
}

#[tokio::test]
async fn what_must_not_be_shared_is_never_stored() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
    let mut client = Client::http1(gw.addr()).await;
    for (path, headers) in [
        ("/no-store?cc=no-store", vec![]),
        ("/private?cc=private,max-age:60", vec![]),
        ("/cookie?cc=max-age:60&cookie=1", vec![]),
        ("/vary-star?cc=max-age:60&vary=*", vec![]),
        (
            "/auth?cc=max-age:60",
            vec![("authorization", "Bearer alice")],
        ),
        ("/error?status=503", vec![]),
    ] {
        fetch(&mut client, path, &headers).await;
        let again = fetch(&mut client, path, &headers).await;
        assert_eq!(x_cache(&again), "MISS", "{path}");
        let name = path.split('?').next().unwrap();
        assert_eq!(origin.count(name), 2, "{path}");
    }
    // Another user must never see alice's private answer: and with `public`, sharing is fine.
    fetch(
        &mut client,
        "/shared?cc=public,max-age:60",
        &[("authorization", "Bearer alice")],
    )
    .await;
    let bob = fetch(
        &mut client,
        "/shared?cc=public,max-age:60",
        &[("authorization", "Bearer bob")],
    )
    .await;
    assert_eq!(x_cache(&bob), "HIT");
}

#[tokio::test]
async fn variants_follow_vary() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
    let mut client = Client::http1(gw.addr()).await;
    let path = "/v?cc=max-age:60&vary=accept-encoding";
    let gzip = fetch(&mut client, path, &[("accept-encoding", "gzip")]).await;
    let plain = fetch(&mut client, path, &[]).await;
    assert_eq!((x_cache(&gzip), x_cache(&plain)), ("MISS", "MISS"));
    let gzip_again = fetch(&mut client, path, &[("accept-encoding", "gzip")]).await;
    let plain_again = fetch(&mut client, path, &[]).await;
    assert_eq!(
        (x_cache(&gzip_again), x_cache(&plain_again)),
        ("HIT", "HIT")
    );
    assert!(gzip_again.text().ends_with("enc=gzip"));
    assert!(plain_again.text().ends_with("enc="));
    assert_eq!(origin.count("/v"), 2);
}

#[tokio::test]
async fn route_ttl_override_and_keys() {
    let origin = origin().await;
    let gw = gateway(&config(
        origin.addr,
        "{ ttl_override: 1m, query: { sort: true, ignore: [utm_source] }, key: [header:x-tenant] }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    // The origin says no-cache; the operator overrides freshness.
    fetch(&mut client, "/k?cc=no-cache&b=2&a=1", &[("x-tenant", "t1")]).await;
    let same = fetch(
        &mut client,
        "/k?a=1&cc=no-cache&b=2&utm_source=mail",
        &[("x-tenant", "t1")],
    )
    .await;
    assert_eq!(x_cache(&same), "HIT");
    let other_tenant = fetch(&mut client, "/k?cc=no-cache&b=2&a=1", &[("x-tenant", "t2")]).await;
    assert_eq!(x_cache(&other_tenant), "MISS");
    assert_eq!(origin.count("/k"), 2);
}

#[tokio::test]
async fn client_conditionals_are_answered_from_the_cache() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{}"));
    let mut client = Client::http1(gw.addr()).await;
    fetch(&mut client, "/e?cc=max-age:60&etag=v1", &[]).await;
    let not_modified = fetch(
        &mut client,
        "/e?cc=max-age:60&etag=v1",
        &[("if-none-match", "\"v1\"")],
    )
    .await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.text().is_empty());
    let changed = fetch(
        &mut client,
        "/e?cc=max-age:60&etag=v1",
        &[("if-none-match", "\"v0\"")],
    )
    .await;
    assert_eq!(changed.status, 200);
    assert_eq!(origin.count("/e"), 1);
}

#[tokio::test]
async fn large_and_truncated_bodies_are_not_stored() {
    let origin = origin().await;
    let gw = gateway(&config(
        origin.addr,
        "{ max_size: 1MiB, max_object_size: 10KiB }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    let big = fetch(&mut client, "/big?cc=max-age:60&size=20000", &[]).await;
    assert_eq!(big.text().len(), 20000, "streams through whole");
    assert_eq!(
        x_cache(&fetch(&mut client, "/big?cc=max-age:60&size=20000", &[]).await),
        "MISS"
    );
    // The origin promises 1000 bytes, sends 10 and hangs up: nothing may be kept. (A fresh
    // origin: it cuts only the first request of a connection.)
    let origin = self::origin().await;
    let gw = gateway(&config(origin.addr, "{}"));
    for _ in 0..2 {
        let mut client = Client::http1(gw.addr()).await;
        let response = client
            .send(req("GET", "/cut?truncate=1").body(empty()).unwrap())
            .await
            .unwrap();
        // The client reads to the end: the body breaks off after 10 bytes.
        let read = response.into_body().collect().await;
        assert!(read.is_err(), "{:?}", read.map(|b| b.to_bytes()));
    }
    assert_eq!(
        origin.count("/cut"),
        2,
        "a truncated body was served from the cache"
    );
}

#[tokio::test]
async fn the_store_is_bounded_in_bytes_and_survives_reloads() {
    let origin = origin().await;
    let yaml = config(origin.addr, "{ max_size: 256KiB, max_object_size: 32KiB }");
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    for i in 0..40 {
        fetch(
            &mut client,
            &format!("/o{i}?cc=max-age:600&size=16384"),
            &[],
        )
        .await;
    }
    // 40 x 16 KiB = 640 KiB went through a 256 KiB store: the oldest were evicted.
    let metrics = get(gw.admin(), "/metrics").await.text();
    let bytes: f64 = metrics
        .lines()
        .find(|l| l.starts_with("cache_bytes{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("cache_bytes metric");
    assert!(bytes <= 256.0 * 1024.0, "{bytes}");
    assert!(
        metrics.contains("cache_evictions_total{filter=\"site\"}"),
        "{metrics}"
    );
    let recent = fetch(&mut client, "/o39?cc=max-age:600&size=16384", &[]).await;
    assert_eq!(x_cache(&recent), "HIT");
    // An unrelated reload keeps what is stored.
    let with_route = format!(
        "{yaml}  - name: ping\n    match: {{ path: /ping }}\n    respond: {{ body: pong }}\n"
    );
    gw.reload(&with_route).unwrap();
    assert_eq!(
        x_cache(&fetch(&mut client, "/o39?cc=max-age:600&size=16384", &[]).await),
        "HIT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_upstream_request() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ lock_timeout: 5s }"));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let addr = gw.addr();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::http1(addr).await;
            fetch(&mut client, "/cold?cc=max-age:60&delay=300", &[]).await
        }));
    }
    let mut labels = HashMap::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "/cold #1 enc=");
        *labels.entry(x_cache(&reply).to_string()).or_insert(0) += 1;
    }
    assert_eq!(origin.count("/cold"), 1, "{labels:?}");
    assert_eq!(labels.get("MISS"), Some(&1), "{labels:?}");
}

#[tokio::test]
async fn stale_copies_stand_in_when_the_upstream_fails() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ stale_if_error: 1h }"));
    let mut client = Client::http1(gw.addr()).await;
    let first = fetch(&mut client, "/s?cc=max-age:1", &[]).await;
    // Its own stale-if-error wins over the route's; must-revalidate forbids stale use.
    fetch(&mut client, "/own?cc=max-age:1,stale-if-error:0", &[]).await;
    fetch(&mut client, "/strict?cc=max-age:1,must-revalidate", &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    origin.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let stale = fetch(&mut client, "/s?cc=max-age:1", &[]).await;
    assert_eq!((stale.status.as_u16(), x_cache(&stale)), (200, "STALE"));
    assert_eq!(stale.text(), first.text());
    assert!(stale.header("age").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(
        fetch(&mut client, "/own?cc=max-age:1,stale-if-error:0", &[])
            .await
            .status,
        502
    );
    // A copy that must be revalidated and cannot be: 504 (RFC 9111 §5.2.2.2).
    assert_eq!(
        fetch(&mut client, "/strict?cc=max-age:1,must-revalidate", &[])
            .await
            .status,
        504
    );
    // The upstream is back: fresh answers again.
    origin
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let mut client = Client::http1(gw.addr()).await;
    let fresh = fetch(&mut client, "/s?cc=max-age:1", &[]).await;
    assert_eq!(x_cache(&fresh), "MISS");
    assert_eq!(fresh.text(), "/s #2 enc=");
}

#[tokio::test]
async fn stale_entries_are_revalidated_and_304s_refresh_them() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{}"));
    let mut client = Client::http1(gw.addr()).await;
    let first = fetch(&mut client, "/r?cc=max-age:1&etag=v1", &[]).await;
    assert_eq!(x_cache(&first), "MISS");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Stale: the gateway asks with If-None-Match; the origin's 304 refreshes the copy, and
    // the client (which asked unconditionally) gets the whole response.
    let revalidated = fetch(&mut client, "/r?cc=max-age:1&etag=v1", &[]).await;
    assert_eq!(
        (revalidated.status.as_u16(), x_cache(&revalidated)),
        (200, "REVALIDATED")
    );
    assert_eq!(revalidated.text(), first.text());
    assert_eq!(origin.count("/r 304"), 1);
    // Fresh again for another second.
    assert_eq!(
        x_cache(&fetch(&mut client, "/r?cc=max-age:1&etag=v1", &[]).await),
        "HIT"
    );
    // Two requests reached the origin, one of them answered 304: the body went once.
    assert_eq!((origin.count("/r"), origin.count("/r 304")), (2, 1));
}

async fn purge(gw: &TestGateway, query: &str) -> Reply {
    let mut admin = Client::http1(gw.admin()).await;
    admin
        .request(
            req("DELETE", &format!("/cache?{query}"))
                .body(empty())
                .unwrap(),
        )
        .await
}

#[tokio::test]
async fn entries_are_purged_by_url_prefix_or_route() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 1h }"));
    let mut client = Client::http1(gw.addr()).await;
    for path in ["/p/one", "/p/two", "/q/three"] {
        fetch(&mut client, path, &[]).await;
        assert_eq!(x_cache(&fetch(&mut client, path, &[]).await), "HIT");
    }
    let one = purge(&gw, &format!("key={}/p/one", gw.addr())).await;
    assert_eq!(one.json()["purged"], 1);
    assert_eq!(x_cache(&fetch(&mut client, "/p/one", &[]).await), "MISS");
    assert_eq!(x_cache(&fetch(&mut client, "/p/two", &[]).await), "HIT");
    let prefix = purge(&gw, "prefix=/p/").await;
    assert_eq!(prefix.json()["purged"], 2);
    assert_eq!(x_cache(&fetch(&mut client, "/q/three", &[]).await), "HIT");
    assert_eq!(purge(&gw, "route=site").await.json()["purged"], 1);
    assert_eq!(purge(&gw, "route=elsewhere").await.json()["purged"], 0);
    assert_eq!(purge(&gw, "").await.status, 400);
    assert_eq!(x_cache(&fetch(&mut client, "/q/three", &[]).await), "MISS");
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ stale_while_revalidate: 1m }"));
    let mut client = Client::http1(gw.addr()).await;
    let first = fetch(&mut client, "/w?cc=max-age:1", &[]).await;
    assert_eq!(first.text(), "/w #1 enc=");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Stale: every request is answered from the cache at once; one refresh goes upstream.
    for _ in 0..5 {
        let stale = fetch(&mut client, "/w?cc=max-age:1", &[]).await;
        if x_cache(&stale) == "HIT" {
            break;
        }
        assert_eq!((x_cache(&stale), stale.text()), ("STALE", first.text()));
    }
    let mut refreshed = false;
    for _ in 0..50 {
        let reply = fetch(&mut client, "/w?cc=max-age:1", &[]).await;
        if x_cache(&reply) == "HIT" && reply.text() == "/w #2 enc=" {
            refreshed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refreshed, "the entry was never refreshed in the background");
    assert_eq!(origin.count("/w"), 2);
}

#[tokio::test]
async fn an_open_breaker_behind_the_cache_still_gets_users_content() {
    let origin = origin().await;
    let gw = gateway(&config(
        origin.addr,
        "{ stale_if_error: 1h }\n      - circuit_breaker: { consecutive_failures: 1, open_for: 1m }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    let first = fetch(&mut client, "/b?cc=max-age:1", &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    origin.down.store(true, std::sync::atomic::Ordering::SeqCst);
    // The failure trips the breaker; the cache answers with its stale copy.
    let stale = fetch(&mut client, "/b?cc=max-age:1", &[]).await;
    assert_eq!((x_cache(&stale), stale.text()), ("STALE", first.text()));
    let asked = origin.count("/b");
    // Open breaker: 503 without calling the origin, turned into the stale copy.
    let stale = fetch(&mut client, "/b?cc=max-age:1", &[]).await;
    assert_eq!((stale.status.as_u16(), x_cache(&stale)), (200, "STALE"));
    assert_eq!(origin.count("/b"), asked);
    let upstreams = get(gw.admin(), "/upstreams").await.json();
    assert_eq!(
        upstreams["upstreams"][0]["circuit_breakers"][0]["state"],
        "open"
    );
}

#[tokio::test]
async fn if_modified_since_is_answered_from_the_cache() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 1h }"));
    let mut client = Client::http1(gw.addr()).await;
    // Without a Last-Modified, the stored response's Date stands in for it (RFC 9111
    // §4.3.2): not modified since a later date, modified since an earlier one.
    fetch(&mut client, "/m", &[]).await;
    let later =
        httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(60));
    let reply = fetch(&mut client, "/m", &[("if-modified-since", &later)]).await;
    assert_eq!((reply.status.as_u16(), x_cache(&reply)), (304, "HIT"));
    let earlier = "Sun, 01 Jan 2023 00:00:00 GMT";
    let reply = fetch(&mut client, "/m", &[("if-modified-since", earlier)]).await;
    assert_eq!((reply.status.as_u16(), x_cache(&reply)), (200, "HIT"));
    let since = httpdate::fmt_http_date(std::time::SystemTime::now());
    // With one, a copy not modified since the client's date is a 304.
    fetch(&mut client, "/n?modified=1", &[]).await;
    let reply = fetch(
        &mut client,
        "/n?modified=1",
        &[("if-modified-since", &since)],
    )
    .await;
    assert_eq!((reply.status.as_u16(), x_cache(&reply)), (304, "HIT"));
    let old = "Sun, 01 Jan 2023 00:00:00 GMT";
    let reply = fetch(&mut client, "/n?modified=1", &[("if-modified-since", old)]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(origin.count("/n"), 1);
}

#[tokio::test]
async fn answers_to_authorized_requests_are_kept_per_credential_unless_shared() {
    let origin = origin().await;
    // `true` (per_credential): each credential has its own entries.
    for mode in ["true", "per_credential"] {
        let gw = gateway(&config(
            origin.addr,
            &format!("{{ ttl: 30s, cache_authorized: {mode} }}"),
        ));
        let mut client = Client::http1(gw.addr()).await;
        let path = format!("/me-{mode}?cc=max-age:60");
        let name = format!("/me-{mode}");
        let alice = [("authorization", "Bearer alice")];
        let bob = [("authorization", "Bearer bob")];
        let first = fetch(&mut client, &path, &alice).await;
        let again = fetch(&mut client, &path, &alice).await;
        assert_eq!(
            (x_cache(&first), x_cache(&again)),
            ("MISS", "HIT"),
            "{mode}"
        );
        assert_eq!(again.text(), first.text());
        let for_bob = fetch(&mut client, &path, &bob).await;
        assert_eq!(x_cache(&for_bob), "MISS", "{mode}: bob got alice's answer");
        assert_ne!(for_bob.text(), first.text());
        let anonymous = fetch(&mut client, &path, &[]).await;
        assert_eq!(
            x_cache(&anonymous),
            "MISS",
            "{mode}: an anonymous client got alice's answer"
        );
        // Two Authorization fields are not alice's credentials either.
        let doubled = fetch(&mut client, &path, &[alice[0], bob[0]]).await;
        assert_eq!(x_cache(&doubled), "MISS", "{mode}");
        assert_eq!(origin.count(&name), 4, "{mode}");
    }
    // shared: the route declares the content the same for every caller.
    let gw = gateway(&config(
        origin.addr,
        "{ ttl: 30s, cache_authorized: shared }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    fetch(
        &mut client,
        "/catalog?cc=max-age:60",
        &[("authorization", "Bearer alice")],
    )
    .await;
    let bob = fetch(
        &mut client,
        "/catalog?cc=max-age:60",
        &[("authorization", "Bearer bob")],
    )
    .await;
    assert_eq!(x_cache(&bob), "HIT");
    // An unknown mode is a config error.
    let issues = config_errors(&config(origin.addr, "{ cache_authorized: maybe }"));
    assert!(
        issues[0].starts_with("routes[0].filters[0].cache.cache_authorized: expected false, per_credential (or true) or shared"),
        "{:?}",
        issues
    );
}

#[tokio::test]
async fn a_repeated_key_header_is_not_confused_with_its_first_value() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 30s, key: [header:x-tenant] }"));
    let mut client = Client::http1(gw.addr()).await;
    fetch(&mut client, "/t?cc=max-age:60", &[("x-tenant", "t1")]).await;
    let two = fetch(
        &mut client,
        "/t?cc=max-age:60",
        &[("x-tenant", "t1"), ("x-tenant", "t2")],
    )
    .await;
    assert_eq!(x_cache(&two), "MISS");
    let again = fetch(
        &mut client,
        "/t?cc=max-age:60",
        &[("x-tenant", "t1"), ("x-tenant", "t2")],
    )
    .await;
    assert_eq!(x_cache(&again), "HIT");
    assert_eq!(origin.count("/t"), 2);
}

#[tokio::test]
async fn a_named_cache_is_one_store_for_all_its_routes() {
    let origin = origin().await;
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  origin: {{ discovery: {{ static: [{}] }} }}\n\
         filters:\n  pages: {{ cache: {{ ttl: 1h }} }}\n\
         routes:\n\
         \x20 - {{ name: a, match: {{ path_prefix: /a }}, upstream: origin, filters: [ {{ use: pages }} ] }}\n\
         \x20 - {{ name: b, match: {{ path_prefix: /b }}, upstream: origin, filters: [ {{ use: pages }} ] }}\n",
        origin.addr
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    for path in ["/a/1", "/b/2"] {
        fetch(&mut client, path, &[]).await;
        assert_eq!(
            x_cache(&fetch(&mut client, path, &[]).await),
            "HIT",
            "{path}"
        );
    }
    // One store, under the filter's name: its metrics count both routes' entries …
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(
        metrics.contains("cache_entries{filter=\"pages\"} 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("cache_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // … and purging it by that name empties it for both.
    assert_eq!(purge(&gw, "route=pages").await.json()["purged"], 2);
    assert_eq!(x_cache(&fetch(&mut client, "/a/1", &[]).await), "MISS");
    assert_eq!(x_cache(&fetch(&mut client, "/b/2", &[]).await), "MISS");
}

#[test]
fn named_caches_and_breakers_need_a_route_with_an_upstream() {
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        filters:\n  pages: { cache: { ttl: 1h } }\n  guard: { circuit_breaker: { failure_ratio: 0.5 } }\n\
        routes:\n\
        \x20 - { name: ping, match: { path: /ping }, respond: { body: pong }, filters: [ { use: pages } ] }\n\
        \x20 - { name: old, redirect: { location: /new }, filters: [ { use: guard } ] }\n";
    let issues = config_errors(yaml);
    assert!(
        issues[0].starts_with(
            "routes[0].filters[0]: cache filter \"pages\" needs a route with an upstream"
        ),
        "{issues:?}"
    );
    assert!(
        issues[1].starts_with(
            "routes[1].filters[0]: circuit_breaker filter \"guard\" needs a route with an upstream"
        ),
        "{issues:?}"
    );
}

#[tokio::test]
async fn a_breaker_behind_the_cache_judges_the_upstream_not_the_stale_copy() {
    let origin = origin().await;
    let gw = gateway(&config(
        origin.addr,
        "{ stale_if_error: 1h }\n      - circuit_breaker: { consecutive_failures: 3, open_for: 1m }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    let first = fetch(&mut client, "/s?cc=max-age:1", &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // The origin answers 503: every client still gets the stale copy, but the breaker counts
    // the upstream's own failures and opens after three.
    origin
        .fail_with
        .store(503, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        let stale = fetch(&mut client, "/s?cc=max-age:1", &[]).await;
        assert_eq!((stale.status.as_u16(), x_cache(&stale)), (200, "STALE"));
        assert_eq!(stale.text(), first.text());
    }
    let upstreams = get(gw.admin(), "/upstreams").await.json();
    assert_eq!(
        upstreams["upstreams"][0]["circuit_breakers"][0]["state"], "open",
        "the breaker took stale copies for upstream successes"
    );
    let asked = origin.count("/s");
    let stale = fetch(&mut client, "/s?cc=max-age:1", &[]).await;
    assert_eq!(x_cache(&stale), "STALE");
    assert_eq!(
        origin.count("/s"),
        asked,
        "the open breaker let a request through"
    );
}

/// Misses for a key whose answer could not be stored go upstream side by side for a while,
/// instead of queueing behind each other for an answer that will not be stored; an answer
/// that can be stored is still kept.
#[tokio::test]
async fn uncacheable_answers_do_not_make_misses_queue() {
    let origin = origin().await;
    // `cc` and `delay` script the origin without changing the key.
    let gw = gateway(&config(
        origin.addr,
        "{ lock_timeout: 10s, query: { ignore: [cc, delay] } }",
    ));
    let addr = gw.addr();
    assert_eq!(x_cache(&get(addr, "/u?cc=no-store").await), "MISS");
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(addr, "/u?cc=no-store&delay=1500").await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Both are at the origin at once; neither waits for the other.
    assert_eq!(origin.count("/u"), 3);
    for reply in slow {
        assert_eq!(x_cache(&reply.await.unwrap()), "MISS");
    }
    // An answer that can be stored replaces the note.
    get(addr, "/u?cc=max-age:60").await;
    assert_eq!(x_cache(&get(addr, "/u").await), "HIT");
    assert_eq!(origin.count("/u"), 4);
}
