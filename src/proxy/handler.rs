//! One request, top to bottom: load the snapshot, harden, route, answer or forward. Every
//! failure becomes a response here (through `error.rs`), never an `Err` to hyper.

use super::checks;
use super::conn::ConnInfo;
use super::fallback;
use super::forward;
use super::headers::{
    client_address, host_value, request_host, request_id, without_port, X_REQUEST_ID,
};
use super::mirror;
use crate::body::{Body, BodyEndNotice, ClientBody, ClientIncoming};
use crate::context::RequestCtx;
use crate::error::{CircuitOpen, ProxyError};
use crate::filter::{Chain, Outcome, Stage};
use crate::router::Fields;
use crate::snapshot::{RedirectTarget, Route, RouteAction, Snapshot};
use crate::telemetry::trace::{Finished, Tracer};
use http::header::LOCATION;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// The request's head is taken apart once here and lent down to where the upstream request is
/// built, rather than moved through every step: each move copies it into another future.
/// `body_end`, if any, is told once the request's body has been read to its end.
pub(crate) async fn handle(
    conn: &Arc<ConnInfo>,
    request: Request<Incoming>,
    body_end: Option<BodyEndNotice>,
) -> Response<Body> {
    let _in_flight = conn.activity.begin();
    let snapshot = conn.gateway.snapshot.load_full();
    let (mut parts, body) = request.into_parts();
    let body = ClientIncoming::new(body, body_end);
    let client = client_address(&snapshot.trusted_proxies, conn.peer.ip(), &parts.headers);
    // Made in place: a context local to this future would keep its own slot in it.
    let mut chain = Chain::new(RequestCtx::new(request_id(&parts.headers), client));
    chain.ctx.scheme = conn.scheme;
    if let Some(tracer) = &snapshot.tracer {
        let trusted = snapshot.is_trusted(conn.peer.ip());
        chain.ctx.trace = Some(tracer.start(&mut parts, trusted));
    }
    let head = parts.method == Method::HEAD;
    let method = method_label(&parts.method);
    let access = snapshot.access_log.then(|| AccessEntry::new(&parts));
    let mut response = serve(&snapshot, conn, &mut chain, &mut parts, body).await;
    if head {
        *response.body_mut() = Body::Empty;
    }
    let ctx = &chain.ctx;
    let elapsed = ctx.started.elapsed();
    let route = ctx.route.as_ref().unwrap_or(&snapshot.no_route);
    let status = response.status().as_u16();
    route.record(method, status, elapsed);
    if let Some(outcome) = &ctx.upstream {
        outcome.upstream.record(outcome);
    }
    if let Some(entry) = access {
        entry.log(ctx, route.name(), status, &response, elapsed, conn);
    }
    let outcome = Outcome {
        status: Some(status),
        error: ctx.error,
    };
    chain.complete(&outcome);
    if let Some(tracer) = &snapshot.tracer {
        finish_trace(tracer, conn, &mut chain.ctx, status, elapsed, &response);
    }
    let request_id = std::mem::replace(&mut chain.ctx.request_id, HeaderValue::from_static("-"));
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id);
    response
}

/// Hands the request's spans to the exporter, when its trace is sampled.
fn finish_trace(
    tracer: &Tracer,
    conn: &ConnInfo,
    ctx: &mut RequestCtx,
    status: u16,
    elapsed: Duration,
    response: &Response<Body>,
) {
    let Some(trace) = ctx.trace.take().filter(|t| t.sampled) else {
        return;
    };
    let subject = match tracer.spec.jwt_subject {
        true => ctx.claim("sub"),
        false => None,
    };
    tracer.finish(&Finished {
        trace: &trace,
        elapsed,
        status,
        route: ctx.route_name(),
        peer: (conn.peer.ip(), &conn.peer_ip),
        conn: &conn.trace_attributes,
        client: ctx.client_ip,
        scheme: ctx.scheme,
        request_id: &ctx.request_id,
        answered_by: ctx.answered_by,
        subject,
        fallback: ctx.fallback,
        error: ctx.error,
        circuit_open: response.extensions().get::<CircuitOpen>().is_some(),
    });
}

/// The `method` label: the standard methods by name, any other as `OTHER` (bounded labels).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// What the access log needs from the request, taken before the request moves on.
struct AccessEntry {
    method: Method,
    host: Option<HeaderValue>,
    path: String,
    bytes_in: Option<u64>,
}

impl AccessEntry {
    fn new(request: &Parts) -> AccessEntry {
        AccessEntry {
            method: request.method.clone(),
            host: host_value(request),
            // The query is left out: it often carries tokens.
            path: request.uri.path().to_string(),
            bytes_in: request
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
        }
    }

    /// One line per request, target `access`. Durations are to the response head; the
    /// response size is known when the response carries a length.
    fn log(
        self,
        ctx: &RequestCtx,
        route: &str,
        status: u16,
        response: &Response<Body>,
        elapsed: Duration,
        conn: &ConnInfo,
    ) {
        use http_body::Body as _;
        tracing::info!(
            target: "access",
            request_id = ctx.request_id.to_str().unwrap_or("-"),
            client = %ctx.client_ip,
            peer = %conn.peer,
            method = %self.method,
            host = self.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("-"),
            path = %self.path,
            status,
            bytes_in = self.bytes_in.unwrap_or(0),
            bytes_out = response.body().size_hint().exact(),
            duration_ms = millis(elapsed),
            route,
            upstream = ctx.upstream.as_ref().map_or("-", |u| &**u.upstream.name()),
            fallback = ctx.fallback.unwrap_or("-"),
            endpoint = ctx.endpoint.map(|e| e.to_string()).as_deref().unwrap_or("-"),
            trace_id = %OrDash(ctx.trace.as_ref().map(|t| t.trace_id_hex())),
            "request"
        );
    }
}

/// A value, or `-` without one.
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// A duration in milliseconds with microsecond precision: a whole number of microseconds
/// over 1000 prints as at most three decimals (`6.369`), never as float noise.
fn millis(elapsed: Duration) -> f64 {
    elapsed.as_micros() as f64 / 1000.0
}

/// Runs the listener's filters, routes the request, and runs the route's filters around its
/// action. Every failure is turned into its response here, before `on_response`, so filters
/// see (and can decorate) error responses too.
async fn serve<'a>(
    snapshot: &'a Snapshot,
    conn: &Arc<ConnInfo>,
    chain: &mut Chain<'a>,
    parts: &mut Parts,
    body: ClientIncoming,
) -> Response<Body> {
    if let Err(error) = checks::check_request(parts, &snapshot.limits).and_then(|()| {
        checks::underscore_headers(&mut parts.headers, snapshot.limits.headers_with_underscores)
    }) {
        return fail(&mut chain.ctx, error);
    }
    if let Some(path) = checks::normalized_path(parts.uri.path()) {
        match with_path(&parts.uri, &path) {
            Some(uri) => parts.uri = uri,
            None => {
                return fail(
                    &mut chain.ctx,
                    ProxyError::BadRequest("invalid request target"),
                )
            }
        }
    }
    if !snapshot.listener_filters.is_empty() {
        if let Some(filters) = snapshot.listener_filters.get(&*conn.listener) {
            if let Some(answer) = chain.request(Stage::Listener, filters, parts).await {
                let mut response = answer.unwrap_or_else(|error| fail(&mut chain.ctx, error));
                if let Err(error) = chain.response(&mut response).await {
                    response = fail(&mut chain.ctx, error);
                }
                return response;
            }
        }
    }
    let lookup = snapshot.router.lookup(
        request_host(parts),
        parts.uri.path(),
        &parts.method,
        Fields {
            headers: &parts.headers,
            query: parts.uri.query(),
        },
    );
    let Some(route) = lookup else {
        let mut response = fail(&mut chain.ctx, ProxyError::NoRoute);
        if chain.ran_any() {
            if let Err(error) = chain.response(&mut response).await {
                response = fail(&mut chain.ctx, error);
            }
        }
        return response;
    };
    chain.ctx.route = Some(route.meter.clone());
    let body = match route.body_limit {
        None => ClientBody::Streaming(body),
        Some(most) => {
            match read_body(body, &parts.headers, most, snapshot.limits.max_body_bytes).await {
                Ok(bytes) => {
                    chain.ctx.body = Some(bytes.clone());
                    ClientBody::Buffered(bytes)
                }
                Err(error) => return fail(&mut chain.ctx, error),
            }
        }
    };
    let answered = if route.filters.is_empty() {
        None
    } else {
        chain.request(Stage::Route, &route.filters, parts).await
    };
    let filtered = chain.ran_any();
    let fallback = route.fallback();
    let mut failure = None;
    let mut kept = None;
    let mut response = match answered {
        Some(Ok(response)) => {
            failure = fallback.and_then(|_| fallback::refused(&response));
            if failure.is_some() {
                kept = fallback.and_then(|f| fallback::keep(f, parts, &body));
            }
            response
        }
        Some(Err(error)) => fail(&mut chain.ctx, error),
        None => {
            kept = fallback.and_then(|f| fallback::keep(f, parts, &body));
            let body = match route.mirror() {
                Some(copies) => {
                    let trusted = snapshot.is_trusted(conn.peer.ip());
                    mirror::start(copies, parts, body, conn, trusted, &chain.ctx)
                }
                None => body,
            };
            // One call site for the action, so the request's future holds its state once.
            let result = act(snapshot, conn, &mut chain.ctx, route, parts, body).await;
            failure = fallback.and_then(|f| fallback::failure_of(f, &result));
            result.unwrap_or_else(|error| fail(&mut chain.ctx, error))
        }
    };
    if let (Some(fallback), Some(reason), RouteAction::Proxy { rewrite, .. }) =
        (fallback, failure, &route.action)
    {
        let ctx = &mut chain.ctx;
        let failed = response;
        // Boxed: the failure path's future (another upstream exchange) stays out of every
        // request's own.
        let answer = fallback::answer(fallback, reason, kept, rewrite, snapshot, conn, ctx, failed);
        response = Box::pin(answer)
            .await
            .unwrap_or_else(|error| fail(&mut chain.ctx, error));
    }
    if filtered {
        if let Err(error) = chain.response(&mut response).await {
            response = fail(&mut chain.ctx, error);
        }
    }
    // Counted once the filters are done: a stale cached copy may have replaced the answer.
    if let (Some(reason), Some(fallback)) = (chain.ctx.fallback, fallback) {
        fallback::count(fallback, &route.name, reason);
    }
    response
}

/// Reads the whole body for filters that asked to see it: at most `most` bytes (a longer one
/// is refused with 413, as one over `max_body_bytes` is).
async fn read_body(
    body: ClientIncoming,
    headers: &HeaderMap,
    most: u64,
    max_body_bytes: u64,
) -> Result<bytes::Bytes, ProxyError> {
    if super::headers::content_length(headers).is_some_and(|length| length > most) {
        return Err(ProxyError::BodyTooLarge);
    }
    let limited = http_body_util::Limited::new(Body::request(body, max_body_bytes), most as usize);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge)
        }
        Err(error) => Err(ProxyError::from_body(error)),
    }
}

/// The route's action: answer, redirect or proxy.
async fn act(
    snapshot: &Snapshot,
    conn: &Arc<ConnInfo>,
    ctx: &mut RequestCtx,
    route: &Route,
    parts: &mut Parts,
    body: ClientBody,
) -> Result<Response<Body>, ProxyError> {
    match &route.action {
        RouteAction::Respond(respond) => Ok(respond.response()),
        RouteAction::Redirect { status, target } => Ok(redirect(parts, *status, target)),
        RouteAction::Proxy { split, rewrite, .. } => {
            let upstream = split.upstream(split.choose(&parts.headers, ctx));
            forward::proxy(snapshot, conn, ctx, upstream, rewrite, parts, body).await
        }
    }
}

/// The one place a failure becomes a response (see `error.rs`); the context remembers it.
fn fail(ctx: &mut RequestCtx, error: ProxyError) -> Response<Body> {
    tracing::debug!(
        request_id = ctx.request_id.to_str().unwrap_or("-"),
        route = ctx.route_name().unwrap_or("-"),
        source = error.source_kind(),
        elapsed_ms = ctx.started.elapsed().as_millis() as u64,
        %error,
        "request failed"
    );
    ctx.error = Some(error.source_kind());
    error.into_response(&ctx.request_id)
}

/// `uri` with its path replaced (query, scheme and authority kept).
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

fn redirect(request: &Parts, status: StatusCode, target: &RedirectTarget) -> Response<Body> {
    let location = match target {
        RedirectTarget::Location(location) => location.clone(),
        RedirectTarget::Scheme(scheme) => {
            // The port is dropped: it belongs to the old scheme's listener.
            let host = without_port(request_host(request).unwrap_or(""));
            let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
            HeaderValue::try_from(format!("{scheme}://{host}{path}"))
                .unwrap_or_else(|_| HeaderValue::from_static("/"))
        }
    };
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = status;
    response.headers_mut().insert(LOCATION, location);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_durations_have_three_decimals_at_most() {
        for micros in (0..200_000).chain([6_369, 123_456_789]) {
            let text = millis(Duration::from_micros(micros)).to_string();
            let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(decimals <= 3, "{micros} µs prints as {text}");
        }
        assert_eq!(millis(Duration::from_nanos(6_369_123)).to_string(), "6.369");
    }
}
