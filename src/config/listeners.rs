//! Listeners (addresses and TLS), the admin listener, request limits and trusted proxies.

use super::filters::{compile_filter_list, FilterEntry, FilterRef, FilterRefs};
use super::issues::{duration_field, one_of, size_field, Issues};
use super::raw;
use super::values::parse_prefix;
use crate::filter::rate_limit::{Gcra, Rate};
use crate::snapshot::{EscapedSlashes, Limits, UnderscoreHeaders};
use ipnet::IpNet;
use serde_yaml::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub(crate) struct ListenerConfig {
    pub(crate) name: String,
    pub(crate) address: SocketAddr,
    /// TLS termination; `None` for plaintext.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Run for every request on the listener, before routing.
    pub(crate) filters: Vec<FilterRef>,
}

/// A listener's `filters:` as written, compiled by [`compile_listener_filters`] once the named
/// filters they may use are known.
pub(super) struct PendingFilters(Vec<(usize, String, Vec<FilterEntry>)>);

pub(super) fn compile_listeners(
    items: Vec<Value>,
    issues: &mut Issues,
) -> (Vec<ListenerConfig>, PendingFilters) {
    if items.is_empty() {
        issues.add("listeners", "at least one listener is required");
    }
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for (i, value) in items.into_iter().enumerate() {
        let path = format!("listeners[{i}]");
        let Some(mut raw) = issues.item::<raw::Listener>(value, &path) else {
            continue;
        };
        if !names.insert(raw.name.clone()) {
            issues.add(
                &format!("{path}.name"),
                format!("duplicate listener name {:?}", raw.name),
            );
        }
        let tls = raw
            .tls
            .as_ref()
            .and_then(|tls| compile_listener_tls(tls, &format!("{path}.tls"), issues));
        match raw.address.parse::<SocketAddr>() {
            Ok(address) => {
                // Port 0 is ephemeral: never a clash.
                if address.port() != 0 && !addresses.insert(address) {
                    issues.add(
                        &format!("{path}.address"),
                        format!("address {address} is used by another listener"),
                    );
                }
                if !raw.filters.is_empty() {
                    pending.push((out.len(), path.clone(), std::mem::take(&mut raw.filters)));
                }
                out.push(ListenerConfig {
                    name: raw.name,
                    address,
                    tls,
                    filters: Vec::new(),
                });
            }
            Err(_) => issues.add(
                &format!("{path}.address"),
                format!(
                    "invalid address {:?}: expected IP:PORT, e.g. 0.0.0.0:8080",
                    raw.address
                ),
            ),
        }
    }
    (out, PendingFilters(pending))
}

/// Compiles the listeners' `filters:`. Kinds that work for a route's upstream are refused.
pub(super) fn compile_listener_filters(
    listeners: &mut [ListenerConfig],
    pending: PendingFilters,
    refs: &FilterRefs,
    issues: &mut Issues,
) {
    for (at, path, entries) in pending.0 {
        listeners[at].filters = compile_filter_list(entries, &path, refs, false, issues);
    }
}

fn compile_listener_tls(
    raw: &raw::ListenerTls,
    path: &str,
    issues: &mut Issues,
) -> Option<Arc<rustls::ServerConfig>> {
    if raw.certificates.is_empty() {
        issues.add(
            &format!("{path}.certificates"),
            "needs at least one certificate",
        );
        return None;
    }
    let client_auth_required = one_of(
        raw.client_auth.as_deref(),
        "client_auth",
        &[("required", true), ("optional", false)],
        true,
        &format!("{path}.client_auth"),
        issues,
    );
    if raw.client_auth.is_some() && raw.client_ca_file.is_none() {
        issues.add(&format!("{path}.client_auth"), "needs client_ca_file");
    }
    let tls13_only = one_of(
        raw.min_version.as_ref().map(|v| v.0.as_str()),
        "TLS version",
        &[("1.2", false), ("1.3", true)],
        false,
        &format!("{path}.min_version"),
        issues,
    );
    let spec = crate::tls::ListenerTlsSpec {
        certificates: raw
            .certificates
            .iter()
            .map(|c| (issues.file(&c.cert_file), issues.file(&c.key_file)))
            .collect(),
        client_ca_file: raw.client_ca_file.as_deref().map(|f| issues.file(f)),
        client_auth_required,
        tls13_only,
    };
    match crate::tls::server_config(&spec) {
        Ok(config) => Some(config),
        Err(message) => {
            issues.add(path, message);
            None
        }
    }
}

const DEFAULT_ADMIN_PORT: u16 = 9901;

/// Shortest `admin.token` accepted: long enough that guessing it over the network is hopeless.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// `admin:`: the address (default loopback) and the token. An address other hosts can reach
/// needs a token, unless `insecure: true` says the network itself is trusted.
pub(super) fn compile_admin(
    raw: Option<raw::Admin>,
    listeners: &[ListenerConfig],
    issues: &mut Issues,
) -> (Option<SocketAddr>, Option<Arc<str>>) {
    let default = SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT));
    let Some(raw) = raw else {
        return (Some(default), None);
    };
    let address = match raw.address.as_deref() {
        None => Some(default),
        Some("off") => None,
        Some(text) => {
            match text.parse::<SocketAddr>() {
                Ok(address)
                    if address.port() != 0 && listeners.iter().any(|l| l.address == address) =>
                {
                    issues.add(
                        "admin.address",
                        format!("{address} is also a listener's address"),
                    );
                    None
                }
                Ok(address) => Some(address),
                Err(_) => {
                    issues.add(
                    "admin.address",
                    format!("invalid address {text:?}: expected IP:PORT, e.g. 127.0.0.1:9901, or off"),
                );
                    None
                }
            }
        }
    };
    let token_given = raw.token.is_some();
    let token = match raw.token {
        Some(token) if token.len() < MIN_ADMIN_TOKEN_LEN => {
            issues.add(
                "admin.token",
                format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
            );
            None
        }
        token => token.map(Arc::from),
    };
    if let Some(address) = address {
        if !address.ip().is_loopback() && !token_given && !raw.insecure {
            issues.add(
                "admin.address",
                format!("{address} is reachable from other hosts: set admin.token (e.g. token: ${{ADMIN_TOKEN}}), or admin.insecure: true on a trusted network"),
            );
        }
    }
    (address, token)
}

pub(super) fn compile_limits(raw: raw::Limits, issues: &mut Issues) -> Limits {
    let d = Limits::default();
    let max_headers = raw.max_headers.unwrap_or(d.max_headers);
    if max_headers == 0 {
        issues.add("limits.max_headers", "must be at least 1");
    }
    let max_connections = raw.max_connections.unwrap_or(d.max_connections);
    if max_connections == 0 {
        issues.add("limits.max_connections", "must be at least 1");
    }
    if raw.max_connections_per_ip == Some(0) {
        issues.add("limits.max_connections_per_ip", "must be at least 1");
    }
    let connection_rate_per_ip = match &raw.connection_rate_per_ip {
        Some(text) => match Rate::parse(text) {
            Ok(rate) => {
                // Without a burst, a second's worth of connections may come at once.
                let burst = raw
                    .connection_burst_per_ip
                    .unwrap_or(rate.per_second().max(1));
                if burst == 0 {
                    issues.add("limits.connection_burst_per_ip", "must be at least 1");
                }
                Some(Gcra::new(rate, burst))
            }
            Err(message) => {
                issues.add("limits.connection_rate_per_ip", message);
                None
            }
        },
        None => {
            if raw.connection_burst_per_ip.is_some() {
                issues.add(
                    "limits.connection_burst_per_ip",
                    "applies only with connection_rate_per_ip",
                );
            }
            None
        }
    };
    let headers_with_underscores = one_of(
        raw.headers_with_underscores.as_deref(),
        "value",
        &[
            ("reject", UnderscoreHeaders::Reject),
            ("drop", UnderscoreHeaders::Drop),
            ("allow", UnderscoreHeaders::Allow),
        ],
        d.headers_with_underscores,
        "limits.headers_with_underscores",
        issues,
    );
    let escaped_slashes = one_of(
        raw.escaped_slashes.as_deref(),
        "value",
        &[
            ("reject", EscapedSlashes::Reject),
            ("keep", EscapedSlashes::Keep),
        ],
        d.escaped_slashes,
        "limits.escaped_slashes",
        issues,
    );
    Limits {
        headers_with_underscores,
        escaped_slashes,
        max_header_bytes: size_field(
            raw.max_header_bytes,
            d.max_header_bytes as u64,
            1024,
            "limits.max_header_bytes",
            issues,
        ) as usize,
        max_headers,
        max_uri_bytes: size_field(
            raw.max_uri_bytes,
            d.max_uri_bytes as u64,
            256,
            "limits.max_uri_bytes",
            issues,
        ) as usize,
        max_body_bytes: size_field(
            raw.max_body_bytes,
            d.max_body_bytes,
            0,
            "limits.max_body_bytes",
            issues,
        ),
        header_read_timeout: duration_field(
            raw.header_read_timeout,
            d.header_read_timeout,
            "limits.header_read_timeout",
            issues,
        ),
        idle_timeout: duration_field(
            raw.idle_timeout,
            d.idle_timeout,
            "limits.idle_timeout",
            issues,
        ),
        max_connections,
        max_connections_per_ip: raw.max_connections_per_ip,
        connection_rate_per_ip,
        h2_max_concurrent_streams: raw
            .h2_max_concurrent_streams
            .unwrap_or(d.h2_max_concurrent_streams)
            .max(1),
        h2_max_pending_reset_streams: raw
            .h2_max_pending_reset_streams
            .unwrap_or(d.h2_max_pending_reset_streams),
        h2_max_local_reset_streams: raw
            .h2_max_local_reset_streams
            .unwrap_or(d.h2_max_local_reset_streams),
    }
}

pub(super) fn compile_trusted(items: &[String], issues: &mut Issues) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, text) in items.iter().enumerate() {
        match parse_prefix(text) {
            Ok(net) => out.push(net),
            Err(message) => issues.add(&format!("trusted_proxies[{i}]"), message),
        }
    }
    out
}
