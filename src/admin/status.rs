//! The status page: one self-contained HTML page (`status.html`, embedded in the binary, no
//! outside resources) that polls the admin API's JSON endpoints and `/metrics` and redraws
//! itself, and `GET /status`, the summary only it needs: version, generation, uptime, the last
//! reload's outcome and the bound listeners.

use crate::body::Body;
use crate::reload::Reloader;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::{HeaderValue, Response};
use serde_json::{json, Value};
use std::time::UNIX_EPOCH;

const PAGE: &str = include_str!("status.html");

/// Scripts and styles only from the page itself, requests only to this admin API.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the page.
pub(super) fn page() -> Response<Body> {
    let mut response = Response::new(Body::full(PAGE));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    response
}

/// `GET /status`, for the gateway behind `reloader`, started at `started`.
pub(super) fn summary(reloader: &Reloader, started: std::time::Instant) -> Value {
    let config = reloader.config();
    let unix = |at: std::time::SystemTime| at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last_reload = reloader.last_reload().map(|last| {
        json!({
            "at_unix": unix(last.at),
            "ok": last.errors.is_empty(),
            "errors": last.errors,
        })
    });
    let listeners: Vec<Value> = reloader
        .listeners()
        .iter()
        .map(|(name, address, tls)| {
            json!({"name": name, "address": address.to_string(), "tls": tls})
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "generation": reloader.generation(),
        "config_hash": config.hash(),
        "uptime_seconds": started.elapsed().as_secs(),
        "last_reload": last_reload,
        "listeners": listeners,
    })
}
