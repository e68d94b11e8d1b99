//! The `rate_limit` filter through a real gateway (local store).

use crate::support::*;

fn config(upstream: std::net::SocketAddr, limit: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         trusted_proxies: [127.0.0.1/32]\n\
         upstreams:\n  up: {{ discovery: {{ static: [{upstream}] }} }}\n\
         routes:\n\
         \x20 - name: api\n    upstream: up\n    filters:\n\
         \x20     - rate_limit: {limit}\n"
    )
}

async fn status_with(client: &mut Client, header: Option<(&str, &str)>) -> Reply {
    let mut request = req("GET", "/items");
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    client.request(request.body(empty()).unwrap()).await
}

#[tokio::test]
async fn a_burst_then_429_with_retry_after_and_ratelimit_headers() {
    let up = upstream().run().await;
    let gw = gateway(&config(up.addr, "{ rate: 1/m, burst: 3, headers: true }"));
    let mut client = Client::http1(gw.addr()).await;
    let first = status_with(&mut client, None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("ratelimit-policy"), Some("\"api\";q=1;w=60"));
    assert_eq!(first.header("ratelimit"), Some("\"api\";r=2;t=60"));
    assert_eq!(status_with(&mut client, None).await.status, 200);
    assert_eq!(status_with(&mut client, None).await.status, 200);
    let refused = status_with(&mut client, None).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"], "rate limit exceeded");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
    assert!(refused
        .header("ratelimit")
        .unwrap()
        .starts_with("\"api\";r=0;t="));
    assert_eq!(up.requests(), 3);
    // The connection stays usable after a 429.
    assert_eq!(status_with(&mut client, None).await.status, 429);
    let metrics = get(gw.admin(), "/metrics").await.text();
    for (result, count) in [("allowed", 3), ("limited", 2), ("no_key", 0)] {
        let line =
            format!("rate_limit_decisions_total{{filter=\"api\",result=\"{result}\"}} {count}");
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }
}

#[tokio::test]
async fn keys_from_headers_and_the_forwarded_client() {
    let up = upstream().run().await;
    let gw = gateway(&config(
        up.addr,
        "{ rate: 1/m, burst: 1, key: [header:x-api-key], on_missing_key: reject }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(
        status_with(&mut client, Some(("x-api-key", "a")))
            .await
            .status,
        200
    );
    assert_eq!(
        status_with(&mut client, Some(("x-api-key", "a")))
            .await
            .status,
        429
    );
    assert_eq!(
        status_with(&mut client, Some(("x-api-key", "b")))
            .await
            .status,
        200
    );
    let missing = status_with(&mut client, None).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["error"], "missing rate limit key");

    // client_ip: the trusted proxy's X-Forwarded-For names the client.
    let gw = gateway(&config(up.addr, "{ rate: 1/m, burst: 1 }"));
    let mut client = Client::http1(gw.addr()).await;
    let from = |ip| Some(("x-forwarded-for", ip));
    assert_eq!(
        status_with(&mut client, from("203.0.113.1")).await.status,
        200
    );
    assert_eq!(
        status_with(&mut client, from("203.0.113.1")).await.status,
        429
    );
    assert_eq!(
        status_with(&mut client, from("203.0.113.2")).await.status,
        200
    );
}

#[tokio::test]
async fn missing_keys_skip_or_share() {
    let up = upstream().run().await;
    let gw = gateway(&config(
        up.addr,
        "{ rate: 1/m, burst: 1, key: header:x-api-key, on_missing_key: skip }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..5 {
        assert_eq!(status_with(&mut client, None).await.status, 200);
    }
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(
        metrics.contains("rate_limit_decisions_total{filter=\"api\",result=\"no_key\"} 5"),
        "{metrics}"
    );
    let gw = gateway(&config(
        up.addr,
        "{ rate: 1/m, burst: 2, key: header:x-api-key }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(status_with(&mut client, None).await.status, 200);
    assert_eq!(status_with(&mut client, None).await.status, 200);
    assert_eq!(status_with(&mut client, None).await.status, 429);
}

#[tokio::test]
async fn limits_by_jwt_claim() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let secret = "a-test-secret-that-is-long-enough-for-hs256";
    let up = upstream().run().await;
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up: {{ discovery: {{ static: [{}] }} }}\n\
         jwt_providers:\n  main: {{ algorithms: [HS256], secret: {secret} }}\n\
         routes:\n\
         \x20 - name: api\n    upstream: up\n    filters:\n\
         \x20     - jwt: {{ provider: main }}\n\
         \x20     - rate_limit: {{ rate: 1/m, burst: 1, key: claim:sub }}\n",
        up.addr
    );
    let gw = gateway(&yaml);
    let token = |sub: &str| {
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let claims = serde_json::json!({"sub": sub, "exp": exp});
        let key = EncodingKey::from_secret(secret.as_bytes());
        format!(
            "Bearer {}",
            encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        )
    };
    let mut client = Client::http1(gw.addr()).await;
    let alice = token("alice");
    assert_eq!(
        status_with(&mut client, Some(("authorization", &alice)))
            .await
            .status,
        200
    );
    // A fresh token for the same subject shares the subject's bucket.
    let alice_again = token("alice") + "";
    assert_eq!(
        status_with(&mut client, Some(("authorization", &alice_again)))
            .await
            .status,
        429
    );
    let bob = token("bob");
    assert_eq!(
        status_with(&mut client, Some(("authorization", &bob)))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_reload_keeps_drained_buckets_unless_the_limit_changes() {
    let up = upstream().run().await;
    let limit = "{ rate: 1/m, burst: 2 }";
    let gw = gateway(&config(up.addr, limit));
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(status_with(&mut client, None).await.status, 200);
    assert_eq!(status_with(&mut client, None).await.status, 200);
    assert_eq!(status_with(&mut client, None).await.status, 429);
    // An unrelated change: a new route. The bucket stays drained.
    let with_route = format!(
        "{}\x20 - name: ping\n    match: {{ path: /ping }}\n    respond: {{ body: pong }}\n",
        config(up.addr, limit)
    );
    gw.reload(&with_route).unwrap();
    assert_eq!(status_with(&mut client, None).await.status, 429);
    // A different limit is a different budget: it starts full.
    gw.reload(&config(up.addr, "{ rate: 1/m, burst: 3 }"))
        .unwrap();
    assert_eq!(status_with(&mut client, None).await.status, 200);
}

#[test]
fn rate_limit_config_errors() {
    let yaml = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        routes:\n\
        \x20 - name: a\n    respond: { body: a }\n    filters:\n\
        \x20     - rate_limit: { rate: lots }\n\
        \x20     - rate_limit: { rate: 10/s, key: [ip], on_missing_key: maybe }\n";
    let issues = config_errors(yaml);
    assert!(
        issues[0].starts_with("routes[0].filters[0].rate_limit.rate: invalid rate \"lots\""),
        "{issues:?}"
    );
    assert!(
        issues[1].starts_with("routes[0].filters[1].rate_limit.key[0]: invalid key part \"ip\""),
        "{issues:?}"
    );
    assert!(
        issues[2]
            .starts_with("routes[0].filters[1].rate_limit.on_missing_key: unknown value \"maybe\""),
        "{issues:?}"
    );
}
