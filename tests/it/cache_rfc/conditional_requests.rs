//! RFC 9110 §13.1.2: `If-None-Match` is answered from the cache with the weak comparison.
//! (`If-Modified-Since` against the stored `Date` when there is no `Last-Modified`, RFC 9111
//! §4.3.2, is checked in tests/cache.rs.)

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
