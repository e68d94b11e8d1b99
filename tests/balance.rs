//! Balancing strategies through a real gateway with several endpoints.

mod support;

use support::*;

fn config(endpoints: &[std::net::SocketAddr], balance: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| a.to_string()).collect();
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up:\n    discovery: {{ static: [{}] }}\n    balance: {balance}\n\
         routes:\n  - name: all\n    upstream: up\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn consistent_hashing_keeps_a_user_on_one_endpoint() {
    let ups = [
        upstream().run().await,
        upstream().run().await,
        upstream().run().await,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let gw = gateway(&config(&addrs, "{ consistent_hash: { header: x-user } }"));
    let mut client = Client::http1(gw.addr()).await;
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        let before: Vec<usize> = ups.iter().map(|u| u.requests()).collect();
        for _ in 0..5 {
            let reply = client
                .request(
                    req("GET", "/")
                        .header("x-user", user)
                        .body(empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(reply.status, 200);
        }
        let served: Vec<usize> = ups
            .iter()
            .zip(&before)
            .map(|(u, b)| u.requests() - b)
            .collect();
        assert!(served.contains(&5), "{user} was spread: {served:?}");
    }
    // Without the header: round robin over all three.
    for _ in 0..6 {
        client.get("/").await;
    }
    assert!(ups.iter().all(|u| u.requests() > 0));
}

#[tokio::test]
async fn least_request_and_random_serve_and_bad_balancers_are_config_errors() {
    let ups = [upstream().run().await, upstream().run().await];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    for balance in ["least_request", "random"] {
        let gw = gateway(&config(&addrs, balance));
        let mut client = Client::http1(gw.addr()).await;
        for _ in 0..20 {
            assert_eq!(client.get("/").await.status, 200);
        }
    }
    assert!(ups.iter().all(|u| u.requests() > 0));
    let error = portcullis::config::parse(
        &config(&addrs, "{ consistent_hash: { body: x } }"),
        "t",
        &|_| None,
    )
    .unwrap_err();
    assert!(
        error.issues()[0].starts_with("upstreams.up.balance: invalid balancer"),
        "{:?}",
        error.issues()
    );
}
