//! The real binary: SIGHUP reloads the file, SIGTERM drains in-flight requests and exits 0.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn config(upstream: SocketAddr, extra_route: &str) -> String {
    let gone = dead_address();
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         admin: {{ address: 127.0.0.1:0 }}\n\
         shutdown_grace: 10s\n\
         upstreams:\n  up: {{ discovery: {{ static: [{upstream}] }} }}\n  gone: {{ discovery: {{ static: [{gone}] }} }}\n\
         routes:\n\
         \x20 - {{ name: degraded, match: {{ path: /degraded }}, upstream: gone, fallback: {{ respond: {{ body: later }} }} }}\n\
         \x20 - {{ name: {extra_route}, match: {{ path: /{extra_route} }}, respond: {{ body: {extra_route} }} }}\n\
         \x20 - {{ name: slow, match: {{ path_prefix: /delay }}, upstream: up }}\n"
    )
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Starts the binary and reads the bound addresses from its JSON log; every log line, those
/// read so far included, arrives on the returned channel.
pub(crate) fn spawn(
    path: &std::path::Path,
) -> (
    Child,
    SocketAddr,
    SocketAddr,
    std::sync::mpsc::Receiver<String>,
) {
    spawn_with(path, |_| {})
}

/// [`spawn`], with `prepare` changing the command first (limits, environment).
pub(crate) fn spawn_with(
    path: &std::path::Path,
    prepare: impl FnOnce(&mut Command),
) -> (
    Child,
    SocketAddr,
    SocketAddr,
    std::sync::mpsc::Receiver<String>,
) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args([
            "-c",
            path.to_str().unwrap(),
            "--workers",
            "1",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    prepare(&mut command);
    let mut child = command.spawn().expect("start portcullis");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    let (mut http, mut admin) = (None, None);
    while http.is_none() || admin.is_none() {
        let line = lines.next().expect("log ended before listening").unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if entry["message"] == "listening" {
            let address: SocketAddr = entry["address"].as_str().unwrap().parse().unwrap();
            match entry["listener"].as_str() {
                Some("http") => http = Some(address),
                Some("admin") => admin = Some(address),
                _ => {}
            }
        }
        let _ = tx.send(line);
    }
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, http.unwrap(), admin.unwrap(), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_drains() {
    let up = upstream().run().await;
    let path = temp_path("signals.yaml");
    std::fs::write(&path, config(up.addr, "first")).unwrap();
    let (mut child, http, admin, log) = spawn(&path);
    assert_eq!(get(http, "/first").await.text(), "first");

    // One access log line per request, as JSON.
    let next_access = || {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let line = log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("no access log line");
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
            if entry["target"] == "access" {
                break entry;
            }
        }
    };
    let access = next_access();
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/first");
    assert_eq!(access["status"], 200);
    assert_eq!(access["route"], "first");
    assert_eq!(access["bytes_out"], 5);
    assert_eq!(
        access["request_id"].as_str().map(str::len),
        Some(32),
        "{access}"
    );
    assert_eq!(
        (&access["upstream"], &access["fallback"]),
        (&"-".into(), &"-".into())
    );
    // A proxied request names its upstream and endpoint; a fallback's answer, why it answered.
    assert_eq!(get(http, "/delay/1").await.status, 200);
    let access = next_access();
    assert_eq!(access["upstream"], "up", "{access}");
    assert_eq!(access["endpoint"], up.addr.to_string(), "{access}");
    assert_eq!(get(http, "/degraded").await.text(), "later");
    let access = next_access();
    assert_eq!(access["route"], "degraded", "{access}");
    assert_eq!(access["upstream"], "gone", "{access}");
    assert_eq!(access["fallback"], "connect_error", "{access}");

    // A good file: applied on SIGHUP.
    std::fs::write(&path, config(up.addr, "second")).unwrap();
    signal(&child, "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(http, "/second").await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not apply the new file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A bad file: rejected, the running config stays.
    std::fs::write(&path, "routes: [ { name: broken } ]\n").unwrap();
    signal(&child, "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !get(admin, "/metrics")
        .await
        .text()
        .contains("config_reloads_total{result=\"error\"} 1")
    {
        assert!(Instant::now() < deadline, "bad reload not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(http, "/second").await.text(), "second");

    // SIGTERM with a request in flight: it completes, then the process exits 0.
    let slow = tokio::spawn(async move { get(http, "/delay/1500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "TERM");
    let reply = slow.await.unwrap();
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "late")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "portcullis did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "still accepting after exit"
    );
    std::fs::remove_file(&path).ok();
}
