//! A real OTLP/HTTP trace receiver: a hyper server that decodes each export with the
//! OpenTelemetry protobuf types and keeps the spans. It can be told to stop answering, as a
//! stuck collector would.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    spans: Mutex<Vec<Span>>,
    /// `service.name` of every export.
    services: Mutex<Vec<String>>,
    /// Header values of the last export: (content-type, authorization).
    headers: Mutex<(String, String)>,
    exports: AtomicUsize,
    stuck: AtomicBool,
}

pub struct Collector {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(receive(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { addr, state, task }
    }

    /// The base URL (the gateway adds `/v1/traces`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.state.spans.lock().unwrap().clone()
    }

    pub fn services(&self) -> Vec<String> {
        self.state.services.lock().unwrap().clone()
    }

    /// (content-type, authorization) of the last export.
    pub fn last_headers(&self) -> (String, String) {
        self.state.headers.lock().unwrap().clone()
    }

    pub fn exports(&self) -> usize {
        self.state.exports.load(Ordering::SeqCst)
    }

    /// From now on, read each export and never answer.
    pub fn get_stuck(&self) {
        self.state.stuck.store(true, Ordering::SeqCst);
    }

    /// Waits up to `within` until at least `count` spans arrived.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Span> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if spans.len() >= count || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    *state.headers.lock().unwrap() = (header("content-type"), header("authorization"));
    let path = request.uri().path().to_string();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    state.exports.fetch_add(1, Ordering::SeqCst);
    if state.stuck.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    assert_eq!(path, "/v1/traces");
    let export = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    for resource in export.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        state.services.lock().unwrap().push(service);
        for scope in resource.scope_spans {
            state.spans.lock().unwrap().extend(scope.spans);
        }
    }
    Response::new(Full::new(Bytes::new()))
}

/// A span's attribute as text (strings as they are, numbers and booleans printed).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    Some(match value.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// Lowercase hex of an id.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
