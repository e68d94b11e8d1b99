//! Many clients at once, against the real binary: idle keep-alive clients are held in a stated
//! memory budget while a busy client beside them is served as quickly as without them, and
//! the open-file limit is raised at start, warned about when too low, and, once exhausted,
//! makes new connections wait rather than fail; clients that stop reading hold a bounded part
//! of a large response.

use crate::signals::spawn_with;
use crate::support::*;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections the test holds, each having carried one proxied request.
const IDLE: usize = 10_000;
/// Connections set up at once.
const OPENING: usize = 64;
/// What the gateway may grow by per idle connection, in KiB. This is the test profile's
/// (unoptimised) build, where an idle connection takes about 2 KiB, one that kept hyper's
/// buffers about 14 KiB, and one served by a watchdog task and a connection task sized for
/// its arguments at every level about 4.4 KiB; a release build uses less (the README gives
/// its figures).
const BUDGET_KIB_PER_CONNECTION: u64 = 3;
/// Requests the busy client sends while the idle connections are held.
const BUSY_REQUESTS: usize = 300;
/// The busy client's 99th-percentile latency bound.
const BUSY_P99: Duration = Duration::from_millis(50);

const REQUEST: &[u8] = b"GET /idle HTTP/1.1\r\nHost: portcullis.test\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_clients_stay_within_budget_and_slow_no_one() {
    // The clients' side; the gateway raises its own limit.
    if !raise_open_files(IDLE as u64 + 1024) {
        return;
    }
    let up = upstream().run().await;
    let path = config_file(
        "idle-clients.yaml",
        &format!(
            "limits: {{ max_connections: {}, idle_timeout: 300s, header_read_timeout: 300s }}\n\
             upstreams:\n  up: {{ discovery: {{ static: [{}] }} }}\n\
             routes:\n  - {{ name: all, upstream: up }}\n",
            IDLE + 100,
            up.addr
        ),
    );
    let (mut child, http, _admin, _log) = crate::signals::spawn(&path);
    let pid = child.id();

    // Pools, buffers and lazily built state exist before the count starts.
    drop(open_idle(http, OPENING).await);
    let before = rss_kib(pid);
    let mut idle = open_idle(http, IDLE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_kib(pid).saturating_sub(before);
    let per_connection = grown as f64 / IDLE as f64;
    eprintln!("{IDLE} idle connections: +{grown} KiB RSS, {per_connection:.2} KiB each");
    assert!(
        grown <= BUDGET_KIB_PER_CONNECTION * IDLE as u64,
        "{IDLE} idle connections grew the gateway by {grown} KiB ({per_connection:.2} KiB \
         each), over the budget of {BUDGET_KIB_PER_CONNECTION} KiB each"
    );

    let mut busy = Client::http1(http).await;
    let mut latencies = Vec::with_capacity(BUSY_REQUESTS);
    for _ in 0..BUSY_REQUESTS {
        let start = Instant::now();
        assert_eq!(busy.get("/busy").await.status, 200);
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let p99 = latencies[BUSY_REQUESTS * 99 / 100 - 1];
    eprintln!(
        "busy client beside them: p50 {:?}, p99 {p99:?}",
        latencies[BUSY_REQUESTS / 2]
    );
    assert!(p99 < BUSY_P99, "p99 {p99:?} with {IDLE} idle clients");

    // The idle connections were held, not dropped: a sample of them is served again.
    for stream in idle.iter_mut().step_by(IDLE / 20) {
        exchange(stream).await;
    }
    drop(idle);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Clients that stop reading a large response.
const STALLED: usize = 40;
/// The stalled response's size.
const LARGE: usize = 1 << 20;
/// What a stalled large response may cost the gateway, in KiB (test-profile build). With
/// hyper's default, the read buffer towards the upstream grows towards 400 KiB.
const BUDGET_KIB_PER_STALLED_RESPONSE: u64 = 160;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_hold_a_bounded_part_of_a_large_response() {
    let up = upstream().run().await;
    let path = config_file(
        "stalled-clients.yaml",
        &format!(
            "upstreams:\n  up: {{ discovery: {{ static: [{}] }} }}\n\
             routes:\n  - {{ name: all, upstream: up }}\n",
            up.addr
        ),
    );
    let (mut child, http, _admin, _log) = crate::signals::spawn(&path);
    let pid = child.id();
    drop(open_idle(http, OPENING).await);
    let before = rss_kib(pid);
    let mut stalled = Vec::with_capacity(STALLED);
    let request = format!("GET /bytes/{LARGE} HTTP/1.1\r\nHost: portcullis.test\r\n\r\n");
    for _ in 0..STALLED {
        // The smallest receive buffer the kernel allows: the response backs up into the
        // gateway rather than into this socket.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(1).unwrap();
        let mut stream = socket.connect(http).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = rss_kib(pid).saturating_sub(before);
    let each = grown / STALLED as u64;
    eprintln!("{STALLED} stalled {LARGE}-byte responses: +{grown} KiB RSS, {each} KiB each");
    assert!(
        each <= BUDGET_KIB_PER_STALLED_RESPONSE,
        "a stalled response costs {each} KiB, over the budget of \
         {BUDGET_KIB_PER_STALLED_RESPONSE} KiB"
    );
    // Nothing was lost: a client that reads again gets the whole response.
    for stream in stalled.iter_mut().take(2) {
        assert_eq!(read_response(stream).await, LARGE);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `count` connections to `addr` that each carried one request and now sit idle.
async fn open_idle(addr: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    while streams.len() < count {
        let batch = OPENING.min(count - streams.len());
        let opening = (0..batch).map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                exchange(&mut stream).await;
                stream
            })
        });
        for task in opening.collect::<Vec<_>>() {
            streams.push(task.await.unwrap());
        }
    }
    streams
}

/// One request on `stream`, its response read whole (the test upstream sends a length).
async fn exchange(stream: &mut TcpStream) {
    stream.write_all(REQUEST).await.expect("send");
    read_response(stream).await;
}

/// Reads one 200 response with a length from `stream`, whole; returns the body's length.
async fn read_response(stream: &mut TcpStream) -> usize {
    let mut received = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "connection closed before the response");
        received.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .expect("a length")
        .trim()
        .parse()
        .unwrap();
    while received.len() < head_end + length {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("body in time")
            .expect("read");
        assert!(n > 0, "connection closed inside the body");
        received.extend_from_slice(&buf[..n]);
    }
    length
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Raises this process's open-file limit to `wanted`, within the hard limit. When the hard limit is lower, the test fails under CI and is
/// skipped otherwise.
fn raise_open_files(wanted: u64) -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted && limit.rlim_max >= wanted {
            limit.rlim_cur = wanted;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    if limit.rlim_cur >= wanted {
        return true;
    }
    let why = format!(
        "{wanted} open files are needed; the hard limit is {}",
        limit.rlim_max
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// Starts the gateway with its open-file limit set to `soft` and `hard`.
fn limit_open_files(command: &mut Command, soft: u64, hard: u64) {
    // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
}

/// The first log line with `message`, among those already sent or arriving within 5 s.
fn log_line(log: &std::sync::mpsc::Receiver<String>, message: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no log line {message:?}"));
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        if entry["message"].as_str() == Some(message) {
            return entry;
        }
    }
}

fn respond_config() -> std::path::PathBuf {
    config_file(
        "open-files.yaml",
        "routes:\n  - { name: hello, respond: { body: hello } }\n",
    )
}

/// A config file for the binary: one plaintext listener, an admin listener, no access log,
/// then `rest`.
fn config_file(name: &str, rest: &str) -> std::path::PathBuf {
    let path = temp_path(name);
    let head = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
                admin: { address: 127.0.0.1:0 }\n\
                access_log: false\n";
    std::fs::write(&path, format!("{head}{rest}")).unwrap();
    path
}

#[test]
fn the_soft_open_file_limit_is_raised_and_a_low_hard_limit_is_warned_about() {
    let path = respond_config();
    let (mut child, _http, _admin, log) = spawn_with(&path, |c| limit_open_files(c, 256, 4096));
    // The default max_connections (10,000) does not fit in 4096 files.
    let warning = log_line(&log, "the open-file limit leaves no room for max_connections client connections and the upstream ones: raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower max_connections");
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(warning["open_files"], 4096, "{warning}");
    assert_eq!(warning["needed"], 11024, "{warning}");
    let started = log_line(&log, "portcullis started");
    assert_eq!(started["open_files"], 4096, "{started}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_open_files_new_connections_wait_until_one_closes() {
    let path = respond_config();
    let (mut child, http, _admin, log) = spawn_with(&path, |c| limit_open_files(c, 64, 64));
    // More clients than the gateway has files for: the kernel completes every handshake and
    // queues the connections the gateway cannot accept yet.
    let mut streams = Vec::new();
    for _ in 0..80 {
        let mut stream = TcpStream::connect(http).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        streams.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut answered = Vec::new();
    let mut waiting = Vec::new();
    for stream in streams {
        let mut buf = [0u8; 256];
        match stream.try_read(&mut buf) {
            Ok(n) if n > 0 => {
                assert!(buf.starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
                answered.push(stream);
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => waiting.push(stream),
            other => panic!("a queued connection was closed: {other:?}"),
        }
    }
    assert!(answered.len() >= 20, "{} answered", answered.len());
    assert!(waiting.len() >= 10, "{} waiting", waiting.len());
    // A second of retries, and the log says so once, not at every retry.
    let failures = log
        .try_iter()
        .filter(|line| line.contains("\"accept failed\""))
        .count();
    assert_eq!(failures, 1, "accept failures logged {failures} times");
    // Files come back as clients leave, and the queued connections are served.
    drop(answered);
    for mut stream in waiting {
        let mut received = Vec::new();
        let mut buf = [0u8; 256];
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("a queued connection was never served")
                .unwrap();
            assert!(n > 0, "a queued connection was closed");
            received.extend_from_slice(&buf[..n]);
        }
        assert!(received.starts_with(b"HTTP/1.1 200"));
    }
    let recovered = log_line(&log, "accepting again");
    assert!(recovered["failed"].as_u64().unwrap() > 1, "{recovered}");
    child.kill().unwrap();
    child.wait().unwrap();
}
