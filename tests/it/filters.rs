//! The per-route filter chain with the `headers` and `cors` filters, through a real gateway.

use crate::support::*;

fn yaml(upstream: std::net::SocketAddr, filters: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up: {{ discovery: {{ static: [{upstream}] }} }}\n{filters}"
    )
}

#[tokio::test]
async fn filters_run_in_order_on_requests_and_in_reverse_on_responses() {
    let up = upstream().run().await;
    let gw = gateway(&yaml(
        up.addr,
        "routes:\n\
         \x20 - name: api\n    upstream: up\n    filters:\n\
         \x20     - headers: { request: { add: { x-order: first }, remove: [x-secret], set: { x-env: prod } }, response: { add: { x-order: first } } }\n\
         \x20     - headers: { request: { add: { x-order: second } }, response: { add: { x-order: second }, remove: [x-upstream-hop] } }\n",
    ));
    let mut client = Client::http1(gw.addr()).await;
    let reply = client
        .request(
            req("GET", "/")
                .header("x-secret", "s")
                .header("x-env", "dev")
                .body(empty())
                .unwrap(),
        )
        .await;
    let seen = up.last();
    let order: Vec<_> = seen.headers.get_all("x-order").iter().collect();
    assert_eq!(order, ["first", "second"]);
    assert!(seen.headers.get("x-secret").is_none());
    assert_eq!(seen.headers["x-env"], "prod");
    // on_response runs in reverse: the second filter first.
    let order: Vec<_> = reply.headers.get_all("x-order").iter().collect();
    assert_eq!(order, ["second", "first"]);
}

#[tokio::test]
async fn named_filters_are_shared_across_routes() {
    let up = upstream().run().await;
    let gw = gateway(&yaml(
        up.addr,
        "filters:\n  stamp:\n    headers: { response: { set: { x-gateway: portcullis } } }\n\
         routes:\n\
         \x20 - { name: a, match: { path: /a }, respond: { body: a }, filters: [ { use: stamp } ] }\n\
         \x20 - { name: b, match: { path: /b }, upstream: up, filters: [ { use: stamp } ] }\n\
         \x20 - { name: c, match: { path: /c }, upstream: up }\n",
    ));
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(
        client.get("/a").await.header("x-gateway"),
        Some("portcullis")
    );
    assert_eq!(
        client.get("/b").await.header("x-gateway"),
        Some("portcullis")
    );
    assert_eq!(client.get("/c").await.header("x-gateway"), None);
    let routes = get(gw.admin(), "/routes").await.json();
    assert_eq!(routes["routes"][0]["filters"], "use:stamp");
}

const CORS: &str = "filters:\n  cors:\n    cors:\n      allow_origins: [\"https://app.example.com\", \"https://*.example.org\"]\n      allow_methods: [PUT, DELETE]\n      allow_headers: [content-type, x-api-key]\n      expose_headers: [x-request-id]\n      allow_credentials: true\n      max_age: 10m\n";

#[tokio::test]
async fn cors_preflight_is_answered_at_the_gateway() {
    let up = upstream().run().await;
    let gw = gateway(&yaml(
        up.addr,
        &format!(
            "{CORS}routes:\n  - {{ name: api, upstream: up, filters: [ {{ use: cors }} ] }}\n"
        ),
    ));
    let mut client = Client::http1(gw.addr()).await;
    let preflight = |origin: &str, method: &str, headers: &str| {
        req("OPTIONS", "/things")
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .body(empty())
            .unwrap()
    };
    let reply = client
        .request(preflight(
            "https://app.example.com",
            "PUT",
            "Content-Type, X-API-Key",
        ))
        .await;
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        reply.header("access-control-allow-methods"),
        Some("GET, HEAD, POST, PUT, DELETE")
    );
    assert_eq!(
        reply.header("access-control-allow-headers"),
        Some("content-type, x-api-key")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(reply.header("access-control-max-age"), Some("600"));
    assert!(reply.header("vary").is_some_and(|v| v.contains("Origin")));

    let reply = client
        .request(preflight("https://a.b.example.org", "DELETE", ""))
        .await;
    assert_eq!(reply.status, 204);
    for (origin, method, headers) in [
        ("https://evil.example.com", "PUT", ""),
        ("https://app.example.com", "PATCH", ""),
        ("https://app.example.com", "PUT", "x-other"),
    ] {
        let reply = client.request(preflight(origin, method, headers)).await;
        assert_eq!(reply.status, 403, "{origin} {method} {headers}");
        assert!(reply.header("access-control-allow-origin").is_none());
    }
    assert_eq!(up.requests(), 0, "a preflight reached the upstream");
}

#[tokio::test]
async fn cors_headers_on_actual_responses_including_errors() {
    let up = upstream().run().await;
    let dead = dead_address();
    let config = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up: {{ discovery: {{ static: [{}] }} }}\n  dead: {{ discovery: {{ static: [{dead}] }} }}\n\
         {CORS}routes:\n\
         \x20 - {{ name: down, match: {{ path: /down }}, upstream: dead, filters: [ {{ use: cors }} ] }}\n\
         \x20 - {{ name: api, upstream: up, filters: [ {{ use: cors }} ] }}\n",
        up.addr
    );
    let gw = gateway(&config);
    let mut client = Client::http1(gw.addr()).await;
    let reply = client
        .request(
            req("GET", "/data")
                .header("origin", "https://app.example.com")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        reply.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    // The upstream saw the request as usual.
    assert_eq!(up.last().path, "/data");

    let reply = client
        .request(
            req("GET", "/data")
                .header("origin", "https://evil.example.com")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("access-control-allow-origin").is_none());

    // Errors are decorated too, so a browser can read them.
    let reply = client
        .request(
            req("GET", "/down")
                .header("origin", "https://app.example.com")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 502);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

#[test]
fn filter_config_errors() {
    let bad = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
        filters:\n  shared: { use: other }\n\
        routes:\n\
        \x20 - name: a\n    respond: { body: a }\n    filters:\n\
        \x20     - { use: missing }\n\
        \x20     - { headers: {}, cors: { allow_origins: [\"*\"] } }\n\
        \x20     - cors: { allow_origins: [\"app.example.com\"] }\n";
    let issues = config_errors(bad);
    assert_eq!(
        issues,
        [
            "filters.shared.use: unknown filter \"other\" (known: none defined) (line 3)",
            "routes[0].filters[0].use: unknown filter \"missing\" (known: none defined) (line 8)",
            "routes[0].filters[1]: a filter entry needs exactly one of use, headers, cors, jwt, rate_limit, circuit_breaker, cache, ip_filter, ext_authz, compress (line 9)",
            "routes[0].filters[2].cors.allow_origins[0]: invalid origin \"app.example.com\": expected scheme://host[:port] or * (line 10)",
        ]
    );
}

#[tokio::test]
async fn listener_filters_run_before_the_route_and_see_its_response_last() {
    let up = upstream().run().await;
    let gw = gateway(&format!(
        "listeners:\n\
         \x20 - name: http\n    address: 127.0.0.1:0\n    filters:\n\
         \x20     - headers: {{ request: {{ add: {{ x-order: listener }} }}, response: {{ add: {{ x-order: listener }} }} }}\n\
         upstreams:\n  up: {{ discovery: {{ static: [{}] }} }}\n\
         routes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: up\n    filters:\n\
         \x20     - headers: {{ request: {{ add: {{ x-order: route }} }}, response: {{ add: {{ x-order: route }} }} }}\n",
        up.addr
    ));
    let mut client = Client::http1(gw.addr()).await;
    let reply = client.get("/api").await;
    let seen: Vec<_> = up
        .last()
        .headers
        .get_all("x-order")
        .iter()
        .cloned()
        .collect();
    assert_eq!(seen, ["listener", "route"]);
    let order: Vec<_> = reply.headers.get_all("x-order").iter().collect();
    assert_eq!(order, ["route", "listener"]);
    // A request no route serves still passes through the listener's filters.
    let missing = client.get("/elsewhere").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-order"), Some("listener"));
}

#[test]
fn listener_filters_that_need_an_upstream_are_refused() {
    let errors = config_errors(
        "listeners:\n\
         \x20 - { name: http, address: 127.0.0.1:0, filters: [ { circuit_breaker: {} }, { cache: {} }, { use: nope } ] }\n\
         routes: [ { name: a, respond: { body: a } } ]\n",
    );
    assert_eq!(
        errors,
        [
            "listeners[0].filters[0]: circuit_breaker needs a route with an upstream (line 2)",
            "listeners[0].filters[1]: cache needs a route with an upstream (line 2)",
            "listeners[0].filters[2].use: unknown filter \"nope\" (known: none defined) (line 2)",
        ]
    );
}
