//! §4.2.3 and §5.1: the age a response arrives with counts toward its freshness.

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
