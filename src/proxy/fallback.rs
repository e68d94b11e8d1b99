//! A route's fallback: when its upstream fails (no endpoint, a connection error or timeout,
//! a status the route lists, or an open breaker), a fixed response or another upstream
//! answers instead. The upstream's failure still counts where it belongs (breakers, outlier
//! ejection, upstream metrics); the fallback is recorded beside it.
//!
//! Another upstream gets the request as the failed one did, so only a request whose body can
//! be sent again goes there: one without a body, or one a filter read whole. A body that
//! streamed to the failed upstream is gone, and its request gets the failure as it was.

use super::conn::ConnInfo;
use super::forward;
use super::retry::copy_parts;
use crate::body::{Body, ClientBody};
use crate::context::RequestCtx;
use crate::error::{CircuitOpen, ProxyError};
use crate::snapshot::{Fallback, FallbackTarget, Rewrite, Snapshot};
use crate::telemetry::{encode_family, Labels, MetricSet};
use bytes::Bytes;
use http::request::Parts;
use http::Response;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;

/// The reason label of a breaker's refusal.
const CIRCUIT_OPEN: &str = "circuit_open";
/// The reason label of an upstream answer whose status the route lists.
const STATUS: &str = "status";

/// Why the route's upstream counts as failed for its fallback, if it does.
pub(super) fn failure_of(
    fallback: &Fallback,
    result: &Result<Response<Body>, ProxyError>,
) -> Option<&'static str> {
    match result {
        Ok(response) if fallback.statuses.contains(&response.status().as_u16()) => Some(STATUS),
        Ok(_) => None,
        Err(error) => error.upstream_kind(),
    }
}

/// Whether a filter's answer is a breaker refusing to call the upstream.
pub(super) fn refused(response: &Response<Body>) -> Option<&'static str> {
    response
        .extensions()
        .get::<CircuitOpen>()
        .map(|_| CIRCUIT_OPEN)
}

/// The request kept for a fallback upstream: its head, and its body when it can be sent again.
pub(super) struct Kept {
    parts: Parts,
    body: Bytes,
}

/// Keeps what a fallback upstream needs, before the request goes to the route's upstream.
/// Boxed: every request's future holds room for it, and few routes have a fallback upstream.
pub(super) fn keep(fallback: &Fallback, parts: &Parts, body: &ClientBody) -> Option<Box<Kept>> {
    if !matches!(fallback.answer, FallbackTarget::Upstream(_)) {
        return None;
    }
    let body = match body {
        ClientBody::Buffered(bytes) => bytes.clone(),
        _ if body.is_end_stream() => Bytes::new(),
        ClientBody::Streaming(_) | ClientBody::Teed { .. } => return None,
    };
    Some(Box::new(Kept {
        parts: copy_parts(parts),
        body,
    }))
}

/// The fallback's answer to a request whose upstream failed for `reason`; `failed` (the
/// failure's own response) when the fallback cannot serve it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn answer(
    fallback: &Fallback,
    reason: &'static str,
    kept: Option<Box<Kept>>,
    rewrite: &Rewrite,
    snapshot: &Snapshot,
    conn: &Arc<ConnInfo>,
    ctx: &mut RequestCtx,
    failed: Response<Body>,
) -> Result<Response<Body>, ProxyError> {
    let response = match &fallback.answer {
        FallbackTarget::Respond(respond) => respond.response(),
        FallbackTarget::Upstream(upstream) => {
            let Some(kept) = kept else {
                return Ok(failed);
            };
            drop(failed);
            let Kept { mut parts, body } = *kept;
            let body = ClientBody::Buffered(body);
            // The route's upstream keeps its outcome (its breaker judges it); the fallback's
            // own exchange is counted under its name.
            let primary = ctx.upstream.take();
            let primary_endpoint = ctx.endpoint;
            let result =
                forward::proxy(snapshot, conn, ctx, upstream, rewrite, &mut parts, body).await;
            let own = std::mem::replace(&mut ctx.upstream, primary);
            ctx.endpoint = primary_endpoint;
            if let Some(own) = &own {
                own.upstream.record(own);
            }
            result?
        }
    };
    ctx.fallback = Some(reason);
    Ok(response)
}

/// Counts an answer the fallback gave (a stale cached copy may have taken its place since).
pub(super) fn count(fallback: &Fallback, route: &Arc<str>, reason: &'static str) {
    let labels = vec![("route", route.to_string()), ("reason", reason.to_string())];
    fallback.counted.get_or_create(&labels).inc();
}

/// What fallbacks report: answers by route and the reason the upstream failed.
#[derive(Default)]
pub(crate) struct FallbackMetrics {
    pub(crate) answered: Family<Labels, Counter>,
}

impl MetricSet for FallbackMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            encoder,
            "fallback_responses",
            "Requests a route's fallback answered, by route and why the upstream failed",
            &self.answered,
        )
    }
}
