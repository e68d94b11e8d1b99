//! Distributed tracing (OpenTelemetry): one server span per request and one client span per
//! upstream try, propagated with W3C Trace Context (`context.rs`) and exported as OTLP over
//! HTTP from the control thread (`export.rs`). The request path draws ids, takes times and,
//! once answered, writes its spans into its worker's batch; sending them happens elsewhere,
//! so a slow or dead collector never slows a request (its spans are dropped and counted
//! instead).

mod blocks;
mod context;
mod export;
mod otlp;
mod record;
mod spec;
mod wire;

pub(crate) use blocks::ConnAttributes;
pub(crate) use export::{Exporter, TraceMetrics};
pub(crate) use record::{Finished, TraceCtx, TryMark};
pub(crate) use spec::{AcceptParent, OtlpSpec, TracingSpec};

use context::{Parent, TraceId};
use std::sync::Arc;
use std::time::SystemTime;

/// The running tracer of one snapshot; its exporter is carried over reloads while `otlp` and
/// `service_name` stay the same.
pub(crate) struct Tracer {
    pub(crate) spec: TracingSpec,
    /// New traces whose id (its last 8 bytes) falls below this are sampled.
    threshold: u64,
    pub(crate) exporter: Arc<Exporter>,
}

impl Tracer {
    pub(crate) fn new(spec: TracingSpec, exporter: Arc<Exporter>) -> Tracer {
        // The last 8 bytes of a trace id are random (W3C level 2), so the ratio holds, and
        // every gateway decides the same for the same trace.
        let threshold = if spec.sample >= 1.0 {
            u64::MAX
        } else {
            (spec.sample * u64::MAX as f64) as u64
        };
        Tracer {
            spec,
            threshold,
            exporter,
        }
    }

    /// The trace a request joins or starts. `trusted`: the peer is in `trusted_proxies`. The
    /// client's `traceparent` and `tracestate` are taken out of the request: what goes
    /// upstream is the gateway's own.
    pub(crate) fn start(&self, request: &mut http::request::Parts, trusted: bool) -> Box<TraceCtx> {
        let headers = &mut request.headers;
        let seen = context::scan(headers);
        let parents = seen.take_parents(headers);
        let states = seen.take_states(headers);
        let host = seen.host;
        let accept = match self.spec.accept_parent {
            AcceptParent::Any => true,
            AcceptParent::Trusted => trusted,
        };
        let parent = parents.filter(|_| accept).and_then(|p| context::parent(&p));
        let (trace_id, sampled) = match parent {
            Some(parent) if self.spec.parent_based => (parent.trace_id, parent.sampled),
            Some(parent) => (parent.trace_id, self.samples(&parent.trace_id)),
            None => {
                let id = context::random_id();
                (id, self.samples(&id))
            }
        };
        Box::new(TraceCtx {
            trace_id,
            span_id: context::random_id(),
            parent: parent.map(|p: Parent| p.span_id),
            state: parent.and(states).and_then(context::state),
            sampled,
            start: SystemTime::now(),
            method: request.method.clone(),
            uri: request.uri.clone(),
            version: request.version,
            host,
            first_try: None,
            more_tries: Vec::new(),
            cache: None,
        })
    }

    fn samples(&self, trace_id: &TraceId) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        self.threshold == u64::MAX || u64::from_be_bytes(low) < self.threshold
    }

    /// Writes a finished, sampled request's spans for the exporter.
    pub(crate) fn finish(&self, finished: &Finished) {
        self.exporter.record(finished);
    }
}
