//! Mirroring: a copy of a route's request goes to another upstream and its answer is dropped.
//! The client's request never waits for the copy and never fails because of it: the copy is
//! sent from a task of its own, once the request's body (if any) has arrived whole.
//!
//! The body still streams to the route's upstream as it comes; a copy of up to `max_body`
//! bytes is kept beside it. A request whose body is larger, or does not arrive whole, is not
//! copied at all (a copy without its body would be a different request). Copies beyond
//! `max_in_flight` are skipped, never queued.

use super::conn::ConnInfo;
use super::headers::{
    content_length, remove_gateway_owned, set_forwarded, without_port, X_REQUEST_ID,
};
use super::retry::copy_parts;
use crate::body::ClientBody;
use crate::context::RequestCtx;
use crate::snapshot::{Mirror, MirrorState};
use crate::telemetry::{encode_family, Labels, MetricSet};
use bytes::Bytes;
use http::header::HOST;
use http::request::Parts;
use http::HeaderValue;
use http_body_util::BodyExt;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Decides whether this request is copied, and when its body allows, starts the copy (now,
/// or when the body has streamed through). Returns the body to send to the route's upstream.
///
/// The mark is the gateway's alone: a client's own `x-mirrored` (or `x_mirrored`) is removed
/// first, so an upstream that skips side effects for copies cannot be told to skip them for a
/// real request.
pub(super) fn start(
    mirror: &Mirror,
    parts: &mut Parts,
    body: ClientBody,
    conn: &ConnInfo,
    trusted: bool,
    ctx: &RequestCtx,
) -> ClientBody {
    remove_gateway_owned(&mut parts.headers, std::slice::from_ref(&mirror.header));
    if mirror.fraction < 1.0 && fastrand::f64() >= mirror.fraction {
        return body;
    }
    let limit = mirror.max_body;
    if content_length(&parts.headers).is_some_and(|length| length > limit) {
        mirror.state.body_skipped.inc();
        return body;
    }
    let copy = PendingCopy {
        parts: head(mirror, parts, conn, trusted, ctx),
        mirror: Arc::clone(&mirror.fetch),
        state: Arc::clone(&mirror.state),
        sent: false,
    };
    match body {
        ClientBody::Buffered(bytes) if bytes.len() as u64 > limit => {
            drop(copy);
            ClientBody::Buffered(bytes)
        }
        ClientBody::Buffered(bytes) => {
            copy.send(bytes.clone());
            ClientBody::Buffered(bytes)
        }
        body if body.is_end_stream() => {
            copy.send(Bytes::new());
            body
        }
        ClientBody::Streaming(body) => ClientBody::Teed {
            body,
            keep: limit as usize,
            done: Box::new(move |bytes| copy.send(bytes)),
        },
        // One mirror per route: a body is never teed twice.
        teed @ ClientBody::Teed { .. } => teed,
    }
}

/// The copy's head: the request as the route's upstream gets it (forwarded headers, request
/// id), marked as a copy, with the mirror's `Host`.
fn head(mirror: &Mirror, parts: &Parts, conn: &ConnInfo, trusted: bool, ctx: &RequestCtx) -> Parts {
    let mut copy = copy_parts(parts);
    let client_host = match parts.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => parts.headers.get(HOST).cloned(),
    };
    let headers = &mut copy.headers;
    set_forwarded(
        headers,
        &conn.peer_ip,
        conn.scheme,
        trusted,
        client_host.clone(),
    );
    headers.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    headers.insert(mirror.header.clone(), HeaderValue::from_static("1"));
    let host = mirror.host.clone().or(client_host);
    let host = match (&mirror.host_suffix, host) {
        (Some(suffix), Some(host)) => with_suffix(&host, suffix),
        (_, host) => host,
    };
    match host {
        Some(host) => headers.insert(HOST, host),
        None => headers.remove(HOST),
    };
    copy
}

/// `api.example.com:8080` + `-shadow` → `api.example.com-shadow:8080`.
fn with_suffix(host: &HeaderValue, suffix: &str) -> Option<HeaderValue> {
    let host = host.to_str().ok()?;
    let name = without_port(host);
    let port = &host[name.len()..];
    HeaderValue::try_from(format!("{name}{suffix}{port}")).ok()
}

/// A copy waiting for its body. Dropped unsent (the body was too large or never arrived
/// whole), it counts as not copied.
struct PendingCopy {
    parts: Parts,
    mirror: Arc<dyn crate::filter::Fetch>,
    state: Arc<MirrorState>,
    sent: bool,
}

impl PendingCopy {
    fn send(mut self, body: Bytes) {
        self.sent = true;
        let state = Arc::clone(&self.state);
        if state.in_flight.fetch_add(1, Ordering::Relaxed) >= state.max_in_flight {
            state.in_flight.fetch_sub(1, Ordering::Relaxed);
            state.skipped.inc();
            return;
        }
        let parts = std::mem::replace(&mut self.parts, http::Request::new(()).into_parts().0);
        let exchange = self.mirror.fetch(parts, body);
        tokio::spawn(async move {
            let _in_flight = InFlight(Arc::clone(&state));
            let answered = match exchange.await {
                // Read to the end, so the connection goes back to its pool.
                Ok(response) if response.status().as_u16() < 500 => {
                    let mut body = response.into_body();
                    loop {
                        match body.frame().await {
                            None => break true,
                            Some(Ok(_)) => {}
                            Some(Err(_)) => break false,
                        }
                    }
                }
                Ok(_) | Err(_) => false,
            };
            if answered {
                state.mirrored.inc();
            } else {
                state.failed.inc();
            }
        });
    }
}

impl Drop for PendingCopy {
    fn drop(&mut self) {
        if !self.sent {
            self.state.body_skipped.inc();
        }
    }
}

/// One copy in flight, until dropped.
struct InFlight(Arc<MirrorState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What mirrors report: copies by route and outcome.
#[derive(Default)]
pub(crate) struct MirrorMetrics {
    copies: Family<Labels, Counter>,
}

impl MirrorMetrics {
    /// A route's mirror state with its counters; made when the route's mirror settings are
    /// new, so a reload that keeps them keeps the in-flight count too.
    pub(crate) fn state(&self, route: &str, max_in_flight: usize) -> MirrorState {
        let counter = |outcome: &str| {
            let labels = vec![
                ("route", route.to_string()),
                ("outcome", outcome.to_string()),
            ];
            self.copies.get_or_create(&labels).clone()
        };
        MirrorState {
            in_flight: AtomicUsize::new(0),
            max_in_flight,
            mirrored: counter("mirrored"),
            failed: counter("failed"),
            skipped: counter("skipped"),
            body_skipped: counter("body_skipped"),
        }
    }
}

impl MetricSet for MirrorMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            encoder,
            "mirror_requests",
            "Request copies by route and outcome: mirrored (answered), failed (no answer or 5xx), skipped (max_in_flight), body_skipped (body over max_body or incomplete)",
            &self.copies,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suffix_goes_before_the_port() {
        let suffixed = |host: &'static str| {
            with_suffix(&HeaderValue::from_static(host), "-shadow")
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            suffixed("api.example.com").as_deref(),
            Some("api.example.com-shadow")
        );
        assert_eq!(suffixed("api:8080").as_deref(), Some("api-shadow:8080"));
        assert_eq!(suffixed("[::1]:80").as_deref(), Some("[::1]-shadow:80"));
    }
}
