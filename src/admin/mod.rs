//! The admin listener (default `127.0.0.1:9901`, loopback only unless configured otherwise):
//! health, readiness, the effective config, the routing table, upstreams, metrics, reload.
//! With `admin.token` set, every request other than GET/HEAD must present it as a bearer
//! token; the token is read from the current config, so a reload rotates it.
//! It runs on the control thread, away from the workers that serve traffic. `GET /` is a
//! status page (`status.rs`) drawn from the same JSON endpoints.

mod status;

use crate::body::Body;
use crate::filter::{cache, circuit_breaker};
use crate::reload::Reloader;
use crate::server::Shutdown;
use crate::snapshot::Gateway;
use crate::telemetry::Metrics;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(crate) struct AdminState {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) reloader: Arc<Reloader>,
    pub(crate) metrics: Arc<Metrics>,
    /// Set once the config is loaded and every listener is bound.
    pub(crate) ready: AtomicBool,
    pub(crate) started: std::time::Instant,
}

pub(crate) async fn serve(
    listener: std::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: Arc<Shutdown>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "admin listener setup failed");
            return;
        }
    };
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    continue;
                }
            },
            _ = shutdown.stopped() => return,
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(state: &AdminState, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        if let Some(token) = &state.reloader.config().admin_token {
            if !presents(&request, token) {
                let mut response = json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({"error": "admin token required"}),
                );
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
                );
                return response;
            }
        }
    }
    match (method, request.uri().path()) {
        (Method::GET, "/") => status::page(),
        (Method::GET, "/status") => json_response(
            StatusCode::OK,
            &status::summary(&state.reloader, state.started),
        ),
        (Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (Method::GET, "/ready") => {
            if !state.ready.load(Ordering::Acquire) {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            } else if !state.gateway.snapshot.load().keys_ready() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for JWT key sets\n",
                )
            } else if !state.gateway.snapshot.load().discovery_ready() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for service discovery\n",
                )
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (Method::GET, "/config") => {
            let config = state.reloader.config();
            json_response(StatusCode::OK, &config.redacted_source())
        }
        (Method::GET, "/routes") => {
            let config = state.reloader.config();
            let routes: Vec<Value> = config
                .routes
                .iter()
                .map(|r| json!({"name": r.name, "match": r.describe_match(), "action": r.describe_action(), "filters": r.describe_filters()}))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({ "generation": state.reloader.generation(), "routes": routes }),
            )
        }
        (Method::GET, "/upstreams") => {
            let snapshot = state.gateway.snapshot.load_full();
            let mut names: Vec<&String> = snapshot.upstreams.keys().collect();
            names.sort();
            let upstreams: Vec<Value> = names
                .into_iter()
                .map(|name| {
                    let upstream = &snapshot.upstreams[name];
                    let endpoints: Vec<Value> = upstream
                        .endpoints()
                        .iter()
                        .map(|e| {
                            let in_flight = e.in_flight.load(Ordering::Relaxed);
                            let mut entry = json!({"address": e.address.to_string(), "weight": e.weight, "in_flight": in_flight, "idle_connections": e.idle_connections(), "ejected": upstream.is_ejected(e)});
                            if upstream.spec.health.is_some() {
                                entry["health"] = json!(e.health.state().as_str());
                            }
                            entry
                        })
                        .collect();
                    let feed = &upstream.feed;
                    let last_success = feed.status.last_success().map(|t| {
                        t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
                    });
                    let discovery = json!({
                        "backend": feed.spec.kind(),
                        "last_success_unix": last_success,
                        "errors": feed.status.errors(),
                    });
                    let breakers = circuit_breaker::admin::upstream_view(&snapshot.exposed, name);
                    json!({"name": name, "protocol": format!("{:?}", upstream.spec.protocol).to_lowercase(), "degraded": upstream.is_degraded(), "panic": upstream.is_panicking(), "discovery": discovery, "endpoints": endpoints, "circuit_breakers": breakers})
                })
                .collect();
            json_response(StatusCode::OK, &json!({ "upstreams": upstreams }))
        }
        (Method::GET, "/metrics") => {
            let body = state.metrics.render();
            let mut response = Response::new(Body::full(body));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        (Method::DELETE, "/cache") => {
            let query = request.uri().query().unwrap_or("");
            let snapshot = state.gateway.snapshot.load_full();
            let Some(purged) = cache::admin::purge(&snapshot.exposed, query) else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({ "error": cache::admin::PURGE_USAGE }),
                );
            };
            tracing::info!(purged, query, "cache purge");
            json_response(StatusCode::OK, &json!({ "purged": purged }))
        }
        (Method::POST, "/config/plan") => plan(state, request).await,
        (Method::POST, "/reload") => {
            // Parsing and building take milliseconds; keep them off the admin's async loop.
            let reloader = Arc::clone(&state.reloader);
            let result = tokio::task::spawn_blocking(move || reloader.reload()).await;
            match result {
                Ok(Ok(applied)) => json_response(
                    StatusCode::OK,
                    &json!({"generation": applied.generation, "needs_restart": applied.needs_restart}),
                ),
                Ok(Err(error)) => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "config rejected; the running config stays", "errors": error.issues()}),
                ),
                Err(_) => json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": "reload failed"}),
                ),
            }
        }
        (
            _,
            "/" | "/status" | "/healthz" | "/ready" | "/config" | "/config/plan" | "/routes"
            | "/upstreams" | "/metrics" | "/reload" | "/cache",
        ) => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method not allowed"}),
        ),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "no such admin endpoint"}),
        ),
    }
}

/// `POST /config/plan`: the config text in the body, answered with the state a reload to it
/// would carry over and reset (`check --diff`), or 400 with the errors a reload would reject
/// it for. Nothing is applied.
async fn plan(state: &AdminState, request: Request<Incoming>) -> Response<Body> {
    use http_body_util::BodyExt as _;
    let body = http_body_util::Limited::new(request.into_body(), MAX_PLAN_BYTES);
    let text = match body.collect().await.map(|b| b.to_bytes()) {
        Ok(bytes) => String::from_utf8(bytes.to_vec()),
        Err(_) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": "config text too large"}),
            )
        }
    };
    let Ok(text) = text else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "config text is not UTF-8"}),
        );
    };
    let reloader = Arc::clone(&state.reloader);
    match tokio::task::spawn_blocking(move || reloader.plan(&text)).await {
        Ok(Ok(fates)) => json_response(StatusCode::OK, &json!({ "state": fates })),
        Ok(Err(error)) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "a reload would reject this config", "errors": error.issues()}),
        ),
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "plan failed"}),
        ),
    }
}

/// The largest config text `POST /config/plan` reads.
const MAX_PLAN_BYTES: usize = 4 << 20;

/// Whether the request carries `Authorization: Bearer <token>` (one such header, compared in
/// constant time so the answer's timing tells nothing about the token).
fn presents(request: &Request<Incoming>, token: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let mut values = request
        .headers()
        .get_all(http::header::AUTHORIZATION)
        .iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    crate::context::bearer(value).is_some_and(|given| given.ct_eq(token.as_bytes()).into())
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
