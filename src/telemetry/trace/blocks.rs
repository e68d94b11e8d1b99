//! Attributes that stay the same from request to request, written once and copied after:
//! each endpoint's part of a client span, and each client connection's part of a server span.

use super::wire::{address, key, span_int, span_text, write_all, Out};
use http::{HeaderValue, Version};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// Endpoints a worker keeps written; a new one past these takes the place of the oldest.
const MAX_ENDPOINTS: usize = 16;

/// The client-span attributes (`server.address`, `server.port`, `portcullis.upstream`) of
/// the endpoints a worker sent to lately.
#[derive(Default)]
pub(super) struct EndpointBlocks {
    entries: Vec<(SocketAddr, Arc<str>, Vec<u8>)>,
    /// The entry a new endpoint replaces once the list is full.
    oldest: usize,
}

impl EndpointBlocks {
    /// Writes the attributes of `endpoint` of `upstream`.
    pub(super) fn write(&mut self, out: &mut Out, endpoint: SocketAddr, upstream: &Arc<str>) {
        let known = self.entries.iter().position(|(at, name, _)| {
            *at == endpoint && (Arc::ptr_eq(name, upstream) || name == upstream)
        });
        let index = known.unwrap_or_else(|| self.add(endpoint, upstream));
        match self.entries.get(index) {
            Some((_, _, block)) => out.put(block),
            None => endpoint_attributes(out, endpoint, upstream),
        }
    }

    fn add(&mut self, endpoint: SocketAddr, upstream: &Arc<str>) -> usize {
        let block = write_all(|out| endpoint_attributes(out, endpoint, upstream));
        let entry = (endpoint, Arc::clone(upstream), block);
        if self.entries.len() < MAX_ENDPOINTS {
            self.entries.push(entry);
            return self.entries.len() - 1;
        }
        let index = self.oldest % MAX_ENDPOINTS;
        self.oldest = index + 1;
        if let Some(slot) = self.entries.get_mut(index) {
            *slot = entry;
        }
        index
    }
}

/// The server-span attributes a connection's requests repeat (`network.peer.address`,
/// `url.scheme`, `network.protocol.version`, `server.address`, `server.port`): written with
/// its first traced request, and copied for the next ones that name the same host in the same
/// version, nearly all of them. Empty until then, so it costs a connection a word when
/// tracing is off.
#[derive(Default)]
pub(crate) struct ConnAttributes(OnceLock<Box<ConnBlock>>);

struct ConnBlock {
    host: Option<Box<str>>,
    version: Version,
    bytes: Vec<u8>,
}

/// What a connection's attributes are written from: the request's host and version, and the
/// connection's own scheme and peer address (the same for every request on it).
pub(super) struct ConnKey<'a> {
    pub(super) host: Option<&'a str>,
    pub(super) version: Version,
    pub(super) scheme: &'static str,
    pub(super) peer: &'a HeaderValue,
}

impl ConnAttributes {
    pub(super) fn write(&self, out: &mut Out, key: &ConnKey<'_>) {
        match self.0.get() {
            Some(block) if block.version == key.version && block.host.as_deref() == key.host => {
                out.put(&block.bytes)
            }
            Some(_) => conn_attributes(out, key),
            None => {
                let bytes = write_all(|out| conn_attributes(out, key));
                out.put(&bytes);
                let block = ConnBlock {
                    host: key.host.map(Box::from),
                    version: key.version,
                    bytes,
                };
                // Another stream of the same connection may have set it first: either is right.
                let _ = self.0.set(Box::new(block));
            }
        }
    }
}

fn conn_attributes(out: &mut Out, key: &ConnKey<'_>) {
    span_text(out, key!("network.peer.address"), key.peer.as_bytes());
    span_text(out, key!("url.scheme"), key.scheme.as_bytes());
    let version = protocol_version(key.version);
    span_text(out, key!("network.protocol.version"), version.as_bytes());
    if let Some(host) = key.host {
        let (address, port) = split_host(host);
        span_text(out, key!("server.address"), address.as_bytes());
        if let Some(port) = port {
            span_int(out, key!("server.port"), port.into());
        }
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `host[:port]` (with `[v6]` literals) split.
fn split_host(host: &str) -> (&str, Option<u16>) {
    match host.rsplit_once(':') {
        Some((address, port)) if !port.contains(']') => match parse_port(port) {
            Some(port) => (
                address.trim_start_matches('[').trim_end_matches(']'),
                Some(port),
            ),
            None => (host, None),
        },
        _ => (host.trim_start_matches('[').trim_end_matches(']'), None),
    }
}

/// A port: one to five ASCII digits, at most 65535 (what `u16`'s parser accepts, less a
/// sign).
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 {
        return None;
    }
    let mut port: u32 = 0;
    for byte in text.bytes() {
        if !byte.is_ascii_digit() {
            return None;
        }
        port = port * 10 + u32::from(byte - b'0');
    }
    u16::try_from(port).ok()
}

fn endpoint_attributes(out: &mut Out, endpoint: SocketAddr, upstream: &str) {
    let mut room = [0u8; 64];
    let ip = address(&mut room, endpoint.ip());
    span_text(out, key!("server.address"), ip);
    let port = endpoint.port().into();
    span_int(out, key!("server.port"), port);
    let name = upstream.as_bytes();
    span_text(out, key!("portcullis.upstream"), name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_into_address_and_port() {
        assert_eq!(
            split_host("api.example.com:8080"),
            ("api.example.com", Some(8080))
        );
        assert_eq!(split_host("api.example.com"), ("api.example.com", None));
        assert_eq!(split_host("[::1]:443"), ("::1", Some(443)));
        assert_eq!(split_host("[::1]"), ("::1", None));
        for odd in ["h:", "h:+80", "h:65536", "h:123456", "h:8o"] {
            assert_eq!(split_host(odd), (odd, None), "{odd}");
        }
        assert_eq!(split_host("h:65535"), ("h", Some(65535)));
        assert_eq!(split_host("h:0"), ("h", Some(0)));
    }

    #[test]
    fn blocks_are_written_once_per_endpoint_and_replaced_oldest_first() {
        let mut blocks = EndpointBlocks::default();
        let users: Arc<str> = Arc::from("users");
        let written = |blocks: &mut EndpointBlocks, port: u16, upstream: &Arc<str>| {
            let endpoint = SocketAddr::from(([10, 0, 0, 1], port));
            let cached = write_all(|out| blocks.write(out, endpoint, upstream));
            let direct = write_all(|out| endpoint_attributes(out, endpoint, upstream));
            assert_eq!(cached, direct, "{port} {upstream}");
        };
        for round in 0..3 {
            for port in 1..=MAX_ENDPOINTS as u16 + 4 {
                written(&mut blocks, port, &users);
            }
            assert_eq!(blocks.entries.len(), MAX_ENDPOINTS, "{round}");
        }
        // The same address under another upstream is another block.
        let orders: Arc<str> = Arc::from("orders");
        written(&mut blocks, 1, &orders);
        written(&mut blocks, 1, &users);
    }

    #[test]
    fn a_connection_block_is_copied_only_for_the_same_host_and_version() {
        let conn = ConnAttributes::default();
        let peer = HeaderValue::from_static("192.0.2.7");
        let key = |host, version| ConnKey {
            host,
            version,
            scheme: "https",
            peer: &peer,
        };
        let keys = [
            key(Some("api.example.com:8443"), Version::HTTP_11),
            key(Some("api.example.com:8443"), Version::HTTP_11),
            key(Some("other.example.com"), Version::HTTP_11),
            key(None, Version::HTTP_11),
            key(Some("api.example.com:8443"), Version::HTTP_2),
            key(Some("api.example.com:8443"), Version::HTTP_11),
        ];
        for (i, key) in keys.iter().enumerate() {
            let copied = write_all(|out| conn.write(out, key));
            let direct = write_all(|out| conn_attributes(out, key));
            assert_eq!(copied, direct, "request {i}");
        }
        assert!(conn.0.get().is_some());
    }
}
