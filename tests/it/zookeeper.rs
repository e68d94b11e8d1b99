//! Discovery from a real ZooKeeper: Curator service instances and plain addresses, followed
//! through watches, kept through an outage.

use crate::discovery::{metric, spread, until_avoided, until_served, upstream_status};
use crate::support::*;
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// A registering service's own session, as Curator or a deploy tool would hold one.
struct Registrar {
    client: zk::Client,
}

const OPEN: zk::CreateOptions<'static> =
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
const EPHEMERAL: zk::CreateOptions<'static> =
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());

impl Registrar {
    async fn connect(zookeeper: &ZooKeeperServer) -> Registrar {
        let client = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(2))
            .connect(&zookeeper.address())
            .await
            .expect("zookeeper session");
        Registrar { client }
    }

    async fn mkdir(&self, path: &str) {
        self.client.mkdir(path, &OPEN).await.unwrap();
    }

    /// An ephemeral node: it goes with this session.
    async fn register(&self, path: &str, data: &str) {
        self.client
            .create(path, data.as_bytes(), &EPHEMERAL)
            .await
            .unwrap();
    }

    async fn set(&self, path: &str, data: &str) {
        self.client
            .set_data(path, data.as_bytes(), None)
            .await
            .unwrap();
    }

    async fn remove(&self, path: &str) {
        self.client.delete(path, None).await.unwrap();
    }
}

/// Polls `GET /upstreams` every 2 ms until `addr` is among the upstream's endpoints.
async fn until_listed(gw: &TestGateway, addr: std::net::SocketAddr) -> Duration {
    let start = Instant::now();
    let wanted = addr.to_string();
    loop {
        let status = upstream_status(gw, "orders").await;
        let endpoints = status["endpoints"].as_array().cloned().unwrap_or_default();
        if endpoints.iter().any(|e| e["address"] == wanted.as_str()) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{addr} not listed within 1s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn curator(id: &str, addr: std::net::SocketAddr, enabled: bool) -> String {
    format!(
        r#"{{"name":"orders","id":"{id}","address":"{}","port":{},"sslPort":null,"payload":null,"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{{"parts":[]}},"enabled":{enabled}}}"#,
        addr.ip(),
        addr.port()
    )
}

fn config(zookeeper: &ZooKeeperServer, path: &str, format: &str, extra: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  orders:\n    discovery: {{ zookeeper: {{ servers: [{}], path: {path}, format: {format}, session_timeout: 2s }}{extra} }}\n\
         routes:\n  - name: all\n    upstream: orders\n",
        zookeeper.address()
    )
}

#[tokio::test]
async fn curator_instances_route_follow_changes_within_a_second_and_survive_an_outage() {
    let Some(mut zookeeper) = ZooKeeperServer::start() else {
        return;
    };
    let (a, b, c) = (
        upstream().run().await,
        upstream().run().await,
        upstream().run().await,
    );
    let registrar = Registrar::connect(&zookeeper).await;
    registrar.mkdir("/services/orders").await;
    registrar
        .register("/services/orders/a", &curator("a", a.addr, true))
        .await;
    registrar
        .register("/services/orders/b", &curator("b", b.addr, true))
        .await;
    // Disabled instances take no traffic.
    registrar
        .register("/services/orders/c", &curator("c", c.addr, false))
        .await;
    let gw = gateway(&config(
        &zookeeper,
        "/services/orders",
        "curator",
        ", max_stale: 1s",
    ));
    let mut client = Client::http1(gw.addr()).await;
    until_served(&mut client, &a, Duration::from_secs(5)).await;
    until_served(&mut client, &b, Duration::from_secs(1)).await;
    assert_eq!(spread(&mut client, &[&a, &b, &c], 20).await, [10, 10, 0]);
    let status = upstream_status(&gw, "orders").await;
    assert_eq!(status["discovery"]["backend"], "zookeeper");
    assert_eq!(status["degraded"], false);

    // Changes reach routing within a second: enabling, removing, adding.
    let started = Instant::now();
    registrar
        .set("/services/orders/c", &curator("c", c.addr, true))
        .await;
    let listed = until_listed(&gw, c.addr).await;
    let enabled = listed + until_served(&mut client, &c, Duration::from_secs(1)).await;
    registrar.remove("/services/orders/a").await;
    let removed = until_avoided(&mut client, &a, Duration::from_secs(1)).await;
    registrar
        .register("/services/orders/a2", &curator("a2", a.addr, true))
        .await;
    let added = until_served(&mut client, &a, Duration::from_secs(1)).await;
    eprintln!(
        "zookeeper change to traffic: enabled {enabled:?} (in the balancer after {listed:?}), removed {removed:?}, added {added:?} ({:?} in all)",
        started.elapsed()
    );

    // A quiet registry is not a stale one: the connected session keeps the set current.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(upstream_status(&gw, "orders").await["degraded"], false);

    // ZooKeeper goes away: the last set keeps serving, and the outage shows.
    zookeeper.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let served = spread(&mut client, &[&a, &b, &c], 30).await;
    assert!(served.iter().all(|n| *n > 0), "{served:?}");
    let status = upstream_status(&gw, "orders").await;
    assert_eq!(status["degraded"], true, "{status}");
    let errors = metric(&gw, "discovery_errors_total{upstream=\"orders\"}").await;
    assert!(errors.unwrap_or(0.0) > 0.0, "{errors:?}");

    // Back: changes are followed again (the registrar's session may have expired meanwhile,
    // taking its ephemeral nodes; a new one registers).
    zookeeper.restart();
    let registrar = Registrar::connect(&zookeeper).await;
    registrar.mkdir("/services/orders").await;
    for (id, addr) in [("b", b.addr), ("c", c.addr)] {
        let path = format!("/services/orders/{id}-back");
        registrar.register(&path, &curator(id, addr, true)).await;
    }
    until_avoided(&mut client, &a, Duration::from_secs(15)).await;
    let served = spread(&mut client, &[&a, &b, &c], 20).await;
    assert_eq!(served, [0, 10, 10]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream_status(&gw, "orders").await["degraded"] != false {
        assert!(
            Instant::now() < deadline,
            "still degraded after the ensemble came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn addresses_by_name_or_data_and_instances_leave_with_their_session() {
    let Some(zookeeper) = ZooKeeperServer::start() else {
        return;
    };
    let (a, b, c) = (
        upstream().run().await,
        upstream().run().await,
        upstream().run().await,
    );
    let owner = Registrar::connect(&zookeeper).await;
    owner.mkdir("/services/orders").await;
    // The name is the address, or the data is.
    owner
        .register(&format!("/services/orders/{}", a.addr), "")
        .await;
    owner
        .register("/services/orders/member-b", &b.addr.to_string())
        .await;
    let gw = gateway(&config(&zookeeper, "/services/orders", "address", ""));
    let mut client = Client::http1(gw.addr()).await;
    until_served(&mut client, &a, Duration::from_secs(5)).await;
    until_served(&mut client, &b, Duration::from_secs(1)).await;

    // An instance whose session ends disappears; the others stay.
    let other = Registrar::connect(&zookeeper).await;
    let weighted = format!(r#"{{"address":"{}","weight":3}}"#, c.addr);
    other.register("/services/orders/member-c", &weighted).await;
    until_served(&mut client, &c, Duration::from_secs(1)).await;
    let served = spread(&mut client, &[&a, &b, &c], 50).await;
    assert_eq!(served, [10, 10, 30]);
    drop(other);
    until_avoided(&mut client, &c, Duration::from_secs(2)).await;
    assert_eq!(spread(&mut client, &[&a, &b, &c], 10).await, [5, 5, 0]);
}

#[tokio::test]
async fn a_path_that_needs_digest_credentials_is_read_with_them() {
    let Some(zookeeper) = ZooKeeperServer::start() else {
        return;
    };
    let a = upstream().run().await;
    // The registrar creates the path readable only by user `gw`.
    let owner = zk::Client::connector()
        .with_auth("digest", b"gw:secret")
        .connect(&zookeeper.address())
        .await
        .unwrap();
    let creator_only = zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all());
    owner.mkdir("/private", &OPEN).await.unwrap();
    owner
        .create("/private/orders", b"", &creator_only)
        .await
        .unwrap();
    owner
        .create(&format!("/private/orders/{}", a.addr), b"", &creator_only)
        .await
        .unwrap();
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n\
         \x20 good: {{ discovery: {{ zookeeper: {{ servers: [{addr}], path: /private/orders, format: address, auth: {{ scheme: digest, credentials: \"${{ZK_AUTH}}\" }} }} }} }}\n\
         \x20 anonymous: {{ discovery: {{ zookeeper: {{ servers: [{addr}], path: /private/orders, format: address }}, max_stale: 1s }} }}\n\
         routes:\n\
         \x20 - {{ name: anonymous, match: {{ path_prefix: /anonymous }}, upstream: anonymous }}\n\
         \x20 - {{ name: good, upstream: good }}\n",
        addr = zookeeper.address()
    );
    let gw = gateway_env(&yaml, &[("ZK_AUTH", "gw:secret")]);
    let mut client = Client::http1(gw.addr()).await;
    until_served(&mut client, &a, Duration::from_secs(5)).await;
    // Without the credentials the path cannot be read: nothing to route to, and it shows.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(client.get("/anonymous/x").await.status, 503);
    assert_eq!(upstream_status(&gw, "anonymous").await["degraded"], true);
    assert_eq!(upstream_status(&gw, "good").await["degraded"], false);
}
