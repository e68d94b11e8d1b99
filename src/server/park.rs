//! Idle HTTP/1.1 connections hold a socket and nothing else.
//!
//! hyper keeps a connection's read buffer (8 KiB reserved for the next request), its write
//! buffer and the header map it reuses for as long as the connection lives, though a
//! keep-alive connection between requests needs none of them: that was most of what an idle
//! client cost. So once a response has gone out in full and the client has sent nothing more,
//! the connection parks: it tells hyper the client is done, hyper ends cleanly, the socket is
//! taken back with whatever hyper had read ahead, and the connection waits for the client's
//! next bytes with the socket alone. hyper starts afresh on them, as nginx frees a keep-alive
//! connection's request buffers.
//!
//! Starting afresh costs about a sixth of a request's instructions, so a client that sends
//! request after request should not pay it each time, while one that sends a request now and
//! then, or one and no more, should give its buffers back at once: freed at once they go back
//! where the next connection takes them, freed later they leave holes in the heap. A
//! connection therefore parks as soon as its response is out while its client has been slow
//! (or has yet to show its pace), and only after `PARK_AFTER` of quiet once its client came
//! back sooner than that.
//!
//! A request asking for an upgrade never lets its connection park, and one with a body only
//! once the body has been read to its end: until then hyper may still be reading or draining
//! it, and an end-of-stream would cut the body short and leave its rest to be read as the
//! next request. A body answered unread is drained by hyper, unseen from here: its connection
//! does not park until a later request allows it.

use crate::body::{BodyEnd, BodyEndNotice};
use crate::timer::Sleep;
use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::upgrade::OnUpgrade;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client that comes back within this of being parked keeps hyper's state between
/// requests, until it has been quiet this long.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// Where the connection's current exchange stands, as far as parking goes, and how soon it
/// parks.
pub(super) struct Park {
    state: AtomicU8,
    /// Park as soon as the response is out, rather than after `PARK_AFTER` of quiet.
    at_once: AtomicBool,
    /// Requests begun so far, to tell a quiet stretch from a busy one.
    requests: AtomicU32,
    /// What the current request still waits for before its connection may park: the end of
    /// its response, and of its body if it has one.
    awaiting: AtomicU8,
}

/// A request is being served, or one that must not park was.
const BUSY: u8 = 0;
/// hyper is done with the response body; its last bytes may still be in hyper's buffer.
const ENDED: u8 = 1;
/// Every byte of the response has been written since: hyper only reads the next request now.
const FLUSHED: u8 = 2;
/// hyper has been told the client is done: the connection is to be taken back, not closed.
const PARKED: u8 = 3;

impl Park {
    /// A new client has yet to show its pace: it parks at once.
    pub(super) fn new() -> Arc<Park> {
        Arc::new(Park {
            state: AtomicU8::new(BUSY),
            at_once: AtomicBool::new(true),
            requests: AtomicU32::new(0),
            awaiting: AtomicU8::new(0),
        })
    }

    /// The client came back after being parked for `parked`: a quick one waits for quiet
    /// before it parks again.
    pub(super) fn came_back_after(&self, parked: Duration) {
        self.at_once.store(parked >= PARK_AFTER, Ordering::Relaxed);
    }

    /// A request arrives: the connection may park once what `parkable` names has ended. The
    /// response's end is told by the returned guard, dropped with the response body; the
    /// body's by the returned notice, carried with it.
    pub(super) fn begin(
        self: &Arc<Self>,
        parkable: Option<Ends>,
    ) -> (Option<Arc<Park>>, Option<BodyEndNotice>) {
        self.state.store(BUSY, Ordering::Relaxed);
        // Only this connection's task writes it: no read-modify-write needed.
        let request = self.requests.load(Ordering::Relaxed).wrapping_add(1);
        self.requests.store(request, Ordering::Relaxed);
        let Some(ends) = parkable else {
            return (None, None);
        };
        let notice = match ends {
            Ends::Response => None,
            Ends::BodyAndResponse => Some(BodyEndNotice {
                to: Arc::clone(self) as Arc<dyn BodyEnd>,
                request,
            }),
        };
        self.awaiting
            .store(1 + u8::from(notice.is_some()), Ordering::Relaxed);
        (Some(Arc::clone(self)), notice)
    }

    /// One of the things the current request waits for has ended; the last ends its exchange.
    fn one_ended(&self) {
        if self.awaiting.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.advance(BUSY, ENDED);
        }
    }

    pub(super) fn is_parked(&self) -> bool {
        self.state.load(Ordering::Relaxed) == PARKED
    }

    fn advance(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl BodyEnd for Park {
    fn body_ended(&self, request: u32) {
        if request == self.requests.load(Ordering::Relaxed) {
            self.one_ended();
        }
    }
}

/// What must end before a request's connection may park.
pub(super) enum Ends {
    Response,
    BodyAndResponse,
}

/// What a request lets its connection do after its response: nothing if it asks for a
/// protocol switch that may hand the socket on (hyper marks every request that asks for one,
/// `Upgrade` or `CONNECT`, with the means to take it); park once the response is out, or once
/// the body has been read to its end as well.
pub(super) fn parkable<B: HttpBody>(request: &http::Request<B>) -> Option<Ends> {
    if request.extensions().get::<OnUpgrade>().is_some() {
        None
    } else if request.body().is_end_stream() {
        Some(Ends::Response)
    } else {
        Some(Ends::BodyAndResponse)
    }
}

/// A response body that marks the end of its exchange when hyper drops it: hyper lets go of a
/// body once it has queued its last bytes (or given up on it, which ends the connection).
pub(super) struct Watched<B> {
    pub(super) body: B,
    pub(super) park: Option<Arc<Park>>,
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        if let Some(park) = &self.park {
            park.one_ended();
        }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client socket as hyper sees it: bytes hyper had read ahead before the connection
/// parked come first, and once the exchange is over and the client has sent nothing more, a
/// read ends the stream instead of waiting.
pub(super) struct Parking<I> {
    io: I,
    ahead: Bytes,
    park: Arc<Park>,
    /// The quiet time running, and the requests begun when it started: it is armed once per
    /// `PARK_AFTER` rather than once per request, and the connection parks when it ends with
    /// no request begun since.
    quiet: Option<(Sleep, u32)>,
}

impl<I> Parking<I> {
    /// A connection whose first request is still to come: it may park before it arrives (a
    /// wake-up without data), unless bytes read ahead may already be part of it.
    pub(super) fn new(io: I, ahead: Bytes, park: Arc<Park>) -> Parking<I> {
        park.state.store(
            if ahead.is_empty() { FLUSHED } else { BUSY },
            Ordering::Relaxed,
        );
        Parking {
            io,
            ahead,
            park,
            quiet: None,
        }
    }

    pub(super) fn into_inner(self) -> I {
        self.io
    }

    /// Whether the connection, between requests, may park now; if it is to wait for
    /// `PARK_AFTER` of quiet first, it is woken when that time is up.
    fn quiet_long_enough(&mut self, cx: &mut Context<'_>) -> bool {
        if self.park.state.load(Ordering::Relaxed) != FLUSHED {
            return false;
        }
        if self.park.at_once.load(Ordering::Relaxed) {
            return true;
        }
        let requests = self.park.requests.load(Ordering::Relaxed);
        if let Some((sleep, begun)) = &mut self.quiet {
            if Pin::new(sleep).poll(cx).is_pending() {
                return false;
            }
            if *begun == requests {
                return true;
            }
        }
        // None running, or requests came during the last: a quiet time starts now.
        let mut sleep = Sleep::after(PARK_AFTER);
        let _ = Pin::new(&mut sleep).poll(cx);
        self.quiet = Some((sleep, requests));
        false
    }
}

/// The socket under a connection, to wait on while it is parked.
pub(super) trait OnTcp {
    fn tcp(&self) -> &TcpStream;
}

impl OnTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl OnTcp for Box<tokio_rustls::server::TlsStream<TcpStream>> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Parking<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.ahead.is_empty() {
            let n = this.ahead.len().min(buf.remaining());
            buf.put_slice(&this.ahead[..n]);
            this.ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending if this.quiet_long_enough(cx) && this.park.advance(FLUSHED, PARKED) => {
                this.quiet = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                // The next request has begun: a read that waits now waits for the rest of it.
                this.park.advance(FLUSHED, BUSY);
                Poll::Ready(Ok(()))
            }
            polled => polled,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Parking<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            if self.park.advance(ENDED, FLUSHED) {
                // hyper may not read again before the client sends: the quiet time starts
                // now, and wakes the connection when it is up.
                let _ = self.quiet_long_enough(cx);
            }
        }
        flushed
    }

    /// A parked connection is kept: hyper's closing it is only its end of this stretch.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.park.is_parked() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_a_body_ends_with_its_body_and_its_response() {
        let park = Park::new();
        let (response, body) = park.begin(Some(Ends::BodyAndResponse));
        let body = body.expect("a notice for the body");
        drop(Watched {
            body: (),
            park: response,
        });
        assert_eq!(park.state.load(Ordering::Relaxed), BUSY);
        body.to.body_ended(body.request);
        assert_eq!(park.state.load(Ordering::Relaxed), ENDED);
    }

    #[test]
    fn a_body_read_to_its_end_late_does_not_count_for_the_next_request() {
        let park = Park::new();
        let (first, late) = park.begin(Some(Ends::BodyAndResponse));
        drop(Watched {
            body: (),
            park: first,
        });
        // The next request, with a body of its own, begins before the first body's end.
        let (second, _body) = park.begin(Some(Ends::BodyAndResponse));
        let late = late.expect("a notice for the body");
        late.to.body_ended(late.request);
        drop(Watched {
            body: (),
            park: second,
        });
        assert_eq!(park.state.load(Ordering::Relaxed), BUSY);
    }
}
