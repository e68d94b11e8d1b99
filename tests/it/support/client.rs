//! Clients: one HTTP/1.1 or h2c connection with whole-body replies, and raw bytes over a socket.

use super::upstream::{chunks, full, BoxBody};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
