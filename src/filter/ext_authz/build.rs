//! Building an `ext_authz` filter: its service, decision cache and metrics.

use super::decisions::Decisions;
use super::metrics::ExtAuthzMetrics;
use super::{ExtAuthz, ExtAuthzSpec, Outcomes};
use crate::filter::{BuildCtx, Filter, Flow};
use std::sync::Arc;

/// The runtime filter for `spec` at `owner` (route, listener or named filter). The decision
/// cache starts empty with each build: a reload may have changed what the service decides on.
pub(crate) fn build(
    spec: &ExtAuthzSpec,
    ctx: &mut BuildCtx,
    owner: &str,
    _position: usize,
) -> Arc<dyn Filter> {
    let metrics = ctx.metrics.sets.get::<ExtAuthzMetrics>();
    let decision = |kind: &str| {
        metrics
            .decisions
            .get_or_create(&vec![("filter", owner.to_string()), ("decision", kind.to_string())])
            .clone()
    };
    let outcomes = Outcomes {
        allowed: decision("allowed"),
        denied: decision("denied"),
        cached: decision("cached"),
        error_denied: decision("error_denied"),
        error_allowed: decision("error_allowed"),
    };
    let latency = metrics
        .latency
        .get_or_create(&vec![("filter", owner.to_string())])
        .clone();
    // Validation checked that the upstream exists.
    let Some(service) = (ctx.fetch_to)(&spec.upstream) else {
        return Arc::new(Unbuildable);
    };
    Arc::new(ExtAuthz {
        spec: spec.clone(),
        service,
        decisions: spec.cache.as_ref().map(Decisions::new),
        outcomes,
        latency,
    })
}

/// Stands in should the service's upstream be missing at build (validation rules it out):
/// it refuses every request, never lets one through unchecked.
struct Unbuildable;

#[async_trait::async_trait]
impl Filter for Unbuildable {
    fn kind(&self) -> &'static str {
        "ext_authz"
    }

    async fn on_request(
        &self,
        _req: &mut http::request::Parts,
        ctx: &mut crate::context::RequestCtx,
    ) -> Result<Flow, crate::error::ProxyError> {
        Ok(Flow::Respond(crate::error::error_response(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "authorization service unavailable",
            &ctx.request_id,
            false,
        )))
    }
}
