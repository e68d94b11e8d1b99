//! `ext_authz`: asks an authorization service about each request before the route's action
//! (forward auth, as Traefik's ForwardAuth and Envoy's HTTP ext_authz do it). The service gets
//! a GET to `path` with the chosen request headers and `X-Forwarded-Method`, `-Uri`, `-Host`,
//! `-Proto` and `-For`. A 2xx lets the request through, with the headers the service named
//! copied onto it (after removing any the client sent itself); any other answer goes to the
//! client as it came. When the service cannot answer in time, `on_error` decides. With
//! `max_body`, the check is a POST carrying the request body.

pub(crate) mod build;
mod decisions;
pub(crate) mod config;
pub(crate) mod metrics;

use super::{Fetch, Filter, Flow};
use crate::context::RequestCtx;
use crate::error::{error_response, ProxyError};
pub(crate) use decisions::CacheSpec;
use decisions::Decisions;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::time::Duration;

/// A validated `ext_authz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtAuthzSpec {
    /// The named upstream that answers (its discovery, pool and timeouts).
    pub(crate) upstream: String,
    pub(crate) path: String,
    /// Request headers sent to the service.
    pub(crate) request_headers: Vec<HeaderName>,
    /// Headers of an allowing answer copied onto the upstream request; never taken from the
    /// client.
    pub(crate) upstream_headers: Vec<HeaderName>,
    pub(crate) timeout: Duration,
    /// With a limit, the check is a POST carrying the request body (a longer body gets 413).
    pub(crate) max_body: Option<u64>,
    pub(crate) on_error: OnError,
    /// Allow decisions kept this long, by the values of `cache_key` headers.
    pub(crate) cache: Option<CacheSpec>,
}

/// What happens when the service cannot answer (down, slow, no endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnError {
    /// 503: fail closed.
    Deny,
    /// Let the request through without the service's headers: fail open.
    Allow,
}

/// Counters by decision, resolved at build.
pub(crate) struct Outcomes {
    allowed: Counter,
    denied: Counter,
    cached: Counter,
    error_denied: Counter,
    error_allowed: Counter,
}

pub(crate) struct ExtAuthz {
    spec: ExtAuthzSpec,
    service: Arc<dyn Fetch>,
    decisions: Option<Decisions>,
    outcomes: Outcomes,
    latency: Histogram,
}

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl ExtAuthz {
    /// The request to the service: GET `path`, the chosen headers, and where the client was
    /// going.
    fn check_request(&self, req: &Parts, ctx: &RequestCtx) -> Parts {
        let mut headers = HeaderMap::with_capacity(self.spec.request_headers.len() + 5);
        for name in &self.spec.request_headers {
            for value in req.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let pairs = [
            (X_FORWARDED_METHOD, HeaderValue::from_str(req.method.as_str()).ok()),
            (X_FORWARDED_URI, HeaderValue::from_str(target).ok()),
            (X_FORWARDED_HOST, req.headers.get(http::header::HOST).cloned()),
            (X_FORWARDED_PROTO, Some(HeaderValue::from_static(ctx.scheme))),
            (
                X_FORWARDED_FOR,
                HeaderValue::from_str(&ctx.client_ip.to_string()).ok(),
            ),
        ];
        for (name, value) in pairs {
            if let Some(value) = value {
                headers.insert(name, value);
            }
        }
        if let Some(host) = req.headers.get(http::header::HOST) {
            headers.insert(http::header::HOST, host.clone());
        }
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = match self.spec.max_body {
            Some(_) => {
                // The body goes along: say what it is.
                if let Some(kind) = req.headers.get(http::header::CONTENT_TYPE) {
                    headers.insert(http::header::CONTENT_TYPE, kind.clone());
                }
                Method::POST
            }
            None => Method::GET,
        };
        parts.uri = http::Uri::try_from(self.spec.path.as_str()).unwrap_or_default();
        parts.headers = headers;
        parts
    }

    fn copy_allowed(&self, from: &HeaderMap, to: &mut HeaderMap) {
        for name in &self.spec.upstream_headers {
            for value in from.get_all(name) {
                to.append(name.clone(), value.clone());
            }
        }
    }

    fn unavailable(&self, ctx: &RequestCtx, error: &dyn std::fmt::Display) -> Flow {
        tracing::warn!(request_id = ?ctx.request_id, upstream = %self.spec.upstream, %error, "authorization service unavailable");
        match self.spec.on_error {
            OnError::Allow => {
                self.outcomes.error_allowed.inc();
                Flow::Continue
            }
            OnError::Deny => {
                self.outcomes.error_denied.inc();
                Flow::Respond(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authorization service unavailable",
                    &ctx.request_id,
                    false,
                ))
            }
        }
    }
}

#[async_trait::async_trait]
impl Filter for ExtAuthz {
    fn kind(&self) -> &'static str {
        "ext_authz"
    }

    async fn on_request(&self, req: &mut Parts, ctx: &mut RequestCtx) -> Result<Flow, ProxyError> {
        // Whatever the service says, these come from it alone; an underscore spelling that
        // an upstream could fold into one of them goes too.
        crate::proxy::remove_gateway_owned(&mut req.headers, &self.spec.upstream_headers);
        let key = self.decisions.as_ref().map(|d| d.key(&req.headers));
        if let (Some(decisions), Some(key)) = (&self.decisions, &key) {
            if let Some(headers) = decisions.get(key) {
                self.outcomes.cached.inc();
                self.copy_allowed(&headers, &mut req.headers);
                return Ok(Flow::Continue);
            }
        }
        let body = match self.spec.max_body {
            Some(_) => ctx.body.clone().unwrap_or_default(),
            None => bytes::Bytes::new(),
        };
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(
            self.spec.timeout,
            self.service.fetch(self.check_request(req, ctx), body),
        )
        .await;
        self.latency.observe(started.elapsed().as_secs_f64());
        let response = match answer {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Ok(self.unavailable(ctx, &error)),
            Err(_) => return Ok(self.unavailable(ctx, &"timed out")),
        };
        if response.status().is_success() {
            self.outcomes.allowed.inc();
            self.copy_allowed(response.headers(), &mut req.headers);
            if let (Some(decisions), Some(key)) = (&self.decisions, key) {
                decisions.put(key, response.headers(), &self.spec.upstream_headers);
            }
            return Ok(Flow::Continue);
        }
        // The service's answer goes to the client: its status, headers and body.
        self.outcomes.denied.inc();
        let (mut parts, body) = response.into_parts();
        crate::proxy::remove_hop_by_hop(&mut parts.headers);
        Ok(Flow::Respond(http::Response::from_parts(parts, body)))
    }

    fn edits_responses(&self) -> bool {
        false
    }

    fn reads_body(&self) -> Option<u64> {
        self.spec.max_body
    }
}
