//! One endpoint of an upstream: its address and weight, its connection pools, and what the
//! balancer, health checks and outlier detection know of it.

use super::health::Health;
use super::outlier::OutlierState;
use super::pool::{Pool, Sender};
use crate::body::{PooledSender, ReturnConnection};
use http::uri::Authority;
use std::net::SocketAddr;

pub struct Endpoint {
    pub(crate) address: SocketAddr,
    pub weight: u32,
    /// Prepared once: the `:authority` of HTTP/2 requests.
    pub(crate) authority: Authority,
    pub(super) pool: Pool,
    pub(super) outlier: OutlierState,
    pub(crate) health: Health,
    /// Requests sent and not yet answered (counted for `least_request` only).
    pub(crate) in_flight: std::sync::atomic::AtomicUsize,
}

impl Endpoint {
    /// A fresh endpoint: empty pools (one per worker), no failures, nothing in flight.
    pub fn new(address: SocketAddr, weight: u32, workers: usize, max_idle: usize) -> Endpoint {
        Endpoint {
            address,
            weight,
            authority: Authority::try_from(address.to_string().as_str())
                .unwrap_or_else(|_| Authority::from_static("upstream")),
            pool: Pool::new(workers, max_idle),
            outlier: OutlierState::default(),
            health: Health::default(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub(crate) fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }
}

/// A connection whose response was read to the end goes back to its endpoint's pool.
impl ReturnConnection<PooledSender> for Endpoint {
    fn give_back(&self, sender: PooledSender) {
        self.pool.put(Sender::H1(sender));
    }
}
