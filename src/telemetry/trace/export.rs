//! The OTLP/HTTP exporter. Each worker writes its finished requests' spans (`otlp.rs`) into
//! its own batch, behind a lock only the control thread ever shares, and only to take a batch
//! away. A batch that has filled goes to a bounded queue; a task on the control thread posts
//! them with the gateway's own HTTP client, and once a second also takes the batches still
//! filling. Batches are sent as they are, after a head written for the export, and go back to
//! their worker once sent. A full queue or a failed export drops spans and counts them;
//! nothing waits on the collector but this task.
//!
//! Once an export has begun gathering, the task drains the queue on a short tick instead of
//! waiting on it, so a worker handing over a batch rarely has to wake another thread.

use super::blocks::EndpointBlocks;
use super::otlp::{message_head, Batch};
use super::record::Finished;
use super::spec::OtlpSpec;
use crate::telemetry::{encode_family, Labels, MetricSet};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Requests per export, about: the batches a worker hands over are added whole.
const MAX_EXPORT: usize = 2048;
/// Requests a worker gathers before handing its batch over.
const MAX_BATCH: usize = 128;
/// Emptied batches a worker keeps for later: as many as one export can hold, and the queue's
/// share, so a busy worker fills used buffers instead of allocating (and faulting in) new ones.
const MAX_SPARE: usize = MAX_EXPORT / MAX_BATCH + 2;
/// How long spans wait, at most, before the task takes them.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often an export being gathered takes what has queued.
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

/// The workers' side of the exporter; dropping it lets the task flush and end.
pub(crate) struct Exporter {
    /// What it was started with: `otlp` and the service name.
    pub(crate) key: (OtlpSpec, String),
    /// One batch being filled per worker.
    workers: Arc<[Mutex<Worker>]>,
    /// Requests per handed-over batch: `MAX_BATCH`, or less for a small `queue`.
    batch_requests: usize,
    ready: mpsc::Sender<Ready>,
    queue_full: Counter,
}

impl Exporter {
    /// Starts the export task on `handle` (the control runtime), with a batch per worker.
    pub(crate) fn start(
        otlp: &OtlpSpec,
        service_name: &str,
        metrics: &TraceMetrics,
        workers: usize,
        handle: &tokio::runtime::Handle,
    ) -> Arc<Exporter> {
        // `queue` bounds the requests waiting: in handed-over batches, and about as many
        // again in the batches being filled.
        let batch_requests = otlp.queue.clamp(1, MAX_BATCH);
        let (ready, pending) = mpsc::channel(otlp.queue.div_ceil(batch_requests));
        let workers: Arc<[Mutex<Worker>]> = (0..workers.max(1)).map(|_| Mutex::default()).collect();
        let reason = |r: &str| {
            metrics
                .dropped
                .get_or_create(&vec![("reason", r.to_string())])
                .clone()
        };
        let task = Task {
            otlp: otlp.clone(),
            service_name: service_name.to_string(),
            workers: Arc::clone(&workers),
            exported: metrics.exported.clone(),
            failed: reason("export_failed"),
        };
        handle.spawn(task.run(pending));
        Arc::new(Exporter {
            key: (otlp.clone(), service_name.to_string()),
            workers,
            batch_requests,
            ready,
            queue_full: reason("queue_full"),
        })
    }

    /// Writes a finished request's spans into this worker's batch, and hands the batch over
    /// when it is full (or drops it, counted, when the queue is).
    pub(crate) fn record(&self, finished: &Finished) {
        let index = crate::worker::index() % self.workers.len();
        let full = {
            let mut worker = lock(&self.workers[index]);
            let worker = &mut *worker;
            worker.filling.add(finished, &mut worker.endpoints);
            if worker.filling.requests < self.batch_requests {
                return;
            }
            worker.take()
        };
        if let Err(error) = self.ready.try_send((index, full)) {
            let (_, batch) = error.into_inner();
            self.queue_full.inc_by(batch.spans);
            lock(&self.workers[index]).give_back(batch);
        }
    }
}

/// A worker's batches: the one being filled, and emptied ones to fill next, so buffers are
/// used again rather than allocated and cleared for every batch.
#[derive(Default)]
struct Worker {
    filling: Batch,
    spare: Vec<Batch>,
    endpoints: EndpointBlocks,
}

impl Worker {
    /// The batch being filled, replaced by a spare one.
    fn take(&mut self) -> Batch {
        let next = self.spare.pop().unwrap_or_default();
        std::mem::replace(&mut self.filling, next)
    }

    /// A batch whose spans were sent (or dropped), kept to be filled again.
    fn give_back(&mut self, mut batch: Batch) {
        if self.spare.len() < MAX_SPARE {
            batch.clear();
            self.spare.push(batch);
        }
    }
}

fn lock(worker: &Mutex<Worker>) -> std::sync::MutexGuard<'_, Worker> {
    worker.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A worker's full batch, with the worker's index.
type Ready = (usize, Batch);

struct Task {
    otlp: OtlpSpec,
    service_name: String,
    workers: Arc<[Mutex<Worker>]>,
    exported: Counter,
    failed: Counter,
}

/// The batches one export sends.
#[derive(Default)]
struct Gathered {
    batches: Vec<Ready>,
    spans: u64,
    requests: usize,
}

impl Gathered {
    fn add(&mut self, ready: Ready) {
        self.spans += ready.1.spans;
        self.requests += ready.1.requests;
        self.batches.push(ready);
    }
}

impl Task {
    async fn run(self, mut pending: mpsc::Receiver<Ready>) {
        let mut idle = tokio::time::interval(FLUSH_EVERY);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Idle, the task waits for a full batch or the once-a-second tick; with a full
            // batch in hand it gathers others on a short tick.
            let mut gathered = Gathered::default();
            let mut closed = false;
            tokio::select! {
                first = pending.recv() => match first {
                    Some(first) => {
                        gathered.add(first);
                        closed = gather(&mut pending, &mut gathered).await;
                    }
                    None => closed = true,
                },
                _ = idle.tick() => {}
            }
            for (index, worker) in self.workers.iter().enumerate() {
                let partial = {
                    let mut worker = lock(worker);
                    (worker.filling.requests > 0).then(|| worker.take())
                };
                if let Some(batch) = partial {
                    gathered.add((index, batch));
                }
            }
            if gathered.spans > 0 {
                let spans = gathered.spans;
                match self.export(self.frames(gathered)).await {
                    Ok(()) => {
                        self.exported.inc_by(spans);
                    }
                    Err(reason) => {
                        self.failed.inc_by(spans);
                        tracing::warn!(endpoint = %self.otlp.endpoint, %reason, spans, "trace export failed; spans dropped");
                    }
                }
            }
            if closed {
                return;
            }
        }
    }

    /// The export message: its head, then each batch's spans as they are, lent to the body
    /// and given back to their worker once sent.
    fn frames(&self, gathered: Gathered) -> Frames {
        let spans_len = gathered
            .batches
            .iter()
            .map(|(_, batch)| batch.spans_bytes().len())
            .sum();
        let mut frames = VecDeque::with_capacity(1 + gathered.batches.len());
        frames.push_back(Bytes::from(message_head(&self.service_name, spans_len)));
        for (index, batch) in gathered.batches {
            frames.push_back(Bytes::from_owner(Lent {
                batch: Some(batch),
                worker: index,
                workers: Arc::clone(&self.workers),
            }));
        }
        Frames(frames)
    }

    /// Posts one export message.
    async fn export(&self, body: Frames) -> Result<(), String> {
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
            .body(body)
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

/// Adds queued batches to `gathered` until it holds `MAX_EXPORT` requests or a second has
/// passed; true when the workers' side is gone.
async fn gather(pending: &mut mpsc::Receiver<Ready>, gathered: &mut Gathered) -> bool {
    let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
    while gathered.requests < MAX_EXPORT && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(DRAIN_EVERY).await;
        loop {
            match pending.try_recv() {
                Ok(next) => {
                    gathered.add(next);
                    if gathered.requests >= MAX_EXPORT {
                        break;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return true,
            }
        }
    }
    false
}

/// A worker's batch lent to an export body; dropped (once sent, or when the export is given
/// up), it goes back to its worker to be filled again.
struct Lent {
    batch: Option<Batch>,
    worker: usize,
    workers: Arc<[Mutex<Worker>]>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        self.batch.as_ref().map_or(&[], Batch::spans_bytes)
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let (Some(batch), Some(worker)) = (self.batch.take(), self.workers.get(self.worker)) {
            lock(worker).give_back(batch);
        }
    }
}

/// An export body: its frames in order, with their total length announced.
struct Frames(VecDeque<Bytes>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|bytes| bytes.len() as u64).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_refills_the_batches_an_export_gave_back() {
        let mut worker = Worker::default();
        let in_flight = MAX_EXPORT / MAX_BATCH;
        for round in 0..3 {
            // An export's worth of batches handed over, then sent and given back.
            let taken: Vec<Batch> = (0..in_flight).map(|_| worker.take()).collect();
            for batch in taken {
                worker.give_back(batch);
            }
            assert_eq!(worker.spare.len(), in_flight, "round {round}");
        }
    }
}
