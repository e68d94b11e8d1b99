//! §5.2.2.3: with `must-understand`, a response whose status the cache does not know is not
//! stored.

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
