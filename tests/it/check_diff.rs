//! `portcullis check --diff`: a file compared with the config a running gateway serves.

use crate::config_errors::{cli, cli_env};
use crate::support::*;

/// A config with the pieces each kind of change touches.
fn config(upstream: std::net::SocketAddr, admin: std::net::SocketAddr, tweak: &str) -> String {
    let base = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         admin: {{ address: {admin} }}\n\
         upstreams:\n  users: {{ discovery: {{ static: [{upstream}] }}, timeouts: {{ connect: 1s }} }}\n\
         filters:\n  limit: {{ rate_limit: {{ rate: 10/s, burst: 20 }} }}\n\
         routes:\n\
         \x20 - {{ name: api, match: {{ path_prefix: /api }}, upstream: users, filters: [{{ use: limit }}] }}\n\
         \x20 - {{ name: old, match: {{ path: /old }}, respond: {{ body: old }} }}\n"
    );
    match tweak {
        "" => base,
        "changes" => base
            .replace("address: 127.0.0.1:0 }]", "address: 127.0.0.1:1 }]")
            .replace("connect: 1s", "connect: 2s")
            .replace("rate: 10/s", "rate: 20/s")
            .replace(
                "  - { name: old, match: { path: /old }, respond: { body: old } }\n",
                "  - { name: new, match: { path: /new }, respond: { body: new } }\n",
            ),
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_against_the_running_gateway_by_section_with_exit_codes() {
    let up = upstream().run().await;
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let gw = gateway(&config(up.addr, admin_addr, ""));
    assert_eq!(gw.admin(), admin_addr);
    let path = temp_path("diff.yaml");
    let file = path.to_str().unwrap();

    // The same file: nothing to do. The admin address comes from the file itself.
    std::fs::write(&path, config(up.addr, admin_addr, "")).unwrap();
    let (code, stdout, stderr) =
        tokio::task::block_in_place(|| cli(&["check", "--diff", "-c", file]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("no changes"), "{stdout}");

    // One change of each kind, with the keys that changed; the listener needs a restart.
    std::fs::write(&path, config(up.addr, admin_addr, "changes")).unwrap();
    let url = format!("http://{admin_addr}");
    let (code, stdout, _) =
        tokio::task::block_in_place(|| cli(&["check", "--diff", "--admin", &url, "-c", file]));
    assert_eq!(code, 2, "{stdout}");
    let expected = [
        "listeners:",
        "  ~ http: address  (needs a restart: a reload does not apply it)",
        "upstreams:",
        "  ~ users: timeouts.connect",
        "filters:",
        "  ~ limit: rate_limit.rate",
        "routes:",
        "  - old",
        "  + new",
    ];
    let lines: Vec<&str> = stdout.lines().take(expected.len()).collect();
    assert_eq!(lines, expected, "{stdout}");
    assert!(
        stdout.contains("5 change(s) against the gateway at http://"),
        "{stdout}"
    );

    // An invalid file, or no gateway to ask: 1.
    std::fs::write(&path, "routes: [ { name: broken } ]\n").unwrap();
    let (code, _, stderr) = tokio::task::block_in_place(|| cli(&["check", "--diff", "-c", file]));
    assert_eq!(code, 1, "{stderr}");
    std::fs::write(&path, config(up.addr, admin_addr, "")).unwrap();
    let nobody = format!("http://{}", dead_address());
    let (code, _, stderr) =
        tokio::task::block_in_place(|| cli(&["check", "--diff", "--admin", &nobody, "-c", file]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot read the running config"),
        "{stderr}"
    );
    std::fs::remove_file(&path).ok();
}

/// A config whose running state each tweak keeps or resets in a known way.
fn stateful(upstream: std::net::SocketAddr, admin: std::net::SocketAddr, tweak: u8) -> String {
    let (ttl, size, connect, old_route) = match tweak {
        0 => ("1m", "64MiB", "1s", true),
        // Cache ttl (keeps the store), rate (new buckets), a timeout (new connections), a
        // route removed (its breaker goes).
        1 => ("2m", "64MiB", "2s", false),
        // Only the cache's size: a new store; everything else stays.
        _ => ("2m", "128MiB", "2s", false),
    };
    let rate = if tweak == 0 { "1/m" } else { "2/m" };
    let old = if old_route {
        "  - { name: old, match: { path: /old }, upstream: spare, filters: [{ circuit_breaker: { consecutive_failures: 5 } }] }\n"
    } else {
        ""
    };
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         admin: {{ address: {admin}, token: s3cret-admin-token-0123 }}\n\
         upstreams:\n\
         \x20 users: {{ discovery: {{ static: [{upstream}] }}, timeouts: {{ connect: {connect} }}, health_check: {{ path: /, interval: 1h }} }}\n\
         \x20 spare: {{ discovery: {{ static: [{upstream}] }} }}\n\
         filters:\n  limit: {{ rate_limit: {{ rate: {rate}, burst: 1 }} }}\n\
         routes:\n\
         \x20 - {{ name: api, match: {{ path_prefix: /api }}, upstream: users, filters: [{{ cache: {{ ttl: {ttl}, max_size: {size} }} }}, {{ use: limit }}, {{ circuit_breaker: {{ consecutive_failures: 5 }} }}] }}\n\
         {old}"
    )
}

/// The state section of `check --diff`'s output, as (fate, state, place) lines.
fn state_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|line| *line != "state:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_report_says_what_the_reload_then_keeps_and_resets() {
    let up = upstream().run().await;
    let admin_addr = dead_address();
    let path = temp_path("state.yaml");
    let file = path.to_str().unwrap();
    std::fs::write(&path, stateful(up.addr, admin_addr, 0)).unwrap();
    let gw = gateway_file(&path);
    let idle = || async {
        let upstreams = get(admin_addr, "/upstreams").await.json();
        let users = &upstreams["upstreams"].as_array().unwrap()[1];
        assert_eq!(users["name"], "users");
        users["endpoints"][0]["idle_connections"].as_u64().unwrap()
    };
    // A cached page, a spent bucket and a pooled connection.
    assert_eq!(
        get(gw.addr(), "/api/page").await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        get(gw.addr(), "/api/page").await.header("x-cache"),
        Some("HIT")
    );
    assert_eq!(get(gw.addr(), "/api/other").await.status, 429);
    assert!(idle().await >= 1);

    // The report, asked with the file's own admin token; nothing is applied by asking.
    std::fs::write(&path, stateful(up.addr, admin_addr, 1)).unwrap();
    let (code, stdout, stderr) =
        tokio::task::block_in_place(|| cli(&["check", "--diff", "-c", file]));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(
        state_lines(&stdout),
        [
            "reset rate_limit limit #0",
            "reset connections users",
            "dropped circuit_breaker old spare",
            "carried cache api #0",
            "carried circuit_breaker api users",
            "carried discovery users",
            "carried health users",
            "carried connections spare",
            "carried discovery spare",
        ],
        "{stdout}"
    );
    assert_eq!(
        get(gw.addr(), "/api/other").await.status,
        429,
        "asking applied nothing"
    );

    // The reload does what the report said.
    gw.running.reload().unwrap();
    assert_eq!(
        get(gw.addr(), "/api/page").await.header("x-cache"),
        Some("HIT")
    );
    assert_eq!(idle().await, 0, "new connections");
    assert_eq!(
        get(gw.addr(), "/api/other").await.status,
        200,
        "new buckets"
    );
    assert_eq!(get(gw.addr(), "/api/more").await.status, 429);
    assert!(idle().await >= 1);

    std::fs::write(&path, stateful(up.addr, admin_addr, 2)).unwrap();
    let (code, stdout, _) = tokio::task::block_in_place(|| cli(&["check", "--diff", "-c", file]));
    assert_eq!(code, 2, "{stdout}");
    let lines = state_lines(&stdout);
    assert_eq!(lines[0], "reset cache api #0", "{stdout}");
    assert!(
        lines[1..].iter().all(|l| l.starts_with("carried ")),
        "{stdout}"
    );
    assert!(
        lines.contains(&"carried rate_limit limit #0".to_string()),
        "{stdout}"
    );
    gw.running.reload().unwrap();
    let page = get(gw.addr(), "/api/page").await;
    assert_ne!(page.header("x-cache"), Some("HIT"), "a new, empty store");
    assert_eq!(page.status, 429, "the bucket carried over");
    assert!(idle().await >= 1, "the pool carried over");

    // A wrong token: the changes still print, without the state report.
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        cli_env(
            &["check", "--diff", "-c", file],
            &[("PORTCULLIS_ADMIN_TOKEN", "wrong")],
        )
    });
    assert_eq!(code, 0, "{stdout}{stderr}");
    std::fs::write(&path, stateful(up.addr, admin_addr, 1)).unwrap();
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        cli_env(
            &["check", "--diff", "-c", file],
            &[("PORTCULLIS_ADMIN_TOKEN", "wrong")],
        )
    });
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(state_lines(&stdout).is_empty(), "{stdout}");
    assert!(
        stderr.contains("no state report") && stderr.contains("401"),
        "{stderr}"
    );

    // A file that is valid here but that the gateway would reject (a variable only this
    // shell has): exit 1 with the gateway's reasons.
    let text = stateful(up.addr, admin_addr, 0).replace(
        "path: /, interval",
        "path: \"/${PLAN_ONLY_HERE}\", interval",
    );
    std::fs::write(&path, text).unwrap();
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        cli_env(
            &["check", "--diff", "-c", file],
            &[("PLAN_ONLY_HERE", "healthz")],
        )
    });
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("would reject") && stderr.contains("PLAN_ONLY_HERE"),
        "{stderr}"
    );
    std::fs::remove_file(&path).ok();
}
