//! §3.2 and §4.3.4: a 304 freshens the stored response with its header fields, except those
//! that describe the stored body; its cookies go to the one client.

use super::*;

#[tokio::test]
async fn a_304_updates_headers_but_not_body_fields_etag_or_cookies() {
    let origin = origin().await;
    let ignore = "[cc, h.x-version, h.content-encoding, h.content-range, h.set-cookie, etag304]";
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
