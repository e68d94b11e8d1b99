//! The deploy files run as written: the Dockerfile's ENTRYPOINT, the Kubernetes manifests'
//! command and args (with their ConfigMap and Secret), and the systemd unit's Exec lines are
//! read from the files and run against the built binary, so they cannot drift from the CLI or
//! the config rules.

use crate::support::{free_port, temp_path};
use serde::Deserialize as _;
use serde_yaml::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Where the deploy files install the binary and the config.
const INSTALLED_BINARY: &str = "/usr/local/bin/portcullis";
const INSTALLED_CONFIG: &str = "/etc/portcullis/gateway.yaml";

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A config as shipped, with its fixed ports moved to free ones (tests run side by side).
struct Installed {
    config: PathBuf,
    ports: HashMap<u16, u16>,
}

impl Installed {
    fn new(text: &str, name: &str) -> Installed {
        let mut ports = HashMap::new();
        let mut text = text.to_string();
        for port in [8080u16, 9001, 9901] {
            let free = free_port();
            text = text.replace(&format!(":{port}"), &format!(":{free}"));
            ports.insert(port, free);
        }
        let dir = temp_path(&format!("deploy-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("gateway.yaml");
        std::fs::write(&config, text).unwrap();
        Installed { config, ports }
    }

    fn local(&self, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[&port]))
    }

    /// A command line from a deploy file, with the installed paths pointing here.
    fn command(&self, argv: &[String]) -> Command {
        let mapped: Vec<String> = argv
            .iter()
            .map(|arg| match arg.as_str() {
                INSTALLED_BINARY => env!("CARGO_BIN_EXE_portcullis").to_string(),
                INSTALLED_CONFIG => self.config.display().to_string(),
                other if other.starts_with('/') && other != "/bin/kill" => {
                    panic!("a deploy file names a path this test does not install: {other}")
                }
                other => other.to_string(),
            })
            .collect();
        let mut command = Command::new(&mapped[0]);
        command
            .args(&mapped[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }
}

/// One HTTP/1.1 exchange on a fresh connection: status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let status = reply.get(9..12)?.parse().ok()?;
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Waits for the admin API to answer `/healthz`, or fails with what the process said.
fn wait_healthy(child: &mut Child, admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .ok();
            panic!("exited with {status} before serving: {stderr}");
        }
        if http(admin, "GET", "/healthz", &[]).is_some_and(|(s, _)| s == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("admin API at {admin} never answered");
}

fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "SIGTERM ended it with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not stop it");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Dockerfile's `ENTRYPOINT [...]`.
fn entrypoint() -> Vec<String> {
    let dockerfile = read("deploy/Dockerfile");
    let line = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("no ENTRYPOINT in the Dockerfile");
    serde_json::from_str(line).expect("ENTRYPOINT in exec (JSON) form")
}

fn exposed_ports() -> Vec<u16> {
    read("deploy/Dockerfile")
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| {
            l.split_whitespace()
                .map(|p| p.parse::<u16>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Ports a config binds on addresses other hosts can reach (listeners and admin).
fn reachable_ports(config: &str) -> Vec<u16> {
    let value: Value = serde_yaml::from_str(config).unwrap();
    let mut addresses: Vec<&str> = value["listeners"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|l| l["address"].as_str())
        .collect();
    addresses.extend(value["admin"]["address"].as_str());
    let mut ports: Vec<u16> = addresses
        .into_iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .filter(|a| !a.ip().is_loopback())
        .map(|a| a.port())
        .collect();
    ports.sort_unstable();
    ports
}

#[test]
fn the_container_image_runs_its_entrypoint_on_the_shipped_config() {
    let argv = entrypoint();
    let shipped = read("gateway.yaml");
    // EXPOSE names exactly what the image's config lets other hosts reach.
    assert_eq!(
        exposed_ports(),
        reachable_ports(&shipped),
        "EXPOSE and the image's config disagree"
    );
    let installed = Installed::new(&shipped, "docker");
    let mut child = installed.command(&argv).spawn().unwrap();
    wait_healthy(&mut child, installed.local(9901));
    assert_eq!(
        http(installed.local(8080), "GET", "/ping", &[]),
        Some((200, "pong\n".into()))
    );
    terminate(child);
}

#[test]
fn the_kubernetes_deployment_runs_with_its_configmap_and_secret() {
    let manifests = read("deploy/kubernetes/portcullis.yaml");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&manifests)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let config = kind("ConfigMap")["data"]["gateway.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let container = &kind("Deployment")["spec"]["template"]["spec"]["containers"][0];
    // A container runs `command` (else the ENTRYPOINT) followed by `args`.
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_sequence()
            .map(|s| s.iter().map(|a| a.as_str().unwrap().to_string()).collect())
    };
    let mut argv = strings(&container["command"]).unwrap_or_else(entrypoint);
    argv.extend(strings(&container["args"]).unwrap_or_default());
    // Environment from the Secret, as the kubelet passes it.
    let mut env = Vec::new();
    for var in container["env"].as_sequence().into_iter().flatten() {
        let secret = kind("Secret");
        let from = &var["valueFrom"]["secretKeyRef"];
        assert_eq!(from["name"], secret["metadata"]["name"]);
        let value = secret["stringData"][from["key"].as_str().unwrap()]
            .as_str()
            .unwrap();
        env.push((var["name"].as_str().unwrap().to_string(), value.to_string()));
    }
    // The ports the probes use are the ones the config binds.
    let value: Value = serde_yaml::from_str(&config).unwrap();
    let admin: SocketAddr = value["admin"]["address"].as_str().unwrap().parse().unwrap();
    let admin_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap();
    assert_eq!(admin.port() as u64, admin_port);
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");

    let installed = Installed::new(&config, "kubernetes");
    let mut command = installed.command(&argv);
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = command.spawn().unwrap();
    let admin = installed.local(9901);
    wait_healthy(&mut child, admin);
    assert_eq!(
        http(installed.local(8080), "GET", "/ping", &[]),
        Some((200, "pong\n".into()))
    );
    // The admin API on the pod address takes changes only with the Secret's token.
    assert_eq!(http(admin, "POST", "/reload", &[]).map(|r| r.0), Some(401));
    let bearer = format!("Bearer {}", env[0].1);
    assert_eq!(
        http(admin, "POST", "/reload", &[("authorization", &bearer)]).map(|r| r.0),
        Some(200)
    );
    terminate(child);
}

#[test]
fn the_systemd_unit_checks_starts_and_reloads() {
    let unit = read("deploy/portcullis.service");
    let exec = |key: &str| -> Vec<String> {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"));
        line.split_whitespace().map(str::to_string).collect()
    };
    let installed = Installed::new(&read("gateway.yaml"), "systemd");
    let pre = installed.command(&exec("ExecStartPre")).output().unwrap();
    assert!(
        pre.status.success(),
        "ExecStartPre failed: {}",
        String::from_utf8_lossy(&pre.stderr)
    );
    let mut child = installed.command(&exec("ExecStart")).spawn().unwrap();
    let admin = installed.local(9901);
    wait_healthy(&mut child, admin);
    let reload: Vec<String> = exec("ExecReload")
        .into_iter()
        .map(|arg| arg.replace("$MAINPID", &child.id().to_string()))
        .collect();
    assert!(installed.command(&reload).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let routes = http(admin, "GET", "/routes", &[])
            .map(|r| r.1)
            .unwrap_or_default();
        if routes.contains("\"generation\": 2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ExecReload did not reload: {routes}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "ExecReload stopped the gateway"
    );
    terminate(child);
}
