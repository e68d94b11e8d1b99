//! Per-client connection limits at accept: connections one address holds open, and how fast it
//! opens new ones; peers in `trusted_proxies` are exempt.

use crate::support::*;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const TWO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

fn yaml(limits: &str, head: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n{head}\
         limits: {{ {limits} }}\n\
         routes: [ {{ name: ping, respond: {{ body: pong }} }} ]\n"
    )
}

/// A keep-alive connection from `from` that got one answer, or `None` when the gateway
/// closed it without one.
async fn open_from(from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(to).await.ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer or a close in time")
        .unwrap_or(0);
    (n > 0 && buf.starts_with(b"HTTP/1.1 200")).then_some(stream)
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let gw = gateway(&with_test_admin(&yaml("max_connections_per_ip: 3", "")));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open_from(ONE, gw.addr()).await.expect("within the share"));
    }
    assert!(
        open_from(ONE, gw.addr()).await.is_none(),
        "a fourth from one address"
    );
    // Another client is not affected.
    let other = open_from(TWO, gw.addr()).await;
    assert!(other.is_some());
    // A closed connection gives its place back.
    drop(held.pop());
    let mut reopened = None;
    for _ in 0..50 {
        reopened = open_from(ONE, gw.addr()).await;
        if reopened.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "the freed place is taken again");
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert!(
        metrics.contains(
            "connections_refused_total{listener=\"http\",reason=\"max_connections_per_ip\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn one_address_cannot_open_connections_faster_than_its_rate() {
    let gw = gateway(&yaml(
        "connection_rate_per_ip: 1/m, connection_burst_per_ip: 2",
        "",
    ));
    assert!(open_from(ONE, gw.addr()).await.is_some());
    assert!(open_from(ONE, gw.addr()).await.is_some());
    assert!(
        open_from(ONE, gw.addr()).await.is_none(),
        "a third within the minute"
    );
    assert!(open_from(TWO, gw.addr()).await.is_some());
}

#[tokio::test]
async fn without_a_burst_one_seconds_worth_may_come_at_once() {
    let gw = gateway(&yaml("connection_rate_per_ip: 3/m", ""));
    // 3 a minute is 0 a second: the burst is at least one connection.
    assert!(open_from(ONE, gw.addr()).await.is_some());
    assert!(open_from(ONE, gw.addr()).await.is_none());
    let gw = gateway(&yaml("connection_rate_per_ip: 2/s", ""));
    assert!(open_from(ONE, gw.addr()).await.is_some());
    assert!(open_from(ONE, gw.addr()).await.is_some());
    assert!(
        open_from(ONE, gw.addr()).await.is_none(),
        "a third within the burst of two"
    );
}

#[tokio::test]
async fn trusted_proxies_are_not_held_to_one_clients_share() {
    let gw = gateway(&yaml(
        "max_connections_per_ip: 1, connection_rate_per_ip: 1/m, connection_burst_per_ip: 1",
        "trusted_proxies: [127.0.0.1/32]\n",
    ));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            open_from(ONE, gw.addr())
                .await
                .expect("a trusted proxy's connection"),
        );
    }
    assert!(open_from(TWO, gw.addr()).await.is_some());
    assert!(open_from(TWO, gw.addr()).await.is_none());
}

#[test]
fn limit_errors_name_their_keys() {
    assert_eq!(
        config_errors(&yaml(
            "max_connections_per_ip: 0, connection_rate_per_ip: fast",
            ""
        )),
        [
            "limits.max_connections_per_ip: must be at least 1 (line 2)",
            "limits.connection_rate_per_ip: invalid rate \"fast\": expected COUNT/PERIOD, e.g. 100/s or 6000/m (line 2)",
        ]
    );
    assert_eq!(
        config_errors(&yaml("connection_burst_per_ip: 5", "")),
        ["limits.connection_burst_per_ip: applies only with connection_rate_per_ip (line 2)"]
    );
}
