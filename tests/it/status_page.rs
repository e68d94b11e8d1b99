//! The admin status page (`GET /`), loaded in a real headless Chromium against a running
//! gateway.

use crate::support::*;
use std::time::Duration;

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         admin: {{ address: 127.0.0.1:0, token: status-page-token-0123 }}\n\
         upstreams:\n\
         \x20 users: {{ discovery: {{ static: [{upstream}] }}, health_check: {{ path: /health, interval: 200ms, timeout: 200ms, unhealthy_after: 1, healthy_after: 1 }} }}\n\
         routes:\n\
         \x20 - {{ name: api, match: {{ path_prefix: /api }}, upstream: users, filters: [{{ rate_limit: {{ rate: 100/s, burst: 100 }} }}, {{ cache: {{ ttl: 1m }} }}] }}\n\
         \x20 - {{ name: ping, match: {{ path: /ping }}, respond: {{ body: pong }} }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_routes_figures_and_an_endpoint_turning_unhealthy() {
    let up = upstream().run().await;
    let endpoint = up.addr;
    let gw = gateway(&config(endpoint));
    for _ in 0..3 {
        assert_eq!(get(gw.addr(), "/api/page").await.status, 200);
    }
    // A rejected reload: the page shows it with its error; the running config stays.
    assert!(gw.reload("routes: [ { name: broken } ]\n").is_err());
    let Some(browser) = Browser::start(1100, 1500).await else {
        return;
    };
    browser
        .open(&format!("http://{}/?refresh=300", gw.admin()))
        .await;

    let ready = format!(
        "const routes = [...document.querySelectorAll('tr[data-route]')].map(r => r.dataset.route);
         const health = document.querySelector('tr[data-endpoint=\"{endpoint}\"] .health');
         if (!health || health.textContent !== 'healthy') return null;
         return {{ routes, reload: document.getElementById('reload').textContent,
                  config: document.getElementById('config').textContent,
                  limits: document.getElementById('limits').textContent,
                  caches: document.getElementById('caches').textContent,
                  listeners: document.getElementById('listeners').textContent }};"
    );
    let shown = browser
        .wait_for(
            &ready,
            Duration::from_secs(15),
            "the page lists the healthy endpoint",
        )
        .await;
    assert_eq!(
        shown["routes"],
        serde_json::json!(["api", "ping"]),
        "{shown}"
    );
    let text = |key: &str| shown[key].as_str().unwrap_or_default().to_string();
    assert!(text("reload").contains("rejected"), "{shown}");
    assert!(
        text("config").contains("routes[0]"),
        "the reload's error: {shown}"
    );
    assert!(
        text("listeners").contains(&gw.addr().to_string()),
        "{shown}"
    );
    // The filter, then its allowed/limited/no_key/store_error counts.
    assert!(text("limits").contains("api3000"), "{shown}");
    // The cache filter, its entries, bytes, then 1 hit… (the first request stored it).
    assert!(text("caches").starts_with("filterentries"), "{shown}");
    assert!(text("caches").contains("api1"), "{shown}");

    // The upstream stops: the page, refreshing itself, shows the endpoint unhealthy.
    drop(up);
    let unhealthy = format!(
        "const health = document.querySelector('tr[data-endpoint=\"{endpoint}\"] .health');
         return health && health.textContent === 'unhealthy' && health.className;"
    );
    let class = browser
        .wait_for(
            &unhealthy,
            Duration::from_secs(15),
            "the endpoint turns unhealthy",
        )
        .await;
    assert_eq!(class, "health bad");
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    browser.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // On a phone-sized window the page fits its width (wide tables scroll in their box).
    browser.resize(390, 800).await;
    let fits = browser
        .eval("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, serde_json::json!(true));
}

#[tokio::test]
async fn the_page_is_self_contained() {
    let gw = gateway("listeners: [{ name: http, address: 127.0.0.1:0 }]\nroutes: [{ name: ping, respond: { body: pong } }]\n");
    let page = get(gw.admin(), "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    let html = page.text();
    for outside in ["http://", "https://", "//cdn", "src=\""] {
        assert!(!html.contains(outside), "the page loads {outside}…");
    }
    let status = get(gw.admin(), "/status").await.json();
    assert_eq!(status["generation"], 1);
    assert_eq!(status["last_reload"], serde_json::Value::Null);
}
