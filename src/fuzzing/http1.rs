//! The whole HTTP/1.1 path, end to end: raw bytes from a client socket into a real gateway
//! (started in-process once), in front of an upstream that records every request it parses.
//! The route sets a header whose value is drawn at random when the process starts, so only
//! requests the gateway itself wrote upstream carry it. Oracles: every request the upstream
//! parses carries it (nothing the client sent was read upstream as a request of its own:
//! no smuggling, whatever the framing), and no gateway task panics. A gateway spinning on an
//! input is caught by the fuzzer's own timeout.

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
const CLOSING: &[u8] = b"GET /end HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";

struct Harness {
    gateway: SocketAddr,
    mark: String,
    /// The mark header of each request the upstream parsed since the last input.
    seen: Arc<Mutex<Vec<Option<String>>>>,
    _running: crate::Running,
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

/// An upstream on its own thread: answers every request 200 after reading its body, and
/// records its mark header.
fn start_upstream(seen: Arc<Mutex<Vec<Option<String>>>>) -> SocketAddr {
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
                            if let Ok(mut seen) = seen.lock() {
                                seen.push(mark);
                            }
                            let _ = request.into_body().collect().await;
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
    if let Ok(mut seen) = harness.seen.lock() {
        seen.clear();
    }
    let Ok(mut stream) = TcpStream::connect(harness.gateway) else {
        panic!("the gateway stopped accepting");
    };
    // A last request that asks to close, so that a connection whose framing held answers and
    // closes; one that waits for more body bytes is left when it goes quiet. The write side is
    // not shut: hyper gives up on a request in flight when its client half-closes.
    let _ = stream.set_read_timeout(Some(QUIET));
    let _ = stream.write_all(data);
    let _ = stream.write_all(CLOSING);
    let mut buf = [0u8; 16 * 1024];
    while let Ok(read) = stream.read(&mut buf) {
        if read == 0 {
            break;
        }
    }
    drop(stream);
    assert!(!PANICKED.load(Ordering::SeqCst), "a gateway task panicked");
    let seen = harness.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let mark = Some(harness.mark.as_str());
    let foreign = seen.iter().find(|seen| seen.as_deref() != mark);
    assert!(
        foreign.is_none(),
        "the upstream parsed a request the gateway did not write: {:?}",
        String::from_utf8_lossy(data)
    );
}
