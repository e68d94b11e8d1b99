//! Turning a client request into the upstream request, and relaying the answer.
//!
//! The upstream request is rebuilt from parsed parts (hyper re-serialises it), never copied
//! from client bytes. Hop-by-hop headers go; one Host goes; X-Forwarded-* and X-Request-Id are
//! set. A peer inside `trusted_proxies` has its X-Forwarded-* chain believed and extended; any
//! other peer's X-Forwarded-* headers are replaced, so a client cannot forge its address.

use super::conn::ConnInfo;
use super::handler::{host_value, X_REQUEST_ID};
use crate::body::Body;
use crate::context::{cookie, RequestCtx};
use crate::error::ProxyError;
use crate::snapshot::{Rewrite, Snapshot};
use crate::telemetry::UpstreamOutcome;
use crate::upstream::{
    hash_key, Endpoint, HashOn, Protocol, RetryOn, RetryPolicy, Strategy, Upstream,
};
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub(super) async fn proxy(
    snapshot: &Snapshot,
    conn: &Arc<ConnInfo>,
    ctx: &mut RequestCtx,
    upstream: &Upstream,
    rewrite: &Rewrite,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let limit = snapshot.limits.max_body_bytes;
    if content_length(request.headers()).is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge);
    }
    let upgrade = upgrade_protocol(&request);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let host = host_value(&request);
    let key = match &upstream.spec.balance {
        Strategy::ConsistentHash(on) => balance_key(on, request.headers(), ctx),
        _ => None,
    };
    let Some(endpoint) = upstream.pick_for(key) else {
        let error = ProxyError::NoEndpoint(upstream.name.clone());
        ctx.upstream = Some(UpstreamOutcome {
            upstream: Arc::clone(&upstream.name),
            elapsed: Duration::ZERO,
            error: error.upstream_kind(),
            status: None,
        });
        return Err(error);
    };
    ctx.endpoint = Some(endpoint.address);

    let (mut parts, body) = request.into_parts();
    let trusted = !snapshot.trusted_proxies.is_empty() && snapshot.is_trusted(conn.peer.ip());
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    // hyper sizes the map to the parsed headers; grow once for the ones added below.
    headers.reserve(5);
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
    let upstream_host = rewrite.host.clone().or_else(|| host.clone());
    match &upstream_host {
        Some(value) => {
            headers.insert(HOST, value.clone());
        }
        None => {
            headers.remove(HOST);
        }
    }
    set_forwarded(headers, conn, trusted, host);
    headers.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());

    let path = upstream_path(&parts.uri, rewrite)?;
    let protocol = upstream.spec.protocol;
    parts.uri = upstream
        .target(&endpoint, upstream_host.as_ref(), path)
        .ok_or(ProxyError::BadRequest("invalid request target"))?;
    parts.version = match protocol {
        Protocol::Http1 => Version::HTTP_11,
        Protocol::Http2 => Version::HTTP_2,
    };
    parts.extensions.clear();

    let sent = Instant::now();
    let retries = upstream
        .spec
        .retries
        .as_ref()
        .filter(|policy| client_upgrade.is_none() && policy.methods.contains(&parts.method));
    let result = match retries {
        Some(policy) => {
            send_with_retries(upstream, policy, endpoint, parts, body, limit, ctx).await
        }
        None => {
            let body = if body.is_end_stream() {
                Body::Empty
            } else {
                Body::request(body, limit)
            };
            let result = upstream
                .send(&endpoint, Request::from_parts(parts, body))
                .await;
            upstream.record(&endpoint, failed(&result));
            result
        }
    };
    ctx.upstream = Some(UpstreamOutcome {
        upstream: Arc::clone(&upstream.name),
        elapsed: sent.elapsed(),
        error: result.as_ref().err().and_then(ProxyError::upstream_kind),
        status: result.as_ref().ok().map(|r| r.status().as_u16()),
    });
    let mut response = result?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ProxyError::BadGatewayProtocol(
                "upstream switched protocols unasked",
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        // The tunnel keeps the client connection's slot: it counts under max_connections and
        // connections_active, and a shutdown waits for it up to shutdown_grace (the worker's
        // runtime, and with it the tunnel, ends then).
        let conn = Arc::clone(conn);
        tokio::spawn(async move {
            let _conn = conn;
            match (client_upgrade.await, upstream_upgrade.await) {
                (Ok(client), Ok(upstream)) => {
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                (client, upstream) => tracing::debug!(
                    client_ok = client.is_ok(),
                    upstream_ok = upstream.is_ok(),
                    "upgrade failed"
                ),
            }
        });
    } else {
        remove_hop_by_hop(response.headers_mut());
    }
    Ok(response)
}

/// The consistent-hashing key of a request; `None` when it lacks the part (round robin).
fn balance_key(on: &HashOn, headers: &HeaderMap, ctx: &RequestCtx) -> Option<u64> {
    match on {
        HashOn::Header(name) => Some(hash_key(headers.get(name)?.as_bytes())),
        HashOn::Cookie(name) => Some(hash_key(cookie(headers, name)?.as_bytes())),
        HashOn::ClientIp => Some(match ctx.client_ip {
            IpAddr::V4(ip) => hash_key(&ip.octets()),
            IpAddr::V6(ip) => hash_key(&ip.octets()),
        }),
        HashOn::Claim(name) => Some(hash_key(ctx.claim(name)?.as_bytes())),
    }
}

/// For outlier ejection: errors on the way to the upstream, or a 5xx from it.
fn failed(result: &Result<Response<Body>, ProxyError>) -> bool {
    match result {
        Ok(response) => response.status().is_server_error(),
        Err(error) => error.upstream_kind().is_some(),
    }
}

/// Sends with the upstream's retry policy. Only a body that can be sent again is retried:
/// none, or one with a known length within `buffer_bytes`, read whole first; any other body
/// streams through and gets one try. Every try but the last is settled (and its answer
/// dropped) before anything goes to the client, so no response byte is sent twice.
async fn send_with_retries(
    upstream: &Upstream,
    policy: &RetryPolicy,
    mut endpoint: Arc<Endpoint>,
    parts: http::request::Parts,
    body: Incoming,
    limit: u64,
    ctx: &mut RequestCtx,
) -> Result<Response<Body>, ProxyError> {
    let replay = if body.is_end_stream() {
        Bytes::new()
    } else if content_length(&parts.headers).is_some_and(|len| len <= policy.buffer_bytes) {
        Body::request(body, limit)
            .collect()
            .await
            .map_err(ProxyError::from_body)?
            .to_bytes()
    } else {
        let request = Request::from_parts(parts, Body::request(body, limit));
        let result = upstream.send(&endpoint, request).await;
        upstream.record(&endpoint, failed(&result));
        return result;
    };
    let _in_flight = upstream.retry_budget.request();
    let mut retry = 0;
    let mut _retrying = None;
    loop {
        let request = Request::from_parts(copy_parts(&parts), Body::full(replay.clone()));
        let attempt = upstream.send(&endpoint, request);
        let result = match policy.per_try_timeout {
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or(Err(ProxyError::ResponseTimeout)),
            None => attempt.await,
        };
        upstream.record(&endpoint, failed(&result));
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
fn copy_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// `Upgrade` value of an HTTP/1.1 request that asks for one (`Connection: upgrade`).
fn upgrade_protocol<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let protocol = request.headers().get(UPGRADE)?;
    let asks = request
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| protocol.clone())
}

/// RFC 9110 §7.6.1: Connection and the headers it names, plus the fixed hop-by-hop set.
/// `TE: trailers` survives: gRPC needs it end to end. Most messages carry none of these, so
/// one pass over the names decides whether any removal (and its hashing) is needed.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let fixed = [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TRANSFER_ENCODING,
        &UPGRADE,
        &TRAILER,
        &TE,
    ];
    let any = headers
        .keys()
        .any(|name| name == CONNECTION || fixed.contains(&name));
    if !any {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    let keep_te = headers
        .get(TE)
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in fixed {
        if name != TE || !keep_te {
            headers.remove(name);
        }
    }
}

fn set_forwarded(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    trusted: bool,
    host: Option<HeaderValue>,
) {
    if trusted {
        let chain = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let value = if chain.is_empty() {
            conn.peer_ip.clone()
        } else {
            let peer = conn.peer_ip.to_str().unwrap_or("unknown");
            HeaderValue::try_from(format!("{chain}, {peer}"))
                .unwrap_or_else(|_| conn.peer_ip.clone())
        };
        headers.insert(X_FORWARDED_FOR.clone(), value);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(
                X_FORWARDED_PROTO.clone(),
                HeaderValue::from_static(conn.scheme),
            );
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            if let Some(host) = host {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
        }
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), conn.peer_ip.clone());
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(conn.scheme),
        );
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
}

/// The client as far as `trusted_proxies` let the gateway see: the peer itself, or behind a
/// trusted peer the right-most X-Forwarded-For entry that is not itself a trusted proxy.
pub fn client_address(snapshot: &Snapshot, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if snapshot.trusted_proxies.is_empty() || !snapshot.is_trusted(peer) {
        return peer;
    }
    forwarded_client(headers, snapshot).unwrap_or(peer)
}

fn forwarded_client(headers: &HeaderMap, snapshot: &Snapshot) -> Option<IpAddr> {
    let entries: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().parse().ok())
        .collect();
    entries
        .iter()
        .rev()
        .find(|ip| !snapshot.is_trusted(**ip))
        .or(entries.first())
        .copied()
}

pub(super) fn upstream_path(uri: &Uri, rewrite: &Rewrite) -> Result<PathAndQuery, ProxyError> {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if !rewrite.changes_path() {
        return Ok(original);
    }
    let Some(mut path) = rewrite.path(original.path()) else {
        return Ok(original);
    };
    if let Some(query) = original.query() {
        path.push('?');
        path.push_str(query);
    }
    PathAndQuery::try_from(path).map_err(|_| ProxyError::BadRequest("invalid rewritten path"))
}
