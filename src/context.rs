//! What one request carries from the handler through the stages that serve it.

use crate::telemetry::trace::TraceCtx;
use crate::telemetry::{RouteMeter, UpstreamOutcome};
use http::HeaderValue;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::time::Instant;

pub(crate) struct RequestCtx {
    pub(crate) request_id: HeaderValue,
    /// The client as far as trusted proxies let us see (see `trusted_proxies`).
    pub(crate) client_ip: IpAddr,
    /// The scheme the client used to reach the gateway (`http` or `https`).
    pub(crate) scheme: &'static str,
    /// The route that matched, by its meter, which also carries its name.
    pub(crate) route: Option<RouteMeter>,
    pub(crate) started: Instant,
    /// The endpoint the request was sent to, if it was proxied.
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) upstream: Option<UpstreamOutcome>,
    /// Which of the route's upstreams serves the request (an index into its split), once
    /// chosen.
    pub(crate) target: Option<usize>,
    /// Where the request failed (`client`, `upstream`), if it did.
    pub(crate) error: Option<&'static str>,
    /// Why the route's fallback answered (`connect_error`, `circuit_open`, `status` …), if it
    /// did. The upstream's failure stays in `upstream`.
    pub(crate) fallback: Option<&'static str>,
    /// The filter that answered instead of the route's action, if one did.
    pub(crate) answered_by: Option<&'static str>,
    /// The request's trace, when tracing is on.
    pub(crate) trace: Option<Box<TraceCtx>>,
    /// Claims of the token a `jwt` filter verified, for later filters (`claim:sub` keys).
    pub(crate) claims: Option<Arc<serde_json::Value>>,
    /// What filters hand to each other or to their own `on_response`.
    pub(crate) extensions: http::Extensions,
    /// The request body, read whole before the route's filters when one of them asked to see
    /// it (`Filter::reads_body`); `None` otherwise.
    pub(crate) body: Option<bytes::Bytes>,
}

impl RequestCtx {
    /// A verified claim as text, for keys (rate limits, caches, balancing): strings as they
    /// are, other values in JSON; `None` when there is no token, no such claim, or `null`.
    pub(crate) fn claim(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        match self.claims.as_ref()?.get(name)? {
            serde_json::Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
            serde_json::Value::Null => None,
            other => Some(std::borrow::Cow::Owned(other.to_string())),
        }
    }

    /// The name of the route that matched, once one has.
    pub(crate) fn route_name(&self) -> Option<&str> {
        self.route.as_ref().map(|route| &**route.name())
    }

    /// A request that has just arrived: its id and client are known, nothing else yet.
    pub(crate) fn new(request_id: HeaderValue, client_ip: IpAddr) -> RequestCtx {
        RequestCtx {
            request_id,
            client_ip,
            scheme: "http",
            route: None,
            started: Instant::now(),
            endpoint: None,
            upstream: None,
            target: None,
            error: None,
            fallback: None,
            answered_by: None,
            trace: None,
            claims: None,
            extensions: http::Extensions::new(),
            body: None,
        }
    }
}

/// The credentials of an `Authorization: Bearer <credentials>` value (scheme case-insensitive).
pub(crate) fn bearer(value: &http::HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let scheme = value.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| &value[7..])
}

/// The value of cookie `name` in the request's `Cookie` headers (the first, if repeated).
pub(crate) fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    crate::router::cookies(headers, name).next()
}
