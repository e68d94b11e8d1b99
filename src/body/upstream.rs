//! An upstream response body on its way to the client, and the way its HTTP/1.1 connection
//! returns to a pool (a trait the pool implements, so that bodies need not know pools). Generic
//! over the connection handle, so that this file needs neither the body type the connection
//! sends nor the pool.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where an HTTP/1.1 connection (`C`, its request sender) goes back once its response body was
/// read to the end.
pub(crate) trait ReturnConnection<C>: Send + Sync {
    fn give_back(&self, connection: C);
}

#[derive(Debug, thiserror::Error)]
#[error("upstream response body stalled for longer than {0:?}")]
pub(crate) struct BodyIdleTimeout(pub Duration);

/// An upstream response body on its way to the client: enforces the idle timeout between
/// chunks and returns the HTTP/1.1 connection to its pool once the body was read to the end.
/// A body that fails or is dropped half-way takes its connection with it.
pub(crate) struct UpstreamBody<C> {
    inner: Incoming,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    done: bool,
    release: Option<(Arc<dyn ReturnConnection<C>>, C)>,
}

impl<C> UpstreamBody<C> {
    pub(crate) fn new(
        inner: Incoming,
        idle: Duration,
        release: Option<(Arc<dyn ReturnConnection<C>>, C)>,
    ) -> UpstreamBody<C> {
        UpstreamBody {
            inner,
            idle,
            timer: None,
            done: false,
            release,
        }
    }
}

impl<C: Unpin> HttpBody for UpstreamBody<C> {
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

impl<C> Drop for UpstreamBody<C> {
    fn drop(&mut self) {
        if self.done || self.inner.is_end_stream() {
            if let Some((pool, sender)) = self.release.take() {
                pool.give_back(sender);
            }
        }
    }
}
