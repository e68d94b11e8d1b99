//! Host + path + method + header fields, cookies and query parameters → route. Knows nothing of proxying: the route payload is a
//! type parameter.
//!
//! Precedence, first match wins:
//! 1. host tier: an exact host, then wildcard hosts from the longest suffix to the shortest,
//!    then routes without a host. A tier with no matching route falls through to the next.
//! 2. within a tier: exact paths, then prefixes from the longest to the shortest, then regexes.
//! 3. routes with the same path key are tried in config order against `methods` and the
//!    conditions on header fields, cookies and query parameters (`conditions.rs`).
//!
//! Prefixes match on segment boundaries: `/api` matches `/api`, `/api/` and `/api/x`, never
//! `/apix`. Host matching ignores case and any port; `*.example.com` matches `a.example.com`
//! and `a.b.example.com` but not `example.com`. Lookup costs one hash probe per host tier and
//! per path segment, however many routes there are; only regex routes are scanned.

mod conditions;

pub(crate) use conditions::cookies;
pub use conditions::{Condition, Fields, ValueMatch};

use http::Method;
use regex::Regex;
use std::sync::Arc;

/// Route tables are built once and only read; a fast hasher beats SipHash on short keys.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// Stored without a trailing slash (except the root `/`).
    Prefix(String),
    /// Anchored to the whole path.
    Regex(Regex),
}

impl PathMatch {
    pub fn prefix(prefix: &str) -> PathMatch {
        let trimmed = prefix.trim_end_matches('/');
        PathMatch::Prefix(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
    }
}

/// The standard methods as bits, extension methods in a short list.
#[derive(Debug, Clone, Default)]
pub struct MethodSet {
    bits: u16,
    other: Vec<Method>,
}

/// The methods with a bit in `MethodSet::bits`, in bit order.
const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::CONNECT,
    Method::PATCH,
    Method::TRACE,
];

fn method_bit(method: &Method) -> Option<u16> {
    STANDARD_METHODS
        .iter()
        .position(|m| m == method)
        .map(|i| 1 << i)
}

impl MethodSet {
    pub(crate) fn insert(&mut self, method: Method) {
        match method_bit(&method) {
            Some(bit) => self.bits |= bit,
            None => self.other.push(method),
        }
    }

    pub(crate) fn contains(&self, method: &Method) -> bool {
        match method_bit(method) {
            Some(bit) => self.bits & bit != 0,
            None => self.other.contains(method),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Method> + '_ {
        STANDARD_METHODS
            .into_iter()
            .filter(|m| self.contains(m))
            .chain(self.other.iter().cloned())
    }
}

#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub host: HostMatch,
    pub path: PathMatch,
    pub methods: Option<MethodSet>,
    pub conditions: Vec<Condition>,
}

struct Candidate<R> {
    methods: Option<MethodSet>,
    conditions: Box<[Condition]>,
    route: Arc<R>,
}

impl<R> Candidate<R> {
    fn matches(&self, method: &Method, fields: Fields<'_>) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
            && self.conditions.iter().all(|c| c.matches(fields))
    }
}

struct Table<R> {
    exact: HashMap<Box<str>, Vec<Candidate<R>>>,
    prefix: HashMap<Box<str>, Vec<Candidate<R>>>,
    regex: Vec<(Regex, Candidate<R>)>,
}

impl<R> Default for Table<R> {
    fn default() -> Self {
        Table {
            exact: HashMap::default(),
            prefix: HashMap::default(),
            regex: Vec::new(),
        }
    }
}

fn first<'a, R>(
    list: Option<&'a Vec<Candidate<R>>>,
    method: &Method,
    fields: Fields<'_>,
) -> Option<&'a Arc<R>> {
    list?
        .iter()
        .find(|c| c.matches(method, fields))
        .map(|c| &c.route)
}

impl<R> Table<R> {
    fn lookup(&self, path: &str, method: &Method, fields: Fields<'_>) -> Option<&Arc<R>> {
        if let Some(route) = first(self.exact.get(path), method, fields) {
            return Some(route);
        }
        if !self.prefix.is_empty() && path.starts_with('/') {
            // Try "/a/b/c", "/a/b", "/a", "/": the longest prefix on a segment boundary first.
            let mut end = path.len();
            loop {
                let key = if end == 0 { "/" } else { &path[..end] };
                if let Some(route) = first(self.prefix.get(key), method, fields) {
                    return Some(route);
                }
                if end == 0 {
                    break;
                }
                end = path[..end].rfind('/').unwrap_or(0);
            }
        }
        self.regex
            .iter()
            .find(|(regex, c)| c.matches(method, fields) && regex.is_match(path))
            .map(|(_, c)| &c.route)
    }
}

pub struct Router<R> {
    exact_hosts: HashMap<Box<str>, Table<R>>,
    suffix_hosts: HashMap<Box<str>, Table<R>>,
    any_host: Table<R>,
}

impl<R> Router<R> {
    /// Builds the tables; `routes` are in config order.
    pub fn new(routes: impl IntoIterator<Item = (RouteMatch, Arc<R>)>) -> Router<R> {
        let mut router = Router {
            exact_hosts: HashMap::default(),
            suffix_hosts: HashMap::default(),
            any_host: Table::default(),
        };
        for (m, route) in routes {
            let table = match m.host {
                HostMatch::Any => &mut router.any_host,
                HostMatch::Exact(host) => router.exact_hosts.entry(host.into()).or_default(),
                HostMatch::Suffix(suffix) => router.suffix_hosts.entry(suffix.into()).or_default(),
            };
            let candidate = Candidate {
                methods: m.methods,
                conditions: m.conditions.into_boxed_slice(),
                route,
            };
            match m.path {
                PathMatch::Exact(path) => {
                    table.exact.entry(path.into()).or_default().push(candidate)
                }
                PathMatch::Prefix(prefix) => table
                    .prefix
                    .entry(prefix.into())
                    .or_default()
                    .push(candidate),
                PathMatch::Regex(regex) => table.regex.push((regex, candidate)),
            }
        }
        router
    }

    /// `host` is the request's authority or Host header, port and case as the client sent them.
    pub fn lookup(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        fields: Fields<'_>,
    ) -> Option<&Arc<R>> {
        // Most configs name no host: then the host is not even looked at.
        if self.exact_hosts.is_empty() && self.suffix_hosts.is_empty() {
            return self.any_host.lookup(path, method, fields);
        }
        let mut buf = [0u8; 256];
        let host = host.map(strip_port).and_then(|h| {
            if h.bytes().any(|b| b.is_ascii_uppercase()) {
                lowercase(h, &mut buf)
            } else {
                Some(h)
            }
        });
        if let Some(host) = host {
            if let Some(table) = self.exact_hosts.get(host) {
                if let Some(route) = table.lookup(path, method, fields) {
                    return Some(route);
                }
            }
            if !self.suffix_hosts.is_empty() {
                for (i, _) in host.match_indices('.') {
                    if let Some(table) = self.suffix_hosts.get(&host[i..]) {
                        if let Some(route) = table.lookup(path, method, fields) {
                            return Some(route);
                        }
                    }
                }
            }
        }
        self.any_host.lookup(path, method, fields)
    }
}

/// The host without port and trailing dot.
fn strip_port(host: &str) -> &str {
    let host = if host.starts_with('[') {
        // IPv6 literal: keep the brackets' content as is.
        &host[..host.find(']').map_or(host.len(), |i| i + 1)]
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Lower-cases into `buf`; hosts longer than any DNS name match no host tier.
fn lowercase<'a>(host: &str, buf: &'a mut [u8; 256]) -> Option<&'a str> {
    let out = buf.get_mut(..host.len())?;
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};

    fn fields(headers: &HeaderMap) -> Fields<'_> {
        Fields {
            headers,
            query: None,
        }
    }

    fn m(host: HostMatch, path: PathMatch) -> RouteMatch {
        RouteMatch {
            host,
            path,
            methods: None,
            conditions: Vec::new(),
        }
    }

    fn router(routes: Vec<(RouteMatch, &'static str)>) -> Router<&'static str> {
        Router::new(routes.into_iter().map(|(m, name)| (m, Arc::new(name))))
    }

    fn find(r: &Router<&'static str>, host: &str, path: &str) -> Option<&'static str> {
        r.lookup(Some(host), path, &Method::GET, fields(&HeaderMap::new()))
            .map(|r| **r)
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let r = router(vec![(m(HostMatch::Any, PathMatch::prefix("/api/")), "api")]);
        assert_eq!(find(&r, "h", "/api"), Some("api"));
        assert_eq!(find(&r, "h", "/api/"), Some("api"));
        assert_eq!(find(&r, "h", "/api/x/y"), Some("api"));
        assert_eq!(find(&r, "h", "/apix"), None);
        assert_eq!(find(&r, "h", "/"), None);
    }

    #[test]
    fn precedence_exact_then_longest_prefix_then_regex() {
        let r = router(vec![
            (
                m(
                    HostMatch::Any,
                    PathMatch::Regex(Regex::new("^/a/.*$").unwrap()),
                ),
                "regex",
            ),
            (m(HostMatch::Any, PathMatch::prefix("/a")), "short"),
            (m(HostMatch::Any, PathMatch::prefix("/a/b")), "long"),
            (
                m(HostMatch::Any, PathMatch::Exact("/a/b/c".into())),
                "exact",
            ),
            (
                m(
                    HostMatch::Any,
                    PathMatch::Regex(Regex::new("^/z/\\d+$").unwrap()),
                ),
                "digits",
            ),
        ]);
        assert_eq!(find(&r, "h", "/a/b/c"), Some("exact"));
        assert_eq!(find(&r, "h", "/a/b/d"), Some("long"));
        assert_eq!(find(&r, "h", "/a/x"), Some("short"));
        assert_eq!(find(&r, "h", "/z/42"), Some("digits"));
        assert_eq!(find(&r, "h", "/z/x"), None);
    }

    #[test]
    fn most_specific_host_wins_and_falls_through() {
        let r = router(vec![
            (m(HostMatch::Any, PathMatch::prefix("/")), "any"),
            (
                m(
                    HostMatch::Suffix(".example.com".into()),
                    PathMatch::prefix("/"),
                ),
                "wild",
            ),
            (
                m(
                    HostMatch::Suffix(".api.example.com".into()),
                    PathMatch::prefix("/"),
                ),
                "wild-api",
            ),
            (
                m(
                    HostMatch::Exact("www.example.com".into()),
                    PathMatch::prefix("/only"),
                ),
                "www",
            ),
        ]);
        assert_eq!(find(&r, "WWW.Example.com:8080", "/only/x"), Some("www"));
        // The exact host has no route for this path: the wildcard tier answers.
        assert_eq!(find(&r, "www.example.com", "/other"), Some("wild"));
        assert_eq!(find(&r, "v1.api.example.com", "/"), Some("wild-api"));
        assert_eq!(find(&r, "a.b.example.com", "/"), Some("wild"));
        assert_eq!(find(&r, "example.com", "/"), Some("any"));
        assert_eq!(find(&r, "example.com.", "/"), Some("any"));
    }

    #[test]
    fn methods_and_headers_in_config_order() {
        let mut get = MethodSet::default();
        get.insert(Method::GET);
        let r = Router::new(vec![
            (
                RouteMatch {
                    host: HostMatch::Any,
                    path: PathMatch::prefix("/x"),
                    methods: Some(get),
                    conditions: vec![Condition::Header(
                        HeaderName::from_static("x-canary"),
                        ValueMatch::Exact(b"1".to_vec().into_boxed_slice()),
                    )],
                },
                Arc::new("canary"),
            ),
            (
                m(HostMatch::Any, PathMatch::prefix("/x")),
                Arc::new("stable"),
            ),
        ]);
        let mut headers = HeaderMap::new();
        assert_eq!(
            r.lookup(None, "/x", &Method::GET, fields(&headers))
                .map(|r| **r),
            Some("stable")
        );
        headers.insert("x-canary", HeaderValue::from_static("1"));
        assert_eq!(
            r.lookup(None, "/x", &Method::GET, fields(&headers))
                .map(|r| **r),
            Some("canary")
        );
        assert_eq!(
            r.lookup(None, "/x", &Method::POST, fields(&headers))
                .map(|r| **r),
            Some("stable")
        );
    }

    #[test]
    fn overlong_hosts_do_not_match_exact_tiers() {
        let long = "a".repeat(300).to_uppercase();
        let r = router(vec![(m(HostMatch::Any, PathMatch::prefix("/")), "any")]);
        assert_eq!(find(&r, &long, "/"), Some("any"));
    }
}
