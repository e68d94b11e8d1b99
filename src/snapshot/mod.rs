//! The immutable runtime picture of one config generation, and the `Gateway` that swaps it.
//! A request loads the current snapshot once and keeps it to the end, so a reload never
//! changes a request half-way.

pub(crate) mod build;
pub(crate) mod carry;

use crate::filter::jwt::Provider;
use crate::filter::rate_limit::Gcra;
use crate::filter::{Exposed, Fetch, Filter, FilterStates};
use crate::router::Router;
use crate::store::RedisStore;
use crate::telemetry::trace::Tracer;
use crate::telemetry::{Labels, Metrics, RouteMeter};
use crate::upstream::split::Split;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

/// Request hardening limits, applied per listener connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) max_uri_bytes: usize,
    pub(crate) max_body_bytes: u64,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    /// Connections one peer address may hold open; peers in `trusted_proxies` are exempt.
    pub(crate) max_connections_per_ip: Option<u32>,
    /// How fast one peer address may open connections (likewise).
    pub(crate) connection_rate_per_ip: Option<Gcra>,
    /// HTTP/2: streams open at once per connection.
    pub(crate) h2_max_concurrent_streams: u32,
    /// HTTP/2 rapid reset (CVE-2023-44487): streams a client may open and cancel before the
    /// server handles them, before GOAWAY.
    pub(crate) h2_max_pending_reset_streams: usize,
    /// HTTP/2: streams the server had to reset for protocol errors before GOAWAY.
    pub(crate) h2_max_local_reset_streams: usize,
    pub(crate) headers_with_underscores: UnderscoreHeaders,
    pub(crate) escaped_slashes: EscapedSlashes,
}

/// What happens to requests whose path holds `%2F` or `%5C`. Servers that decode them before
/// routing (nginx, many frameworks) see a separator where the gateway's router saw none, so
/// `/admin%2Fusers` would pass a catch-all route and reach `/admin/users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum EscapedSlashes {
    /// 400, connection closed (Envoy's recommended setting; Apache's default refuses them too).
    #[default]
    Reject,
    /// Routed and sent on as they came, for upstreams that keep them escaped.
    Keep,
}

/// What happens to request header fields whose names contain `_`. Many servers (CGI-style
/// environments, several frameworks) fold `_` into `-`, so `X_User_Id` or `Transfer_Encoding`
/// would reach them as a header the gateway never checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum UnderscoreHeaders {
    /// 400, connection closed.
    Reject,
    /// Removed before routing (nginx's default).
    #[default]
    Drop,
    /// Passed on; for upstreams known not to fold names.
    Allow,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_uri_bytes: 8 << 10,
            max_body_bytes: 10 << 20,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_ip: None,
            connection_rate_per_ip: None,
            h2_max_concurrent_streams: 256,
            h2_max_pending_reset_streams: 20,
            h2_max_local_reset_streams: 1024,
            headers_with_underscores: UnderscoreHeaders::default(),
            escaped_slashes: EscapedSlashes::default(),
        }
    }
}

pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    /// Its request counts and latency.
    pub(crate) meter: RouteMeter,
    pub(crate) action: RouteAction,
    /// Run in order around the action; empty for most routes.
    pub(crate) filters: Vec<Arc<dyn Filter>>,
    /// The most of the request body any of the filters wants to see: read whole before they
    /// run. `None` for almost every route: the body streams.
    pub(crate) body_limit: Option<u64>,
}

impl Route {
    pub(crate) fn fallback(&self) -> Option<&Fallback> {
        match &self.action {
            RouteAction::Proxy { fallback, .. } => fallback.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn mirror(&self) -> Option<&Mirror> {
        match &self.action {
            RouteAction::Proxy { mirror, .. } => mirror.as_deref(),
            _ => None,
        }
    }
}

pub(crate) enum RouteAction {
    Proxy {
        /// One upstream, or a weighted split across several.
        split: Arc<Split>,
        rewrite: Rewrite,
        fallback: Option<Box<Fallback>>,
        mirror: Option<Box<Mirror>>,
    },
    Respond(Respond),
    Redirect {
        status: StatusCode,
        target: RedirectTarget,
    },
}

/// Copies of a route's requests sent to another upstream, whose answers are dropped.
pub(crate) struct Mirror {
    /// Sends a copy; the route's rewrite applies, its `Host` is set here.
    pub(crate) fetch: Arc<dyn Fetch>,
    /// The share of requests copied, 0 to 1.
    pub(crate) fraction: f64,
    pub(crate) max_body: u64,
    pub(crate) header: HeaderName,
    /// The route's rewritten `Host`, if it sets one.
    pub(crate) host: Option<HeaderValue>,
    pub(crate) host_suffix: Option<String>,
    pub(crate) state: Arc<MirrorState>,
}

/// Outlives reloads while the route's mirror settings are unchanged, so `max_in_flight`
/// holds across them.
pub(crate) struct MirrorState {
    pub(crate) in_flight: AtomicUsize,
    pub(crate) max_in_flight: usize,
    /// Copies answered (below 500), failed (no answer or 5xx), skipped (too many in flight),
    /// and not copied because the body was over `max_body` or did not arrive whole.
    pub(crate) mirrored: Counter,
    pub(crate) failed: Counter,
    pub(crate) skipped: Counter,
    pub(crate) body_skipped: Counter,
}

/// What answers when a proxying route's upstream fails.
pub(crate) struct Fallback {
    pub(crate) answer: FallbackTarget,
    /// Upstream statuses that count as failures too.
    pub(crate) statuses: Box<[u16]>,
    /// `fallback_responses_total`, labelled on the failure path only.
    pub(crate) counted: Family<Labels, Counter>,
}

pub(crate) enum FallbackTarget {
    Respond(Respond),
    Upstream(Arc<Upstream>),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Rewrite {
    pub(crate) strip_prefix: Option<String>,
    /// (matched prefix, replacement)
    pub(crate) replace_prefix: Option<(String, String)>,
    pub(crate) host: Option<HeaderValue>,
}

impl Rewrite {
    pub(crate) fn changes_path(&self) -> bool {
        self.strip_prefix.is_some() || self.replace_prefix.is_some()
    }

    /// The upstream path for `path`; `None` when it stays as it is.
    pub(crate) fn path(&self, path: &str) -> Option<String> {
        let (prefix, replacement) = match (&self.strip_prefix, &self.replace_prefix) {
            (Some(prefix), _) => (prefix.as_str(), ""),
            (None, Some((prefix, replacement))) => (prefix.as_str(), replacement.as_str()),
            (None, None) => return None,
        };
        let rest = path.strip_prefix(prefix)?;
        // Only on a segment boundary: "/users" strips "/users/1", not "/usersx".
        if !(rest.is_empty() || rest.starts_with('/') || prefix == "/") {
            return None;
        }
        // The matched prefix alone becomes the replacement exactly as written.
        if rest.is_empty() {
            return Some(
                if replacement.is_empty() {
                    "/"
                } else {
                    replacement
                }
                .to_string(),
            );
        }
        let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
        out.push_str(replacement.trim_end_matches('/'));
        if !rest.starts_with('/') {
            out.push('/');
        }
        out.push_str(rest);
        Some(out)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Respond {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Respond {
    pub(crate) fn response(&self) -> http::Response<crate::body::Body> {
        let mut response = http::Response::new(crate::body::Body::full(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

#[derive(Debug, Clone)]
pub(crate) enum RedirectTarget {
    /// A fixed `Location`.
    Location(HeaderValue),
    /// Same host and path, other scheme (`http` → `https`).
    Scheme(&'static str),
}

pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) router: Router<Route>,
    pub(crate) upstreams: HashMap<String, Arc<Upstream>>,
    /// Running JWT providers by name; remote key sets live here across reloads.
    pub(crate) jwt_providers: HashMap<String, Arc<Provider>>,
    /// Filter state (limiter tables, breakers) to carry over the next reload.
    pub(crate) filter_states: FilterStates,
    /// Filter parts the admin API shows or acts on (breakers, cache stores).
    pub(crate) exposed: Exposed,
    /// `stores.redis`, shared by `store: redis` filters; carried over while its settings hold.
    pub(crate) redis: Option<Arc<RedisStore>>,
    pub(crate) limits: Limits,
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// One log line per request (target `access`).
    pub(crate) access_log: bool,
    /// Distributed tracing, when configured; `None` costs a request nothing.
    pub(crate) tracer: Option<Arc<Tracer>>,
    /// The meter (and `route` label) of requests that matched no route.
    pub(crate) no_route: RouteMeter,
    /// TLS settings by listener name, taken at each accept: new certificates apply to new
    /// connections after a reload.
    pub(crate) listener_tls: HashMap<String, Arc<rustls::ServerConfig>>,
    /// Filters run for every request on a listener, before routing, by listener name; only
    /// listeners that have some.
    pub(crate) listener_filters: HashMap<String, Vec<Arc<dyn Filter>>>,
}

impl Snapshot {
    /// Every remote JWT key set has loaded (or stopped being waited for): until then the
    /// instance is not ready for traffic.
    pub(crate) fn keys_ready(&self) -> bool {
        self.jwt_providers
            .values()
            .filter_map(|p| p.remote_keys())
            .all(|remote| remote.ready())
    }

    /// Whether every upstream's discovery has answered once (or given up waiting).
    pub(crate) fn discovery_ready(&self) -> bool {
        self.upstreams.values().all(|u| u.feed.settled())
    }

    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

pub(crate) struct Gateway {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    /// Lives as long as the process, across reloads.
    pub(crate) metrics: Arc<Metrics>,
}

impl Gateway {
    pub(crate) fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> Gateway {
        Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_strips_and_replaces_on_segment_boundaries() {
        let strip = Rewrite {
            strip_prefix: Some("/users".into()),
            ..Rewrite::default()
        };
        assert_eq!(strip.path("/users/42").as_deref(), Some("/42"));
        assert_eq!(strip.path("/users").as_deref(), Some("/"));
        assert_eq!(strip.path("/usersx"), None);
        let replace = Rewrite {
            replace_prefix: Some(("/v1".into(), "/api/v2".into())),
            ..Rewrite::default()
        };
        assert_eq!(replace.path("/v1/items").as_deref(), Some("/api/v2/items"));
        assert_eq!(replace.path("/v1").as_deref(), Some("/api/v2"));
        assert_eq!(replace.path("/v1/").as_deref(), Some("/api/v2/"));
        let root = Rewrite {
            replace_prefix: Some(("/".into(), "/app".into())),
            ..Rewrite::default()
        };
        assert_eq!(root.path("/x").as_deref(), Some("/app/x"));
        assert_eq!(root.path("/").as_deref(), Some("/app"));
    }
}
