//! An upstream's `discovery:` block: exactly one backend, plus `max_stale`.

use super::issues::Issues;
use super::issues::{count_set, duration_field, https_client_tls, one_of, optional_duration};
use super::raw;
use crate::discovery::{
    DiscoverySpec, DnsSpec, EtcdSpec, FileFormat, FileSpec, RecordKind, StaticEndpoint,
    ZooKeeperAuth, ZooKeeperFormat, ZooKeeperSpec, DEFAULT_WEIGHT,
};
use http::Uri;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How often an endpoints file is checked for changes.
const DEFAULT_FILE_INTERVAL: Duration = Duration::from_secs(1);
/// A ZooKeeper session ends this long after the ensemble last heard from the gateway.
const DEFAULT_ZOOKEEPER_SESSION: Duration = Duration::from_secs(10);
/// DNS names are re-resolved at least this often, whatever their TTL.
const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);
/// Nor more often than this, however short their TTL.
const DEFAULT_DNS_MIN_TTL: Duration = Duration::from_secs(1);

/// The backend and `max_stale`, or `None` (with the problems recorded) when unusable.
pub(super) fn compile_discovery(
    raw: raw::Discovery,
    path: &str,
    issues: &mut Issues,
) -> Option<(DiscoverySpec, Option<Duration>)> {
    let max_stale = optional_duration(raw.max_stale, &format!("{path}.max_stale"), issues);
    let backends = [
        raw.static_list.is_some(),
        raw.file.is_some(),
        raw.dns.is_some(),
        raw.etcd.is_some(),
        raw.zookeeper.is_some(),
    ];
    if count_set(&backends) != 1 {
        issues.add(
            path,
            "needs exactly one backend: static, file, dns, etcd or zookeeper",
        );
        return None;
    }
    let spec = if let Some(items) = raw.static_list {
        compile_static(items, &format!("{path}.static"), issues)
    } else if let Some(file) = raw.file {
        compile_file(file, &format!("{path}.file"), issues)
    } else if let Some(dns) = raw.dns {
        compile_dns(dns, &format!("{path}.dns"), issues)?
    } else if let Some(etcd) = raw.etcd {
        compile_etcd(etcd, &format!("{path}.etcd"), issues)?
    } else {
        compile_zookeeper(raw.zookeeper?, &format!("{path}.zookeeper"), issues)?
    };
    Some((spec, max_stale))
}

fn compile_static(
    items: Vec<raw::StaticEndpoint>,
    path: &str,
    issues: &mut Issues,
) -> DiscoverySpec {
    if items.is_empty() {
        issues.add(path, "needs at least one endpoint");
    }
    let mut endpoints = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let (address, weight) = match item {
            raw::StaticEndpoint::Address(a) => (a, None),
            raw::StaticEndpoint::Weighted(w) => (w.address, w.weight),
        };
        if weight == Some(0) {
            issues.add(&format!("{path}[{i}].weight"), "must be at least 1");
        }
        match StaticEndpoint::parse(&address, weight.unwrap_or(DEFAULT_WEIGHT)) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(message) => issues.add(&format!("{path}[{i}]"), message),
        }
    }
    DiscoverySpec::Static(endpoints)
}

fn compile_file(file: raw::FileDiscovery, path: &str, issues: &mut Issues) -> DiscoverySpec {
    let file_path = issues.file(&file.path);
    if let Err(error) = std::fs::metadata(&file_path) {
        issues.add(
            &format!("{path}.path"),
            format!("cannot read {}: {error}", file_path.display()),
        );
    }
    let interval = duration_field(
        file.interval,
        DEFAULT_FILE_INTERVAL,
        &format!("{path}.interval"),
        issues,
    );
    let format = one_of(
        file.format.as_deref(),
        "format",
        &[("yaml", FileFormat::Yaml), ("json", FileFormat::Json)],
        FileFormat::Yaml,
        &format!("{path}.format"),
        issues,
    );
    DiscoverySpec::File(FileSpec {
        path: file_path,
        format,
        interval,
    })
}

fn compile_dns(dns: raw::DnsDiscovery, path: &str, issues: &mut Issues) -> Option<DiscoverySpec> {
    let kind = match dns.kind.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("A") => RecordKind::A,
        Some("AAAA") => RecordKind::Aaaa,
        Some("SRV") => RecordKind::Srv,
        Some(_) => {
            issues.add(&format!("{path}.type"), "expected A, AAAA or SRV");
            return None;
        }
    };
    let port = match (kind, dns.port) {
        (RecordKind::Srv, Some(_)) => {
            issues.add(
                &format!("{path}.port"),
                "SRV records carry their own port; remove it",
            );
            0
        }
        (RecordKind::Srv, None) => 0,
        (_, Some(port)) if port > 0 => port,
        (_, _) => {
            issues.add(
                &format!("{path}.port"),
                "A and AAAA lookups need a port (1-65535)",
            );
            0
        }
    };
    let valid_name = !dns.name.is_empty()
        && dns
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid_name {
        issues.add(
            &format!("{path}.name"),
            format!("invalid DNS name {:?}", dns.name),
        );
    }
    let refresh = duration_field(
        dns.refresh,
        DEFAULT_DNS_REFRESH,
        &format!("{path}.refresh"),
        issues,
    );
    let min_ttl = duration_field(
        dns.min_ttl,
        DEFAULT_DNS_MIN_TTL,
        &format!("{path}.min_ttl"),
        issues,
    );
    if min_ttl > refresh {
        issues.add(
            &format!("{path}.min_ttl"),
            "must not be longer than refresh",
        );
    }
    let mut nameservers = Vec::new();
    for (i, text) in dns.nameservers.iter().flatten().enumerate() {
        let parsed = text
            .parse::<SocketAddr>()
            .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
        match parsed {
            Ok(address) => nameservers.push(address),
            Err(_) => issues.add(
                &format!("{path}.nameservers[{i}]"),
                format!("invalid nameserver {text:?}: expected IP or IP:PORT"),
            ),
        }
    }
    Some(DiscoverySpec::Dns(DnsSpec {
        name: dns.name,
        port,
        kind,
        refresh,
        min_ttl,
        nameservers,
    }))
}

fn compile_etcd(
    etcd: raw::EtcdDiscovery,
    path: &str,
    issues: &mut Issues,
) -> Option<DiscoverySpec> {
    if etcd.endpoints.is_empty() {
        issues.add(&format!("{path}.endpoints"), "needs at least one etcd URL");
    }
    let mut endpoints = Vec::new();
    let mut https = false;
    for (i, text) in etcd.endpoints.iter().enumerate() {
        match text.parse::<Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() =>
            {
                https |= uri.scheme_str() == Some("https");
                endpoints.push(uri);
            }
            _ => issues.add(
                &format!("{path}.endpoints[{i}]"),
                format!("invalid URL {text:?}: expected e.g. http://127.0.0.1:2379"),
            ),
        }
    }
    if etcd.prefix.is_empty() {
        issues.add(
            &format!("{path}.prefix"),
            "must not be empty, e.g. /services/api/",
        );
    }
    if etcd.password.is_some() && etcd.username.is_none() {
        issues.add(&format!("{path}.password"), "needs a username");
    }
    let tls = https_client_tls(
        https,
        etcd.ca_file.as_deref(),
        &format!("{path}.ca_file"),
        issues,
    );
    Some(DiscoverySpec::Etcd(EtcdSpec {
        endpoints,
        prefix: etcd.prefix,
        username: etcd.username,
        password: etcd.password,
        tls,
    }))
}

fn compile_zookeeper(
    zk: raw::ZooKeeperDiscovery,
    path: &str,
    issues: &mut Issues,
) -> Option<DiscoverySpec> {
    if zk.servers.is_empty() {
        issues.add(
            &format!("{path}.servers"),
            "needs at least one server, e.g. 127.0.0.1:2181",
        );
    }
    for (i, server) in zk.servers.iter().enumerate() {
        let valid = server.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        }) && !server.contains(['/', ',', ' ']);
        if !valid {
            issues.add(
                &format!("{path}.servers[{i}]"),
                format!("invalid server {server:?}: expected host:port, e.g. 127.0.0.1:2181"),
            );
        }
    }
    let valid_path = zk.path.starts_with('/')
        && (zk.path == "/" || !zk.path.ends_with('/'))
        && !zk.path.contains("//");
    if !valid_path {
        issues.add(
            &format!("{path}.path"),
            format!(
                "invalid znode path {:?}: expected e.g. /services/orders",
                zk.path
            ),
        );
    }
    let format = match zk.format.as_deref() {
        None | Some("curator") => ZooKeeperFormat::Curator,
        Some("address") => ZooKeeperFormat::Address,
        Some(other) => {
            issues.add(
                &format!("{path}.format"),
                format!("unknown format {other:?}: expected curator or address"),
            );
            ZooKeeperFormat::Curator
        }
    };
    let session_timeout = duration_field(
        zk.session_timeout,
        DEFAULT_ZOOKEEPER_SESSION,
        &format!("{path}.session_timeout"),
        issues,
    );
    let auth = zk.auth.map(|auth| {
        if auth.scheme != "digest" {
            issues.add(
                &format!("{path}.auth.scheme"),
                format!("unknown scheme {:?}: expected digest", auth.scheme),
            );
        }
        if !auth.credentials.contains(':') {
            issues.add(
                &format!("{path}.auth.credentials"),
                "expected user:password",
            );
        }
        ZooKeeperAuth {
            scheme: auth.scheme,
            credentials: auth.credentials,
        }
    });
    Some(DiscoverySpec::ZooKeeper(ZooKeeperSpec {
        servers: zk.servers,
        path: zk.path,
        format,
        session_timeout,
        auth,
    }))
}
