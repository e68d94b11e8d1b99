//! The one error policy: every failure of a request becomes a response here, with a status
//! chosen by kind and a short JSON body. The handler never returns `Err` to hyper, because that
//! would kill the client's connection.

use crate::body::{Body, BodyLimitExceeded};
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use std::error::Error as _;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("upstream {0} has no endpoints")]
    NoEndpoint(std::sync::Arc<str>),
    #[error("connecting to upstream failed: {0}")]
    Connect(std::io::Error),
    #[error("connecting to upstream timed out")]
    ConnectTimeout,
    #[error("upstream did not answer in time")]
    ResponseTimeout,
    #[error("upstream failed: {0}")]
    Upstream(hyper::Error),
    #[error("request body exceeds the limit")]
    BodyTooLarge,
    #[error("client request body failed: {0}")]
    ClientBody(hyper::Error),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request URI is too long")]
    UriTooLong,
    #[error("too many request headers")]
    TooManyHeaders,
    #[error("upstream protocol error: {0}")]
    BadGatewayProtocol(&'static str),
}

/// Marks a response that stands in for an upstream the gateway chose not to call (an open
/// circuit breaker), so the route's fallback may answer instead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CircuitOpen;

/// How an exchange with an upstream failed: what retries, outlier ejection and metrics decide
/// on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamFailure {
    NoEndpoint,
    /// The connection could not be made: the request never left.
    ConnectError,
    ConnectTimeout,
    /// No response head in time.
    Timeout,
    /// The connection broke before a whole response head arrived: reset (ECONNRESET), a
    /// broken pipe while sending, or the peer closing first. The request got no answer.
    Reset,
    /// The upstream answered with something that is not valid HTTP.
    Protocol,
    Other,
}

impl UpstreamFailure {
    pub(crate) fn label(self) -> &'static str {
        match self {
            UpstreamFailure::NoEndpoint => "no_endpoint",
            UpstreamFailure::ConnectError => "connect_error",
            UpstreamFailure::ConnectTimeout => "connect_timeout",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Reset => "reset",
            UpstreamFailure::Protocol => "protocol",
            UpstreamFailure::Other => "error",
        }
    }

    fn of_hyper(error: &hyper::Error) -> UpstreamFailure {
        if error.is_parse() || error.is_parse_status() {
            return UpstreamFailure::Protocol;
        }
        if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
            return UpstreamFailure::Reset;
        }
        let mut source = error.source();
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                if matches!(
                    io.kind(),
                    ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
                ) {
                    return UpstreamFailure::Reset;
                }
            }
            source = cause.source();
        }
        UpstreamFailure::Other
    }
}

impl ProxyError {
    /// Classifies a failure of the upstream exchange: our own body limit, the client's body,
    /// or the upstream.
    pub(crate) fn from_upstream(err: hyper::Error) -> ProxyError {
        let mut source = err.source();
        while let Some(cause) = source {
            if cause.is::<BodyLimitExceeded>() {
                return ProxyError::BodyTooLarge;
            }
            // A hyper error nested inside the request body is the client's stream failing.
            if cause.is::<hyper::Error>() {
                return ProxyError::ClientBody(err);
            }
            source = cause.source();
        }
        ProxyError::Upstream(err)
    }

    /// Classifies a failure while reading the client's body ourselves (to keep it for a
    /// retry): our own limit, or the client's stream.
    pub(crate) fn from_body(err: crate::body::BoxError) -> ProxyError {
        if err.is::<BodyLimitExceeded>() {
            return ProxyError::BodyTooLarge;
        }
        match err.downcast::<hyper::Error>() {
            Ok(err) => ProxyError::ClientBody(*err),
            Err(_) => ProxyError::BadRequest("unreadable request body"),
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_)
            | ProxyError::Upstream(_)
            | ProxyError::BadGatewayProtocol(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientBody(_) | ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// What the client is told: short and free of internal detail (addresses, causes).
    pub(crate) fn public_message(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route",
            ProxyError::NoEndpoint(_) => "no upstream endpoint available",
            ProxyError::Connect(_) => "upstream connection failed",
            ProxyError::ConnectTimeout => "upstream connect timeout",
            ProxyError::ResponseTimeout => "upstream timeout",
            ProxyError::Upstream(_) | ProxyError::BadGatewayProtocol(_) => "upstream error",
            ProxyError::BodyTooLarge => "request body too large",
            ProxyError::ClientBody(_) => "request body incomplete",
            ProxyError::BadRequest(reason) => reason,
            ProxyError::UriTooLong => "request URI too long",
            ProxyError::TooManyHeaders => "too many request headers",
        }
    }

    /// Whether the client connection must close after the response: the request's framing
    /// can no longer be trusted, or part of its body is still unread.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::BodyTooLarge
                | ProxyError::ClientBody(_)
                | ProxyError::UriTooLong
                | ProxyError::TooManyHeaders
        )
    }

    /// How the upstream failed; `None` when the upstream is not to blame.
    pub(crate) fn upstream_failure(&self) -> Option<UpstreamFailure> {
        match self {
            ProxyError::NoEndpoint(_) => Some(UpstreamFailure::NoEndpoint),
            ProxyError::Connect(_) => Some(UpstreamFailure::ConnectError),
            ProxyError::ConnectTimeout => Some(UpstreamFailure::ConnectTimeout),
            ProxyError::ResponseTimeout => Some(UpstreamFailure::Timeout),
            ProxyError::BadGatewayProtocol(_) => Some(UpstreamFailure::Protocol),
            ProxyError::Upstream(e) => Some(UpstreamFailure::of_hyper(e)),
            _ => None,
        }
    }

    /// The `kind` label of `upstream_errors_total`; `None` when the upstream is not to blame.
    pub(crate) fn upstream_kind(&self) -> Option<&'static str> {
        self.upstream_failure().map(UpstreamFailure::label)
    }

    /// Where it came from, for logs and metrics.
    pub(crate) fn source_kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute
            | ProxyError::BodyTooLarge
            | ProxyError::ClientBody(_)
            | ProxyError::BadRequest(_)
            | ProxyError::UriTooLong
            | ProxyError::TooManyHeaders => "client",
            ProxyError::NoEndpoint(_)
            | ProxyError::Connect(_)
            | ProxyError::ConnectTimeout
            | ProxyError::ResponseTimeout
            | ProxyError::Upstream(_)
            | ProxyError::BadGatewayProtocol(_) => "upstream",
        }
    }

    pub(crate) fn into_response(self, request_id: &HeaderValue) -> Response<Body> {
        error_response(
            self.status(),
            self.public_message(),
            request_id,
            self.closes_connection(),
        )
    }
}

/// `{"error": "...", "request_id": "..."}`. Request ids are restricted to JSON-safe characters
/// when accepted, and messages are our own constants, so no escaping is needed.
pub(crate) fn error_response(
    status: StatusCode,
    message: &str,
    request_id: &HeaderValue,
    close: bool,
) -> Response<Body> {
    let id = request_id.to_str().unwrap_or("");
    let body = format!("{{\"error\":\"{message}\",\"request_id\":\"{id}\"}}\n");
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
