//! §4.2.2: without explicit freshness, a heuristically cacheable response is fresh for a tenth
//! of the time since its `Last-Modified`, at most a day (the route's `ttl` wins when set).

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
