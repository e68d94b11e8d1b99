//! An origin for cache tests whose answers are scripted by the request's query.

use super::{empty, req, Client, Reply};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// An origin whose answer is set by the query: `cc` (Cache-Control, `:` for `=`), `etag`
/// (a matching `If-None-Match` gets a 304, whose own tag `etag304` may change),
/// `vary`, `cookie`, `size` (body bytes), `digits` (a body of that many bytes counting
/// `0123456789…`), `ranges` (a `Range: bytes=A-B` request gets a 206), `status`, `truncate`
/// (promise `size` bytes, send 10 and hang up). Requests with `Range` are also counted under
/// `PATH range`. The body names the path and how many times it was asked for, and echoes the
/// request's Accept-Encoding.
pub struct Origin {
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    /// While set, every request gets its connection closed without an answer.
    pub down: Arc<std::sync::atomic::AtomicBool>,
    /// While not 0, every request is answered with this status.
    pub fail_with: Arc<std::sync::atomic::AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    pub fn count(&self, path: &str) -> usize {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn params(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace(':', "=").replace("%20", " ")))
        .collect()
}

/// `h.NAME=VALUE` query pairs, in order and repeatable: extra response header lines, values
/// percent-decoded (`h.age=10%2C%2020` sends `age: 10, 20`).
fn extra_headers(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(key, value)| Some((key.strip_prefix("h.")?.to_string(), decode(value))))
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                let hex = std::str::from_utf8(hex).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

pub async fn origin() -> Origin {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let shared = Arc::clone(&counts);
    let down: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let is_down = Arc::clone(&down);
    let fail_with: Arc<std::sync::atomic::AtomicU16> = Arc::default();
    let failing = Arc::clone(&fail_with);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counts = Arc::clone(&shared);
            let is_down = Arc::clone(&is_down);
            let failing = Arc::clone(&failing);
            tokio::spawn(async move {
                // Peek at the request line to serve a truncated body by hand.
                let mut head = vec![0u8; 4096];
                let n = match stream.peek(&mut head).await {
                    Ok(n) => n,
                    Err(_) => return,
                };
                let text = String::from_utf8_lossy(&head[..n]).to_string();
                if text.contains("truncate=1") {
                    let path = text
                        .split(' ')
                        .nth(1)
                        .unwrap_or("/")
                        .split('?')
                        .next()
                        .unwrap_or("/")
                        .to_string();
                    *counts.lock().unwrap().entry(path).or_default() += 1;
                    let mut buf = vec![0u8; n];
                    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 1000\r\n\r\n0123456789")
                        .await;
                    return;
                }
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let counts = Arc::clone(&counts);
                    let is_down = Arc::clone(&is_down);
                    let failing = Arc::clone(&failing);
                    async move {
                        if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                            return Err(std::io::Error::other("down"));
                        }
                        let status = failing.load(std::sync::atomic::Ordering::SeqCst);
                        if status != 0 {
                            return Ok(http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"failing")))
                                .unwrap());
                        }
                        let path = req.uri().path().to_string();
                        let p = params(req.uri().query().unwrap_or(""));
                        let n = {
                            let mut counts = counts.lock().unwrap();
                            let n = counts.entry(path.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        let encoding = req
                            .headers()
                            .get("accept-encoding")
                            .map(|v| v.to_str().unwrap_or("").to_string())
                            .unwrap_or_default();
                        let mut body = format!("{path} #{n} enc={encoding}");
                        let etag = p.get("etag").map(|e| format!("\"{e}\""));
                        let validated = req
                            .headers()
                            .get("if-none-match")
                            .is_some_and(|v| Some(v.to_str().unwrap_or("")) == etag.as_deref());
                        if validated {
                            *counts
                                .lock()
                                .unwrap()
                                .entry(format!("{path} 304"))
                                .or_default() += 1;
                            let mut response = http::Response::builder().status(304);
                            if let Some(cc) = p.get("cc") {
                                response = response.header("cache-control", cc.as_str());
                            }
                            // `etag304`: the 304 names another entity tag.
                            match (p.get("etag304"), &etag) {
                                (Some(other), _) => {
                                    response = response.header("etag", format!("\"{other}\""));
                                }
                                (None, Some(etag)) => {
                                    response = response.header("etag", etag.as_str());
                                }
                                (None, None) => {}
                            }
                            for (name, value) in extra_headers(req.uri().query().unwrap_or("")) {
                                response = response.header(name, value);
                            }
                            return Ok(response.body(Full::new(Bytes::new())).unwrap());
                        }
                        if let Some(ms) = p.get("delay").and_then(|s| s.parse::<u64>().ok()) {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                        }
                        if let Some(size) = p.get("size").and_then(|s| s.parse::<usize>().ok()) {
                            body = "x".repeat(size);
                        }
                        if let Some(size) = p.get("digits").and_then(|s| s.parse::<usize>().ok()) {
                            body = (0..size)
                                .map(|i| char::from(b'0' + (i % 10) as u8))
                                .collect();
                        }
                        let range = req
                            .headers()
                            .get("range")
                            .map(|r| r.to_str().unwrap().to_string());
                        if range.is_some() {
                            *counts
                                .lock()
                                .unwrap()
                                .entry(format!("{path} range"))
                                .or_default() += 1;
                        }
                        // `ranges`: a `bytes=A-B` request gets those bytes as a 206.
                        let part = range.filter(|_| p.contains_key("ranges")).and_then(|r| {
                            let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
                            Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
                        });
                        let mut content_range = None;
                        if let Some((a, b)) = part {
                            content_range = Some(format!("bytes {a}-{b}/{}", body.len()));
                            body = body[a..=b].to_string();
                        }
                        let mut response = http::Response::builder().status(
                            p.get("status")
                                .and_then(|s| s.parse::<u16>().ok())
                                .unwrap_or(200),
                        );
                        if let Some(content_range) = content_range {
                            response = response.status(206).header("content-range", content_range);
                        }
                        if let Some(cc) = p.get("cc") {
                            response = response.header("cache-control", cc.as_str());
                        }
                        if let Some(etag) = p.get("etag") {
                            response = response.header("etag", format!("\"{etag}\""));
                        }
                        if let Some(vary) = p.get("vary") {
                            response = response.header("vary", vary.as_str());
                        }
                        if p.contains_key("modified") {
                            response =
                                response.header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT");
                        }
                        if p.contains_key("cookie") {
                            response = response.header("set-cookie", "session=secret");
                        }
                        for (name, value) in extra_headers(req.uri().query().unwrap_or("")) {
                            response = response.header(name, value);
                        }
                        Ok::<_, std::io::Error>(
                            response.body(Full::new(Bytes::from(body))).unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Origin {
        addr,
        counts,
        down,
        fail_with,
        task,
    }
}

pub fn config(origin: SocketAddr, cache: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  origin: {{ discovery: {{ static: [{origin}] }} }}\n\
         routes:\n\
         \x20 - name: site\n    upstream: origin\n    filters:\n\
         \x20     - cache: {cache}\n"
    )
}

pub async fn fetch(client: &mut Client, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = req("GET", path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    client.request(request.body(empty()).unwrap()).await
}

pub fn x_cache(reply: &Reply) -> &str {
    reply.header("x-cache").unwrap_or("-")
}
