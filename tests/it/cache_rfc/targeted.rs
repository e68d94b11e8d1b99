//! RFC 9213: a targeted field on the cache's list (`CDN-Cache-Control` unless the route names
//! others) replaces `Cache-Control` and `Expires` when it is valid and not empty.

use super::*;

fn stored_twice(reply: &Reply) -> bool {
    x_cache(reply) == "HIT"
}

async fn second(client: &mut Client, target: &str) -> Reply {
    fetch(client, target, &[]).await;
    fetch(client, target, &[]).await
}

#[tokio::test]
async fn cdn_cache_control_overrides_cache_control_and_expires() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{}"));
    let mut client = Client::http1(gw.addr()).await;
    let cdn = |value: &str| format!("h.cdn-cache-control={}", enc(value));
    let past = enc(&httpdate::fmt_http_date(
        SystemTime::now() - Duration::from_secs(60),
    ));
    let cases = [
        (
            "/no-store",
            format!("cc=no-store&{}", cdn("max-age=60")),
            true,
        ),
        (
            "/private",
            format!("cc=private&{}", cdn("max-age=60")),
            true,
        ),
        (
            "/expired",
            format!("h.expires={past}&{}", cdn("max-age=60")),
            true,
        ),
        (
            "/cdn-no-store",
            format!("cc=max-age:60&{}", cdn("no-store")),
            false,
        ),
        // An unregistered directive still makes the field valid: Cache-Control is ignored.
        ("/none", format!("cc=max-age:60&{}", cdn("none")), false),
        // Invalid (not a Dictionary) or empty: Cache-Control decides.
        (
            "/upper",
            format!("cc=no-store&{}", cdn("MAX-AGE=60")),
            false,
        ),
        (
            "/trailing",
            format!("cc=max-age:60&{}", cdn("no-store,")),
            true,
        ),
        ("/empty", format!("cc=max-age:60&{}", cdn("")), true),
    ];
    for (path, query, stored) in &cases {
        let reply = second(&mut client, &format!("{path}?{query}")).await;
        assert_eq!(stored_twice(&reply), *stored, "{path}: {:?}", reply.headers);
        // Forwarded as it came unless the route strips it.
        if path != &"/empty" {
            assert!(reply.header("cdn-cache-control").is_some(), "{path}");
        }
    }
}

#[tokio::test]
async fn targeted_directives_keep_their_meaning() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ stale_if_error: 1h }"));
    let mut client = Client::http1(gw.addr()).await;
    let target = format!(
        "/mr?cc=max-age:600&{}",
        format_args!("h.cdn-cache-control={}", enc("max-age=1, must-revalidate"))
    );
    fetch(&mut client, &target, &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut client = Client::http1(gw.addr()).await;
    // Stale after the targeted max-age (not Cache-Control's), and must-revalidate forbids the
    // route's stale_if_error.
    let reply = fetch(&mut client, &target, &[]).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
}

#[tokio::test]
async fn the_route_names_its_targets_and_may_strip_them() {
    let origin = origin().await;
    let gw = gateway(&config(
        origin.addr,
        "{ targeted: [Portcullis-Cache-Control, Surrogate-Control], strip_targeted: true }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    let own = format!(
        "cc=no-store&h.portcullis-cache-control={}",
        enc("max-age=60")
    );
    let surrogate = format!("cc=no-store&h.surrogate-control={}", enc("max-age=60"));
    let other = format!(
        "cc=no-store&h.surrogate-control={}",
        enc("max-age=60;other")
    );
    let cdn = format!("cc=no-store&h.cdn-cache-control={}", enc("max-age=60"));
    for (path, query, stored) in [
        ("/own", own, true),
        ("/surrogate", surrogate, true),
        ("/other-device", other, false),
        // Not on this route's list: no effect, and passed through.
        ("/cdn", cdn, false),
    ] {
        let first = fetch(&mut client, &format!("{path}?{query}"), &[]).await;
        let reply = fetch(&mut client, &format!("{path}?{query}"), &[]).await;
        assert_eq!(stored_twice(&reply), stored, "{path}");
        for reply in [&first, &reply] {
            assert!(reply.header("portcullis-cache-control").is_none(), "{path}");
            assert!(reply.header("surrogate-control").is_none(), "{path}");
        }
        assert_eq!(reply.header("cdn-cache-control").is_some(), path == "/cdn");
    }
    // An empty list turns targeting off.
    let gw = gateway(&config(origin.addr, "{ targeted: [] }"));
    let mut client = Client::http1(gw.addr()).await;
    let reply = second(
        &mut client,
        &format!("/off?cc=no-store&h.cdn-cache-control={}", enc("max-age=60")),
    )
    .await;
    assert!(!stored_twice(&reply));
}
