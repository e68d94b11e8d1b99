//! The OTLP/HTTP exporter: finished requests wait in a bounded queue; a task on the control
//! thread writes them as spans (`otlp.rs`) and posts them in batches with the gateway's own
//! HTTP client. A full queue or a failed export drops spans and counts them; nothing waits on
//! the collector but this task.
//!
//! Once a batch has begun, the task drains the queue on a short tick instead of waiting on
//! it, so a request handing over its spans never has to wake another thread.

use super::otlp::Batch;
use super::record::Finished;
use super::spec::OtlpSpec;
use crate::telemetry::{encode_family, Labels, MetricSet};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt as _, Full};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::time::Duration;
use tokio::sync::mpsc;

/// Requests per export.
const MAX_BATCH: usize = 2048;
/// How long the first request of a batch waits for others.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often a batch being gathered takes what has queued.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

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
            service_name: service_name.to_string(),
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
            let spans = 1 + error.into_inner().trace.tries().count();
            self.queue_full.inc_by(spans as u64);
        }
    }
}

struct Task {
    otlp: OtlpSpec,
    service_name: String,
    exported: Counter,
    failed: Counter,
}

impl Task {
    async fn run(self, mut pending: mpsc::Receiver<Finished>) {
        let mut batch = Batch::default();
        // Idle, the task waits for the first request; then it gathers on a tick.
        while let Some(first) = pending.recv().await {
            batch.add(&first);
            let mut requests = 1;
            let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
            let mut closed = false;
            while requests < MAX_BATCH && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(DRAIN_EVERY).await;
                loop {
                    match pending.try_recv() {
                        Ok(next) => {
                            batch.add(&next);
                            requests += 1;
                            if requests == MAX_BATCH {
                                break;
                            }
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                if closed {
                    break;
                }
            }
            let count = batch.count;
            let body = batch.finish(&self.service_name);
            match self.export(body).await {
                Ok(()) => {
                    self.exported.inc_by(count);
                }
                Err(reason) => {
                    self.failed.inc_by(count);
                    tracing::warn!(endpoint = %self.otlp.endpoint, %reason, spans = count, "trace export failed; spans dropped");
                }
            }
            if closed {
                return;
            }
        }
    }

    /// Posts one export message.
    async fn export(&self, body: Bytes) -> Result<(), String> {
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
            .body(Full::new(body))
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
