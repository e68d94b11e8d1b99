//! §5.2.2.4 and §4.3: a response that may be stored but is stale from the start (`no-cache`,
//! `max-age=0`) is kept for its validators, and every use asks the origin with them.

use super::*;
use std::sync::atomic::Ordering;

#[tokio::test]
async fn no_cache_and_max_age_0_answers_are_stored_and_revalidated_on_every_use() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
    let mut client = Client::http1(gw.addr()).await;
    for (path, cc) in [
        ("/nc", "no-cache"),
        ("/m0", "max-age:0"),
        ("/s0", "s-maxage:0"),
    ] {
        let target = format!("{path}?cc={cc}&etag=v1");
        let first = fetch(&mut client, &target, &[]).await;
        assert_eq!(x_cache(&first), "MISS", "{path}");
        for round in 1..=2 {
            let reply = fetch(&mut client, &target, &[]).await;
            assert_eq!(x_cache(&reply), "REVALIDATED", "{path}");
            assert_eq!(reply.text(), first.text(), "{path}");
            assert_eq!(origin.count(&format!("{path} 304")), round, "{path}");
        }
        assert_eq!(origin.count(path), 3, "{path}");
    }
    // Without a validator there is nothing to ask with: not stored.
    fetch(&mut client, "/nv?cc=no-cache", &[]).await;
    let reply = fetch(&mut client, "/nv?cc=no-cache", &[]).await;
    assert_eq!(x_cache(&reply), "MISS");
    assert!(reply.text().contains("#2"));
}

#[tokio::test]
async fn a_changed_resource_replaces_the_copy_kept_for_revalidation() {
    let origin = origin().await;
    // The origin's entity tag is scripted by a query parameter the key leaves out.
    let gw = gateway(&config(origin.addr, "{ query: { ignore: [etag] } }"));
    let mut client = Client::http1(gw.addr()).await;
    fetch(&mut client, "/r?cc=no-cache&etag=v1", &[]).await;
    let changed = fetch(&mut client, "/r?cc=no-cache&etag=v2", &[]).await;
    assert_eq!(x_cache(&changed), "MISS");
    assert!(changed.text().contains("#2"));
    let again = fetch(&mut client, "/r?cc=no-cache&etag=v2", &[]).await;
    assert_eq!(x_cache(&again), "REVALIDATED");
    assert_eq!(again.text(), changed.text());
}

#[tokio::test]
async fn a_copy_kept_for_revalidation_is_never_served_unvalidated() {
    let origin = origin().await;
    let gw = gateway(&config(
        origin.addr,
        "{ stale_if_error: 1h, stale_while_revalidate: 1h }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    fetch(&mut client, "/nc?cc=no-cache&etag=v", &[]).await;
    fetch(&mut client, "/m0?cc=max-age:0&etag=v", &[]).await;
    // While the origin answers, the route's stale-while-revalidate never applies.
    let reply = fetch(&mut client, "/m0?cc=max-age:0&etag=v", &[]).await;
    assert_eq!(x_cache(&reply), "REVALIDATED");
    origin.down.store(true, Ordering::SeqCst);
    let mut client = Client::http1(gw.addr()).await;
    // no-cache forbids stale use: 504. max-age=0 alone: the upstream's error, not the copy.
    let reply = fetch(&mut client, "/nc?cc=no-cache&etag=v", &[]).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    let reply = fetch(&mut client, "/m0?cc=max-age:0&etag=v", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_ne!(x_cache(&reply), "STALE");
}

#[tokio::test]
async fn a_revalidated_variant_stays_under_its_own_key() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
    let mut client = Client::http1(gw.addr()).await;
    let target = "/v?cc=no-cache&etag=e&vary=accept-language";
    let en = [("accept-language", "en")];
    let english = fetch(&mut client, target, &en).await;
    let again = fetch(&mut client, target, &en).await;
    assert_eq!(x_cache(&again), "REVALIDATED");
    assert_eq!(again.text(), english.text());
    // A French request never gets the English copy, revalidated or not.
    let french = fetch(&mut client, target, &[("accept-language", "fr")]).await;
    assert_eq!(x_cache(&french), "MISS");
    assert!(french.text().contains("#3"), "{}", french.text());
}
