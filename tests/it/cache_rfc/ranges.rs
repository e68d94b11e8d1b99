//! RFC 9110 §14 and RFC 9111 §3.3: one byte range is answered from a stored complete response
//! as a 206; a range miss goes upstream as it came, and a partial answer is never stored.

use super::*;

const DIGITS: &str = "/d?cc=max-age:60&digits=100&etag=v&modified=1";

#[tokio::test]
async fn single_suffix_and_open_ended_ranges_are_served_from_the_stored_response() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{}"));
    let mut client = Client::http1(gw.addr()).await;
    let whole = fetch(&mut client, DIGITS, &[]).await;
    assert_eq!(whole.body.len(), 100);
    let cases = [
        ("bytes=0-9", "0123456789", "bytes 0-9/100"),
        ("bytes=95-", "56789", "bytes 95-99/100"),
        ("bytes=-3", "789", "bytes 97-99/100"),
        ("bytes=90-200", "0123456789", "bytes 90-99/100"),
        ("Bytes = 12-12", "2", "bytes 12-12/100"),
    ];
    for (range, body, content_range) in cases {
        let reply = fetch(&mut client, DIGITS, &[("range", range)]).await;
        assert_eq!(reply.status, 206, "{range}");
        assert_eq!(reply.text(), body, "{range}");
        assert_eq!(
            reply.header("content-range"),
            Some(content_range),
            "{range}"
        );
        let length = body.len().to_string();
        assert_eq!(reply.header("content-length"), Some(length.as_str()));
        assert_eq!(x_cache(&reply), "HIT", "{range}");
        assert_eq!(reply.header("etag"), Some("\"v\""));
    }
    assert_eq!(origin.count("/d"), 1);
}

#[tokio::test]
async fn a_range_past_the_end_is_416_with_the_length() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{}"));
    let mut client = Client::http1(gw.addr()).await;
    fetch(&mut client, DIGITS, &[]).await;
    for range in ["bytes=100-", "bytes=-0", "bytes=200-300"] {
        let reply = fetch(&mut client, DIGITS, &[("range", range)]).await;
        assert_eq!(reply.status, 416, "{range}");
        assert_eq!(
            reply.header("content-range"),
            Some("bytes */100"),
            "{range}"
        );
        assert!(reply.body.is_empty());
    }
    assert_eq!(origin.count("/d"), 1);
}

#[tokio::test]
async fn ranges_the_cache_does_not_serve_get_the_whole_response() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{}"));
    let mut client = Client::http1(gw.addr()).await;
    let whole = fetch(&mut client, DIGITS, &[]).await;
    for range in [
        "bytes=5-2",
        "bytes=abc",
        "items=0-1",
        "bytes=0-1,5-6",
        "bytes 0-1",
    ] {
        let reply = fetch(&mut client, DIGITS, &[("range", range)]).await;
        assert_eq!(reply.status, 200, "{range}");
        assert_eq!(reply.body, whole.body, "{range}");
        assert!(reply.header("content-range").is_none(), "{range}");
    }
    // Two Range lines: not one range.
    let reply = fetch(
        &mut client,
        DIGITS,
        &[("range", "bytes=0-1"), ("range", "bytes=2-3")],
    )
    .await;
    assert_eq!(reply.status, 200);
    // HEAD has no ranges.
    let head = req("HEAD", DIGITS).header("range", "bytes=0-1");
    let reply = client.request(head.body(empty()).unwrap()).await;
    assert_eq!((reply.status.as_u16(), x_cache(&reply)), (200, "HIT"));
    // Only a stored 200 is a representation to take ranges of.
    let missing = "/gone?cc=max-age:60&status=404";
    fetch(&mut client, missing, &[]).await;
    let reply = fetch(&mut client, missing, &[("range", "bytes=0-1")]).await;
    assert_eq!((reply.status.as_u16(), x_cache(&reply)), (404, "HIT"));
    assert_eq!(origin.count("/d"), 1);
}

#[tokio::test]
async fn if_range_must_match_exactly_for_a_range() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{}"));
    let mut client = Client::http1(gw.addr()).await;
    fetch(&mut client, DIGITS, &[]).await;
    let cases = [
        ("\"v\"", 206),
        ("\"other\"", 200),
        // A weak tag never matches (strong comparison).
        ("W/\"v\"", 200),
        ("Mon, 01 Jan 2024 00:00:00 GMT", 206),
        ("Tue, 02 Jan 2024 00:00:00 GMT", 200),
        ("garbage", 200),
    ];
    for (condition, status) in cases {
        let reply = fetch(
            &mut client,
            DIGITS,
            &[("range", "bytes=0-1"), ("if-range", condition)],
        )
        .await;
        assert_eq!(reply.status, status, "{condition}");
        assert_eq!(reply.body.len(), if status == 206 { 2 } else { 100 });
    }
}

#[tokio::test]
async fn a_range_miss_goes_upstream_as_a_range_and_the_206_is_never_stored() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{}"));
    let mut client = Client::http1(gw.addr()).await;
    let target = "/p?cc=max-age:60&digits=100&ranges=1";
    let part = fetch(&mut client, target, &[("range", "bytes=10-14")]).await;
    assert_eq!((part.status.as_u16(), part.text().as_str()), (206, "01234"));
    assert_eq!(x_cache(&part), "MISS");
    assert_eq!(part.header("content-range"), Some("bytes 10-14/100"));
    assert_eq!(origin.count("/p range"), 1);
    // The partial answer was not stored as if it were the whole.
    let whole = fetch(&mut client, target, &[]).await;
    assert_eq!((whole.status.as_u16(), x_cache(&whole)), (200, "MISS"));
    assert_eq!(whole.body.len(), 100);
    // Now stored whole: ranges come from the cache.
    let part = fetch(&mut client, target, &[("range", "bytes=10-14")]).await;
    assert_eq!((part.status.as_u16(), x_cache(&part)), (206, "HIT"));
    assert_eq!(part.text(), "01234");
    assert_eq!(origin.count("/p"), 2);
}

#[tokio::test]
async fn a_range_of_a_copy_that_needs_revalidation_is_served_after_a_304() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{}"));
    let mut client = Client::http1(gw.addr()).await;
    let target = "/nc?cc=no-cache&digits=100&etag=v";
    fetch(&mut client, target, &[]).await;
    let part = fetch(&mut client, target, &[("range", "bytes=-4")]).await;
    assert_eq!((part.status.as_u16(), x_cache(&part)), (206, "REVALIDATED"));
    assert_eq!(part.text(), "6789");
    assert_eq!(origin.count("/nc 304"), 1);
}
