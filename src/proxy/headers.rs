//! Request and response header work shared by the proxy: the request id, the authority the
//! client addressed, hop-by-hop removal, and X-Forwarded-* with `trusted_proxies`.

use http::header::{
    CONNECTION, CONTENT_LENGTH, FORWARDED, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use std::net::IpAddr;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A sane incoming X-Request-Id is kept (tracing across hops); otherwise a fresh one.
pub(super) fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        let bytes = id.as_bytes();
        let sane = !bytes.is_empty()
            && bytes.len() <= 128
            && bytes.iter().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'=')
            });
        if sane {
            return id.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    let random = u128::from(fastrand::u64(..)) << 64 | u128::from(fastrand::u64(..));
    for (i, pair) in buf.chunks_exact_mut(2).enumerate() {
        let byte = (random >> (i * 8)) as u8;
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The authority the client addressed: the request target's (absolute form, HTTP/2) or Host.
pub(super) fn request_host(request: &Parts) -> Option<&str> {
    match request.uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => request.headers.get(HOST).and_then(|h| h.to_str().ok()),
    }
}

/// [`request_host`] as a header value. The Host header is reused as is; only an absolute-form
/// authority needs a new value.
pub(super) fn host_value(request: &Parts) -> Option<HeaderValue> {
    match request.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => request.headers.get(HOST).cloned(),
    }
}

/// `host[:port]` → `host`; an IPv6 literal keeps its brackets (`[::1]:8080` → `[::1]`).
pub(super) fn without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .split_once(':')
        .map_or(authority, |(host, _)| host)
}

/// RFC 9110 §7.6.1: Connection and the headers it names, plus the fixed hop-by-hop set.
/// `TE: trailers` survives: gRPC needs it end to end. Most messages carry none of these, so
/// one pass over the names decides whether any removal (and its hashing) is needed.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let fixed = [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TRANSFER_ENCODING,
        &UPGRADE,
        &TRAILER,
        &TE,
    ];
    let any = headers
        .keys()
        .any(|name| name == CONNECTION || fixed.contains(&name));
    if !any {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    let keep_te = headers
        .get(TE)
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in fixed {
        if name != TE || !keep_te {
            headers.remove(name);
        }
    }
}

/// The X-Forwarded-* fields the upstream gets. From a trusted peer the chain is extended and
/// its other fields kept; from anyone else, what the client sent is replaced, and its
/// `Forwarded` (RFC 7239), which makes the same claims, removed.
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    peer_ip: &HeaderValue,
    scheme: &'static str,
    trusted: bool,
    host: Option<HeaderValue>,
) {
    if trusted {
        let chain = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let value = if chain.is_empty() {
            peer_ip.clone()
        } else {
            let peer = peer_ip.to_str().unwrap_or("unknown");
            HeaderValue::try_from(format!("{chain}, {peer}")).unwrap_or_else(|_| peer_ip.clone())
        };
        headers.insert(X_FORWARDED_FOR.clone(), value);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            if let Some(host) = host {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
        }
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), peer_ip.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
        headers.remove(FORWARDED);
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
}

/// The client as far as `trusted_proxies` let the gateway see: the peer itself, or behind a
/// trusted peer the right-most X-Forwarded-For entry that is not itself a trusted proxy.
pub(crate) fn client_address(trusted: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if trusted.is_empty() || !is_trusted(trusted, peer) {
        return peer;
    }
    forwarded_client(headers, trusted).unwrap_or(peer)
}

pub(crate) fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

fn forwarded_client(headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let entries: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().parse().ok())
        .collect();
    entries
        .iter()
        .rev()
        .find(|ip| !is_trusted(trusted, **ip))
        .or(entries.first())
        .copied()
}

/// Removes `names` and every underscore spelling of them (`x_user_id` for `x-user-id`): fields
/// only the gateway may set. An upstream that folds `_` into `-` would otherwise read a
/// client's `X_User_Id` as the gateway's `X-User-Id`.
pub(crate) fn remove_gateway_owned(headers: &mut HeaderMap, names: &[HeaderName]) {
    for name in names {
        headers.remove(name);
    }
    if !headers.keys().any(|name| name.as_str().contains('_')) {
        return;
    }
    let folded: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let text = name.as_str();
            text.contains('_')
                && names.iter().any(|owned| {
                    owned.as_str().len() == text.len() && owned.as_str() == text.replace('_', "-")
                })
        })
        .cloned()
        .collect();
    for name in folded {
        headers.remove(name);
    }
}

/// The request's `Content-Length`, when it is one valid number.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let mut headers = HeaderMap::new();
        let fresh = request_id(&headers);
        assert_eq!(fresh.len(), 32);
        assert_ne!(fresh, request_id(&headers));
        headers.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("bad\"id"));
        assert_ne!(request_id(&headers), "bad\"id");
    }

    #[test]
    fn ports_leave_hosts_whole() {
        assert_eq!(without_port("[::1]:8080"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
        assert_eq!(without_port("[2001:db8::7]:443"), "[2001:db8::7]");
        assert_eq!(without_port("example.com:8080"), "example.com");
        assert_eq!(without_port("example.com"), "example.com");
    }
}
