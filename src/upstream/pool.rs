//! Client connections to one endpoint. Each worker thread has its own shard of idle
//! connections, so checkout and return never contend across cores; an HTTP/1.1 connection goes
//! back to its shard when the response body has been read to the end (see `body::UpstreamBody`),
//! without a task per request. An HTTP/2 connection stays in its shard and is shared by the
//! worker's requests.

use crate::body::Body;
use hyper::client::conn::{http1, http2};
use std::sync::Mutex;

pub(crate) enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

pub(crate) struct Pool {
    shards: Box<[Mutex<Vec<Sender>>]>,
    max_idle: usize,
}

impl Pool {
    pub(crate) fn new(workers: usize, max_idle: usize) -> Pool {
        Pool {
            shards: (0..workers.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            max_idle,
        }
    }

    fn shard(&self) -> &Mutex<Vec<Sender>> {
        let index = crate::worker::index() % self.shards.len();
        &self.shards[index]
    }

    /// A live connection of this worker, if any. HTTP/1.1 connections are taken out; an
    /// HTTP/2 connection is cloned and stays.
    pub(crate) fn take(&self) -> Option<Sender> {
        let mut idle = self.shard().lock().unwrap_or_else(|e| e.into_inner());
        while let Some(sender) = idle.pop() {
            match sender {
                Sender::H1(s) if s.is_closed() => continue,
                Sender::H2(s) if s.is_closed() => continue,
                Sender::H1(s) => return Some(Sender::H1(s)),
                Sender::H2(s) => {
                    let clone = s.clone();
                    idle.push(Sender::H2(s));
                    return Some(Sender::H2(clone));
                }
            }
        }
        None
    }

    pub(crate) fn put(&self, sender: Sender) {
        let closed = match &sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        };
        if closed {
            return;
        }
        let mut idle = self.shard().lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(sender);
        }
    }

    /// Idle connections across all shards (for tests and the admin API).
    pub(crate) fn idle_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|v| v.len()).unwrap_or(0))
            .sum()
    }
}
