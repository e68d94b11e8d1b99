//! Test harness: real servers on ephemeral loopback ports.
//!
//! - [`upstream()`] starts a hyper server whose behaviour is scripted by the request path:
//!   `/status/{code}`, `/delay/{ms}`, `/bytes/{n}`, `/stream/{chunks}` (one chunk per 50 ms),
//!   `/hold` (first chunk, then waits for `release()`), `/die-mid-body`, `/upgrade` (echo after
//!   101), `/trailers` (a body, then gRPC-style trailers); anything else echoes the request as JSON (`method`, `path`, `headers`, `body_len`).
//!   It counts requests and connections and records what it saw. `/health` answers the status
//!   set with `set_health` (200 at first) and is counted apart, as `health_checks`.
//! - [`gateway()`] starts Portcullis in-process from YAML on `127.0.0.1:0`.
//! - [`Client`] keeps one HTTP/1.1 or h2c connection; [`raw`] speaks bytes over a socket.

#![allow(dead_code)]

pub mod origin;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
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

fn full(body: impl Into<Bytes>) -> BoxBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn chunks(rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>) -> BoxBody {
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
        method: method.clone(),
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

pub struct TestGateway {
    pub running: portcullis::Running,
}

impl TestGateway {
    pub fn addr(&self) -> SocketAddr {
        self.addr_of("http")
    }
    pub fn admin(&self) -> SocketAddr {
        self.running.admin_address().expect("admin listener is off")
    }
    /// Reloads from YAML text (the admin listener stays where it is).
    pub fn reload(
        &self,
        yaml: &str,
    ) -> Result<portcullis::reload::Applied, portcullis::reload::ReloadError> {
        self.running.reload_text(&with_test_admin(yaml))
    }
    pub fn addr_of(&self, listener: &str) -> SocketAddr {
        self.running.address(listener).expect("no such listener")
    }
}

/// Starts a gateway from YAML; listeners should use `127.0.0.1:0`. One worker keeps tests
/// lean; pass a `workers:` key to change it.
pub fn gateway(yaml: &str) -> TestGateway {
    let yaml = with_test_admin(yaml);
    let config = portcullis::config::parse(&yaml, "test.yaml", &|name| std::env::var(name).ok())
        .unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let workers = config.workers.or(Some(1));
    let options = portcullis::Options {
        workers,
        config_path: None,
    };
    let running = portcullis::start(config, options).expect("gateway start");
    TestGateway { running }
}

/// Starts a gateway from a config file, as the binary does (reload re-reads the file).
pub fn gateway_file(path: &std::path::Path) -> TestGateway {
    let config =
        portcullis::config::load(path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let options = portcullis::Options {
        workers: config.workers.or(Some(1)),
        config_path: Some(path.to_path_buf()),
    };
    TestGateway {
        running: portcullis::start(config, options).expect("gateway start"),
    }
}

/// A fresh path under the system temp folder, unique to this process and call.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("portcullis-test-{}-{n}-{name}", std::process::id()))
}

/// Tests run in parallel: the admin listener gets an ephemeral port unless the YAML sets one.
pub fn with_test_admin(yaml: &str) -> String {
    if yaml.contains("\nadmin:") || yaml.starts_with("admin:") {
        yaml.to_string()
    } else {
        format!("{yaml}\nadmin: {{ address: 127.0.0.1:0 }}\n")
    }
}

/// A minimal config: one listener, one upstream `up` at `upstream`, one catch-all route, plus
/// `extra` appended at the top level (YAML text).
pub fn simple_yaml(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "listeners:\n  - {{ name: http, address: 127.0.0.1:0 }}\nupstreams:\n  up:\n    discovery: {{ static: [{upstream}] }}\n    timeouts: {{ connect: 1s, response: 2s, idle: 2s }}\nroutes:\n  - name: all\n    upstream: up\n{extra}"
    )
}

/// A parsed response with its whole body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<BoxBody>),
    H2(hyper::client::conn::http2::SendRequest<BoxBody>),
}

/// One client connection to the gateway.
pub struct Client {
    sender: Sender,
    host: String,
}

impl Client {
    pub async fn http1(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        Client {
            sender: Sender::H1(sender),
            host: addr.to_string(),
        }
    }

    pub async fn http2(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client {
            sender: Sender::H2(sender),
            host: addr.to_string(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Sends `request`, filling in Host/authority; returns the response head and a body.
    pub async fn send(&mut self, request: Request<BoxBody>) -> hyper::Result<Response<Incoming>> {
        let (mut parts, body) = request.into_parts();
        match &mut self.sender {
            Sender::H1(s) => {
                if !parts.headers.contains_key("host") {
                    parts.headers.insert("host", self.host.parse().unwrap());
                }
                s.ready().await?;
                s.send_request(Request::from_parts(parts, body)).await
            }
            Sender::H2(s) => {
                if parts.uri.authority().is_none() {
                    let authority = parts
                        .headers
                        .remove("host")
                        .map(|h| h.to_str().unwrap().to_string())
                        .unwrap_or_else(|| self.host.clone());
                    parts.uri =
                        format!("http://{authority}{}", parts.uri.path_and_query().unwrap())
                            .parse()
                            .unwrap();
                }
                parts.version = http::Version::HTTP_2;
                s.ready().await?;
                s.send_request(Request::from_parts(parts, body)).await
            }
        }
    }

    pub async fn request(&mut self, request: Request<BoxBody>) -> Reply {
        let response = self.send(request).await.expect("request failed");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body failed").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.request(req("GET", path).body(empty()).unwrap()).await
    }
}

pub fn req(method: &str, path: &str) -> http::request::Builder {
    Request::builder().method(method).uri(path)
}

pub fn empty() -> BoxBody {
    full("")
}

pub fn body(bytes: impl Into<Bytes>) -> BoxBody {
    full(bytes)
}

/// A request body fed by the test, chunk by chunk.
pub fn channel_body() -> (
    tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    BoxBody,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (tx, chunks(rx))
}

/// A one-shot GET on a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    Client::http1(addr).await.get(path).await
}

/// Writes `bytes` and reads until the peer closes or `wait` passes without data.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_all(&mut stream, wait).await
}

pub struct RawReply {
    pub text: String,
    /// The peer closed the connection (EOF or reset) before `wait` ran out.
    pub closed: bool,
}

impl RawReply {
    pub fn status(&self) -> u16 {
        self.text
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {:?}", self.text))
    }
    pub fn responses(&self) -> usize {
        self.text.matches("HTTP/1.1 ").count()
    }
}

pub async fn read_all(stream: &mut TcpStream, wait: Duration) -> RawReply {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return RawReply {
                    text: String::from_utf8_lossy(&out).into_owned(),
                    closed: true,
                }
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {
                return RawReply {
                    text: String::from_utf8_lossy(&out).into_owned(),
                    closed: false,
                }
            }
        }
    }
}

/// A real `redis-server` on an ephemeral loopback port, started by the test and stopped (by
/// its PID) when dropped. Without the binary the test is skipped, except under `CI`, where
/// that is a failure.
/// A free TCP port on loopback (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Whether `program` can run; when not, panics under CI and otherwise says the test is
/// skipped.
fn installed(program: &str, package: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{program} is not installed (scripts/test.sh installs {package})");
        }
        eprintln!("skipped: {program} is not installed (scripts/test.sh installs {package})");
    }
    found
}

/// Spawns a server process and waits until it accepts TCP connections on `port`.
fn spawn_listening(command: &mut std::process::Command, port: u16) -> std::process::Child {
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("server process");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?} did not start",
            command.get_program()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Kills a server process of ours and waits for it to exit.
fn kill(child: &mut Option<std::process::Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub fn start() -> Option<RedisServer> {
        if !installed("redis-server", "redis-server") {
            return None;
        }
        let mut server = RedisServer {
            port: free_port(),
            child: None,
        };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        let child = spawn_listening(
            std::process::Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]),
            self.port,
        );
        self.child = Some(child);
    }

    /// Kills the server (it is ours, by PID) and waits for it to exit.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Freezes the server (SIGSTOP, by PID): the kernel still accepts connections and takes
    /// commands, but nothing is answered, as with a wedged or overloaded Redis.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis is not running").id();
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A single-member etcd on loopback ports with its data in a temp folder; writes go through
/// its v3 JSON API, as any client's would.
pub struct EtcdServer {
    pub port: u16,
    peer_port: u16,
    data: std::path::PathBuf,
    child: Option<std::process::Child>,
    /// Sent with every request once authentication is on.
    token: Option<String>,
    /// A second, TLS client port with its certificate and key files.
    tls: Option<(u16, std::path::PathBuf, std::path::PathBuf)>,
}

impl EtcdServer {
    pub fn start() -> Option<EtcdServer> {
        Self::start_with(None)
    }

    /// Also serves clients over TLS with this certificate (see `tls_url`).
    pub fn start_tls(
        cert_file: &std::path::Path,
        key_file: &std::path::Path,
    ) -> Option<EtcdServer> {
        let files = (cert_file.to_path_buf(), key_file.to_path_buf());
        Self::start_with(Some((free_port(), files.0, files.1)))
    }

    fn start_with(
        tls: Option<(u16, std::path::PathBuf, std::path::PathBuf)>,
    ) -> Option<EtcdServer> {
        if !installed("etcd", "etcd-server") {
            return None;
        }
        let mut server = EtcdServer {
            port: free_port(),
            peer_port: free_port(),
            data: temp_path("etcd"),
            child: None,
            token: None,
            tls,
        };
        server.restart();
        Some(server)
    }

    pub fn tls_url(&self) -> String {
        let (port, ..) = self.tls.as_ref().expect("started with TLS");
        format!("https://127.0.0.1:{port}")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts etcd (again) on the same ports and data, and waits until it serves reads.
    pub fn restart(&mut self) {
        let mut client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = std::process::Command::new("etcd");
        if let Some((_, cert, key)) = &self.tls {
            client = format!("{client},{}", self.tls_url());
            command
                .arg("--cert-file")
                .arg(cert)
                .arg("--key-file")
                .arg(key);
        }
        let child = spawn_listening(
            command
                .args(["--name", "test", "--data-dir"])
                .arg(&self.data)
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args(["--initial-cluster", &format!("test={peer}")]),
            self.port,
        );
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.call("/v3/kv/range", json!({"key": "eA=="})).is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "etcd never served reads"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Turns authentication on with a `root` user; later calls log in as it.
    pub fn enable_auth(&mut self, password: &str) {
        self.call(
            "/v3/auth/user/add",
            json!({"name": "root", "password": password}),
        )
        .expect("etcd user add");
        self.call(
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        )
        .expect("etcd role grant");
        self.call("/v3/auth/enable", json!({}))
            .expect("etcd auth enable");
        let login = self
            .call(
                "/v3/auth/authenticate",
                json!({"name": "root", "password": password}),
            )
            .expect("etcd login");
        self.token = login["token"].as_str().map(str::to_string);
    }

    pub fn put(&self, key: &str, value: &str) {
        let body = json!({"key": b64(key), "value": b64(value)});
        self.call("/v3/kv/put", body).expect("etcd put");
    }

    pub fn delete(&self, key: &str) {
        self.call("/v3/kv/deleterange", json!({"key": b64(key)}))
            .expect("etcd delete");
    }

    /// Compacts the history up to the current revision, so older watches are cancelled.
    pub fn compact(&self) {
        let range = self
            .call("/v3/kv/range", json!({"key": "eA=="}))
            .expect("etcd range");
        let revision = range["header"]["revision"].clone();
        self.call(
            "/v3/kv/compaction",
            json!({"revision": revision, "physical": true}),
        )
        .expect("etcd compaction");
    }

    /// One JSON request over a plain blocking socket (tests stay independent of the
    /// gateway's own client).
    fn call(&self, path: &str, body: Value) -> Option<Value> {
        use std::io::{Read, Write};
        let body = body.to_string();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let token = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{token}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        // The JSON gateway may answer in chunks: take the object between the outer braces.
        let json = &body[body.find('{')?..=body.rfind('}')?];
        serde_json::from_str(json).ok()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// dnsmasq serving names from a hosts file (re-read on `reload`) and SRV records, on a
/// loopback port, with a 1 s TTL on every answer and each query logged to a file.
pub struct DnsServer {
    pub port: u16,
    hosts: std::path::PathBuf,
    log: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl DnsServer {
    /// `hosts`: lines of `IP NAME`; `srv`: `_service._tcp.name,target,port,priority,weight`.
    pub fn start(hosts: &str, srv: &[String]) -> Option<DnsServer> {
        if !installed("dnsmasq", "dnsmasq-base") {
            return None;
        }
        let mut server = DnsServer {
            port: free_port(),
            hosts: temp_path("dns-hosts"),
            log: temp_path("dns-log"),
            child: None,
        };
        std::fs::write(&server.hosts, hosts).unwrap();
        let mut command = std::process::Command::new("dnsmasq");
        command
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
            ])
            .args([
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
            ])
            .args(["--user=root", "--local-ttl=1", "--log-queries"])
            .arg(format!("--port={}", server.port))
            .arg(format!("--addn-hosts={}", server.hosts.display()))
            .arg(format!("--log-facility={}", server.log.display()));
        for record in srv {
            command.arg(format!("--srv-host={record}"));
        }
        // dnsmasq also listens on TCP: wait for that.
        server.child = Some(spawn_listening(&mut command, server.port));
        Some(server)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the hosts file and makes dnsmasq read it again (SIGHUP to our own child).
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let pid = self.child.as_ref().expect("dnsmasq runs").id();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Queries for `name` answered so far.
    pub fn queries(&self, name: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("query[") && line.contains(&format!(" {name} from")))
            .count()
    }

    pub fn stop(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.hosts);
        let _ = std::fs::remove_file(&self.log);
    }
}
