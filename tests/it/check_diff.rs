//! `portcullis check --diff`: a file compared with the config a running gateway serves.

use crate::config_errors::cli;
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
