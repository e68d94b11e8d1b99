//! The one body type that flows through the gateway, in both directions. An enum rather than a
//! boxed trait object: no allocation per request, and each variant keeps its own bookkeeping.

mod upstream;

pub(crate) use upstream::{ReturnConnection, UpstreamBody};

/// What sends requests on a pooled HTTP/1.1 connection, given back to its pool with the body.
pub(crate) type PooledSender = hyper::client::conn::http1::SendRequest<Body>;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) enum Body {
    Empty,
    Full(Option<Bytes>),
    /// A client's request body on its way upstream, counted against `max_body_bytes`.
    Request(RequestBody),
    /// An upstream's response body on its way to the client.
    Upstream(UpstreamBody<PooledSender>),
    /// A body passed through while a copy is kept (the response cache).
    Recording(Box<Recording>),
    /// A body a filter rewrites as it streams (compression): boxed, so filters need no
    /// variant of their own.
    Transformed(Pin<Box<dyn HttpBody<Data = Bytes, Error = BoxError> + Send>>),
}

impl Body {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::Empty
        } else {
            Body::Full(Some(bytes))
        }
    }

    pub(crate) fn request(inner: ClientIncoming, limit: u64) -> Body {
        Body::Request(RequestBody {
            inner,
            limit,
            seen: 0,
        })
    }
}

/// Told once a client's request body has been read to its end: the connection it came on
/// then has nothing left of that request to read.
pub(crate) trait BodyEnd: Send + Sync {
    /// `request` is the number the connection gave the request in its `BodyEndNotice`: a body
    /// read to its end late, after the next request began, must not count for that one.
    fn body_ended(&self, request: u32);
}

/// Whom to tell that a request's body has been read to its end, and which request it was.
pub(crate) struct BodyEndNotice {
    pub(crate) to: Arc<dyn BodyEnd>,
    pub(crate) request: u32,
}

/// A client's request body as hyper hands it over, and whom to tell once it has been read to
/// its end.
pub(crate) struct ClientIncoming {
    body: Incoming,
    end: Option<BodyEndNotice>,
}

impl ClientIncoming {
    pub(crate) fn new(body: Incoming, end: Option<BodyEndNotice>) -> ClientIncoming {
        ClientIncoming { body, end }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // A body with a length ends with its last bytes (its reader need not ask again);
        // a chunked one when it says so.
        let ended = match &polled {
            Poll::Ready(Some(Ok(_))) => self.body.is_end_stream(),
            Poll::Ready(None) => true,
            _ => false,
        };
        if ended {
            if let Some(end) = self.end.take() {
                end.to.body_ended(end.request);
            }
        }
        polled
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Request(body) => body.poll_frame(cx),
            Body::Upstream(body) => Pin::new(body).poll_frame(cx),
            Body::Recording(body) => body.poll_frame(cx),
            Body::Transformed(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(bytes) => bytes.is_none(),
            Body::Request(body) => body.inner.body.is_end_stream(),
            Body::Upstream(body) => body.is_end_stream(),
            Body::Recording(body) => body.inner.is_end_stream(),
            Body::Transformed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Request(body) => body.inner.body.size_hint(),
            Body::Upstream(body) => body.size_hint(),
            Body::Recording(body) => body.inner.size_hint(),
            Body::Transformed(body) => body.size_hint(),
        }
    }
}

/// A client's request body on its way to the route's action: as it streams, or read whole
/// already because a filter asked to see it.
pub(crate) enum ClientBody {
    Streaming(ClientIncoming),
    Buffered(Bytes),
    /// Streams as it comes while a copy of up to `keep` bytes is kept for `done` (a mirror).
    Teed {
        body: ClientIncoming,
        keep: usize,
        done: OnComplete,
    },
}

impl ClientBody {
    pub(crate) fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Streaming(body) | ClientBody::Teed { body, .. } => body.is_end_stream(),
            ClientBody::Buffered(bytes) => bytes.is_empty(),
        }
    }

    /// The body to send upstream, counted against `limit` (`max_body_bytes`) as it streams.
    pub(crate) fn into_body(self, limit: u64) -> Body {
        match self {
            ClientBody::Streaming(body) if body.is_end_stream() => Body::Empty,
            ClientBody::Streaming(body) => Body::request(body, limit),
            ClientBody::Buffered(bytes) => Body::full(bytes),
            ClientBody::Teed { body, keep, done } => {
                Recording::wrap(Body::request(body, limit), keep, done)
            }
        }
    }
}

/// Called with the whole body once it has been read to its end without error.
pub(crate) type OnComplete = Box<dyn FnOnce(Bytes) + Send>;

/// Passes a body through and keeps a copy up to `limit` bytes; when the body ends cleanly,
/// hands the copy to `done`. A body that fails, carries trailers, or grows past the limit is
/// never handed over, and neither is one whose reader goes away before the end.
pub(crate) struct Recording {
    inner: Body,
    kept: Vec<Bytes>,
    size: usize,
    limit: usize,
    done: Option<OnComplete>,
}

impl Recording {
    pub(crate) fn wrap(inner: Body, limit: usize, done: OnComplete) -> Body {
        // An empty body is never polled: it is complete already.
        if inner.is_end_stream() {
            done(Bytes::new());
            return inner;
        }
        Body::Recording(Box::new(Recording {
            inner,
            kept: Vec::new(),
            size: 0,
            limit,
            done: Some(done),
        }))
    }

    fn give_up(&mut self) {
        self.done = None;
        self.kept = Vec::new();
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            let body = match self.kept.len() {
                0 => Bytes::new(),
                1 => self.kept.pop().unwrap_or_default(),
                _ => Bytes::from(self.kept.concat()),
            };
            done(body);
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) if self.done.is_some() => match frame.data_ref() {
                Some(data) => {
                    self.size += data.len();
                    if self.size > self.limit {
                        self.give_up();
                    } else {
                        self.kept.push(data.clone());
                        // The reader may stop polling once the body says it has ended.
                        if self.inner.is_end_stream() {
                            self.finish();
                        }
                    }
                }
                None => self.give_up(),
            },
            Poll::Ready(Some(Err(_))) => self.give_up(),
            Poll::Ready(None) => self.finish(),
            _ => {}
        }
        polled
    }
}

/// The request body grew past `max_body_bytes` (a chunked body has no length to check up
/// front). Found again in the error chain to answer 413.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {0} bytes")]
pub(crate) struct BodyLimitExceeded(pub u64);

pub(crate) struct RequestBody {
    inner: ClientIncoming,
    limit: u64,
    seen: u64,
}

impl RequestBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    if self.seen > self.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyLimitExceeded(self.limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_and_empty_bodies() {
        let body = Body::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        let empty = Body::full("");
        assert!(empty.is_end_stream());
    }
}
