//! The retry loop: one request sent with the upstream's retry policy, each try's outcome
//! recorded for outlier ejection.

use super::headers::content_length;
use crate::body::{Body, ClientBody};
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::telemetry::trace::TryMark;
use crate::upstream::{Endpoint, RetryOn, RetryPolicy, Upstream};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use std::sync::Arc;

/// Records an exchange with `endpoint` for outlier ejection: an error on the way to the
/// upstream, or a 5xx from it, counts against the endpoint.
pub(super) fn record(
    upstream: &Upstream,
    endpoint: &Endpoint,
    result: &Result<Response<Body>, ProxyError>,
) {
    let failed = match result {
        Ok(response) => response.status().is_server_error(),
        Err(error) => error.upstream_kind().is_some(),
    };
    upstream.record(endpoint, failed);
}

/// Starts a try's client span, when the request is traced: sets `traceparent` (with the
/// span's id) on the request about to go out.
pub(super) fn begin_try(ctx: &mut RequestCtx, headers: &mut http::HeaderMap) -> Option<TryMark> {
    ctx.trace
        .as_deref_mut()
        .map(|trace| trace.begin_try(headers))
}

/// Ends a try: recorded for outlier ejection and, when traced, as the span `mark` began.
pub(super) fn end_try(
    ctx: &mut RequestCtx,
    mark: Option<TryMark>,
    upstream: &Upstream,
    endpoint: &Endpoint,
    result: &Result<Response<Body>, ProxyError>,
) {
    record(upstream, endpoint, result);
    if let (Some(trace), Some(mark)) = (ctx.trace.as_deref_mut(), mark) {
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        let error = result
            .as_ref()
            .err()
            .map(|e| e.upstream_kind().unwrap_or("error"));
        trace.end_try(mark, &upstream.name, endpoint.address, status, error);
    }
}

/// Sends with the upstream's retry policy. Only a body that can be sent again is retried:
/// none, or one with a known length within `buffer_bytes`, read whole first; any other body
/// streams through and gets one try. Every try but the last is settled (and its answer
/// dropped) before anything goes to the client, so no response byte is sent twice.
pub(super) async fn send_with_retries(
    upstream: &Upstream,
    policy: &RetryPolicy,
    mut endpoint: Arc<Endpoint>,
    parts: http::request::Parts,
    body: ClientBody,
    limit: u64,
    ctx: &mut RequestCtx,
) -> Result<Response<Body>, ProxyError> {
    let replay = if body.is_end_stream() {
        Bytes::new()
    } else if let ClientBody::Buffered(bytes) = body {
        bytes
    } else if content_length(&parts.headers).is_some_and(|len| len <= policy.buffer_bytes) {
        body.into_body(limit)
            .collect()
            .await
            .map_err(ProxyError::from_body)?
            .to_bytes()
    } else {
        let mut request = Request::from_parts(parts, body.into_body(limit));
        let mark = begin_try(ctx, request.headers_mut());
        let result = upstream.send(&endpoint, request).await;
        end_try(ctx, mark, upstream, &endpoint, &result);
        return result;
    };
    let _in_flight = upstream.retry_budget.request();
    let mut retry = 0;
    let mut _retrying = None;
    loop {
        let mut request = Request::from_parts(copy_parts(&parts), Body::full(replay.clone()));
        let mark = begin_try(ctx, request.headers_mut());
        let attempt = upstream.send(&endpoint, request);
        let result = match policy.per_try_timeout {
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or(Err(ProxyError::ResponseTimeout)),
            None => attempt.await,
        };
        end_try(ctx, mark, upstream, &endpoint, &result);
        let failure = match &result {
            Ok(response) => Some(RetryOn::Status(response.status().as_u16())),
            Err(error) => RetryOn::of_error(error),
        };
        let again = retry < policy.attempts && failure.is_some_and(|f| policy.retries(f));
        let budget = again
            .then(|| upstream.retry_budget.try_retry(policy.budget))
            .flatten();
        if budget.is_none() {
            ctx.endpoint = Some(endpoint.address);
            return result;
        }
        _retrying = budget;
        retry += 1;
        if let Some(reason) = failure {
            upstream.count_retry(reason);
        }
        tracing::debug!(
            request_id = ctx.request_id.to_str().unwrap_or("-"),
            upstream = %upstream.name,
            endpoint = %endpoint.address,
            failure = ?failure,
            retry,
            "retrying"
        );
        drop(result);
        tokio::time::sleep(policy.backoff(retry)).await;
        if let Some(other) = upstream.pick_other(endpoint.address) {
            endpoint = other;
        }
    }
}

/// A copy of a request head for another try (extensions are cleared before sending).
pub(super) fn copy_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}
