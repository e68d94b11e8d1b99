//! §5.2.1: what a client's own `Cache-Control` asks of the cache.

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
