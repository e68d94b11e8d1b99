//! A real headless Chromium, driven through `chromedriver` (Debian's `chromium` and
//! `chromium-driver`) with the W3C WebDriver protocol: plain HTTP and JSON on loopback.

use super::client::{body, req, Client};
use super::services::{free_port, installed, kill, spawn_listening};
use base64::Engine as _;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A browser session; the session and the driver (which stops its Chromium) end on drop.
pub struct Browser {
    driver: Option<std::process::Child>,
    address: SocketAddr,
    session: String,
}

impl Browser {
    /// Starts `chromedriver` and one headless Chromium session with a `width`×`height` window.
    /// Without the programs the test is skipped, except under `CI`, where it fails.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        if !installed("chromedriver", "chromium-driver") || !installed("chromium", "chromium") {
            return None;
        }
        let port = free_port();
        let driver = spawn_listening(
            std::process::Command::new("chromedriver").arg(format!("--port={port}")),
            port,
        );
        let mut browser = Browser {
            driver: Some(driver),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            session: String::new(),
        };
        let options = json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},{height}")],
        });
        let capabilities =
            json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}});
        let created = browser.call("POST", "/session", Some(capabilities)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        Some(browser)
    }

    /// Loads `url` in the window.
    pub async fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, Some(json!({ "url": url }))).await;
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        let path = format!("/session/{}/window/rect", self.session);
        let rect = json!({ "width": width, "height": height });
        self.call("POST", &path, Some(rect)).await;
    }

    /// The value `script` (a function body, `return …`) gives in the page.
    pub async fn eval(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        let args = json!({ "script": script, "args": [] });
        self.call("POST", &path, Some(args)).await
    }

    /// Waits up to `within` for `script` to return something other than `null`/`false`, and
    /// returns it; panics with `what` (and the last value) when it does not.
    pub async fn wait_for(&self, script: &str, within: Duration, what: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(script).await;
            if !value.is_null() && value != Value::Bool(false) {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: still {value}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self
            .call(
                "GET",
                &format!("/session/{}/screenshot", self.session),
                None,
            )
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        std::fs::write(path, bytes).expect("write the screenshot");
    }

    /// One WebDriver command: its `value`, or a panic with the driver's error.
    async fn call(&self, method: &str, path: &str, payload: Option<Value>) -> Value {
        let mut client = Client::http1(self.address).await;
        let content = payload.map_or_else(Vec::new, |v| v.to_string().into_bytes());
        let request = req(method, path)
            .header("host", self.address.to_string())
            .header("content-type", "application/json")
            .body(body(content))
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(60), client.request(request))
            .await
            .unwrap_or_else(|_| panic!("WebDriver {method} {path} did not answer"));
        let answer = reply.json();
        assert_eq!(reply.status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes its Chromium (killing the driver alone would leave it);
        // plain blocking IO, as a drop cannot wait on the runtime.
        use std::io::{Read as _, Write as _};
        if let Ok(mut stream) =
            std::net::TcpStream::connect_timeout(&self.address, Duration::from_secs(2))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session, self.address
            );
            let _ = stream.read_to_end(&mut Vec::new());
        }
        kill(&mut self.driver);
    }
}
