//! §4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10: a shared cache never serves these stale, whatever
//! the route allows; when revalidation fails the client gets an error.

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
