//! What one request's trace holds while it runs, and the record handed to the exporter.

use super::context::{self, SpanId, TraceId, TRACEPARENT, TRACESTATE};
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

/// One request's trace: its ids, and what its spans will say.
pub(crate) struct TraceCtx {
    pub(crate) trace_id: TraceId,
    /// The server span.
    pub(crate) span_id: SpanId,
    pub(crate) parent: Option<SpanId>,
    /// The accepted parent's `tracestate`, passed on upstream.
    pub(super) state: Option<HeaderValue>,
    pub(crate) sampled: bool,
    pub(super) start: SystemTime,
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) version: Version,
    pub(super) host: Option<HeaderValue>,
    /// The first upstream try (most requests make one), then any others.
    pub(super) first_try: Option<Try>,
    pub(super) more_tries: Vec<Try>,
    /// The cache filter's answer (`HIT`, `MISS` …), when the route has one.
    pub(crate) cache: Option<HeaderValue>,
}

/// One upstream try, a client span.
pub(super) struct Try {
    pub(super) span_id: SpanId,
    pub(super) start: SystemTime,
    pub(super) end: SystemTime,
    pub(super) upstream: Arc<str>,
    pub(super) endpoint: SocketAddr,
    pub(super) status: Option<u16>,
    pub(super) error: Option<&'static str>,
    /// 0 for the first try, then 1, 2 … (`http.request.resend_count`).
    pub(super) resend: u32,
}

/// A try that has been sent and not yet answered.
pub(crate) struct TryMark {
    span_id: SpanId,
    start: SystemTime,
}

impl TraceCtx {
    /// The trace id in hex, for the access log.
    pub(crate) fn trace_id_hex(&self) -> TraceIdHex {
        let mut text = [0u8; 32];
        context::write_hex(&mut text, &self.trace_id);
        TraceIdHex(text)
    }

    /// Starts a client span for one upstream try and sets `traceparent` (and the accepted
    /// `tracestate`) on the request that goes out; the client's own were taken out at the
    /// start.
    pub(crate) fn begin_try(&mut self, headers: &mut HeaderMap) -> TryMark {
        let span_id = context::random_id();
        let value = context::traceparent(&self.trace_id, &span_id, self.sampled);
        headers.insert(&TRACEPARENT, value);
        if let Some(state) = &self.state {
            headers.insert(&TRACESTATE, state.clone());
        }
        TryMark {
            span_id,
            start: SystemTime::now(),
        }
    }

    /// Ends a try's span with its answer: a status, or the failure kind.
    pub(crate) fn end_try(
        &mut self,
        mark: TryMark,
        upstream: &Arc<str>,
        endpoint: SocketAddr,
        status: Option<u16>,
        error: Option<&'static str>,
    ) {
        if !self.sampled {
            return;
        }
        let resend = self.tries().count() as u32;
        let attempt = Try {
            span_id: mark.span_id,
            start: mark.start,
            end: SystemTime::now(),
            upstream: Arc::clone(upstream),
            endpoint,
            status,
            error,
            resend,
        };
        match self.first_try {
            None => self.first_try = Some(attempt),
            Some(_) => self.more_tries.push(attempt),
        }
    }

    /// The upstream tries so far, in order.
    pub(super) fn tries(&self) -> impl Iterator<Item = &Try> {
        self.first_try.iter().chain(&self.more_tries)
    }
}

/// A trace id as 32 hex digits, printed without allocating.
pub(crate) struct TraceIdHex([u8; 32]);

impl std::fmt::Display for TraceIdHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.0).unwrap_or("-"))
    }
}

/// What the server span says once the response head is ready, borrowed from the request
/// that is ending: it is written out at once, on the request's own thread.
pub(crate) struct Finished<'a> {
    pub(crate) trace: &'a TraceCtx,
    /// Since the request began (as the request metrics measure it): the span's end is its
    /// start plus this, with no second reading of the clock.
    pub(crate) elapsed: std::time::Duration,
    pub(crate) status: u16,
    pub(crate) route: Option<&'a str>,
    /// The connection's peer, and its address as text (written once per connection).
    pub(crate) peer: (IpAddr, &'a HeaderValue),
    /// The connection's attributes, kept written for its next requests.
    pub(crate) conn: &'a super::ConnAttributes,
    pub(crate) client: IpAddr,
    pub(crate) scheme: &'static str,
    pub(crate) request_id: &'a HeaderValue,
    /// The filter that answered instead of the route's action (`rate_limit`, `jwt` …).
    pub(crate) answered_by: Option<&'static str>,
    /// The verified `sub` claim, when `jwt_subject` is on.
    pub(crate) subject: Option<std::borrow::Cow<'a, str>>,
    pub(crate) fallback: Option<&'static str>,
    /// Where the request failed (`client`, `upstream`), if it did.
    pub(crate) error: Option<&'static str>,
    pub(crate) circuit_open: bool,
}
