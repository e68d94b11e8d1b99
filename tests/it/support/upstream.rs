//! A scripted upstream: a hyper server whose answers the request path chooses, counting
//! requests and connections and recording what it saw.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

#[derive(Default)]
struct State {
    requests: AtomicUsize,
    connections: AtomicUsize,
    open_connections: AtomicUsize,
    body_bytes_seen: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    release: tokio::sync::watch::Sender<bool>,
    /// The status `/health` answers; 0 means 200.
    health_status: AtomicUsize,
    health_checks: AtomicUsize,
}

pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
    /// Connections accepted and not yet closed.
    pub fn open_connections(&self) -> usize {
        self.state.open_connections.load(Ordering::SeqCst)
    }
    /// Request body bytes received so far, across requests (counted as they arrive).
    pub fn body_bytes_seen(&self) -> usize {
        self.state.body_bytes_seen.load(Ordering::SeqCst)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }
    /// What `/health` answers from now on.
    pub fn set_health(&self, status: u16) {
        self.state
            .health_status
            .store(status as usize, Ordering::SeqCst);
    }
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }
    /// Lets `/hold` responses finish.
    pub fn release(&self) {
        self.state.release.send_replace(true);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct UpstreamBuilder {
    http2: bool,
    /// Added before every answer.
    delay: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    at: Option<SocketAddr>,
}

pub fn upstream() -> UpstreamBuilder {
    UpstreamBuilder {
        http2: false,
        delay: Duration::ZERO,
        tls: None,
        at: None,
    }
}

impl UpstreamBuilder {
    /// Serve HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Serve over TLS with this server config (ALPN decides HTTP/2 when offered).
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Wait this long before every answer (a slow endpoint).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Listen on this address (e.g. `127.0.0.2:PORT`) instead of `127.0.0.1:0`.
    pub fn at(mut self, addr: SocketAddr) -> Self {
        self.at = Some(addr);
        self
    }

    pub async fn run(self) -> Upstream {
        let at = self.at.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let listener = TcpListener::bind(at).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let http2 = self.http2;
        let delay = self.delay;
        let tls = self.tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                shared.open_connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&shared);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _open = OpenConnection(Arc::clone(&state));
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(scripted(req, state).await)
                        }
                    });
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve_scripted(TokioIo::new(stream), h2, service).await;
                        }
                        None => serve_scripted(TokioIo::new(stream), http2, service).await,
                    }
                });
            }
        });
        Upstream { addr, state, task }
    }
}

/// Counts a connection as open until its task ends.
struct OpenConnection(Arc<State>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_scripted<I, S>(io: TokioIo<I>, http2: bool, service: S)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    if http2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await;
    }
}

pub(super) fn full(body: impl Into<Bytes>) -> BoxBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(super) fn chunks(
    rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
) -> BoxBody {
    let stream = futures_stream(rx);
    BodyExt::boxed(StreamBody::new(stream))
}

fn futures_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
    async_stream(move |cx| rx.poll_recv(cx))
}

/// A tiny poll_fn-based stream, to avoid another dependency.
fn async_stream<T, F>(f: F) -> PollStream<F>
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>>,
{
    PollStream(f)
}

pub struct PollStream<F>(F);

impl<T, F> futures_core::Stream for PollStream<F>
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Unpin,
{
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        (self.0)(cx)
    }
}

async fn scripted(req: Request<Incoming>, state: Arc<State>) -> Response<BoxBody> {
    if req.uri().path() == "/health" {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = match state.health_status.load(Ordering::SeqCst) {
            0 => 200,
            code => code as u16,
        };
        return Response::builder()
            .status(status)
            .body(full("health"))
            .unwrap();
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let arg = |i: usize| {
        segments
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let method = req.method().to_string();
    let headers = req.headers().clone();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();

    if segments[0] == "upgrade" {
        let mut req = req;
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(full(""))
            .unwrap();
    }

    // Read the body as it arrives, counting bytes.
    let mut body = req.into_body();
    let mut body_len = 0;
    let mut body_bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_len += data.len();
                    state
                        .body_bytes_seen
                        .fetch_add(data.len(), Ordering::SeqCst);
                    if body_bytes.len() < 64 * 1024 {
                        body_bytes.extend_from_slice(data);
                    }
                }
            }
            Err(_) => return Response::new(full("body failed")),
        }
    }
    state.seen.lock().unwrap().push(Seen {
        path: path_and_query.clone(),
        headers: headers.clone(),
        body_len,
    });

    match segments[0] {
        "status" => Response::builder()
            .status(arg(1) as u16)
            .body(full(format!("status {}", arg(1))))
            .unwrap(),
        "delay" => {
            tokio::time::sleep(Duration::from_millis(arg(1))).await;
            Response::new(full("late"))
        }
        "bytes" => Response::new(full(vec![b'x'; arg(1) as usize])),
        "stream" => {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let n = arg(1);
            tokio::spawn(async move {
                for i in 0..n {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if tx
                        .send(Ok(Frame::data(Bytes::from(format!("chunk{i};")))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            Response::new(chunks(rx))
        }
        "hold" => {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let mut released = state.release.subscribe();
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"first;"))))
                    .await;
                let _ = released.wait_for(|r| *r).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"last")))).await;
            });
            Response::new(chunks(rx))
        }
        "trailers" => {
            // gRPC-style: data, then trailers carrying the status.
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"payload"))))
                    .await;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                trailers.insert("grpc-message", "done".parse().unwrap());
                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
            });
            Response::builder()
                .header("content-type", "application/grpc")
                .body(chunks(rx))
                .unwrap()
        }
        "die-mid-body" => {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from(vec![b'a'; 100])))).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(Err(std::io::Error::other("upstream died"))).await;
            });
            Response::builder()
                .header("content-length", "1000")
                .body(chunks(rx))
                .unwrap()
        }
        _ => {
            let mut header_map = serde_json::Map::new();
            for (name, value) in &headers {
                let entry = header_map
                    .entry(name.as_str().to_string())
                    .or_insert_with(|| json!([]));
                entry
                    .as_array_mut()
                    .unwrap()
                    .push(json!(value.to_str().unwrap_or("<binary>")));
            }
            let echo = json!({
                "method": method,
                "path": path_and_query,
                "headers": header_map,
                "body_len": body_len,
                "body": String::from_utf8_lossy(&body_bytes),
            });
            Response::builder()
                .header("content-type", "application/json")
                .header("connection", "x-upstream-hop")
                .header("x-upstream-hop", "should be removed")
                .header("keep-alive", "timeout=5")
                .body(full(echo.to_string()))
                .unwrap()
        }
    }
}

/// Opens a tunnel through the gateway to the upstream's `/upgrade` echo; returns the client's
/// end once the 101 has arrived and one round trip worked.
pub async fn open_tunnel(gateway: SocketAddr) -> tokio::net::TcpStream {
    open_tunnel_with_head(gateway).await.0
}

/// [`open_tunnel`], with the response head the client got.
pub async fn open_tunnel_with_head(gateway: SocketAddr) -> (tokio::net::TcpStream, String) {
    let mut stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let head = upgrade(&mut stream).await;
    (stream, head)
}

/// Asks for the upstream's `/upgrade` echo on `stream`, which may have carried requests
/// before; returns the 101's head once one round trip over the tunnel worked.
pub async fn upgrade(stream: &mut tokio::net::TcpStream) -> String {
    stream
        .write_all(
            b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(echoes(stream).await, "the new tunnel does not echo");
    head
}

/// Whether a round trip over the tunnel works within a second.
pub async fn echoes(stream: &mut tokio::net::TcpStream) -> bool {
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut echoed = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut echoed)).await,
        Ok(Ok(_)) if &echoed == b"ping"
    )
}
