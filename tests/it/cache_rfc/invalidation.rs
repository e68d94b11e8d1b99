//! §4.4: a non-error response to an unsafe method invalidates what is stored for its target,
//! and for its `Location` and `Content-Location` on the same host.

use super::*;

async fn send(client: &mut Client, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = req(method, path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    client.request(request.body(empty()).unwrap()).await
}

async fn stored(client: &mut Client, path: &str, headers: &[(&str, &str)]) -> bool {
    x_cache(&fetch(client, path, headers).await) == "HIT"
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target_uri() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 1h }"));
    let mut client = Client::http1(gw.addr()).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "FROBNICATE"] {
        let path = format!("/doc-{method}?cc=max-age:600");
        fetch(&mut client, &path, &[]).await;
        assert!(stored(&mut client, &path, &[]).await, "{method}");
        let reply = send(&mut client, method, &path, &[]).await;
        assert_eq!(reply.status, 200, "{method}");
        assert!(
            !stored(&mut client, &path, &[]).await,
            "{method} left the entry"
        );
    }
    // Safe methods do not.
    let path = "/safe?cc=max-age:600";
    fetch(&mut client, path, &[]).await;
    send(&mut client, "OPTIONS", path, &[]).await;
    assert!(stored(&mut client, path, &[]).await);
}

#[tokio::test]
async fn an_error_response_invalidates_nothing() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 1h }"));
    let mut client = Client::http1(gw.addr()).await;
    let path = "/kept?cc=max-age:600";
    fetch(&mut client, path, &[]).await;
    origin
        .fail_with
        .store(500, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(send(&mut client, "POST", path, &[]).await.status, 500);
    origin
        .fail_with
        .store(0, std::sync::atomic::Ordering::SeqCst);
    assert!(stored(&mut client, path, &[]).await);
}

#[tokio::test]
async fn every_variant_and_key_part_of_the_uri_goes() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 1h, key: [header:x-tenant] }"));
    let mut client = Client::http1(gw.addr()).await;
    let path = "/v?cc=max-age:600&vary=accept-encoding";
    let callers: [&[(&str, &str)]; 3] = [
        &[("x-tenant", "a"), ("accept-encoding", "gzip")],
        &[("x-tenant", "a")],
        &[("x-tenant", "b"), ("accept-encoding", "br")],
    ];
    for caller in callers {
        fetch(&mut client, path, caller).await;
        assert!(stored(&mut client, path, caller).await, "{caller:?}");
    }
    send(&mut client, "POST", path, &[("x-tenant", "a")]).await;
    for caller in callers {
        assert!(
            !stored(&mut client, path, caller).await,
            "{caller:?} survived"
        );
    }
}

#[tokio::test]
async fn location_and_content_location_on_the_same_host() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 1h }"));
    let mut client = Client::http1(gw.addr()).await;
    let host = format!("{}", gw.addr());
    for path in ["/items/1", "/items/2", "/items/3", "/items/4"] {
        fetch(&mut client, path, &[]).await;
        assert!(stored(&mut client, path, &[]).await);
    }
    let other = enc("http://elsewhere.example/items/3");
    let absolute = enc(&format!("http://{host}/items/4"));
    send(
        &mut client,
        "POST",
        &format!("/items?h.location=%2Fitems%2F1&h.content-location=%2Fitems%2F2&h.x={other}"),
        &[],
    )
    .await;
    send(
        &mut client,
        "POST",
        &format!("/new?h.location={other}"),
        &[],
    )
    .await;
    send(
        &mut client,
        "POST",
        &format!("/new?h.content-location={absolute}"),
        &[],
    )
    .await;
    assert!(!stored(&mut client, "/items/1", &[]).await, "Location");
    assert!(
        !stored(&mut client, "/items/2", &[]).await,
        "Content-Location"
    );
    assert!(
        stored(&mut client, "/items/3", &[]).await,
        "another host's URI was invalidated"
    );
    assert!(
        !stored(&mut client, "/items/4", &[]).await,
        "absolute URI on the same host"
    );
}
