//! The whole HTTP/1.1 path, end to end: raw bytes from a client socket into a real gateway
//! (started in-process once), in front of an upstream that records every request it parses.
//! The route sets a header whose value is drawn at random when the process starts, so only
//! requests the gateway itself wrote upstream carry it. Oracles:
//! - every request the upstream parses carries it: nothing the client sent was read
//!   upstream as a request of its own, whatever the framing;
//! - differential: the requests the upstream parsed are, in order, requests a strict
//!   reading of the client's bytes finds (`framing`), each one at most once, with the same
//!   method and body. The gateway may refuse some; it may not split, join or invent any;
//! - no gateway task panics. A gateway spinning on an input is caught by the fuzzer's own
//!   timeout.

use super::framing;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long a connection may stay quiet before the input counts as answered: far longer
/// than a loopback exchange takes.
const QUIET: Duration = Duration::from_millis(30);
/// The quiet time of the second try of an input that broke the differential: one that
/// breaks it only under a slow scheduler is a race of the harness, not a finding.
const PATIENT: Duration = Duration::from_millis(300);
const CLOSING: &[u8] = b"GET /end HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";

struct Harness {
    gateway: SocketAddr,
    mark: String,
    /// Each request the upstream parsed since the last input.
    seen: Arc<Mutex<Vec<Seen>>>,
    _running: crate::Running,
}

/// A request as the upstream parsed it.
#[derive(Clone, Debug)]
struct Seen {
    mark: Option<String>,
    method: String,
    /// None until the whole body arrived (or for ever, when it never did).
    body: Option<Bytes>,
}

static PANICKED: AtomicBool = AtomicBool::new(false);

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The gateway's threads, not the fuzzer's (whose panics it reports itself).
            let name = std::thread::current().name().map(String::from);
            if name.is_some_and(|name| name.starts_with("portcullis-")) {
                PANICKED.store(true, Ordering::SeqCst);
            }
            previous(info);
        }));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = start_upstream(Arc::clone(&seen));
        let mark = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let yaml = format!(
            "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
             access_log: false\n\
             upstreams: {{ up: {{ discovery: {{ static: [{upstream}] }} }} }}\n\
             routes:\n\
             \x20 - name: all\n\
             \x20   upstream: up\n\
             \x20   filters: [ {{ headers: {{ request: {{ set: {{ x-fuzz-mark: \"{mark}\" }} }} }} }} ]\n"
        );
        let config = crate::config::parse(&yaml, "fuzz.yaml", &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let options = crate::Options {
            workers: Some(1),
            ..crate::Options::default()
        };
        let running = crate::start(config, options).unwrap_or_else(|e| panic!("{e}"));
        let gateway = running.address("http").unwrap_or_else(|| panic!("no listener"));
        Harness {
            gateway,
            mark,
            seen,
            _running: running,
        }
    })
}

/// An upstream on its own thread: records every request's method and mark header as its
/// head arrives, then its body, and answers 200.
fn start_upstream(seen: Arc<Mutex<Vec<Seen>>>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let _ = listener.set_nonblocking(true);
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let Ok(runtime) = runtime else { return };
        runtime.block_on(async move {
            // The gateway writes to clients that may have gone, and writev cannot be told not
            // to raise SIGPIPE. Its binary ignores the signal, as every Rust program does;
            // under the fuzzer's own main it would end the process, so it is handled here.
            let _pipe = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::pipe());
            let _ = ready.send(());
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let mark = request
                                .headers()
                                .get("x-fuzz-mark")
                                .and_then(|v| v.to_str().ok())
                                .map(String::from);
                            let method = request.method().to_string();
                            let index = seen.lock().ok().map(|mut seen| {
                                seen.push(Seen {
                                    mark,
                                    method,
                                    body: None,
                                });
                                seen.len() - 1
                            });
                            let body = request.into_body().collect().await;
                            if let (Ok(body), Some(index)) = (body, index) {
                                if let Ok(mut seen) = seen.lock() {
                                    if let Some(entry) = seen.get_mut(index) {
                                        entry.body = Some(body.to_bytes());
                                    }
                                }
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    let _ = started.recv();
    address
}

pub fn http1(data: &[u8]) {
    let harness = harness();
    let mut stream = data.to_vec();
    stream.extend_from_slice(CLOSING);
    let reading = framing::read(&stream);
    let seen = exchange(harness, &stream, QUIET);
    assert!(!PANICKED.load(Ordering::SeqCst), "a gateway task panicked");
    let mark = Some(harness.mark.as_str());
    let foreign = seen.iter().find(|seen| seen.mark.as_deref() != mark);
    assert!(
        foreign.is_none(),
        "the upstream parsed a request the gateway did not write: {:?}",
        String::from_utf8_lossy(data)
    );
    if let Err(unmatched) = differs(&reading, &seen) {
        let seen = exchange(harness, &stream, PATIENT);
        if let Err(again) = differs(&reading, &seen) {
            panic!(
                "the upstream parsed {again:?}, which no strict reading of the input has \
                 (first try: {unmatched:?}); reading: {reading:?}; input: {:?}",
                String::from_utf8_lossy(data)
            );
        }
    }
}

/// Sends the stream on a new connection and reads until the gateway closes it or goes
/// quiet; returns what the upstream parsed meanwhile.
fn exchange(harness: &Harness, stream: &[u8], quiet: Duration) -> Vec<Seen> {
    if let Ok(mut seen) = harness.seen.lock() {
        seen.clear();
    }
    let Ok(mut client) = TcpStream::connect(harness.gateway) else {
        panic!("the gateway stopped accepting");
    };
    // The stream ends with a request that asks to close, so that a connection whose framing
    // held answers and closes; one that waits for more body bytes is left when it goes
    // quiet. The write side is not shut: hyper gives up on a request in flight when its
    // client half-closes.
    let _ = client.set_read_timeout(Some(quiet));
    let _ = client.write_all(stream);
    let mut buf = [0u8; 16 * 1024];
    while let Ok(read) = client.read(&mut buf) {
        if read == 0 {
            break;
        }
    }
    drop(client);
    harness.seen.lock().map(|s| s.clone()).unwrap_or_default()
}

/// Matches each request the upstream parsed with the next request of the reading it can
/// be; the first that matches none is the error. Past the end of a reading that stopped
/// short, requests are not judged.
fn differs<'a>(reading: &framing::Reading, seen: &'a [Seen]) -> Result<(), &'a Seen> {
    let mut next = 0;
    for parsed in seen {
        let same = |framed: &framing::Framed| {
            framed.method == parsed.method
                && match &parsed.body {
                    Some(body) => framed.complete && framed.body == *body,
                    None => !framed.complete || framed.body.is_empty(),
                }
        };
        match reading.requests[next..].iter().position(same) {
            Some(skipped) => next += skipped + 1,
            None if reading.whole => return Err(parsed),
            None => return Ok(()),
        }
    }
    Ok(())
}
