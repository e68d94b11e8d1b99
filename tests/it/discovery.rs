//! Endpoint discovery: a file another tool rewrites, a real etcd, a real DNS server.

use crate::support::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Sends `count` requests and returns how many each upstream served; every answer must be 200.
pub(crate) async fn spread(
    client: &mut Client,
    upstreams: &[&Upstream],
    count: usize,
) -> Vec<usize> {
    let before: Vec<usize> = upstreams.iter().map(|u| u.requests()).collect();
    for _ in 0..count {
        assert_eq!(client.get("/").await.status, 200, "a request failed");
    }
    upstreams
        .iter()
        .zip(before)
        .map(|(u, b)| u.requests() - b)
        .collect()
}

/// Polls with requests until `upstream` serves one; returns how long that took.
pub(crate) async fn until_served(
    client: &mut Client,
    upstream: &Upstream,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    let before = upstream.requests();
    while upstream.requests() == before {
        assert!(
            start.elapsed() < within,
            "{} got no traffic within {within:?}",
            upstream.addr
        );
        client.get("/").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// Polls until 20 requests in a row avoid `upstream`.
pub(crate) async fn until_avoided(
    client: &mut Client,
    upstream: &Upstream,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let before = upstream.requests();
        for _ in 0..20 {
            assert_eq!(client.get("/").await.status, 200, "a request failed");
        }
        if upstream.requests() == before {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{} still got traffic after {within:?}",
            upstream.addr
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn upstream_status(gw: &TestGateway, name: &str) -> Value {
    let answer = get(gw.admin(), "/upstreams").await.json();
    answer["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .cloned()
        .unwrap()
}

/// The value of one series in `/metrics`, e.g. `discovery_errors_total{upstream="api"}`.
pub(crate) async fn metric(gw: &TestGateway, series: &str) -> Option<f64> {
    let text = get(gw.admin(), "/metrics").await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Writes `text` the way editors and Kubernetes do: a new file renamed over the old one.
fn write_atomically(path: &std::path::Path, text: &str) {
    let staging = path.with_extension("new");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

fn config(path: &std::path::Path) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up:\n    discovery: {{ file: {{ path: {}, interval: 100ms }} }}\n\
         routes:\n  - name: all\n    upstream: up\n",
        path.display()
    )
}

#[tokio::test]
async fn rewritten_endpoint_files_are_followed_and_bad_ones_ignored() {
    let first = upstream().run().await;
    let second = upstream().run().await;
    let path = temp_path("endpoints.yaml");
    write_atomically(&path, &format!("- {}\n", first.addr));
    let gw = gateway(&config(&path));
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(client.get("/").await.status, 200);
    assert_eq!(first.requests(), 1);

    write_atomically(
        &path,
        &format!("[{{\"address\": \"{}\", \"weight\": 2}}]", second.addr),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while second.requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "the new endpoint never got traffic"
        );
        assert_eq!(
            client.get("/").await.status,
            200,
            "a request failed during the switch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = first.requests();

    // A broken file, then no file at all: the last good endpoints keep serving.
    write_atomically(&path, "- [this is not an endpoint\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        assert_eq!(client.get("/").await.status, 200);
    }
    assert_eq!(first.requests(), before, "the old endpoint came back");
}

#[test]
fn a_missing_endpoint_file_is_a_config_error() {
    let path = temp_path("missing.yaml");
    let issues = config_errors(&config(&path));
    assert!(
        issues[0].starts_with("upstreams.up.discovery.file.path: cannot read"),
        "{:?}",
        issues
    );
}

fn etcd_config(etcd: &EtcdServer, extra: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  api:\n    discovery: {{ etcd: {{ endpoints: [{}], prefix: /services/api/ }}{extra} }}\n\
         routes:\n  - name: all\n    upstream: api\n",
        etcd.url()
    )
}

#[tokio::test]
async fn etcd_registrations_route_within_a_second_and_survive_an_etcd_outage() {
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    let (a, b, c) = (
        upstream().run().await,
        upstream().run().await,
        upstream().run().await,
    );
    etcd.put(
        "/services/api/a",
        &format!(
            r#"{{"address": "{}", "weight": 1, "metadata": {{"zone": "x"}}}}"#,
            a.addr
        ),
    );
    etcd.put("/services/apix", &format!("{}", c.addr)); // outside the prefix
    let gw = gateway(&etcd_config(&etcd, ", max_stale: 1s"));
    let mut client = Client::http1(gw.addr()).await;
    until_served(&mut client, &a, Duration::from_secs(5)).await;
    assert_eq!(spread(&mut client, &[&a, &c], 10).await, [10, 0]);

    // Added and removed registrations reach routing within a second.
    etcd.put("/services/api/b", &format!("{}", b.addr));
    let added = until_served(&mut client, &b, Duration::from_secs(1)).await;
    etcd.delete("/services/api/a");
    let removed = until_avoided(&mut client, &a, Duration::from_secs(1)).await;
    eprintln!("etcd put seen after {added:?}, delete after {removed:?}");

    // Compacting history under a live watch changes nothing.
    etcd.compact();
    etcd.put("/services/api/a", &format!("{}", a.addr));
    until_served(&mut client, &a, Duration::from_secs(1)).await;

    // A quiet registry is not a stale one: the open watch keeps the set current.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(upstream_status(&gw, "api").await["degraded"], false);

    // etcd goes away: the last known endpoints keep serving, the outage shows.
    etcd.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let served = spread(&mut client, &[&a, &b], 20).await;
    assert_eq!(served.iter().sum::<usize>(), 20);
    assert!(served.iter().all(|n| *n > 0), "{served:?}");
    let status = upstream_status(&gw, "api").await;
    assert_eq!(status["degraded"], true, "{status}");
    assert_eq!(status["discovery"]["backend"], "etcd");
    assert!(
        status["discovery"]["errors"].as_u64().unwrap() > 0,
        "{status}"
    );
    let errors = metric(&gw, "discovery_errors_total{upstream=\"api\"}").await;
    assert!(errors.unwrap_or(0.0) > 0.0, "{errors:?}");

    // etcd is back: updates flow again and the upstream is no longer degraded.
    etcd.restart();
    etcd.delete("/services/api/a");
    etcd.put(
        "/services/api/c",
        &format!(r#"{{"address": "{}"}}"#, c.addr),
    );
    until_served(&mut client, &c, Duration::from_secs(10)).await;
    until_avoided(&mut client, &a, Duration::from_secs(2)).await;
    assert_eq!(upstream_status(&gw, "api").await["degraded"], false);
    let last_success = metric(&gw, "discovery_last_success_timestamp{upstream=\"api\"}").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(now - last_success.unwrap() < 5.0, "{last_success:?}");
}

#[tokio::test]
async fn an_upstream_without_registrations_answers_503_on_its_own_routes() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let other = upstream().run().await;
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  api:\n    discovery: {{ etcd: {{ endpoints: [{}], prefix: /services/none/ }} }}\n  \
         other:\n    discovery: {{ static: [{}] }}\n\
         routes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: api\n  \
         - name: rest\n    upstream: other\n",
        etcd.url(),
        other.addr
    );
    let gw = gateway(&yaml);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = get(gw.addr(), "/api/x").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["error"], "no upstream endpoint available");
    assert_eq!(other.requests(), 0, "fell through to another route");
    // The registry answered (with nothing): ready.
    assert_eq!(get(gw.admin(), "/ready").await.status, 200);

    // A registry that never answered keeps the replica out of service (for a while).
    let dead = format!("http://{}", dead_address());
    let unreached = gateway(&yaml.replace(&etcd.url(), &dead));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = get(unreached.admin(), "/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.text(), "waiting for service discovery\n");
}

#[tokio::test]
async fn etcd_with_authentication_logs_in() {
    let Some(mut etcd) = EtcdServer::start() else {
        return;
    };
    etcd.enable_auth("s3cret");
    let a = upstream().run().await;
    etcd.put("/services/api/a", &a.addr.to_string());
    let gw = gateway(&etcd_config(&etcd, "").replace(
        "prefix: /services/api/ }",
        "prefix: /services/api/, username: root, password: s3cret }",
    ));
    let mut client = Client::http1(gw.addr()).await;
    until_served(&mut client, &a, Duration::from_secs(5)).await;

    // A wrong password never yields endpoints; it shows as discovery errors.
    let wrong = gateway(&etcd_config(&etcd, "").replace(
        "prefix: /services/api/ }",
        "prefix: /services/api/, username: root, password: wrong }",
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(wrong.addr(), "/").await.status, 503);
    let status = upstream_status(&wrong, "api").await;
    assert!(
        status["discovery"]["errors"].as_u64().unwrap() > 0,
        "{status}"
    );
}

#[tokio::test]
async fn etcd_over_tls_is_verified_against_ca_file() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (ca_file, cert_file, key_file) = (
        temp_path("ca.pem"),
        temp_path("etcd.pem"),
        temp_path("etcd.key"),
    );
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let Some(etcd) = EtcdServer::start_tls(&cert_file, &key_file) else {
        return;
    };
    let a = upstream().run().await;
    etcd.put("/services/api/a", &a.addr.to_string());
    let yaml = etcd_config(&etcd, "").replace(&etcd.url(), &etcd.tls_url());
    let trusted = gateway(&yaml.replace(
        "prefix: /services/api/ }",
        &format!("prefix: /services/api/, ca_file: {} }}", ca_file.display()),
    ));
    let mut client = Client::http1(trusted.addr()).await;
    until_served(&mut client, &a, Duration::from_secs(5)).await;

    // Without the CA, the system roots do not vouch for this server: no endpoints.
    let untrusted = gateway(&yaml);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(untrusted.addr(), "/").await.status, 503);
    let status = upstream_status(&untrusted, "api").await;
    assert!(
        status["discovery"]["errors"].as_u64().unwrap() > 0,
        "{status}"
    );
    for file in [ca_file, cert_file, key_file] {
        let _ = std::fs::remove_file(file);
    }
}

/// Two test servers on the same port of 127.0.0.1 and 127.0.0.2, for A records.
async fn twin_upstreams() -> (Upstream, Upstream) {
    loop {
        let first = upstream().run().await;
        let twin = format!("127.0.0.2:{}", first.addr.port()).parse().unwrap();
        if std::net::TcpListener::bind(twin).is_ok() {
            let second = upstream().at(twin).run().await;
            return (first, second);
        }
    }
}

#[tokio::test]
async fn dns_a_records_are_followed_at_their_ttl() {
    let (first, second) = twin_upstreams().await;
    let Some(mut dns) = DnsServer::start("127.0.0.1 api.test\n", &[]) else {
        return;
    };
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  api:\n    discovery:\n      max_stale: 1s\n      dns: {{ name: api.test, port: {}, nameservers: [{}], refresh: 60s, min_ttl: 1s }}\n\
         routes:\n  - name: all\n    upstream: api\n",
        first.addr.port(),
        dns.address()
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    until_served(&mut client, &first, Duration::from_secs(5)).await;

    // The record changes: seen after its 1 s TTL, long before the 60 s refresh.
    dns.set_hosts("127.0.0.2 api.test\n");
    until_served(&mut client, &second, Duration::from_secs(5)).await;
    until_avoided(&mut client, &first, Duration::from_secs(2)).await;

    // min_ttl holds lookups to one a second.
    let before = dns.queries("api.test");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = dns.queries("api.test") - before;
    assert!((1..=5).contains(&asked), "{asked} lookups in 3s");

    // The server goes away: the last answer keeps serving.
    dns.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = upstream_status(&gw, "api").await;
        if status["discovery"]["errors"].as_u64().unwrap() > 0 {
            assert_eq!(status["degraded"], true, "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "no lookup failed: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(spread(&mut client, &[&first, &second], 10).await, [0, 10]);
}

#[tokio::test]
async fn dns_srv_records_use_the_best_priority_by_weight() {
    let (a, b, backup) = (
        upstream().run().await,
        upstream().run().await,
        upstream().run().await,
    );
    let srv = [
        format!("_http._tcp.api.test,a.api.test,{},10,3", a.addr.port()),
        format!("_http._tcp.api.test,b.api.test,{},10,1", b.addr.port()),
        format!("_http._tcp.api.test,c.api.test,{},20,5", backup.addr.port()),
    ];
    let hosts = "127.0.0.1 a.api.test\n127.0.0.1 b.api.test\n127.0.0.1 c.api.test\n";
    let Some(dns) = DnsServer::start(hosts, &srv) else {
        return;
    };
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  api:\n    discovery: {{ dns: {{ name: _http._tcp.api.test, type: SRV, nameservers: [{}] }} }}\n\
         routes:\n  - name: all\n    upstream: api\n",
        dns.address()
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    until_served(&mut client, &a, Duration::from_secs(5)).await;
    let served = spread(&mut client, &[&a, &b, &backup], 400).await;
    assert_eq!(served[2], 0, "the lower priority got traffic: {served:?}");
    assert!((285..=315).contains(&served[0]), "weights 3:1 → {served:?}");
    let endpoints = upstream_status(&gw, "api").await["endpoints"].clone();
    assert_eq!(endpoints.as_array().unwrap().len(), 2, "{endpoints}");
}

#[test]
fn discovery_config_errors_name_the_key() {
    let cases = [
        (
            "{ dns: { name: api.test } }",
            "upstreams.up.discovery.dns.port: A and AAAA lookups need a port",
        ),
        (
            "{ dns: { name: _x._tcp.test, type: SRV, port: 80 } }",
            "upstreams.up.discovery.dns.port: SRV records carry their own port",
        ),
        (
            "{ dns: { name: api.test, port: 80, type: MX } }",
            "upstreams.up.discovery.dns.type: expected A, AAAA or SRV",
        ),
        (
            "{ dns: { name: api.test, port: 80, nameservers: [dns.example] } }",
            "upstreams.up.discovery.dns.nameservers[0]: invalid nameserver",
        ),
        (
            "{ dns: { name: api.test, port: 80, min_ttl: 1m, refresh: 10s } }",
            "upstreams.up.discovery.dns.min_ttl: must not be longer than refresh",
        ),
        (
            "{ etcd: { endpoints: [], prefix: /a/ } }",
            "upstreams.up.discovery.etcd.endpoints: needs at least one",
        ),
        (
            "{ etcd: { endpoints: [\"127.0.0.1:2379\"], prefix: /a/ } }",
            "upstreams.up.discovery.etcd.endpoints[0]: invalid URL",
        ),
        (
            "{ etcd: { endpoints: [\"http://127.0.0.1:2379\"], prefix: /a/, password: x } }",
            "upstreams.up.discovery.etcd.password: needs a username",
        ),
        (
            "{ static: [127.0.0.1:1], dns: { name: a.test, port: 1 } }",
            "upstreams.up.discovery: needs exactly one backend",
        ),
        (
            "{ static: [127.0.0.1:1], max_stale: soon }",
            "upstreams.up.discovery.max_stale:",
        ),
        (
            "{ file: { path: /dev/null, format: toml } }",
            "upstreams.up.discovery.file.format: unknown format",
        ),
        (
            "{ zookeeper: { servers: [], path: /s } }",
            "upstreams.up.discovery.zookeeper.servers: needs at least one server",
        ),
        (
            "{ zookeeper: { servers: [\"zk1\"], path: /s } }",
            "upstreams.up.discovery.zookeeper.servers[0]: invalid server \"zk1\": expected host:port",
        ),
        (
            "{ zookeeper: { servers: [\"zk1:2181\"], path: services/ } }",
            "upstreams.up.discovery.zookeeper.path: invalid znode path \"services/\"",
        ),
        (
            "{ zookeeper: { servers: [\"zk1:2181\"], path: /s, format: dubbo } }",
            "upstreams.up.discovery.zookeeper.format: unknown format \"dubbo\": expected curator or address",
        ),
        (
            "{ zookeeper: { servers: [\"zk1:2181\"], path: /s, session_timeout: 0s } }",
            "upstreams.up.discovery.zookeeper.session_timeout: must be greater than zero",
        ),
        (
            "{ zookeeper: { servers: [\"zk1:2181\"], path: /s, auth: { scheme: sasl, credentials: x } } }",
            "upstreams.up.discovery.zookeeper.auth.scheme: unknown scheme \"sasl\": expected digest",
        ),
        (
            "{ zookeeper: { servers: [\"zk1:2181\"], path: /s, auth: { scheme: digest, credentials: x } } }",
            "upstreams.up.discovery.zookeeper.auth.credentials: expected user:password",
        ),
    ];
    for (discovery, expected) in cases {
        let yaml = format!(
            "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
             upstreams:\n  up:\n    discovery: {discovery}\n\
             routes:\n  - name: all\n    upstream: up\n"
        );
        let issues = config_errors(&yaml);
        assert!(
            issues.iter().any(|i| i.starts_with(expected)),
            "{discovery}: {:?}",
            issues
        );
    }
}

#[tokio::test]
async fn a_removed_endpoint_finishes_its_requests_then_its_connections_close() {
    let (old, new) = (upstream().run().await, upstream().run().await);
    let path = temp_path("endpoints.yaml");
    write_atomically(&path, &format!("- {}\n", old.addr));
    let gw = gateway(&config(&path));
    let mut streaming = Client::http1(gw.addr()).await;
    let response = streaming
        .send(req("GET", "/hold").body(empty()).unwrap())
        .await
        .unwrap();
    let mut idle = Client::http1(gw.addr()).await;
    assert_eq!(idle.get("/").await.status, 200);
    assert_eq!(old.open_connections(), 2, "one streaming, one pooled");

    write_atomically(&path, &format!("- {}\n", new.addr));
    let deadline = Instant::now() + Duration::from_secs(5);
    while new.requests() == 0 {
        assert!(Instant::now() < deadline, "the new endpoint got no traffic");
        assert_eq!(idle.get("/").await.status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The request that was in flight on the removed endpoint completes whole.
    old.release();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "first;last");
    // Then nothing keeps the removed endpoint's connections open.
    let deadline = Instant::now() + Duration::from_secs(5);
    while old.open_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} connections to the removed endpoint stay open",
            old.open_connections()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&path);
}
