//! Portcullis started in-process from YAML text or a file, and config helpers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
    gateway_env(yaml, &[])
}

/// The process environment with `vars` on top, for `${NAME}` in configs: tests never change
/// the process environment, which all tests share.
pub fn env_with(vars: &[(&str, &str)]) -> portcullis::config::Env {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    Arc::new(move |name| vars.get(name).cloned().or_else(|| std::env::var(name).ok()))
}

/// [`gateway`], with `${NAME}` looked up in `vars` first (on start and on reload).
pub fn gateway_env(yaml: &str, vars: &[(&str, &str)]) -> TestGateway {
    let yaml = with_test_admin(yaml);
    let env = env_with(vars);
    let config = portcullis::config::parse(&yaml, "test.yaml", &*env)
        .unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let options = portcullis::Options {
        workers: config.workers.or(Some(1)),
        config_path: None,
        env: Some(env),
    };
    let running = portcullis::start(config, options).expect("gateway start");
    TestGateway { running }
}

/// Starts a gateway from a config file, as the binary does (reload re-reads the file).
pub fn gateway_file(path: &std::path::Path) -> TestGateway {
    gateway_file_env(path, &[])
}

/// [`gateway_file`], with `${NAME}` looked up in `vars` first (on start and on reload).
pub fn gateway_file_env(path: &std::path::Path, vars: &[(&str, &str)]) -> TestGateway {
    let env = env_with(vars);
    let config = portcullis::config::load_with(path, &*env)
        .unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let options = portcullis::Options {
        workers: config.workers.or(Some(1)),
        config_path: Some(path.to_path_buf()),
        env: Some(env),
    };
    TestGateway {
        running: portcullis::start(config, options).expect("gateway start"),
    }
}

/// A fresh path in this test process's folder under the system temp folder, unique to the
/// call.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    test_dir().join(format!("{n}-{name}"))
}

/// The folder of this test process's files (configs, certificates, logs). Tests end without a
/// hook to remove it, so each test process removes those left by processes no longer running.
fn test_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let temp = std::env::temp_dir();
        for entry in std::fs::read_dir(&temp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEST_DIR_PREFIX)) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            let alive = std::path::Path::new("/proc").join(pid).exists();
            if !pid.is_empty() && !alive {
                let path = entry.path();
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
        let dir = temp.join(format!("{TEST_DIR_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test folder");
        dir
    })
}

const TEST_DIR_PREFIX: &str = "portcullis-test-";

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

/// The problems the config check finds in `yaml`, one line each (key path, message, line);
/// panics when the YAML is accepted.
pub fn config_errors(yaml: &str) -> Vec<String> {
    match portcullis::config::parse(yaml, "test.yaml", &|_| None) {
        Ok(_) => panic!("config accepted:\n{yaml}"),
        Err(error) => error.issues(),
    }
}
