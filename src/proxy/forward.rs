//! Turning a client request into the upstream request, and relaying the answer.
//!
//! The upstream request is rebuilt from parsed parts (hyper re-serialises it), never copied
//! from client bytes. Hop-by-hop headers go; one Host goes; X-Forwarded-* and X-Request-Id are
//! set. A peer inside `trusted_proxies` has its X-Forwarded-* chain believed and extended; any
//! other peer's X-Forwarded-* headers are replaced, so a client cannot forge its address.

use super::conn::ConnInfo;
use super::headers::{content_length, host_value, remove_hop_by_hop, set_forwarded, X_REQUEST_ID};
use super::retry;
use crate::body::{Body, ClientBody};
use crate::context::RequestCtx;
use crate::error::ProxyError;
use crate::snapshot::{Rewrite, Snapshot};
use crate::telemetry::UpstreamOutcome;
use crate::upstream::split::key_hash;
use crate::upstream::{Protocol, Strategy, Upstream, BALANCE_SEED};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub(super) async fn proxy(
    snapshot: &Snapshot,
    conn: &Arc<ConnInfo>,
    ctx: &mut RequestCtx,
    upstream: &Upstream,
    rewrite: &Rewrite,
    parts: &mut Parts,
    body: ClientBody,
) -> Result<Response<Body>, ProxyError> {
    let limit = snapshot.limits.max_body_bytes;
    if content_length(&parts.headers).is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge);
    }
    let upgrade = upgrade_protocol(parts);
    let client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<OnUpgrade>());
    let host = host_value(parts);
    let key = match &upstream.spec.balance {
        Strategy::ConsistentHash(on) => key_hash(on, &parts.headers, ctx, BALANCE_SEED),
        _ => None,
    };
    let Some(endpoint) = upstream.pick_for(key) else {
        let error = ProxyError::NoEndpoint(upstream.name.clone());
        ctx.upstream = Some(UpstreamOutcome {
            upstream: upstream.meter.clone(),
            elapsed: Duration::ZERO,
            error: error.upstream_kind(),
            status: None,
        });
        return Err(error);
    };
    ctx.endpoint = Some(endpoint.address);

    let trusted = !snapshot.trusted_proxies.is_empty() && snapshot.is_trusted(conn.peer.ip());
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    // hyper sizes the map to the parsed headers; grow once for the ones added below.
    headers.reserve(5);
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
    let protocol = upstream.spec.protocol;
    if protocol == Protocol::Http1
        && matches!(parts.method, Method::GET | Method::HEAD)
        && !body.is_end_stream()
        && !headers.contains_key(CONTENT_LENGTH)
    {
        // hyper's client sends a GET or HEAD body of unknown length as no body at all
        // unless the request asks for chunked: the client's chunked body is sent on as
        // chunked, not dropped.
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
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
    set_forwarded(headers, &conn.peer_ip, conn.scheme, trusted, host);
    headers.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());

    let path = upstream_path(&parts.uri, rewrite)?;
    parts.uri = upstream
        .target(&endpoint, upstream_host.as_ref(), path)
        .ok_or(ProxyError::BadRequest("invalid request target"))?;
    parts.version = match protocol {
        Protocol::Http1 => Version::HTTP_11,
        Protocol::Http2 => Version::HTTP_2,
    };
    parts.extensions.clear();
    // The head is handed over to hyper; what is left behind is an empty one.
    let mut parts = std::mem::replace(parts, Request::new(()).into_parts().0);

    let sent = Instant::now();
    let retries = upstream
        .spec
        .retries
        .as_ref()
        .filter(|policy| client_upgrade.is_none() && policy.methods.contains(&parts.method));
    let result = match retries {
        Some(policy) => {
            // Boxed: the retry loop holds a copy of the request and a try's future besides
            // the one every request needs; inline it would size every request's future.
            let retried =
                retry::send_with_retries(upstream, policy, endpoint, parts, body, limit, ctx);
            Box::pin(retried).await
        }
        None => {
            let mark = retry::begin_try(ctx, &mut parts.headers);
            let result = upstream
                .send(&endpoint, Request::from_parts(parts, body.into_body(limit)))
                .await;
            retry::end_try(ctx, mark, upstream, &endpoint, &result);
            result
        }
    };
    ctx.upstream = Some(UpstreamOutcome {
        upstream: upstream.meter.clone(),
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

/// `Upgrade` value of an HTTP/1.1 request that asks for one (`Connection: upgrade`).
fn upgrade_protocol(request: &Parts) -> Option<HeaderValue> {
    if request.version != Version::HTTP_11 {
        return None;
    }
    let protocol = request.headers.get(UPGRADE)?;
    let asks = request
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| protocol.clone())
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
