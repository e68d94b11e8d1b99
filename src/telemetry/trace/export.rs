//! The OTLP/HTTP exporter: finished requests wait in a bounded queue; a task on the control
//! thread turns them into spans (the OpenTelemetry protobuf types) and posts them in batches
//! with the gateway's own HTTP client. A full queue or a failed export drops spans and
//! counts them; nothing waits on the collector but this task.

use super::record::{Finished, TraceCtx, Try};
use super::spec::OtlpSpec;
use crate::telemetry::{encode_family, Labels, MetricSet};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt as _, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prost::Message as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Requests per export.
const MAX_BATCH: usize = 512;
/// How long the first request of a batch waits for others.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// `trace_spans_exported_total` and `trace_spans_dropped_total{reason}`.
#[derive(Default)]
pub(crate) struct TraceMetrics {
    exported: Counter,
    dropped: Family<Labels, Counter>,
}

impl MetricSet for TraceMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            encoder,
            "trace_spans_exported",
            "Spans the collector accepted",
            &self.exported,
        )?;
        encode_family(
            encoder,
            "trace_spans_dropped",
            "Spans not exported, by reason (queue_full, export_failed)",
            &self.dropped,
        )
    }
}

/// The queue's sending side; dropping the last one lets the task flush and end.
pub(crate) struct Exporter {
    /// What it was started with: `otlp` and the service name.
    pub(crate) key: (OtlpSpec, String),
    queue: mpsc::Sender<Finished>,
    queue_full: Counter,
}

impl Exporter {
    /// Starts the export task on `handle` (the control runtime).
    pub(crate) fn start(
        otlp: &OtlpSpec,
        service_name: &str,
        metrics: &TraceMetrics,
        handle: &tokio::runtime::Handle,
    ) -> std::sync::Arc<Exporter> {
        let (queue, pending) = mpsc::channel(otlp.queue.max(1));
        let reason = |r: &str| {
            metrics
                .dropped
                .get_or_create(&vec![("reason", r.to_string())])
                .clone()
        };
        let task = Task {
            otlp: otlp.clone(),
            resource: resource(service_name),
            exported: metrics.exported.clone(),
            failed: reason("export_failed"),
        };
        handle.spawn(task.run(pending));
        std::sync::Arc::new(Exporter {
            key: (otlp.clone(), service_name.to_string()),
            queue,
            queue_full: reason("queue_full"),
        })
    }

    /// Queues a finished request, or drops it (counted) when the queue is full.
    pub(crate) fn submit(&self, finished: Finished) {
        if let Err(error) = self.queue.try_send(finished) {
            let spans = 1 + error.into_inner().trace.tries.len();
            self.queue_full.inc_by(spans as u64);
        }
    }
}

struct Task {
    otlp: OtlpSpec,
    resource: Resource,
    exported: Counter,
    failed: Counter,
}

impl Task {
    async fn run(self, mut pending: mpsc::Receiver<Finished>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = pending.recv().await {
            batch.push(first);
            let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, pending.recv()).await {
                    Ok(Some(next)) => batch.push(next),
                    Ok(None) | Err(_) => break,
                }
            }
            let spans: Vec<Span> = batch.drain(..).flat_map(|f| spans_of(&f)).collect();
            let count = spans.len() as u64;
            match self.export(spans).await {
                Ok(()) => {
                    self.exported.inc_by(count);
                }
                Err(reason) => {
                    self.failed.inc_by(count);
                    tracing::warn!(endpoint = %self.otlp.endpoint, %reason, spans = count, "trace export failed; spans dropped");
                }
            }
        }
    }

    async fn export(&self, spans: Vec<Span>) -> Result<(), String> {
        let message = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "portcullis".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let path = self
            .otlp
            .endpoint
            .path_and_query()
            .map_or("/v1/traces", |p| p.as_str());
        let mut request = Request::post(path)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            )
            .body(Full::new(Bytes::from(message.encode_to_vec())))
            .map_err(|e| e.to_string())?;
        for (name, value) in &self.otlp.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let exchange = async {
            let response =
                crate::client::send(&self.otlp.endpoint, self.otlp.tls.as_ref(), request).await?;
            let status = response.status();
            // Read to the end: the answer may tell of a partial success, which changes nothing.
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("collector answered {status}"))
            }
        };
        tokio::time::timeout(self.otlp.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.otlp.timeout))?
    }
}

fn resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![
            text("service.name", service_name),
            text("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    }
}

/// The server span of a finished request, then one client span per upstream try.
fn spans_of(finished: &Finished) -> Vec<Span> {
    let trace = &finished.trace;
    let mut spans = Vec::with_capacity(1 + trace.tries.len());
    spans.push(server_span(finished));
    spans.extend(trace.tries.iter().map(|t| client_span(trace, t)));
    spans
}

fn server_span(finished: &Finished) -> Span {
    let trace = &finished.trace;
    let method = method_name(&trace.method);
    let name = match &finished.route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let mut attributes = vec![
        text("http.request.method", method),
        text("url.path", trace.uri.path()),
        text("url.scheme", finished.scheme),
        int("http.response.status_code", i64::from(finished.status)),
        text("network.protocol.version", protocol_version(trace.version)),
        text("network.peer.address", &trace.peer.ip().to_string()),
        int("network.peer.port", i64::from(trace.peer.port())),
        text("client.address", &finished.client.to_string()),
        text(
            "portcullis.request_id",
            finished.request_id.to_str().unwrap_or("-"),
        ),
    ];
    if method == "_OTHER" {
        attributes.push(text("http.request.method_original", trace.method.as_str()));
    }
    let host = trace.host.as_ref().and_then(|h| h.to_str().ok());
    if let Some(host) = host.or_else(|| trace.uri.authority().map(|a| a.as_str())) {
        let (address, port) = split_host(host);
        attributes.push(text("server.address", address));
        if let Some(port) = port {
            attributes.push(int("server.port", i64::from(port)));
        }
    }
    if let Some(route) = &finished.route {
        attributes.push(text("http.route", route));
    }
    if let Some(upstream) = trace.tries.last() {
        attributes.push(text("portcullis.upstream", &upstream.upstream));
        attributes.push(text("portcullis.endpoint", &upstream.endpoint.to_string()));
    }
    if let Some(filter) = finished.answered_by {
        attributes.push(text("portcullis.answered_by", filter));
        if filter == "rate_limit" && finished.status == 429 {
            attributes.push(boolean("portcullis.rate_limited", true));
        }
    }
    if finished.circuit_open {
        attributes.push(boolean("portcullis.circuit_open", true));
    }
    if let Some(cache) = trace.cache.as_ref().and_then(|c| c.to_str().ok()) {
        attributes.push(text("portcullis.cache", cache));
    }
    if let Some(reason) = finished.fallback {
        attributes.push(text("portcullis.fallback", reason));
    }
    if let Some(subject) = &finished.subject {
        attributes.push(text("enduser.id", subject));
    }
    if let Some(kind) = finished.error {
        attributes.push(text("error.type", kind));
    }
    // A server span is an error for 5xx only: a 4xx is the client's mistake.
    let failed = finished.status >= 500;
    Span {
        trace_id: trace.trace_id.to_vec(),
        span_id: trace.span_id.to_vec(),
        trace_state: trace
            .state
            .as_ref()
            .and_then(|s| s.to_str().ok())
            .unwrap_or("")
            .to_string(),
        parent_span_id: trace.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name,
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: nanos(trace.start),
        end_time_unix_nano: nanos(finished.end),
        attributes,
        status: Some(span_status(failed)),
        ..Default::default()
    }
}

fn client_span(trace: &TraceCtx, attempt: &Try) -> Span {
    let method = method_name(&trace.method);
    let mut attributes = vec![
        text("http.request.method", method),
        text("server.address", &attempt.endpoint.ip().to_string()),
        int("server.port", i64::from(attempt.endpoint.port())),
        text("portcullis.upstream", &attempt.upstream),
    ];
    if attempt.resend > 0 {
        attributes.push(int("http.request.resend_count", i64::from(attempt.resend)));
    }
    if let Some(status) = attempt.status {
        attributes.push(int("http.response.status_code", i64::from(status)));
    }
    if let Some(kind) = attempt.error {
        attributes.push(text("error.type", kind));
    }
    // A client span fails on no answer, or on a 4xx or 5xx one.
    let failed = attempt.error.is_some() || attempt.status.is_none_or(|s| s >= 400);
    Span {
        trace_id: trace.trace_id.to_vec(),
        span_id: attempt.span_id.to_vec(),
        parent_span_id: trace.span_id.to_vec(),
        name: format!("{method} {}", attempt.upstream),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: nanos(attempt.start),
        end_time_unix_nano: nanos(attempt.end),
        attributes,
        status: Some(span_status(failed)),
        ..Default::default()
    }
}

fn span_status(failed: bool) -> Status {
    Status {
        message: String::new(),
        code: if failed {
            status::StatusCode::Error as i32
        } else {
            status::StatusCode::Unset as i32
        },
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

fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.to_string()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

fn boolean(key: &str, value: bool) -> KeyValue {
    attribute(key, any_value::Value::BoolValue(value))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
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
}
