//! A request head, as hyper would hand it over, through the gateway's own checks
//! (`proxy::checks`) and the router. Oracles, for a request that passes: no reading of its
//! path an upstream may make (percent-decoded, `\` as `/`, `;` parameters dropped) has a
//! dot segment, so no path climbs out of the prefix its route guards; it carries no encoded
//! slash (refused by default); it is routed as its percent-encoding-normalised path would
//! be (RFC 3986 §6.2.2.2), so `/%61dmin/` cannot slip past the `/admin/` route; and no
//! underscore spelling of a framing field survives.

use crate::config::parse;
use crate::proxy::checks::{check_request, normalized_path, underscore_headers};
use crate::router::{Fields, Router};
use crate::snapshot::{Limits, UnderscoreHeaders};
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};
use std::sync::{Arc, OnceLock};

const ROUTES: &str = "\
listeners: [{ name: http, address: 127.0.0.1:8080 }]
upstreams: { app: { discovery: { static: [127.0.0.1:9000] } } }
routes:
  - { name: admin, match: { path_prefix: /admin/ }, upstream: app }
  - { name: public, match: { path_prefix: /public/ }, upstream: app }
  - { name: api, match: { host: api.example.com, path_prefix: /v1 }, upstream: app }
  - { name: health, match: { path: /health }, upstream: app }
  - { name: items, match: { path_regex: '^/items/[0-9]+$' }, upstream: app }
  - { name: open, upstream: app }
";

/// The routes, by name.
fn router() -> &'static Router<String> {
    static ROUTER: OnceLock<Router<String>> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let config = parse(ROUTES, "routes.yaml", &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let routes = config.routes.iter();
        Router::new(routes.map(|route| (route.matcher.clone(), Arc::new(route.name.clone()))))
    })
}

pub fn request(data: &[u8]) {
    let Some(request) = head(data) else {
        return;
    };
    let (mut request, ()) = request.into_parts();
    let limits = Limits::default();
    if check_request(&request, &limits).is_err() {
        return;
    }
    for mode in [UnderscoreHeaders::Drop, UnderscoreHeaders::Allow] {
        let mut headers = request.headers.clone();
        if underscore_headers(&mut headers, mode).is_ok() {
            for name in headers.keys() {
                let folded = name.as_str().replace('_', "-");
                assert!(
                    !name.as_str().contains('_')
                        || (folded != "content-length" && folded != "transfer-encoding"),
                    "{name} passed as {mode:?}"
                );
            }
        }
    }
    if underscore_headers(&mut request.headers, UnderscoreHeaders::Drop).is_err() {
        return;
    }
    let path = request.uri.path();
    assert!(!encoded_slash(path), "encoded slash passed: {path:?}");
    for view in upstream_views(path) {
        assert!(
            !dot_segment(&view),
            "{path:?} reaches an upstream as {view:?}"
        );
    }
    let host = match request.uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => request
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok()),
    };
    let fields = Fields {
        headers: &request.headers,
        query: request.uri.query(),
    };
    // As the handler does: the normalised path, when there is one, replaces the sent one.
    let routed = normalized_path(path).unwrap_or_else(|| path.to_string());
    let route = router().lookup(host, &routed, &request.method, fields);
    let normal = unreserved_decoded(path);
    let expected = router().lookup(host, &normal, &request.method, fields);
    assert_eq!(
        route.map(|r| r.as_str()),
        expected.map(|r| r.as_str()),
        "{path:?} routed unlike {normal:?}"
    );
}

/// The head as hyper parses it (httparse, then the `http` types); `None` where hyper would
/// answer 400 itself.
fn head(data: &[u8]) -> Option<Request<()>> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut fields);
    parsed.parse(data).ok()?;
    let mut builder = Request::builder()
        .method(Method::from_bytes(parsed.method?.as_bytes()).ok()?)
        .uri(parsed.path?.parse::<Uri>().ok()?)
        .version(match parsed.version? {
            0 => Version::HTTP_10,
            _ => Version::HTTP_11,
        });
    for field in parsed.headers.iter() {
        builder = builder.header(
            HeaderName::from_bytes(field.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(field.value).ok()?,
        );
    }
    builder.body(()).ok()
}

/// The paths an upstream may take `path` for: as sent, percent-decoded once (so `%2F` and
/// `%5C` become separators, as some servers decode them), with `\` read as `/` (IIS), and
/// with `;params` dropped from each segment (Tomcat).
pub(crate) fn upstream_views(path: &str) -> Vec<String> {
    let mut views = Vec::new();
    for base in [path.to_string(), percent_decoded(path)] {
        let slashes = base.replace('\\', "/");
        let params: String = slashes
            .split('/')
            .map(|segment| segment.split(';').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("/");
        views.extend([base, slashes, params]);
    }
    views
}

fn dot_segment(path: &str) -> bool {
    path.split('/')
        .any(|segment| segment == "." || segment == "..")
}

fn encoded_slash(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%2f") || lower.contains("%5c")
}

/// `path` with percent-encoded unreserved characters decoded (RFC 3986 §6.2.2.2): the same
/// resource to every server.
fn unreserved_decoded(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest
            .get(at + 1..at + 3)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match code {
            Some(byte) if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 3..];
            }
            _ => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes.get(i),
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (Some(b'%'), Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (Some(byte), ..) => {
                out.push(*byte);
                i += 1;
            }
            (None, ..) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_views_read_paths_as_servers_do() {
        assert!(upstream_views("/public/..;/admin/x")
            .iter()
            .any(|v| dot_segment(v)));
        assert!(upstream_views("/public/%2e%2e%2fadmin")
            .iter()
            .any(|v| dot_segment(v)));
        assert!(upstream_views("/public\\..\\admin")
            .iter()
            .any(|v| dot_segment(v)));
        assert!(!upstream_views("/public/..a/b;c")
            .iter()
            .any(|v| dot_segment(v)));
        assert_eq!(unreserved_decoded("/%61dmin/%2F%7e%4"), "/admin/%2F~%4");
    }
}
