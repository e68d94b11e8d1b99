//! Balancing strategies through a real gateway with several endpoints.

use crate::support::*;

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

/// Which of `ups` served each of `n` requests sent one after another.
async fn sequence(client: &mut Client, ups: &[Upstream], n: usize) -> Vec<usize> {
    let mut served = Vec::with_capacity(n);
    for _ in 0..n {
        let before: Vec<usize> = ups.iter().map(|u| u.requests()).collect();
        assert_eq!(client.get("/").await.status, 200);
        let which = ups.iter().zip(&before).position(|(u, b)| u.requests() > *b);
        served.push(which.expect("no endpoint saw the request"));
    }
    served
}

#[tokio::test]
async fn least_request_sends_most_requests_to_the_endpoint_with_fewer_in_flight() {
    let slow = upstream()
        .delay(std::time::Duration::from_millis(300))
        .run()
        .await;
    let fast = upstream().run().await;
    let gw = gateway(&config(&[slow.addr, fast.addr], "least_request"));
    let addr = gw.addr();
    // Eight clients, ten requests each, all at once: the slow endpoint's requests pile up in
    // flight, so least_request sends the others to the fast one. Round robin or random would
    // give the slow one about half.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::http1(addr).await;
                for _ in 0..10 {
                    assert_eq!(client.get("/").await.status, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let total = slow.requests() + fast.requests();
    assert_eq!(total, 80);
    assert!(
        slow.requests() * 5 < total,
        "the slow endpoint got {} of {total} requests",
        slow.requests()
    );
}

#[tokio::test]
async fn random_spreads_by_weight_without_a_fixed_order() {
    let ups = [upstream().run().await, upstream().run().await];
    let yaml = config(&[], "random").replace(
        "static: []",
        &format!(
            "static: [{{ address: {}, weight: 3 }}, {}]",
            ups[0].addr, ups[1].addr
        ),
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    let served = sequence(&mut client, &ups, 400).await;
    // Weighted 3:1 (a binomial over 400 stays within these bounds but for odds of ~1e-9).
    let heavy = served.iter().filter(|&&i| i == 0).count();
    assert!(
        (250..=350).contains(&heavy),
        "the weight-3 endpoint served {heavy} of 400"
    );
    // Not a fixed rotation: round robin repeats the same pattern, random does not. Over the
    // pairs of consecutive requests, a weighted round robin never serves the light endpoint
    // twice in a row; random does so about 1 time in 16.
    let light_twice = served.windows(2).filter(|w| w == &[1, 1]).count();
    assert!(
        light_twice >= 5,
        "the light endpoint never served twice in a row: {light_twice}"
    );
}

#[tokio::test]
async fn round_robin_alternates_and_bad_balancers_are_config_errors() {
    let ups = [upstream().run().await, upstream().run().await];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let gw = gateway(&config(&addrs, "round_robin"));
    let mut client = Client::http1(gw.addr()).await;
    let served = sequence(&mut client, &ups, 20).await;
    assert!(served.windows(2).all(|w| w[0] != w[1]), "{served:?}");
    let issues = config_errors(&config(&addrs, "{ consistent_hash: { body: x } }"));
    assert!(
        issues[0].starts_with("upstreams.up.balance: invalid balancer"),
        "{:?}",
        issues
    );
}
