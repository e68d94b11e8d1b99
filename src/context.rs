//! What one request carries from the handler through the stages that serve it.

use crate::telemetry::UpstreamOutcome;
use http::HeaderValue;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::time::Instant;

pub struct RequestCtx {
    pub request_id: HeaderValue,
    /// The client as far as trusted proxies let us see (see `trusted_proxies`).
    pub client_ip: IpAddr,
    pub route: Option<Arc<str>>,
    pub started: Instant,
    /// The endpoint the request was sent to, if it was proxied.
    pub endpoint: Option<SocketAddr>,
    pub upstream: Option<UpstreamOutcome>,
}
