//! Request hardening: the framing and shape checks hyper's parser leaves to the gateway, run
//! on every request before it is routed.

use crate::error::ProxyError;
use crate::snapshot::{EscapedSlashes, Limits, UnderscoreHeaders};
use http::header::{HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, Method, Version};

/// Framing and shape checks that hyper's parser leaves to us. Anything refused here is
/// answered 4xx with `Connection: close` (see `ProxyError::closes_connection`).
pub(crate) fn check_request(request: &Parts, limits: &Limits) -> Result<(), ProxyError> {
    let uri = &request.uri;
    let uri_len = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    let headers = &request.headers;
    if headers.len() > limits.max_headers {
        return Err(ProxyError::TooManyHeaders);
    }
    if request.method == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    if let Some(scheme) = uri.scheme_str() {
        if scheme != "http" && scheme != "https" {
            return Err(ProxyError::BadRequest(
                "unsupported scheme in request target",
            ));
        }
    }
    if request.version <= Version::HTTP_11 {
        let mut hosts = headers.get_all(HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(ProxyError::BadRequest("duplicate Host header"));
        }
        match host {
            None if request.version == Version::HTTP_11 && uri.authority().is_none() => {
                return Err(ProxyError::BadRequest("missing Host header"));
            }
            Some(host) if !valid_host(host.as_bytes()) => {
                return Err(ProxyError::BadRequest("invalid Host header"));
            }
            _ => {}
        }
        if request.version < Version::HTTP_11 && headers.contains_key(TRANSFER_ENCODING) {
            return Err(ProxyError::BadRequest("Transfer-Encoding in HTTP/1.0"));
        }
    }
    if limits.escaped_slashes == EscapedSlashes::Reject && has_escaped_slash(uri.path()) {
        return Err(ProxyError::BadRequest("escaped slash in path"));
    }
    if has_dot_segment(uri.path()) {
        return Err(ProxyError::BadRequest("path contains dot segments"));
    }
    Ok(())
}

/// Applies `limits.headers_with_underscores`. Whatever the setting, an underscore spelling of
/// a framing field (`Content_Length`, `Transfer_Encoding`) is refused: no client needs one,
/// and an upstream that folds `_` into `-` would frame the request differently from us.
pub(crate) fn underscore_headers(
    headers: &mut HeaderMap,
    mode: UnderscoreHeaders,
) -> Result<(), ProxyError> {
    if !headers.keys().any(|name| name.as_str().contains('_')) {
        return Ok(());
    }
    let mut doomed = Vec::new();
    for name in headers.keys().filter(|name| name.as_str().contains('_')) {
        let folded = name.as_str().replace('_', "-");
        if folded == "content-length" || folded == "transfer-encoding" {
            return Err(ProxyError::BadRequest(
                "underscore in a framing header name",
            ));
        }
        match mode {
            UnderscoreHeaders::Reject => {
                return Err(ProxyError::BadRequest("underscore in a header name"))
            }
            UnderscoreHeaders::Drop => doomed.push(name.clone()),
            UnderscoreHeaders::Allow => {}
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    Ok(())
}

/// host [ ":" port ], with reg-name or IP-literal characters only.
fn valid_host(host: &[u8]) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
        })
}

/// A `.` or `..` segment in any reading of the path an upstream may make: as sent,
/// percent-decoded (`%2e`, and `%2f` or `%5c` as separators), with `\` as a separator (IIS),
/// and without `;params` (Tomcat reads `/..;/` as `/../`). A prefix route must not be
/// escaped by a path the upstream would normalise (`/public/../admin`).
fn has_dot_segment(path: &str) -> bool {
    let encoded = path.contains('%');
    // Without escapes, a dot segment starts right after a separator.
    if !encoded && !path.contains("/.") && !path.contains("\\.") {
        return false;
    }
    let decoded = match encoded {
        true => std::borrow::Cow::Owned(percent_decoded(path)),
        false => std::borrow::Cow::Borrowed(path),
    };
    decoded.split(['/', '\\']).any(|segment| {
        let segment = segment.split(';').next().unwrap_or(segment);
        segment == "." || segment == ".."
    })
}

/// `%2F` or `%5C` in the path: a separator to servers that decode them before routing, and
/// not to the gateway's router.
fn has_escaped_slash(path: &str) -> bool {
    path.contains('%')
        && path
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && matches!((w[1], w[2] | 0x20), (b'2', b'f') | (b'5', b'c')))
}

/// Every `%XX` decoded once; bytes that are not UTF-8 are replaced (they make no dot).
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match (byte, bytes.get(i + 1..i + 3).and_then(hex_pair)) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(*pair.get(1)?)?) as u8)
}

/// The path with percent-encoded unreserved characters decoded (RFC 3986 §6.2.2.2):
/// `/%61dmin/` is `/admin/` to every server, so the gateway routes it, and sends it on, as
/// that. `None` when there is nothing to decode, as for nearly every request.
pub(crate) fn normalized_path(path: &str) -> Option<String> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    let bytes = path.as_bytes();
    let encodes_unreserved = |at: usize| {
        bytes.get(at) == Some(&b'%')
            && bytes
                .get(at + 1..at + 3)
                .and_then(hex_pair)
                .is_some_and(unreserved)
    };
    if !path.contains('%') || !(0..bytes.len()).any(encodes_unreserved) {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes.get(at + 1..at + 3).and_then(hex_pair) {
            Some(byte) if encodes_unreserved(at) => {
                out.push(char::from(byte));
                at += 3;
            }
            _ => {
                out.push_str(path.get(at..at + 1).unwrap_or_default());
                at += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        assert!(has_dot_segment("/a/../b"));
        assert!(has_dot_segment("/a/./b"));
        assert!(has_dot_segment("/a/.."));
        assert!(has_dot_segment("/a/%2e%2E/b"));
        assert!(!has_dot_segment("/a/.well-known/b"));
        assert!(!has_dot_segment("/a/b.c/..d"));
        assert!(!has_dot_segment("/"));
        assert!(has_dot_segment("/public/..;/admin"));
        assert!(has_dot_segment("/public/..%3b/admin"));
        assert!(has_dot_segment("/public\\..\\admin"));
        assert!(has_dot_segment("/public%2f..%2fadmin"));
        assert!(has_dot_segment("/public/.%2e/admin"));
        assert!(!has_dot_segment("/a;v=1/b.c/%2e%2ex"));
        assert!(!has_dot_segment("/a/b%20c"));
    }

    #[test]
    fn escaped_slashes_and_unreserved_characters() {
        assert!(has_escaped_slash("/a%2Fb"));
        assert!(has_escaped_slash("/a%5cb"));
        assert!(!has_escaped_slash("/a%25b/c%2"));
        assert_eq!(normalized_path("/%61dmin/%7Eme"), Some("/admin/~me".into()));
        assert_eq!(normalized_path("/a%2Fb/%20/%zz/%4"), None);
        assert_eq!(normalized_path("/x/%41%2f%42"), Some("/x/A%2fB".into()));
        assert_eq!(normalized_path("/plain"), None);
    }

    #[test]
    fn hosts() {
        assert!(valid_host(b"api.example.com:8080"));
        assert!(valid_host(b"[::1]:80"));
        assert!(!valid_host(b""));
        assert!(!valid_host(b"a b"));
        assert!(!valid_host(b"a/b"));
    }
}
