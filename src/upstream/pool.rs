//! Client connections to one endpoint. Each worker thread has its own shard of idle
//! connections, so checkout and return never contend across cores; an HTTP/1.1 connection goes
//! back to its shard when the response body has been read to the end (see [`UpstreamBody`]),
//! without a task per request. An HTTP/2 connection stays in its shard and is shared by the
//! worker's requests.

use crate::body::{Body, BoxError};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

use super::Endpoint;

pub(crate) enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

pub(crate) struct Pool {
    shards: Box<[Mutex<Vec<Sender>>]>,
    max_idle: usize,
}

impl Pool {
    pub fn new(workers: usize, max_idle: usize) -> Pool {
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
    pub fn take(&self) -> Option<Sender> {
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

    pub fn put(&self, sender: Sender) {
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
    pub fn idle_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|v| v.len()).unwrap_or(0))
            .sum()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream response body stalled for longer than {0:?}")]
pub struct BodyIdleTimeout(pub Duration);

/// An upstream response body on its way to the client: enforces the idle timeout between
/// chunks and returns the HTTP/1.1 connection to its pool once the body was read to the end.
/// A body that fails or is dropped half-way takes its connection with it.
pub struct UpstreamBody {
    inner: Incoming,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    done: bool,
    release: Option<(Arc<Endpoint>, http1::SendRequest<Body>)>,
}

impl UpstreamBody {
    pub(crate) fn new(
        inner: Incoming,
        idle: Duration,
        release: Option<(Arc<Endpoint>, http1::SendRequest<Body>)>,
    ) -> UpstreamBody {
        UpstreamBody {
            inner,
            idle,
            timer: None,
            done: false,
            release,
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.release = None;
                Poll::Ready(Some(Err(Box::new(error))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.release = None;
                    return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.done || self.inner.is_end_stream() {
            if let Some((endpoint, sender)) = self.release.take() {
                endpoint.pool.put(Sender::H1(sender));
            }
        }
    }
}
