//! The admin API over real HTTP.

use crate::support::*;

/// Each test names its own variable: tests run in parallel in one process.
fn file_config(upstream: std::net::SocketAddr, route: &str, secret_var: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         admin: {{ address: 127.0.0.1:0 }}\n\
         upstreams:\n  users: {{ discovery: {{ static: [{upstream}] }} }}\n\
         routes:\n\
         \x20 - {{ name: {route}, match: {{ path: /{route} }}, respond: {{ body: \"${{{secret_var}}}\" }} }}\n\
         \x20 - {{ name: api, match: {{ path_prefix: /api, methods: [GET] }}, upstream: users }}\n"
    )
}

#[tokio::test]
async fn health_readiness_config_routes_upstreams_and_metrics() {
    let up = upstream().run().await;
    let path = temp_path("admin.yaml");
    std::fs::write(
        &path,
        file_config(up.addr, "first", "PORTCULLIS_ADMIN_TEST_SECRET_A"),
    )
    .unwrap();
    let gw = gateway_file_env(&path, &[("PORTCULLIS_ADMIN_TEST_SECRET_A", "hunter2")]);
    let admin = gw.admin();
    assert_ne!(admin, gw.addr());

    let health = get(admin, "/healthz").await;
    assert_eq!(
        (health.status.as_u16(), health.text().as_str()),
        (200, "ok\n")
    );
    assert_eq!(get(admin, "/ready").await.status, 200);

    // The secret from the environment is served by the route, never shown by /config.
    assert_eq!(get(gw.addr(), "/first").await.text(), "hunter2");
    let config = get(admin, "/config").await;
    assert!(!config.text().contains("hunter2"), "{}", config.text());
    assert_eq!(config.json()["routes"][0]["respond"]["body"], "<redacted>");
    assert_eq!(config.json()["routes"][1]["upstream"], "users");

    let routes = get(admin, "/routes").await.json();
    assert_eq!(routes["generation"], 1);
    assert_eq!(routes["routes"][1]["name"], "api");
    assert_eq!(routes["routes"][1]["match"], "prefix=/api methods=GET");
    assert_eq!(routes["routes"][1]["action"], "upstream users");

    assert_eq!(get(gw.addr(), "/api/x").await.status, 200);
    let upstreams = get(admin, "/upstreams").await.json();
    let endpoint = &upstreams["upstreams"][0]["endpoints"][0];
    assert_eq!(upstreams["upstreams"][0]["name"], "users");
    assert_eq!(endpoint["address"], up.addr.to_string());
    assert_eq!(endpoint["idle_connections"], 1);

    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(client.get("/first").await.status, 200);
    let metrics = get(admin, "/metrics").await.text();
    assert!(metrics.contains("config_generation 1"), "{metrics}");
    assert!(
        metrics.contains("connections_active{listener=\"http\"} 1"),
        "{metrics}"
    );

    assert_eq!(get(admin, "/nope").await.status, 404);
    assert_eq!(get(admin, "/reload").await.status, 405);
    std::fs::remove_file(&path).ok();
}

#[tokio::test]
async fn post_reload_applies_a_good_file_and_rejects_a_bad_one() {
    let up = upstream().run().await;
    let path = temp_path("reload.yaml");
    std::fs::write(
        &path,
        file_config(up.addr, "first", "PORTCULLIS_ADMIN_TEST_SECRET_B"),
    )
    .unwrap();
    let gw = gateway_file_env(&path, &[("PORTCULLIS_ADMIN_TEST_SECRET_B", "s")]);
    let admin = gw.admin();
    let mut client = Client::http1(admin).await;

    std::fs::write(
        &path,
        file_config(up.addr, "second", "PORTCULLIS_ADMIN_TEST_SECRET_B"),
    )
    .unwrap();
    let reply = client
        .request(req("POST", "/reload").body(empty()).unwrap())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["generation"], 2);
    assert_eq!(get(gw.addr(), "/second").await.status, 200);

    std::fs::write(
        &path,
        file_config(up.addr, "third", "PORTCULLIS_ADMIN_TEST_SECRET_B")
            .replace("upstream: users", "upstream: userz"),
    )
    .unwrap();
    let reply = client
        .request(req("POST", "/reload").body(empty()).unwrap())
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json()["errors"][0],
        "routes[1].upstream: route \"api\" names unknown upstream \"userz\" (known: users) (line 7)"
    );
    // Still generation 2, still serving it.
    assert_eq!(get(admin, "/routes").await.json()["generation"], 2);
    assert_eq!(get(gw.addr(), "/second").await.status, 200);
    let metrics = get(admin, "/metrics").await.text();
    assert!(
        metrics.contains("config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("config_generation 2"), "{metrics}");
    std::fs::remove_file(&path).ok();
}

#[tokio::test]
async fn request_and_upstream_metrics() {
    let up = upstream().run().await;
    let dead = dead_address();
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  users: {{ discovery: {{ static: [{}] }} }}\n  dead: {{ discovery: {{ static: [{dead}] }} }}\n\
         routes:\n\
         \x20 - {{ name: api, match: {{ path_prefix: /api }}, upstream: users }}\n\
         \x20 - {{ name: gone, match: {{ path_prefix: /gone }}, upstream: dead }}\n",
        up.addr
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    for _ in 0..3 {
        assert_eq!(client.get("/api/x").await.status, 200);
    }
    assert_eq!(
        client
            .request(req("POST", "/api/y").body(body("b")).unwrap())
            .await
            .status,
        200
    );
    assert_eq!(client.get("/gone").await.status, 502);
    assert_eq!(client.get("/nowhere").await.status, 404);

    let metrics = get(gw.admin(), "/metrics").await.text();
    for line in [
        "requests_total{route=\"api\",method=\"GET\",status=\"200\"} 3",
        "requests_total{route=\"api\",method=\"POST\",status=\"200\"} 1",
        "requests_total{route=\"gone\",method=\"GET\",status=\"502\"} 1",
        "requests_total{route=\"(none)\",method=\"GET\",status=\"404\"} 1",
        "request_duration_seconds_count{route=\"api\"} 4",
        "upstream_request_duration_seconds_count{upstream=\"users\"} 4",
        "upstream_errors_total{upstream=\"dead\",kind=\"connect_error\"} 1",
        "request_duration_seconds_bucket{le=\"+Inf\",route=\"api\"} 4",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

async fn admin_call(admin: std::net::SocketAddr, method: &str, path: &str, auth: &[&str]) -> Reply {
    let mut client = Client::http1(admin).await;
    let mut request = req(method, path);
    for value in auth {
        request = request.header("authorization", *value);
    }
    client.request(request.body(empty()).unwrap()).await
}

#[tokio::test]
async fn an_admin_token_guards_every_change_and_rotates_on_reload() {
    let up = upstream().run().await;
    let path = temp_path("admin-token.yaml");
    let yaml = |token_var: &str| {
        file_config(up.addr, "t", "PORTCULLIS_ADMIN_TEST_TOKEN").replace(
            "admin: { address: 127.0.0.1:0 }",
            &format!("admin: {{ address: 127.0.0.1:0, token: \"${{{token_var}}}\" }}"),
        )
    };
    std::fs::write(&path, yaml("PORTCULLIS_ADMIN_TEST_TOKEN")).unwrap();
    let gw = gateway_file_env(
        &path,
        &[
            ("PORTCULLIS_ADMIN_TEST_TOKEN", "first-token-0123456789"),
            // Named by the file only after the reload below.
            ("PORTCULLIS_ADMIN_TEST_TOKEN_2", "second-token-0123456789"),
        ],
    );
    let admin = gw.admin();

    // Reads stay open, for probes and scrapers.
    for read in ["/healthz", "/ready", "/metrics", "/upstreams", "/config"] {
        assert_eq!(
            admin_call(admin, "GET", read, &[]).await.status,
            200,
            "{read}"
        );
    }
    // Every change needs the token.
    let refused: [&[&str]; 6] = [
        &[],
        &["Bearer wrong-token-0123456789"],
        &["Bearer first-token-012345678"],
        &["Basic Zmlyc3QtdG9rZW4tMDEyMzQ1Njc4OQ=="],
        &["first-token-0123456789"],
        &[
            "Bearer first-token-0123456789",
            "Bearer first-token-0123456789",
        ],
    ];
    for auth in refused {
        for (method, target) in [("POST", "/reload"), ("DELETE", "/cache?prefix=/")] {
            let reply = admin_call(admin, method, target, auth).await;
            assert_eq!(reply.status, 401, "{method} {target} with {auth:?}");
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"portcullis-admin\"")
            );
        }
    }
    let routes = get(admin, "/routes").await.json();
    assert_eq!(routes["generation"], 1, "a refused reload ran");
    let good = ["Bearer first-token-0123456789"];
    assert_eq!(
        admin_call(admin, "DELETE", "/cache?prefix=/", &good)
            .await
            .status,
        200
    );

    // A reload with a new token: the new one works, the old one no longer does.
    std::fs::write(&path, yaml("PORTCULLIS_ADMIN_TEST_TOKEN_2")).unwrap();
    assert_eq!(
        admin_call(admin, "POST", "/reload", &good).await.status,
        200
    );
    assert_eq!(
        admin_call(admin, "POST", "/reload", &good).await.status,
        401
    );
    let second = ["bearer second-token-0123456789"];
    assert_eq!(
        admin_call(admin, "POST", "/reload", &second).await.status,
        200
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn an_admin_address_other_hosts_reach_needs_a_token() {
    let base = "listeners: [{ name: http, address: 127.0.0.1:0 }]\nroutes: [{ name: a, respond: { body: a } }]\n";
    let parse =
        |admin: &str| portcullis::config::parse(&format!("{base}admin: {admin}\n"), "t", &|_| None);
    let error = parse("{ address: 0.0.0.0:9901 }").unwrap_err();
    assert!(
        error.issues()[0].starts_with(
            "admin.address: 0.0.0.0:9901 is reachable from other hosts: set admin.token"
        ),
        "{:?}",
        error.issues()
    );
    assert!(parse("{ address: \"[::]:9901\" }").is_err());
    assert!(parse("{ address: 0.0.0.0:9901, token: a-long-enough-admin-token }").is_ok());
    assert!(parse("{ address: 0.0.0.0:9901, insecure: true }").is_ok());
    assert!(parse("{ address: 127.0.0.1:9901 }").is_ok());
    assert!(parse("{ address: \"[::1]:9901\" }").is_ok());
    let short = parse("{ token: short }").unwrap_err();
    assert!(
        short.issues()[0].starts_with("admin.token: must be at least 16 characters"),
        "{:?}",
        short.issues()
    );
}

/// The `build_info` series: `(version, config_hash)`, and how many there are.
async fn build_info(gw: &TestGateway) -> (String, String, usize) {
    let metrics = get(gw.admin(), "/metrics").await.text();
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("build_info{"))
        .collect();
    let line = lines.first().copied().unwrap_or_default();
    let label = |name: &str| {
        let start = line.find(&format!("{name}=\"")).map(|i| i + name.len() + 2);
        start
            .and_then(|s| Some(line[s..][..line[s..].find('"')?].to_string()))
            .unwrap_or_default()
    };
    assert!(line.ends_with(" 1"), "{metrics}");
    (label("version"), label("config_hash"), lines.len())
}

#[tokio::test]
async fn build_info_names_the_version_and_the_config_without_its_secrets() {
    let up = upstream().run().await;
    let yaml = file_config(up.addr, "first", "PORTCULLIS_ADMIN_TEST_SECRET_C");
    let one = gateway_env(&yaml, &[("PORTCULLIS_ADMIN_TEST_SECRET_C", "one")]);
    let two = gateway_env(&yaml, &[("PORTCULLIS_ADMIN_TEST_SECRET_C", "two")]);
    let (version, hash, series) = build_info(&one).await;
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert_eq!((hash.len(), series), (12, 1), "{hash}");
    // Another secret, the same config: the same hash (the hash says nothing of secrets).
    assert_eq!(build_info(&two).await.1, hash);
    // Another config: another hash, and the old series is gone.
    one.reload(&file_config(
        up.addr,
        "second",
        "PORTCULLIS_ADMIN_TEST_SECRET_C",
    ))
    .unwrap();
    let (_, changed, series) = build_info(&one).await;
    assert_ne!(changed, hash);
    assert_eq!(series, 1);
}
