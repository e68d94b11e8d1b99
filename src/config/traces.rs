//! `tracing:`: OpenTelemetry traces exported over OTLP/HTTP (off unless configured).

use super::issues::{duration_field, https_client_tls, Issues};
use super::raw;
use crate::telemetry::trace::{AcceptParent, OtlpSpec, TracingSpec};
use serde_yaml::Value;
use std::time::Duration;

/// Every trace is recorded unless told otherwise (the OpenTelemetry SDK's default).
const DEFAULT_SAMPLE: f64 = 1.0;
const DEFAULT_SERVICE_NAME: &str = "portcullis";
/// OTLP's default export timeout.
const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished requests waiting for export: a fifth of a second at 40k requests a second, about
/// 4 MB when full.
const DEFAULT_QUEUE: usize = 8192;
/// Where OTLP/HTTP receivers take traces when the endpoint gives no path.
const TRACES_PATH: &str = "/v1/traces";

pub(super) fn compile_tracing(value: Value, issues: &mut Issues) -> Option<TracingSpec> {
    let raw = issues.item::<raw::Tracing>(value, "tracing")?;
    let before = issues.list.len();
    let sample = raw.sample.unwrap_or(DEFAULT_SAMPLE);
    if !(0.0..=1.0).contains(&sample) {
        issues.add("tracing.sample", "must be between 0 and 1");
    }
    let accept_parent = match raw.accept_parent.as_deref() {
        None | Some("trusted") => AcceptParent::Trusted,
        Some("any") => AcceptParent::Any,
        Some(other) => {
            issues.add(
                "tracing.accept_parent",
                format!("{other:?}: expected trusted (peers in trusted_proxies) or any"),
            );
            AcceptParent::Trusted
        }
    };
    let service_name = raw
        .service_name
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.into());
    if service_name.is_empty() {
        issues.add("tracing.service_name", "must not be empty");
    }
    let otlp = compile_otlp(raw.otlp, issues);
    (issues.list.len() == before).then_some(TracingSpec {
        otlp: otlp?,
        sample,
        parent_based: raw.parent_based.unwrap_or(true),
        service_name,
        accept_parent,
        jwt_subject: raw.jwt_subject.unwrap_or(false),
    })
}

fn compile_otlp(raw: raw::Otlp, issues: &mut Issues) -> Option<OtlpSpec> {
    let path = "tracing.otlp.endpoint";
    let endpoint = match raw.endpoint.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            uri
        }
        _ => {
            issues.add(
                path,
                format!(
                    "{:?}: expected an http:// or https:// URL, e.g. http://otel-collector:4318",
                    raw.endpoint
                ),
            );
            return None;
        }
    };
    // A bare collector address gets the standard path; a URL with a path is used as it is.
    let endpoint = match endpoint.path() {
        "" | "/" => {
            let mut parts = endpoint.into_parts();
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static(TRACES_PATH));
            http::Uri::from_parts(parts).ok()?
        }
        _ => endpoint,
    };
    let mut headers = Vec::new();
    for (name, value) in raw.headers {
        let at = format!("tracing.otlp.headers.{name}");
        match (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => headers.push((name, value)),
            (Err(_), _) => issues.add(&at, "not a valid header name"),
            (_, Err(_)) => issues.add(&at, "not a valid header value"),
        }
    }
    let timeout = duration_field(
        raw.timeout,
        DEFAULT_OTLP_TIMEOUT,
        "tracing.otlp.timeout",
        issues,
    );
    if raw.queue == Some(0) {
        issues.add("tracing.otlp.queue", "must be at least 1");
    }
    let https = endpoint.scheme_str() == Some("https");
    let tls = https_client_tls(
        https,
        raw.ca_file.as_deref(),
        "tracing.otlp.ca_file",
        issues,
    );
    Some(OtlpSpec {
        endpoint,
        headers,
        timeout,
        queue: raw.queue.unwrap_or(DEFAULT_QUEUE),
        tls,
    })
}
