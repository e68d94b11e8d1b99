//! `discovery: { etcd: { endpoints, prefix, username, password, ca_file } }`: every key under
//! `prefix` is one endpoint. Its value is JSON, `{"address": "10.0.0.5:8080", "weight": 2,
//! "metadata": {...}}` (weight defaults to 1; 0 takes the endpoint out; metadata is ignored),
//! or a bare `host:port`. A key whose value is neither is skipped with a warning.
//!
//! It speaks etcd's v3 JSON gateway (`/v3/kv/range`, `/v3/watch`) over plain HTTP/1.1, so no
//! gRPC stack or protoc is needed to build the gateway. It reads the prefix whole, then
//! watches from the revision after that read and applies each change as it comes. When the
//! watch ends (etcd restarted, the revision compacted, the connection lost) it reads the prefix
//! again, trying the next etcd endpoint with backoff while none answers; all that time the
//! last known set keeps serving.

use super::backend::{backoff, publish, Discovery, EndpointSet, Status};
use super::registered::Registered;
use super::static_list::{StaticEndpoint, DEFAULT_WEIGHT};
use crate::tls::UpstreamTls;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

/// How long one range read or login may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries while no etcd endpoint answers back off up to this.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Larger range answers or watch messages are refused.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EtcdSpec {
    /// Client URLs of the cluster's members, tried in turn.
    pub(crate) endpoints: Vec<Uri>,
    pub(crate) prefix: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    /// For `https` endpoints.
    pub(crate) tls: Option<UpstreamTls>,
}

pub(crate) struct EtcdList {
    spec: EtcdSpec,
    registered: Registered,
}

/// Why a sync ended.
enum Ended {
    /// Read the prefix again now (the watch was compacted or cancelled by etcd).
    Relist(String),
    /// The endpoint failed: back off, then try the next one.
    Failed(String),
}

impl EtcdList {
    pub(crate) fn new(spec: EtcdSpec) -> EtcdList {
        EtcdList {
            spec,
            registered: Registered::default(),
        }
    }

    /// Every key under the prefix, as etcd's JSON API spells a range.
    fn key_range(&self) -> Value {
        let prefix = self.spec.prefix.as_bytes();
        json!({"key": BASE64.encode(prefix), "range_end": BASE64.encode(prefix_end(prefix))})
    }

    /// One session with one etcd endpoint: login, read the prefix, then follow the watch.
    async fn sync(
        &self,
        base: &Uri,
        tx: &watch::Sender<EndpointSet>,
        status: &Status,
        failures: &mut u32,
    ) -> Ended {
        let token = match (&self.spec.username, &self.spec.password) {
            (Some(name), password) => {
                let body = json!({"name": name, "password": password.as_deref().unwrap_or("")});
                match self.call(base, None, "/v3/auth/authenticate", body).await {
                    Ok(answer) => answer["token"].as_str().map(str::to_string),
                    Err(error) => return Ended::Failed(format!("login: {error}")),
                }
            }
            _ => None,
        };
        let range = self.key_range();
        let answer = match self
            .call(base, token.as_deref(), "/v3/kv/range", range)
            .await
        {
            Ok(answer) => answer,
            Err(error) => return Ended::Failed(format!("range: {error}")),
        };
        let Some(revision) = int(&answer["header"]["revision"]) else {
            return Ended::Failed("range answer without a revision".into());
        };
        let mut entries = BTreeMap::new();
        for kv in answer["kvs"].as_array().into_iter().flatten() {
            if let Some((key, endpoint)) = entry(kv) {
                entries.insert(key, endpoint);
            }
        }
        self.apply(&entries, tx, status).await;
        status.succeeded();
        *failures = 0;
        tracing::debug!(%base, prefix = %self.spec.prefix, revision, endpoints = entries.len(), "etcd prefix read");
        let ended = self
            .follow(
                base,
                token.as_deref(),
                revision + 1,
                &mut entries,
                tx,
                status,
            )
            .await;
        status.set_up_to_date(false);
        ended
    }

    /// Applies watch events from `start` on until the watch ends.
    async fn follow(
        &self,
        base: &Uri,
        token: Option<&str>,
        start: i64,
        entries: &mut BTreeMap<String, Option<StaticEndpoint>>,
        tx: &watch::Sender<EndpointSet>,
        status: &Status,
    ) -> Ended {
        let mut range = self.key_range();
        range["start_revision"] = json!(start);
        let create = json!({ "create_request": range });
        let response = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.post(base, token, "/v3/watch", create),
        )
        .await
        {
            Ok(Ok(response)) if response.status() == StatusCode::OK => response,
            Ok(Ok(response)) => {
                return Ended::Failed(format!("watch: status {}", response.status()))
            }
            Ok(Err(error)) => return Ended::Failed(format!("watch: {error}")),
            Err(_) => return Ended::Failed("watch: timed out".into()),
        };
        let mut body = response.into_body();
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = match body.frame().await {
                None => return Ended::Failed("watch closed by etcd".into()),
                Some(Err(error)) => return Ended::Failed(format!("watch: {error}")),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            buffer.extend_from_slice(&chunk);
            if buffer.len() > MAX_MESSAGE_BYTES {
                return Ended::Failed("watch message too large".into());
            }
            // The gateway streams one JSON object per message; a frame may end mid-message.
            let mut messages = serde_json::Deserializer::from_slice(&buffer).into_iter::<Value>();
            let mut changed = false;
            for message in messages.by_ref() {
                let message = match message {
                    Ok(message) => message,
                    Err(error) if error.is_eof() => break,
                    Err(error) => return Ended::Failed(format!("watch: bad message: {error}")),
                };
                if let Some(error) = message.get("error") {
                    return Ended::Failed(format!("watch: {error}"));
                }
                let result = &message["result"];
                if int(&result["compact_revision"]).is_some_and(|r| r > 0) {
                    return Ended::Relist("watch revision compacted".into());
                }
                if result["canceled"].as_bool() == Some(true) {
                    return Ended::Relist(format!("watch canceled: {}", result["cancel_reason"]));
                }
                if result["created"].as_bool() == Some(true) {
                    // Until it ends, the watch keeps the set current, changes or not.
                    status.set_up_to_date(true);
                }
                for event in result["events"].as_array().into_iter().flatten() {
                    let kv = &event["kv"];
                    if event["type"].as_str() == Some("DELETE") {
                        if let Some(key) = decode(&kv["key"]) {
                            changed |= entries.remove(&key).is_some();
                        }
                    } else if let Some((key, endpoint)) = entry(kv) {
                        entries.insert(key, endpoint);
                        changed = true;
                    }
                }
                status.succeeded();
            }
            let consumed = messages.byte_offset();
            buffer.drain(..consumed);
            if changed {
                self.apply(entries, tx, status).await;
            }
        }
    }

    /// Publishes the endpoints of `entries`, host names resolved.
    async fn apply(
        &self,
        entries: &BTreeMap<String, Option<StaticEndpoint>>,
        tx: &watch::Sender<EndpointSet>,
        status: &Status,
    ) {
        let listed: Vec<&StaticEndpoint> = entries.values().flatten().collect();
        let found = self.registered.addresses(&listed, status).await;
        let count = found.len();
        if publish(tx, found.into()) {
            tracing::info!(prefix = %self.spec.prefix, endpoints = count, "etcd endpoints changed");
        }
    }

    /// POSTs a JSON request and reads the JSON answer, within `REQUEST_TIMEOUT`.
    async fn call(
        &self,
        base: &Uri,
        token: Option<&str>,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        let exchange = async {
            let response = self.post(base, token, path, body).await?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_MESSAGE_BYTES)
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            if status != StatusCode::OK {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                return Err(format!("status {status}: {text}"));
            }
            serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| "timed out".to_string())?
    }

    async fn post(
        &self,
        base: &Uri,
        token: Option<&str>,
        path: &str,
        body: Value,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let mut request = Request::post(path).header(CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, token);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        crate::client::send(base, self.spec.tls.as_ref(), request).await
    }
}

#[async_trait::async_trait]
impl Discovery for EtcdList {
    async fn run(&self, tx: &watch::Sender<EndpointSet>, status: &Status) {
        let mut failures = 0;
        for turn in 0.. {
            let count = self.spec.endpoints.len().max(1);
            let Some(base) = self.spec.endpoints.get(turn % count) else {
                return;
            };
            match self.sync(base, tx, status, &mut failures).await {
                Ended::Relist(reason) => {
                    tracing::info!(%base, %reason, "reading the etcd prefix again");
                }
                Ended::Failed(error) => {
                    status.failed();
                    failures += 1;
                    let wait = backoff(failures, MAX_RETRY);
                    tracing::warn!(%base, %error, retry_in_ms = wait.as_millis() as u64, "etcd discovery failed; keeping the last endpoints");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The key and endpoint of a key-value; `None` as the endpoint when its value is unusable
/// or its weight is 0 (the key is known, it just takes no traffic).
fn entry(kv: &Value) -> Option<(String, Option<StaticEndpoint>)> {
    let key = decode(&kv["key"])?;
    let value = decode(&kv["value"]).unwrap_or_default();
    match parse_value(&value) {
        Ok(endpoint) => Some((key, endpoint)),
        Err(error) => {
            tracing::warn!(%key, %error, "etcd key skipped");
            Some((key, None))
        }
    }
}

#[derive(Deserialize)]
struct Registration {
    address: String,
    #[serde(default)]
    weight: Option<u32>,
}

/// A registration: JSON `{"address", "weight", "metadata"}` or a bare `host:port`.
pub(crate) fn parse_value(value: &str) -> Result<Option<StaticEndpoint>, String> {
    let value = value.trim();
    if !value.starts_with('{') {
        return StaticEndpoint::parse(value, 1).map(Some);
    }
    let registration: Registration =
        serde_json::from_str(value).map_err(|e| format!("invalid registration: {e}"))?;
    match registration.weight.unwrap_or(DEFAULT_WEIGHT) {
        0 => Ok(None),
        weight => StaticEndpoint::parse(&registration.address, weight).map(Some),
    }
}

fn decode(value: &Value) -> Option<String> {
    let bytes = BASE64.decode(value.as_str()?).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// etcd encodes 64-bit integers as JSON strings.
fn int(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// The end of the key range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_parse() {
        let ep =
            parse_value(r#"{"address": "10.0.0.5:8080", "weight": 3, "metadata": {"zone": "a"}}"#)
                .unwrap()
                .unwrap();
        assert_eq!(
            (ep.host.as_str(), ep.port, ep.weight),
            ("10.0.0.5", 8080, 3)
        );
        let bare = parse_value(" 10.0.0.6:80\n").unwrap().unwrap();
        assert_eq!((bare.port, bare.weight), (80, 1));
        assert!(parse_value(r#"{"address": "10.0.0.5:8080", "weight": 0}"#)
            .unwrap()
            .is_none());
        assert!(parse_value(r#"{"weight": 1}"#).is_err());
        assert!(parse_value("no-port").is_err());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/svc/"), b"/svc0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
