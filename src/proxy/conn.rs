//! What one client connection carries: who it is, its activity (for `idle_timeout`), and its
//! slot in the connection books (`max_connections`, `connections_active`, draining).

use crate::snapshot::Gateway;
use http::HeaderValue;
use prometheus_client::metrics::gauge::Gauge;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Open client connections across all workers, for `max_connections` and draining. A
/// connection upgraded to a tunnel (WebSocket …) stays counted until the tunnel closes.
#[derive(Default)]
pub(crate) struct ConnCounter(AtomicUsize);

impl ConnCounter {
    pub(crate) fn active(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Takes a slot for a new connection, or `None` when `max` are open already.
    pub(crate) fn admit(self: &Arc<Self>, max: usize, gauge: &Gauge) -> Option<ConnSlot> {
        if self.0.fetch_add(1, Ordering::Relaxed) >= max {
            self.0.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        gauge.inc();
        Some(ConnSlot(Arc::clone(self), gauge.clone()))
    }
}

/// One open connection: counted for `max_connections` and in its listener's gauge until
/// dropped.
pub(crate) struct ConnSlot(Arc<ConnCounter>, Gauge);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
        self.1.dec();
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
        }
    }
}
