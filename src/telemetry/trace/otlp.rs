//! The OTLP trace export message (`ExportTraceServiceRequest`) written straight from finished
//! requests in protobuf wire format, with the field numbers of opentelemetry-proto's
//! `trace/v1`, `common/v1` and `resource/v1`. Building the generated message types instead
//! costs two allocations per attribute; this writes each span once, with exact lengths, into
//! one buffer per batch. The tests decode what it writes with the generated types.

use super::record::{Finished, TraceCtx, Try};
use bytes::Bytes;
use prost::encoding::encoded_len_varint;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

const SPAN_KIND_SERVER: u64 = 2;
const SPAN_KIND_CLIENT: u64 = 3;
const STATUS_ERROR: u64 = 2;

/// An attribute's key with the protobuf around it worked out when compiling: the `key = 1`
/// field and the key of the `value = 2` field that follows it.
macro_rules! key {
    ($name:literal) => {{
        const HEAD: [u8; $name.len() + 3] = key_head($name);
        &HEAD
    }};
}

/// `0x0a len name 0x12` for a key name shorter than 128 bytes.
const fn key_head<const N: usize>(name: &str) -> [u8; N] {
    let bytes = name.as_bytes();
    // A longer name would need a two-byte length; this fails the build instead.
    assert!(bytes.len() < 128, "attribute key too long");
    let mut out = [0u8; N];
    out[0] = 0x0a;
    out[1] = bytes.len() as u8;
    let mut i = 0;
    while i < bytes.len() {
        out[2 + i] = bytes[i];
        i += 1;
    }
    out[N - 1] = 0x12;
    out
}

/// A value of an attribute.
enum Value<'a> {
    Text(&'a str),
    /// Bytes known to be ASCII (addresses, request ids): written without a UTF-8 check.
    Ascii(&'a [u8]),
    Int(i64),
    Bool(bool),
}

/// Room left before the first span for the message's enclosing heads, written last.
const HEAD_ROOM: usize = 256;
/// Bytes reserved before a request's spans are written: most fit, so writing rarely grows.
const SPANS_ROOM: usize = 4096;
/// Bytes reserved for a span's length before it is known: two varint bytes hold up to 16 KiB.
const SPAN_LENGTH_ROOM: usize = 2;

/// The spans of a batch, each written in place as a `ScopeSpans.spans` field, after room for
/// the heads that enclose them, so the finished message is never copied.
pub(super) struct Batch {
    buf: Vec<u8>,
    pub(super) count: u64,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::with_capacity(64 * 1024)
    }
}

impl Batch {
    fn with_capacity(capacity: usize) -> Batch {
        let mut buf = Vec::with_capacity(capacity.max(HEAD_ROOM));
        buf.resize(HEAD_ROOM, 0);
        Batch { buf, count: 0 }
    }

    /// Adds the server span of `finished`, then one client span per upstream try.
    pub(super) fn add(&mut self, finished: &Finished) {
        self.buf.reserve(SPANS_ROOM);
        let at = self.begin_span();
        server_span(&mut self.buf, finished);
        self.end_span(at);
        let trace = &finished.trace;
        for attempt in trace.tries() {
            let at = self.begin_span();
            client_span(&mut self.buf, trace, attempt);
            self.end_span(at);
        }
    }

    /// Writes the field key and leaves room for the length; returns where the room is.
    fn begin_span(&mut self) -> usize {
        // ScopeSpans.spans = 2
        field_key(&mut self.buf, 2, LEN);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; SPAN_LENGTH_ROOM]);
        at
    }

    /// Fills in the length of the span written since `at`, moving it when the length needs
    /// more or fewer bytes than were left for it.
    fn end_span(&mut self, at: usize) {
        let body = at + SPAN_LENGTH_ROOM;
        let len = self.buf.len() - body;
        let mut length = [0u8; 10];
        let used = varint_into(&mut length, len as u64);
        if used != SPAN_LENGTH_ROOM {
            let span = self.buf.split_off(body);
            self.buf.truncate(at);
            self.buf.extend_from_slice(&length[..used]);
            self.buf.extend_from_slice(&span);
        } else {
            self.buf[at..body].copy_from_slice(&length[..used]);
        }
        self.count += 1;
    }

    /// The whole export message; the batch starts over, sized like this one.
    pub(super) fn finish(&mut self, service_name: &str) -> Bytes {
        let mut resource = Vec::new();
        attribute(
            &mut resource,
            1,
            key!("service.name"),
            Value::Text(service_name),
        );
        attribute(
            &mut resource,
            1,
            key!("service.version"),
            Value::Text(env!("CARGO_PKG_VERSION")),
        );
        let mut scope = Vec::new();
        text_field(&mut scope, 1, "portcullis");
        text_field(&mut scope, 2, env!("CARGO_PKG_VERSION"));
        // ScopeSpans { scope = 1, spans = 2 }
        let scope_spans_len = len_field(scope.len()) + self.buf.len() - HEAD_ROOM;
        // ResourceSpans { resource = 1, scope_spans = 2 }
        let resource_spans_len = len_field(resource.len()) + len_field(scope_spans_len);
        let mut head = Vec::with_capacity(HEAD_ROOM);
        // ExportTraceServiceRequest { resource_spans = 1 }
        field_key(&mut head, 1, LEN);
        encode_varint(resource_spans_len as u64, &mut head);
        bytes_field(&mut head, 1, &resource);
        field_key(&mut head, 2, LEN);
        encode_varint(scope_spans_len as u64, &mut head);
        bytes_field(&mut head, 1, &scope);
        let mut buf = std::mem::replace(self, Batch::with_capacity(self.buf.capacity())).buf;
        // A service name too long for the room: the heads go in front the slow way.
        if head.len() > HEAD_ROOM {
            head.extend_from_slice(&buf[HEAD_ROOM..]);
            return Bytes::from(head);
        }
        let start = HEAD_ROOM - head.len();
        buf[start..HEAD_ROOM].copy_from_slice(&head);
        Bytes::from(buf).slice(start..)
    }
}

/// Bytes a length-delimited field of `len` bytes takes with a one-byte key.
#[inline]
fn len_field(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// `value` as a protobuf varint at the start of `out`; the bytes used.
#[inline]
fn varint_into(out: &mut [u8; 10], mut value: u64) -> usize {
    let mut i = 0;
    while value >= 0x80 {
        out[i] = (value as u8) | 0x80;
        value >>= 7;
        i += 1;
    }
    out[i] = value as u8;
    i + 1
}

#[inline(always)]
fn encode_varint(value: u64, buf: &mut Vec<u8>) {
    if value < 0x80 {
        buf.push(value as u8);
    } else {
        encode_long_varint(value, buf);
    }
}

/// The rarer varints of two bytes or more, kept out of line.
#[inline(never)]
fn encode_long_varint(value: u64, buf: &mut Vec<u8>) {
    let mut bytes = [0u8; 10];
    let used = varint_into(&mut bytes, value);
    buf.extend_from_slice(&bytes[..used]);
}

#[inline(always)]
fn field_key(buf: &mut Vec<u8>, tag: u64, wire: u64) {
    encode_varint(tag << 3 | wire, buf);
}

#[inline(always)]
fn bytes_field(buf: &mut Vec<u8>, tag: u64, bytes: &[u8]) {
    field_key(buf, tag, LEN);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

#[inline(always)]
fn text_field(buf: &mut Vec<u8>, tag: u64, text: &str) {
    bytes_field(buf, tag, text.as_bytes());
}

#[inline(always)]
fn varint_field(buf: &mut Vec<u8>, tag: u64, value: u64) {
    field_key(buf, tag, VARINT);
    encode_varint(value, buf);
}

#[inline]
fn fixed64_field(buf: &mut Vec<u8>, tag: u64, value: u64) {
    field_key(buf, tag, FIXED64);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// A `KeyValue { key = 1, value = 2: AnyValue { string = 1 | bool = 2 | int = 3 } }` as field
/// `tag` of its message; `head` comes from `key!`.
fn attribute(buf: &mut Vec<u8>, tag: u64, head: &[u8], value: Value) {
    let any_len = match &value {
        Value::Text(text) => len_field(text.len()),
        Value::Ascii(bytes) => len_field(bytes.len()),
        Value::Int(int) => 1 + encoded_len_varint(*int as u64),
        Value::Bool(_) => 2,
    };
    let pair_len = head.len() + encoded_len_varint(any_len as u64) + any_len;
    field_key(buf, tag, LEN);
    encode_varint(pair_len as u64, buf);
    buf.extend_from_slice(head);
    encode_varint(any_len as u64, buf);
    match value {
        Value::Text(text) => text_field(buf, 1, text),
        Value::Ascii(bytes) => bytes_field(buf, 1, bytes),
        Value::Bool(flag) => varint_field(buf, 2, u64::from(flag)),
        Value::Int(int) => varint_field(buf, 3, int as u64),
    }
}

/// Span attributes are field 9.
fn span_attribute(buf: &mut Vec<u8>, head: &[u8], value: Value) {
    attribute(buf, 9, head, value);
}

/// An IP address (with `port`, if given) printed into `room` without allocating: IPv4 by
/// hand, the rarer IPv6 through `Display`.
fn address(room: &mut [u8; 64], ip: IpAddr, port: Option<u16>) -> &[u8] {
    let mut end = 0;
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    room[end] = b'.';
                    end += 1;
                }
                end += decimal(&mut room[end..], octet.into());
            }
            if let Some(port) = port {
                room[end] = b':';
                end += 1;
                end += decimal(&mut room[end..], port);
            }
        }
        IpAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut room[..]);
            let _ = match port {
                Some(port) => write!(cursor, "{}", SocketAddr::from((v6, port))),
                None => write!(cursor, "{v6}"),
            };
            end = cursor.position() as usize;
        }
    }
    &room[..end]
}

/// `value` in decimal at the start of `out`; the bytes used (at most 5).
#[inline]
fn decimal(out: &mut [u8], value: u16) -> usize {
    let mut digits = [0u8; 5];
    let mut n = value;
    let mut used = 0;
    loop {
        digits[4 - used] = b'0' + (n % 10) as u8;
        used += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out[..used].copy_from_slice(&digits[5 - used..]);
    used
}

/// The span's head: ids, name, kind and times (fields 1–8).
#[allow(clippy::too_many_arguments)]
fn span_head(
    buf: &mut Vec<u8>,
    trace: &TraceCtx,
    span_id: &[u8],
    parent: Option<&[u8]>,
    name: (&str, &str),
    kind: u64,
    start: SystemTime,
    end: SystemTime,
) {
    bytes_field(buf, 1, &trace.trace_id);
    bytes_field(buf, 2, span_id);
    if let Some(parent) = parent {
        bytes_field(buf, 4, parent);
    }
    // The name in two parts, `METHOD target`, written without joining them first.
    let (method, target) = name;
    let len = method.len()
        + if target.is_empty() {
            0
        } else {
            1 + target.len()
        };
    field_key(buf, 5, LEN);
    encode_varint(len as u64, buf);
    buf.extend_from_slice(method.as_bytes());
    if !target.is_empty() {
        buf.push(b' ');
        buf.extend_from_slice(target.as_bytes());
    }
    varint_field(buf, 6, kind);
    fixed64_field(buf, 7, nanos(start));
    fixed64_field(buf, 8, nanos(end));
}

/// `Status { code = 3 }`, field 15, written only for errors (unset is the default).
fn error_status(buf: &mut Vec<u8>) {
    field_key(buf, 15, LEN);
    encode_varint(2, buf);
    varint_field(buf, 3, STATUS_ERROR);
}

fn server_span(buf: &mut Vec<u8>, finished: &Finished) {
    let trace = &finished.trace;
    let method = method_name(&trace.method);
    let route = finished.route.as_deref().unwrap_or("");
    let parent = trace.parent.as_ref().map(|p| &p[..]);
    let kind = SPAN_KIND_SERVER;
    span_head(
        buf,
        trace,
        &trace.span_id,
        parent,
        (method, route),
        kind,
        trace.start,
        finished.end,
    );
    if let Some(state) = trace.state.as_ref().and_then(|s| s.to_str().ok()) {
        text_field(buf, 3, state);
    }
    span_attribute(buf, key!("http.request.method"), Value::Text(method));
    if method == "_OTHER" {
        span_attribute(
            buf,
            key!("http.request.method_original"),
            Value::Text(trace.method.as_str()),
        );
    }
    span_attribute(buf, key!("url.path"), Value::Text(trace.uri.path()));
    span_attribute(buf, key!("url.scheme"), Value::Text(finished.scheme));
    span_attribute(
        buf,
        key!("http.response.status_code"),
        Value::Int(finished.status.into()),
    );
    let version = protocol_version(trace.version);
    span_attribute(buf, key!("network.protocol.version"), Value::Text(version));
    let mut room = [0u8; 64];
    let peer = address(&mut room, trace.peer.ip(), None);
    span_attribute(buf, key!("network.peer.address"), Value::Ascii(peer));
    span_attribute(
        buf,
        key!("network.peer.port"),
        Value::Int(trace.peer.port().into()),
    );
    // The client as trusted proxies reported it; when it is the peer itself, the peer says it.
    if finished.client != trace.peer.ip() {
        let client = address(&mut room, finished.client, None);
        span_attribute(buf, key!("client.address"), Value::Ascii(client));
    }
    // Request ids are limited to visible ASCII when accepted, and made so when generated.
    let request_id = finished.request_id.as_bytes();
    span_attribute(buf, key!("portcullis.request_id"), Value::Ascii(request_id));
    let host = trace.host.as_ref().and_then(|h| h.to_str().ok());
    if let Some(host) = host.or_else(|| trace.uri.authority().map(|a| a.as_str())) {
        let (address, port) = split_host(host);
        span_attribute(buf, key!("server.address"), Value::Text(address));
        if let Some(port) = port {
            span_attribute(buf, key!("server.port"), Value::Int(port.into()));
        }
    }
    if !route.is_empty() {
        span_attribute(buf, key!("http.route"), Value::Text(route));
    }
    // The endpoint is on each try's client span.
    if let Some(last) = trace.tries().last() {
        span_attribute(
            buf,
            key!("portcullis.upstream"),
            Value::Text(&last.upstream),
        );
    }
    if let Some(filter) = finished.answered_by {
        span_attribute(buf, key!("portcullis.answered_by"), Value::Text(filter));
        if filter == "rate_limit" && finished.status == 429 {
            span_attribute(buf, key!("portcullis.rate_limited"), Value::Bool(true));
        }
    }
    if finished.circuit_open {
        span_attribute(buf, key!("portcullis.circuit_open"), Value::Bool(true));
    }
    if let Some(cache) = trace.cache.as_ref().and_then(|c| c.to_str().ok()) {
        span_attribute(buf, key!("portcullis.cache"), Value::Text(cache));
    }
    if let Some(reason) = finished.fallback {
        span_attribute(buf, key!("portcullis.fallback"), Value::Text(reason));
    }
    if let Some(subject) = &finished.subject {
        span_attribute(buf, key!("enduser.id"), Value::Text(subject));
    }
    if let Some(kind) = finished.error {
        span_attribute(buf, key!("error.type"), Value::Text(kind));
    }
    // A server span is an error for 5xx only: a 4xx is the client's mistake.
    if finished.status >= 500 {
        error_status(buf);
    }
}

fn client_span(buf: &mut Vec<u8>, trace: &TraceCtx, attempt: &Try) {
    let method = method_name(&trace.method);
    let name = (method, &*attempt.upstream);
    let parent = Some(&trace.span_id[..]);
    let (start, end) = (attempt.start, attempt.end);
    span_head(
        buf,
        trace,
        &attempt.span_id,
        parent,
        name,
        SPAN_KIND_CLIENT,
        start,
        end,
    );
    span_attribute(buf, key!("http.request.method"), Value::Text(method));
    let mut room = [0u8; 64];
    let ip = address(&mut room, attempt.endpoint.ip(), None);
    span_attribute(buf, key!("server.address"), Value::Ascii(ip));
    span_attribute(
        buf,
        key!("server.port"),
        Value::Int(attempt.endpoint.port().into()),
    );
    span_attribute(
        buf,
        key!("portcullis.upstream"),
        Value::Text(&attempt.upstream),
    );
    if attempt.resend > 0 {
        span_attribute(
            buf,
            key!("http.request.resend_count"),
            Value::Int(attempt.resend.into()),
        );
    }
    if let Some(status) = attempt.status {
        span_attribute(
            buf,
            key!("http.response.status_code"),
            Value::Int(status.into()),
        );
    }
    if let Some(kind) = attempt.error {
        span_attribute(buf, key!("error.type"), Value::Text(kind));
    }
    // A client span fails on no answer, or on a 4xx or 5xx one.
    if attempt.error.is_some() || attempt.status.is_none_or(|s| s >= 400) {
        error_status(buf);
    }
}

/// The method as the semantic conventions name it: a known method, or `_OTHER`.
fn method_name(method: &http::Method) -> &str {
    match method.as_str() {
        known @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE"
        | "PATCH") => known,
        _ => "_OTHER",
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `host[:port]` (with `[v6]` literals) split.
fn split_host(host: &str) -> (&str, Option<u16>) {
    match host.rsplit_once(':') {
        Some((address, port)) if !port.contains(']') => match port.parse() {
            Ok(port) => (
                address.trim_start_matches('[').trim_end_matches(']'),
                Some(port),
            ),
            Err(_) => (host, None),
        },
        _ => (host.trim_start_matches('[').trim_end_matches(']'), None),
    }
}

fn nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_into_address_and_port() {
        assert_eq!(
            split_host("api.example.com:8080"),
            ("api.example.com", Some(8080))
        );
        assert_eq!(split_host("api.example.com"), ("api.example.com", None));
        assert_eq!(split_host("[::1]:443"), ("::1", Some(443)));
        assert_eq!(split_host("[::1]"), ("::1", None));
    }

    #[test]
    fn addresses_print_as_display_does() {
        let mut room = [0u8; 64];
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.20.30.40",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(address(&mut room, ip, None), ip.to_string().as_bytes());
            for port in [0, 9, 80, 65535] {
                let expected = SocketAddr::from((ip, port)).to_string();
                assert_eq!(address(&mut room, ip, Some(port)), expected.as_bytes());
            }
        }
    }

    #[test]
    fn span_lengths_of_any_size_are_fixed_up() {
        for len in [0usize, 100, 127, 128, 300, 16383, 16384, 70000] {
            let mut batch = Batch::with_capacity(0);
            let at = batch.begin_span();
            batch.buf.extend(std::iter::repeat_n(7u8, len));
            batch.end_span(at);
            let mut expected = vec![0u8; HEAD_ROOM];
            expected.push(0x12);
            encode_varint(len as u64, &mut expected);
            expected.extend(std::iter::repeat_n(7u8, len));
            assert_eq!(batch.buf, expected, "{len}");
        }
    }

    #[test]
    fn attributes_have_exact_lengths() {
        let mut buf = Vec::new();
        attribute(&mut buf, 9, key!("k"), Value::Text("v"));
        // field 9 LEN, 8 bytes: key "k" (3), value { string "v" (3) } (2 + 3)
        assert_eq!(buf, [0x4a, 8, 0x0a, 1, b'k', 0x12, 3, 0x0a, 1, b'v']);
        buf.clear();
        attribute(&mut buf, 9, key!("n"), Value::Int(-1));
        assert_eq!(buf.len(), 2 + 3 + 2 + 11);
    }
}
