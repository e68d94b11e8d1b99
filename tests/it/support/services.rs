//! Real services the tests start on loopback (redis-server, etcd, dnsmasq, ZooKeeper), stopped
//! by PID.

use super::gateway::temp_path;
use serde_json::{json, Value};
use std::sync::atomic::AtomicU16;
use std::time::Duration;

/// Ports handed out by [`free_port`]: below the kernel's ephemeral range (32768 and up on
/// Linux), so no socket bound to port 0 by another test can take one between the check and its
/// use by the server the test starts.
const HANDED_OUT: std::ops::Range<u16> = 20_000..32_000;

/// Ports for addresses nothing listens on: outside the ephemeral range and the ports
/// [`free_port`] hands out, so no test's server can come to life on one.
const NEVER_BOUND: std::ops::Range<u16> = 12_000..19_000;

/// A loopback address nothing listens on (connections are refused); a different one on every
/// call in this process.
pub fn dead_address() -> std::net::SocketAddr {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    std::net::SocketAddr::from(([127, 0, 0, 1], unused_port(NEVER_BOUND, &NEXT)))
}

/// A free TCP port on loopback for a server the test starts itself; a different one on every
/// call in this process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    unused_port(HANDED_OUT, &NEXT)
}

/// The next port of `range` (counted by `next`) that nothing listens on. The walk starts
/// from a place that depends on the process, so parallel test runs rarely meet.
fn unused_port(range: std::ops::Range<u16>, next: &AtomicU16) -> u16 {
    let span = range.end - range.start;
    let offset = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = range.start + (offset.wrapping_add(n) % span);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no unused port in {range:?}")
}

/// Whether `program` can run; when not, panics under CI and otherwise says the test is
/// skipped.
pub(super) fn installed(program: &str, package: &str) -> bool {
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
pub(super) fn spawn_listening(
    command: &mut std::process::Command,
    port: u16,
) -> std::process::Child {
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
pub(super) fn kill(child: &mut Option<std::process::Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A real `redis-server` on an ephemeral loopback port, started by the test and stopped (by
/// its PID) when dropped. Without the binary the test is skipped, except under `CI`, where
/// that is a failure.
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

/// The jar Debian's `zookeeper` package installs; the server runs from it on a JVM.
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// A standalone ZooKeeper on an ephemeral loopback port with its data in a temp folder,
/// started by the test and stopped (by its PID) when dropped. Its tick is 200 ms, so sessions
/// may be as short as 400 ms.
pub struct ZooKeeperServer {
    pub port: u16,
    data: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl ZooKeeperServer {
    pub fn start() -> Option<ZooKeeperServer> {
        if !installed("java", "zookeeper") {
            return None;
        }
        if !std::path::Path::new(ZOOKEEPER_JAR).exists() {
            if std::env::var_os("CI").is_some() {
                panic!("{ZOOKEEPER_JAR} is missing (scripts/test.sh installs zookeeper)");
            }
            eprintln!("skipped: {ZOOKEEPER_JAR} is missing (scripts/test.sh installs zookeeper)");
            return None;
        }
        let mut server = ZooKeeperServer {
            port: free_port(),
            data: temp_path("zookeeper"),
            child: None,
        };
        server.restart();
        Some(server)
    }

    /// `127.0.0.1:PORT`, as a `servers:` entry.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and data, and waits until it accepts
    /// connections.
    pub fn restart(&mut self) {
        std::fs::create_dir_all(&self.data).unwrap();
        let child = spawn_listening(
            std::process::Command::new("java")
                .args(["-Xmx128m", "-Dzookeeper.admin.enableServer=false"])
                .args(["-cp", ZOOKEEPER_JAR])
                .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
                .arg(self.port.to_string())
                .arg(&self.data)
                .arg("200"),
            self.port,
        );
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
