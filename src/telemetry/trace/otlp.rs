//! The OTLP trace export message (`ExportTraceServiceRequest`) written straight from finished
//! requests in protobuf wire format, with the field numbers of opentelemetry-proto's
//! `trace/v1`, `common/v1` and `resource/v1`. Building the generated message types instead
//! costs two allocations per attribute; this writes each span once, with exact lengths, into
//! one buffer per batch. The tests decode what it writes with the generated types.

use super::blocks::{ConnKey, EndpointBlocks};
use super::context::SpanId;
use super::record::{Finished, TraceCtx, Try};
use super::wire::{
    address, bytes_field, field_key, key, len_field, span_flag, span_int, span_text,
    text_attribute, varint_field, write_all, Out, FIXED64, LEN, RESOURCE_ATTRIBUTE,
};
use std::time::{SystemTime, UNIX_EPOCH};

const SPAN_KIND_SERVER: u8 = 2;
const SPAN_KIND_CLIENT: u8 = 3;
const STATUS_ERROR: u64 = 2;

/// A new batch's buffer: room for the spans of a worker's batch of requests, most times.
const BATCH_CAPACITY: usize = 96 * 1024;
/// `ScopeSpans.spans` (field 2, length-delimited).
const SPANS_KEY: u8 = 2 << 3 | LEN as u8;
/// A span's length is written after the span, over three bytes left for it: a varint padded
/// to three bytes (as protobuf allows), which holds up to 2 MiB, so no span is ever moved.
const SPAN_LENGTH_ROOM: usize = 3;
const MAX_SPAN: usize = 1 << 21;
/// Room a request's spans need, most times; more is made when they do not fit.
const SPANS_ROOM: usize = 4096;

/// The spans of a batch, each written in place as a `ScopeSpans.spans` field. The heads that
/// enclose them are written apart (`message_head`) and sent first, so spans are never copied.
pub(super) struct Batch {
    out: Out,
    pub(super) spans: u64,
    pub(super) requests: usize,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::with_capacity(BATCH_CAPACITY)
    }
}

impl Batch {
    fn with_capacity(capacity: usize) -> Batch {
        Batch {
            out: Out::new(capacity),
            spans: 0,
            requests: 0,
        }
    }

    /// The spans written, each a `ScopeSpans.spans` field.
    pub(super) fn spans_bytes(&self) -> &[u8] {
        self.out.written(0)
    }

    /// Empties the batch, keeping its buffer.
    pub(super) fn clear(&mut self) {
        self.out.rewind(0, 0);
        self.spans = 0;
        self.requests = 0;
    }

    /// Adds the server span of `finished`, then one client span per upstream try. What does
    /// not fit is written again in a grown buffer.
    pub(super) fn add(&mut self, finished: &Finished<'_>, endpoints: &mut EndpointBlocks) {
        let start = self.out.at();
        let mut room = SPANS_ROOM;
        loop {
            let spans = write_request(&mut self.out, finished, endpoints);
            if !self.out.short() {
                self.spans += spans;
                self.requests += 1;
                return;
            }
            self.out.rewind(start, room);
            room *= 2;
        }
    }
}

/// The start of an export message whose spans, `spans_len` bytes of `ScopeSpans.spans`
/// fields, follow it.
pub(super) fn message_head(service_name: &str, spans_len: usize) -> Vec<u8> {
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    let name = service_name.as_bytes();
    let resource = write_all(|out| {
        text_attribute(out, RESOURCE_ATTRIBUTE, key!("service.name"), name);
        text_attribute(out, RESOURCE_ATTRIBUTE, key!("service.version"), version);
    });
    let scope = write_all(|out| {
        bytes_field(out, 1, b"portcullis");
        bytes_field(out, 2, version);
    });
    // ScopeSpans { scope = 1, spans = 2 }
    let scope_spans_len = len_field(scope.len()) + spans_len;
    // ResourceSpans { resource = 1, scope_spans = 2 }
    let resource_spans_len = len_field(resource.len()) + len_field(scope_spans_len);
    write_all(|out| {
        // ExportTraceServiceRequest { resource_spans = 1 }
        field_key(out, 1, LEN);
        out.varint(resource_spans_len as u64);
        bytes_field(out, 1, &resource);
        field_key(out, 2, LEN);
        out.varint(scope_spans_len as u64);
        bytes_field(out, 1, &scope);
    })
}

/// Writes a request's spans at the cursor; how many. A span too long for its length room
/// (which a bounded request head cannot make) leaves the request out.
fn write_request(out: &mut Out, finished: &Finished<'_>, endpoints: &mut EndpointBlocks) -> u64 {
    let start = out.at();
    let trace = finished.trace;
    let at = begin_span(out);
    server_span(out, finished);
    let mut fits = end_span(out, at);
    let mut spans = 1;
    for attempt in trace.tries() {
        let at = begin_span(out);
        client_span(out, trace, attempt, endpoints);
        fits &= end_span(out, at);
        spans += 1;
    }
    if !fits {
        out.rewind(start, 0);
        return 0;
    }
    spans
}

/// Writes the field key and leaves room for the length; returns where the room is.
fn begin_span(out: &mut Out) -> usize {
    out.byte(SPANS_KEY);
    let at = out.at();
    out.put(&[0; SPAN_LENGTH_ROOM]);
    at
}

/// Fills in the length of the span written since `at`; false if it is too long for it.
fn end_span(out: &mut Out, at: usize) -> bool {
    let len = out.at() - at - SPAN_LENGTH_ROOM;
    let padded = [
        len as u8 | 0x80,
        (len >> 7) as u8 | 0x80,
        (len >> 14) as u8 & 0x7f,
    ];
    out.patch(at, &padded);
    len < MAX_SPAN
}

/// The key bytes of the span head's fields: `trace_id = 1`, `span_id = 2`, `parent_span_id =
/// 4` (bytes), `kind = 6` (varint), `start_time_unix_nano = 7`, `end_time_unix_nano = 8`
/// (fixed64).
const TRACE_ID_KEY: u8 = 1 << 3 | LEN as u8;
const SPAN_ID_KEY: u8 = 2 << 3 | LEN as u8;
const PARENT_KEY: u8 = 4 << 3 | LEN as u8;
const KIND_KEY: u8 = 6 << 3;
const START_KEY: u8 = 7 << 3 | FIXED64 as u8;
const END_KEY: u8 = 8 << 3 | FIXED64 as u8;

/// The span's head: ids, name, kind and times (fields 1–8). Its fixed-size parts are written
/// a piece at a time, each after one bounds check.
#[allow(clippy::too_many_arguments)]
fn span_head(
    out: &mut Out,
    trace: &TraceCtx,
    span_id: &SpanId,
    parent: Option<&SpanId>,
    name: (&str, &str),
    kind: u8,
    start: u64,
    end: u64,
) {
    if let Some(room) = out.fixed::<28>() {
        room[..2].copy_from_slice(&[TRACE_ID_KEY, 16]);
        room[2..18].copy_from_slice(&trace.trace_id);
        room[18..20].copy_from_slice(&[SPAN_ID_KEY, 8]);
        room[20..].copy_from_slice(span_id);
    }
    if let Some(parent) = parent {
        if let Some(room) = out.fixed::<10>() {
            room[..2].copy_from_slice(&[PARENT_KEY, 8]);
            room[2..].copy_from_slice(parent);
        }
    }
    // The name in two parts, `METHOD target`, written without joining them first.
    let (method, target) = name;
    let len = method.len()
        + if target.is_empty() {
            0
        } else {
            1 + target.len()
        };
    field_key(out, 5, LEN);
    out.varint(len as u64);
    out.put(method.as_bytes());
    if !target.is_empty() {
        out.byte(b' ');
        out.put(target.as_bytes());
    }
    if let Some(room) = out.fixed::<20>() {
        room[..3].copy_from_slice(&[KIND_KEY, kind, START_KEY]);
        room[3..11].copy_from_slice(&start.to_le_bytes());
        room[11] = END_KEY;
        room[12..].copy_from_slice(&end.to_le_bytes());
    }
}

/// `Status { code = 3 }`, field 15, written only for errors (unset is the default).
fn error_status(out: &mut Out) {
    field_key(out, 15, LEN);
    out.varint(2);
    varint_field(out, 3, STATUS_ERROR);
}

fn server_span(out: &mut Out, finished: &Finished<'_>) {
    let trace = finished.trace;
    let known = known_method(&trace.method);
    let method = known.unwrap_or("_OTHER");
    let route = finished.route.unwrap_or("");
    let parent = trace.parent.as_ref();
    let kind = SPAN_KIND_SERVER;
    let start = nanos(trace.start);
    span_head(
        out,
        trace,
        &trace.span_id,
        parent,
        (known.unwrap_or(OTHER_METHOD_NAME), route),
        kind,
        start,
        start.saturating_add(finished.elapsed.as_nanos() as u64),
    );
    if let Some(state) = trace.state.as_ref().and_then(|s| s.to_str().ok()) {
        bytes_field(out, 3, state.as_bytes());
    }
    span_text(out, key!("http.request.method"), method.as_bytes());
    if known.is_none() {
        span_text(
            out,
            key!("http.request.method_original"),
            trace.method.as_str().as_bytes(),
        );
    }
    span_text(out, key!("url.path"), trace.uri.path().as_bytes());
    span_int(
        out,
        key!("http.response.status_code"),
        finished.status.into(),
    );
    let host = trace.host.as_ref().and_then(|h| h.to_str().ok());
    let host = host.or_else(|| trace.uri.authority().map(|a| a.as_str()));
    finished.conn.write(
        out,
        &ConnKey {
            host,
            version: trace.version,
            scheme: finished.scheme,
            peer: finished.peer.1,
        },
    );
    // The client as trusted proxies reported it; when it is the peer itself, the peer says it.
    if finished.client != finished.peer.0 {
        let mut room = [0u8; 64];
        let client = address(&mut room, finished.client);
        span_text(out, key!("client.address"), client);
    }
    // Request ids are limited to visible ASCII when accepted, and made so when generated.
    let request_id = finished.request_id.as_bytes();
    span_text(out, key!("portcullis.request_id"), request_id);
    if !route.is_empty() {
        span_text(out, key!("http.route"), route.as_bytes());
    }
    // The endpoint is on each try's client span.
    if let Some(last) = trace.tries().last() {
        span_text(out, key!("portcullis.upstream"), last.upstream.as_bytes());
    }
    if let Some(filter) = finished.answered_by {
        span_text(out, key!("portcullis.answered_by"), filter.as_bytes());
        if filter == "rate_limit" && finished.status == 429 {
            span_flag(out, key!("portcullis.rate_limited"), true);
        }
    }
    if finished.circuit_open {
        span_flag(out, key!("portcullis.circuit_open"), true);
    }
    if let Some(cache) = trace.cache.as_ref().and_then(|c| c.to_str().ok()) {
        span_text(out, key!("portcullis.cache"), cache.as_bytes());
    }
    if let Some(reason) = finished.fallback {
        span_text(out, key!("portcullis.fallback"), reason.as_bytes());
    }
    if let Some(subject) = &finished.subject {
        span_text(out, key!("enduser.id"), subject.as_bytes());
    }
    if let Some(kind) = finished.error {
        span_text(out, key!("error.type"), kind.as_bytes());
    }
    // A server span is an error for 5xx only: a 4xx is the client's mistake.
    if finished.status >= 500 {
        error_status(out);
    }
}

fn client_span(out: &mut Out, trace: &TraceCtx, attempt: &Try, endpoints: &mut EndpointBlocks) {
    let known = known_method(&trace.method);
    let method = known.unwrap_or("_OTHER");
    let name = (known.unwrap_or(OTHER_METHOD_NAME), &*attempt.upstream);
    let parent = Some(&trace.span_id);
    let (start, end) = (nanos(attempt.start), nanos(attempt.end));
    span_head(
        out,
        trace,
        &attempt.span_id,
        parent,
        name,
        SPAN_KIND_CLIENT,
        start,
        end,
    );
    span_text(out, key!("http.request.method"), method.as_bytes());
    endpoints.write(out, attempt.endpoint, &attempt.upstream);
    if attempt.resend > 0 {
        span_int(
            out,
            key!("http.request.resend_count"),
            attempt.resend.into(),
        );
    }
    if let Some(status) = attempt.status {
        span_int(out, key!("http.response.status_code"), status.into());
    }
    if let Some(kind) = attempt.error {
        span_text(out, key!("error.type"), kind.as_bytes());
    }
    // A client span fails on no answer, or on a 4xx or 5xx one.
    if attempt.error.is_some() || attempt.status.is_none_or(|s| s >= 400) {
        error_status(out);
    }
}

/// What a span's name starts with for a method the conventions do not know.
const OTHER_METHOD_NAME: &str = "HTTP";

/// The method, when the semantic conventions know it; any other is `_OTHER` in
/// `http.request.method`, and `HTTP` in span names.
fn known_method(method: &http::Method) -> Option<&'static str> {
    use http::Method;
    match *method {
        Method::GET => Some("GET"),
        Method::HEAD => Some("HEAD"),
        Method::POST => Some("POST"),
        Method::PUT => Some("PUT"),
        Method::DELETE => Some("DELETE"),
        Method::CONNECT => Some("CONNECT"),
        Method::OPTIONS => Some("OPTIONS"),
        Method::TRACE => Some("TRACE"),
        Method::PATCH => Some("PATCH"),
        _ => None,
    }
}

/// Nanoseconds since the Unix epoch, as OTLP has span times.
fn nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace::ConnAttributes;

    #[test]
    fn span_lengths_are_padded_varints() {
        for len in [
            0usize,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            70_000,
            MAX_SPAN - 1,
        ] {
            let mut out = Out::new(16);
            let at = begin_span(&mut out);
            out.rewind(out.at(), len);
            out.put(&vec![7u8; len]);
            assert!(end_span(&mut out, at), "{len}");
            let written = out.written(0);
            assert_eq!(written[0], SPANS_KEY);
            let mut length = &written[1..1 + SPAN_LENGTH_ROOM];
            let read = prost::encoding::decode_varint(&mut length).unwrap();
            assert_eq!(read as usize, len);
            assert!(length.is_empty());
        }
        let mut out = Out::new(16);
        let at = begin_span(&mut out);
        out.rewind(out.at(), MAX_SPAN);
        out.put(&vec![7u8; MAX_SPAN]);
        assert!(!end_span(&mut out, at));
    }

    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::Span;

    /// `requests` same requests written into a batch, then decoded with the generated types.
    fn written_spans(method: http::Method, path: &str, requests: usize) -> Vec<Span> {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message as _;
        let trace = TraceCtx {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            state: None,
            sampled: true,
            start: SystemTime::now(),
            method,
            uri: path.parse().unwrap(),
            version: http::Version::HTTP_11,
            host: None,
            first_try: None,
            more_tries: Vec::new(),
            cache: None,
        };
        let request_id = http::HeaderValue::from_static("id");
        let peer_ip = "127.0.0.1".parse().unwrap();
        let peer_text = http::HeaderValue::from_static("127.0.0.1");
        let finished = Finished {
            trace: &trace,
            elapsed: std::time::Duration::from_millis(2),
            status: 200,
            route: Some("r"),
            peer: (peer_ip, &peer_text),
            conn: &ConnAttributes::default(),
            client: peer_ip,
            scheme: "http",
            request_id: &request_id,
            answered_by: None,
            subject: None,
            fallback: None,
            error: None,
            circuit_open: false,
        };
        let mut batch = Batch::default();
        for _ in 0..requests {
            batch.add(&finished, &mut EndpointBlocks::default());
        }
        assert_eq!((batch.requests, batch.spans), (requests, requests as u64));
        let mut message = message_head("svc", batch.spans_bytes().len());
        message.extend_from_slice(batch.spans_bytes());
        let mut message = ExportTraceServiceRequest::decode(&message[..]).unwrap();
        std::mem::take(&mut message.resource_spans[0].scope_spans[0].spans)
    }

    fn text(span: &Span, key: &str) -> Option<Value> {
        let attribute = span.attributes.iter().find(|a| a.key == key)?;
        attribute.value.as_ref()?.value.clone()
    }

    /// A request whose spans outgrow the room left for them, and the batch's whole buffer,
    /// is written again in a grown one, and decodes whole.
    #[test]
    fn requests_larger_than_the_room_are_written_whole() {
        let path = format!("/{}", "p".repeat(BATCH_CAPACITY / 2));
        let spans = written_spans(http::Method::GET, &path, 3);
        assert_eq!(spans.len(), 3);
        assert_eq!(text(&spans[2], "url.path"), Some(Value::StringValue(path)));
    }

    #[test]
    fn span_heads_decode_to_their_ids_kind_and_times() {
        let span = written_spans(http::Method::GET, "/", 1).remove(0);
        assert_eq!(span.trace_id, [1; 16]);
        assert_eq!(span.span_id, [2; 8]);
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.kind, i32::from(SPAN_KIND_SERVER));
        assert!(span.start_time_unix_nano > 1_700_000_000_000_000_000);
        let duration = span.end_time_unix_nano - span.start_time_unix_nano;
        assert_eq!(duration, 2_000_000);
    }

    /// Known methods by name; any other as `_OTHER`, with the method as sent beside it.
    #[test]
    fn methods_are_named_as_the_conventions_say() {
        let name = |method: &str| {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            let span = written_spans(method, "/", 1).remove(0);
            let text = |key| match text(&span, key) {
                Some(Value::StringValue(text)) => Some(text),
                _ => None,
            };
            (
                span.name.clone(),
                text("http.request.method"),
                text("http.request.method_original"),
            )
        };
        for known in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            assert_eq!(
                name(known),
                (format!("{known} r"), Some(known.into()), None)
            );
        }
        for other in ["PURGE", "get", "PROPFIND"] {
            assert_eq!(
                name(other),
                ("HTTP r".into(), Some("_OTHER".into()), Some(other.into()))
            );
        }
    }
}
