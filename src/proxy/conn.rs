//! What one client connection carries: who it is, its activity (for `idle_timeout`), and its
//! slot in the connection books (`max_connections`, `connections_active`, draining).

use super::per_ip::{PerIpLimits, PerIpRefusal, PerIpSlot, PerIpTable};
use crate::snapshot::Gateway;
use crate::telemetry::trace::ConnAttributes;
use http::HeaderValue;
use prometheus_client::metrics::gauge::Gauge;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Open client connections across all workers, for `max_connections`, the per-address
/// limits and draining. A connection upgraded to a tunnel (WebSocket …) stays counted until
/// the tunnel closes.
#[derive(Default)]
pub(crate) struct ConnCounter {
    total: AtomicUsize,
    per_ip: Arc<PerIpTable>,
}

/// Why a new connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    MaxConnections,
    PerIp(PerIpRefusal),
}

impl Refused {
    /// The `reason` label of `connections_refused_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::PerIp(PerIpRefusal::Open) => "max_connections_per_ip",
            Refused::PerIp(PerIpRefusal::Rate) => "connection_rate_per_ip",
        }
    }
}

impl ConnCounter {
    pub(crate) fn active(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Takes a slot for a new connection, or says why not: `max` are open already, or the
    /// peer `per_ip` names (when it is subject to them) is over its own limits.
    pub(crate) fn admit(
        self: &Arc<Self>,
        max: usize,
        per_ip: Option<(IpAddr, PerIpLimits)>,
        gauge: &Gauge,
    ) -> Result<ConnSlot, Refused> {
        let per_ip = match per_ip {
            Some((ip, limits)) => Some(self.per_ip.admit(ip, limits).map_err(Refused::PerIp)?),
            None => None,
        };
        if self.total.fetch_add(1, Ordering::Relaxed) >= max {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::MaxConnections);
        }
        gauge.inc();
        Ok(ConnSlot {
            counter: Arc::clone(self),
            gauge: gauge.clone(),
            _per_ip: per_ip,
        })
    }
}

/// One open connection: counted for `max_connections`, for its address and in its
/// listener's gauge until dropped.
pub(crate) struct ConnSlot {
    counter: Arc<ConnCounter>,
    gauge: Gauge,
    _per_ip: Option<PerIpSlot>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.counter.total.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

/// What a client connection knows, prepared once per connection.
pub(crate) struct ConnInfo {
    pub(crate) gateway: Arc<Gateway>,
    /// The connection's place in the books; held by whoever still uses the connection: its
    /// HTTP server, or the tunnel it became after an upgrade.
    _slot: ConnSlot,
    pub(crate) peer: SocketAddr,
    /// The peer's IP as a header value, for X-Forwarded-For.
    pub(crate) peer_ip: HeaderValue,
    pub(crate) scheme: &'static str,
    /// The listener's name, for its filters.
    pub(crate) listener: Arc<str>,
    pub(crate) activity: Activity,
    /// What the connection's traced requests' spans repeat, written once.
    pub(crate) trace_attributes: ConnAttributes,
}

/// Requests in flight on one connection and when the last one ended: what `idle_timeout`
/// needs, kept in two atomics that only this connection's worker touches.
pub(crate) struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    last_end_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_end_ms: AtomicU64::new(0),
        }
    }

    pub(super) fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// When the connection will have been idle for `idle`; `None` while requests are in flight.
    pub(crate) fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_end_ms.load(Ordering::Relaxed));
        Some(self.opened + last + idle)
    }
}

/// Ends the request's activity however the request ends (also when the client goes away).
pub(super) struct InFlight<'a>(&'a Activity);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let ms = self.0.opened.elapsed().as_millis() as u64;
        self.0.last_end_ms.store(ms, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnInfo {
    pub(crate) fn new(
        gateway: Arc<Gateway>,
        peer: SocketAddr,
        scheme: &'static str,
        listener: Arc<str>,
        slot: ConnSlot,
    ) -> ConnInfo {
        let peer_ip = HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ConnInfo {
            gateway,
            _slot: slot,
            peer,
            peer_ip,
            scheme,
            listener,
            activity: Activity::new(),
            trace_attributes: ConnAttributes::default(),
        }
    }
}
