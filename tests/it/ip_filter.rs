//! `ip_filter`: allow and deny lists on the client address the gateway trusts, inline and
//! from files another tool rewrites, through a real gateway.

use crate::support::*;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn yaml(upstream: SocketAddr, head: &str, filter: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n{head}\
         upstreams:\n  up: {{ discovery: {{ static: [{upstream}] }} }}\n\
         routes:\n\
         \x20 - {{ name: guarded, match: {{ path_prefix: /guarded }}, upstream: up, filters: [ {{ ip_filter: {filter} }} ] }}\n\
         \x20 - {{ name: open, upstream: up }}\n"
    )
}

/// One request from source address `from`; the status and the whole answer.
async fn get_from(from: IpAddr, to: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let socket = if from.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

const ONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const TWO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test]
async fn a_denied_client_gets_403_json_and_other_routes_stay_open() {
    let up = upstream().run().await;
    let gw = gateway(&yaml(up.addr, "", "{ deny: [127.0.0.1/32] }"));
    let (status, text) = get_from(ONE, gw.addr(), "/guarded", "").await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("application/json"), "{text}");
    assert!(
        text.contains("\"error\":\"client address not allowed\""),
        "{text}"
    );
    assert_eq!(
        up.requests(),
        0,
        "a refused request never reaches the upstream"
    );
    assert_eq!(get_from(TWO, gw.addr(), "/guarded", "").await.0, 200);
    assert_eq!(get_from(ONE, gw.addr(), "/other", "").await.0, 200);
}

#[tokio::test]
async fn with_an_allow_list_only_listed_clients_pass_and_deny_wins() {
    let up = upstream().run().await;
    let gw = gateway(&yaml(
        up.addr,
        "",
        "{ allow: [127.0.0.0/8, \"::1\"], deny: [127.0.0.1] }",
    ));
    // On the allow list but also denied: deny wins.
    assert_eq!(get_from(ONE, gw.addr(), "/guarded", "").await.0, 403);
    assert_eq!(get_from(TWO, gw.addr(), "/guarded", "").await.0, 200);
    let gw = gateway(&yaml(up.addr, "", "{ allow: [127.0.0.2] }"));
    assert_eq!(get_from(ONE, gw.addr(), "/guarded", "").await.0, 403);
    assert_eq!(get_from(TWO, gw.addr(), "/guarded", "").await.0, 200);
}

#[tokio::test]
async fn ipv6_clients_match_ipv6_prefixes() {
    let up = upstream().run().await;
    let config = yaml(up.addr, "", "{ deny: [\"::1/128\"] }").replace("127.0.0.1:0", "\"[::1]:0\"");
    let gw = gateway(&config);
    let v6: IpAddr = "::1".parse().unwrap();
    assert_eq!(get_from(v6, gw.addr(), "/guarded", "").await.0, 403);
    assert_eq!(get_from(v6, gw.addr(), "/other", "").await.0, 200);
    let config =
        yaml(up.addr, "", "{ allow: [\"2001:db8::/32\"] }").replace("127.0.0.1:0", "\"[::1]:0\"");
    let gw = gateway(&config);
    assert_eq!(get_from(v6, gw.addr(), "/guarded", "").await.0, 403);
}

#[tokio::test]
async fn the_address_is_the_one_trusted_proxies_reveal_never_a_spoofed_header() {
    let up = upstream().run().await;
    let gw = gateway(&yaml(
        up.addr,
        "trusted_proxies: [127.0.0.1/32]\n",
        "{ deny: [203.0.113.0/24, 127.0.0.2] }",
    ));
    // From the trusted proxy, the forwarded client decides.
    let bad = "X-Forwarded-For: 203.0.113.9\r\n";
    let good = "X-Forwarded-For: 198.51.100.4\r\n";
    assert_eq!(get_from(ONE, gw.addr(), "/guarded", bad).await.0, 403);
    assert_eq!(get_from(ONE, gw.addr(), "/guarded", good).await.0, 200);
    // A client behind a chain: the last untrusted hop counts, not what it claims before it.
    let chained = "X-Forwarded-For: 198.51.100.4, 203.0.113.9\r\n";
    assert_eq!(get_from(ONE, gw.addr(), "/guarded", chained).await.0, 403);
    // An untrusted peer cannot talk its way past the list with a header.
    assert_eq!(get_from(TWO, gw.addr(), "/guarded", good).await.0, 403);
}

#[tokio::test]
async fn a_list_file_is_followed_and_a_bad_rewrite_keeps_the_last_good_list() {
    let up = upstream().run().await;
    let file = temp_path("blocklist.txt");
    std::fs::write(&file, "# nothing of ours yet\n10.0.0.0/8\n").unwrap();
    let gw = gateway(&with_test_admin(&yaml(
        up.addr,
        "",
        &format!("{{ deny_file: {}, file_interval: 50ms }}", file.display()),
    )));
    assert_eq!(get_from(ONE, gw.addr(), "/guarded", "").await.0, 200);

    std::fs::write(&file, "10.0.0.0/8\n127.0.0.1 # abuse\n").unwrap();
    wait_for_status(ONE, gw.addr(), 403).await;
    assert_eq!(get_from(TWO, gw.addr(), "/guarded", "").await.0, 200);

    // A bad line: not applied, counted, and the last good list still holds.
    std::fs::write(&file, "127.0.0.1\n127.0.0.999\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get_from(ONE, gw.addr(), "/guarded", "").await.0, 403);
    assert_eq!(get_from(TWO, gw.addr(), "/guarded", "").await.0, 200);
    let metrics = get(gw.admin(), "/metrics").await.text();
    let failures = format!(
        "ip_filter_list_failures_total{{file=\"{}\"}} 1",
        file.display()
    );
    assert!(metrics.contains(&failures), "{metrics}");
    assert!(
        metrics.contains("ip_filter_refused_total{filter=\"guarded\",reason=\"deny\"} 2"),
        "{metrics}"
    );

    // Gone from the file: let in again.
    std::fs::write(&file, "10.0.0.0/8\n").unwrap();
    wait_for_status(ONE, gw.addr(), 200).await;
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn an_allow_file_refuses_everyone_else_and_counts_why() {
    let up = upstream().run().await;
    let file = temp_path("allow.txt");
    std::fs::write(&file, "127.0.0.2\n").unwrap();
    let gw = gateway(&with_test_admin(&yaml(
        up.addr,
        "",
        &format!("{{ allow_file: {} }}", file.display()),
    )));
    assert_eq!(get_from(ONE, gw.addr(), "/guarded", "").await.0, 403);
    assert_eq!(get_from(TWO, gw.addr(), "/guarded", "").await.0, 200);
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(
        metrics.contains("ip_filter_refused_total{filter=\"guarded\",reason=\"not_allowed\"} 1"),
        "{metrics}"
    );
    let _ = std::fs::remove_file(&file);
}

/// Polls until a request from `from` gets `status` (a file change is picked up within a few
/// intervals); fails after two seconds.
async fn wait_for_status(from: IpAddr, to: SocketAddr, status: u16) {
    for _ in 0..40 {
        if get_from(from, to, "/guarded", "").await.0 == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never answered {status}");
}

#[test]
fn config_errors_name_the_key_and_the_file_line() {
    let file = temp_path("bad-list.txt");
    std::fs::write(&file, "10.0.0.0/8\n\nnot-a-prefix\n").unwrap();
    let errors = config_errors(&format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         routes:\n\
         \x20 - name: a\n    respond: {{ body: ok }}\n    filters:\n\
         \x20     - ip_filter: {{ deny: [10.0.0.0/8, 10.0.0/8, \"::1/129\"] }}\n\
         \x20     - ip_filter: {{}}\n\
         \x20     - ip_filter: {{ allow: [] }}\n\
         \x20     - ip_filter: {{ deny_file: {} }}\n\
         \x20     - ip_filter: {{ allow_file: /nonexistent/allow.txt, file_interval: 0s }}\n",
        file.display()
    ));
    let expected_prefix = "invalid prefix";
    assert!(
        errors[0].starts_with(&format!(
            "routes[0].filters[0].ip_filter.deny[1]: {expected_prefix} \"10.0.0/8\""
        )),
        "{errors:?}"
    );
    assert!(errors[0].ends_with("(line 6)"), "{errors:?}");
    assert!(
        errors[1].starts_with("routes[0].filters[0].ip_filter.deny[2]: invalid prefix \"::1/129\""),
        "{errors:?}"
    );
    assert_eq!(
        errors[2],
        "routes[0].filters[1].ip_filter: needs allow, allow_file, deny or deny_file (line 7)"
    );
    assert!(
        errors[3].starts_with(
            "routes[0].filters[2].ip_filter.allow: an empty allow list would refuse every client"
        ),
        "{errors:?}"
    );
    assert_eq!(
        errors[4],
        format!(
            "routes[0].filters[3].ip_filter.deny_file: {}: line 3: invalid prefix \"not-a-prefix\": expected an address or ADDRESS/BITS, e.g. 10.0.0.0/8 or 2001:db8::/32 (line 9)",
            file.display()
        )
    );
    assert!(
        errors[5].starts_with(
            "routes[0].filters[4].ip_filter.allow_file: cannot read /nonexistent/allow.txt"
        ),
        "{errors:?}"
    );
    assert_eq!(
        errors[6],
        "routes[0].filters[4].ip_filter.file_interval: must be greater than zero (line 10)"
    );
    assert_eq!(errors.len(), 7, "{errors:?}");
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn as_a_listener_default_it_guards_every_route_and_unrouted_paths_of_that_listener() {
    let up = upstream().run().await;
    let config = |deny: &str| {
        format!(
            "listeners:\n\
             \x20 - {{ name: public, address: 127.0.0.1:0, filters: [ {{ use: blocklist }} ] }}\n\
             \x20 - {{ name: internal, address: 127.0.0.1:0 }}\n\
             filters:\n  blocklist: {{ ip_filter: {{ deny: [{deny}] }} }}\n\
             upstreams:\n  up: {{ discovery: {{ static: [{}] }} }}\n\
             routes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: up }}\n",
            up.addr
        )
    };
    let gw = gateway(&config("127.0.0.1"));
    let public = gw.addr_of("public");
    let (status, text) = get_from(ONE, public, "/api/x", "").await;
    assert_eq!(status, 403, "{text}");
    // Refused before routing: a path no route serves gets 403, not 404.
    assert_eq!(get_from(ONE, public, "/nowhere", "").await.0, 403);
    assert_eq!(get_from(TWO, public, "/api/x", "").await.0, 200);
    assert_eq!(get_from(TWO, public, "/nowhere", "").await.0, 404);
    // The other listener has no default filters.
    assert_eq!(
        get_from(ONE, gw.addr_of("internal"), "/api/x", "").await.0,
        200
    );
    assert_eq!(up.requests(), 2);
    // A reload changes the listener's filters in place (the listener stays bound).
    let applied = gw.reload(&config("127.0.0.2")).unwrap();
    assert!(
        applied.needs_restart.is_empty(),
        "{:?}",
        applied.needs_restart
    );
    assert_eq!(get_from(ONE, public, "/api/x", "").await.0, 200);
    assert_eq!(get_from(TWO, public, "/api/x", "").await.0, 403);
}
