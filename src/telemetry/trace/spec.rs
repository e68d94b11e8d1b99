//! The validated `tracing:` section.

use http::{HeaderValue, Uri};

/// Where the OTLP/HTTP exporter sends spans.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OtlpSpec {
    /// The full URL spans are posted to (`…/v1/traces`).
    pub(crate) endpoint: Uri,
    pub(crate) headers: Vec<(http::HeaderName, HeaderValue)>,
    pub(crate) timeout: std::time::Duration,
    /// Finished requests waiting to be exported; more are dropped (and counted).
    pub(crate) queue: usize,
    /// TLS for an `https` endpoint.
    pub(crate) tls: Option<crate::tls::UpstreamTls>,
}

/// Whose `traceparent` the gateway continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptParent {
    /// Only from peers in `trusted_proxies`: a client on the internet cannot force sampling
    /// or join its requests to someone else's trace.
    Trusted,
    Any,
}

/// The validated `tracing:` section.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TracingSpec {
    pub(crate) otlp: OtlpSpec,
    /// The fraction of new traces recorded, 0 to 1.
    pub(crate) sample: f64,
    /// A continued trace is recorded exactly when its parent was.
    pub(crate) parent_based: bool,
    pub(crate) service_name: String,
    pub(crate) accept_parent: AcceptParent,
    /// Record the verified JWT `sub` claim as `enduser.id`.
    pub(crate) jwt_subject: bool,
}
