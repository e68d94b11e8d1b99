//! Asking a running gateway's admin API, for `check --diff`: its effective config, and what a
//! reload to a new file would carry over and reset.

use crate::client;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use serde_json::Value;
use std::time::Duration;

/// How long one admin exchange may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The gateway validated the text and would reject it.
    #[error("the gateway would reject this config")]
    Rejected(Vec<String>),
    /// The gateway could not be asked, or answered something else.
    #[error("{0}")]
    Unavailable(String),
}

/// The running gateway's config as its admin API at `admin` (`http://host:port`) shows it
/// (`GET /config`, secrets redacted).
pub async fn running_config(admin: &str) -> Result<Value, String> {
    let request = Request::get("/config").body(Full::new(Bytes::new()));
    let (status, body) = exchange(admin, request.map_err(|e| e.to_string())?).await?;
    if !status.is_success() {
        return Err(format!("{admin}/config answered {status}"));
    }
    Ok(body)
}

/// What reloading the gateway at `admin` to `text` would do to its running state
/// (`POST /config/plan`): a list of `{ state, owner, slot, fate }`. `token` is the admin
/// token, when the gateway requires one.
pub async fn reload_plan(admin: &str, text: &str, token: Option<&str>) -> Result<Value, PlanError> {
    let mut request = Request::post("/config/plan");
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(text.as_bytes())))
        .map_err(|e| PlanError::Unavailable(e.to_string()))?;
    let (status, body) = exchange(admin, request)
        .await
        .map_err(PlanError::Unavailable)?;
    match status {
        StatusCode::OK => Ok(body["state"].clone()),
        StatusCode::BAD_REQUEST if body["errors"].is_array() => {
            let errors = body["errors"].as_array().into_iter().flatten();
            Err(PlanError::Rejected(
                errors
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect(),
            ))
        }
        other => Err(PlanError::Unavailable(format!(
            "{admin}/config/plan answered {other}: {}",
            body["error"].as_str().unwrap_or("")
        ))),
    }
}

/// One request to the admin API at `admin`: the answer's status and its JSON body.
async fn exchange(
    admin: &str,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Value), String> {
    let base: http::Uri = admin
        .parse()
        .map_err(|_| format!("invalid admin URL {admin:?}"))?;
    let path = request.uri().path().to_string();
    let exchange = async {
        let response = client::send(&base, None, request).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        let body = serde_json::from_slice(&body)
            .map_err(|e| format!("{admin}{path} answered {status}, not JSON: {e}"))?;
        Ok((status, body))
    };
    tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{admin} did not answer within {ADMIN_TIMEOUT:?}"))?
}
