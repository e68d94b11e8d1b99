//! `idle_timeout`: a connection with no request in flight for that long is closed.
//!
//! The deadline is a timer inside the connection's own task, not a task of its own beside it:
//! a watchdog task, with the signal it raised, cost every idle connection about half a
//! kilobyte. The connection's task is polled on every read and write, so the timer is only
//! polled again when it fired (one atomic load tells) or the task's waker changed; otherwise
//! it stays registered and wakes the task when due.

use crate::proxy::Activity;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pin_project_lite::pin_project! {
    /// Ready once the connection has had no request in flight for `timeout`.
    pub(super) struct Idle<'a> {
        activity: &'a Activity,
        timeout: Duration,
        // The waker the timer holds, once registered: while it still fits and the timer has
        // not fired, a poll has nothing to do.
        registered: Option<Waker>,
        #[pin]
        sleep: Sleep,
    }
}

impl<'a> Idle<'a> {
    pub(super) fn new(activity: &'a Activity, timeout: Duration) -> Idle<'a> {
        Idle {
            activity,
            timeout,
            registered: None,
            sleep: tokio::time::sleep(timeout),
        }
    }
}

impl Future for Idle<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if let Some(waker) = this.registered {
            if !this.sleep.is_elapsed() && waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        loop {
            let now = Instant::now();
            // While requests are in flight the connection is not idle: look again later.
            let deadline = match this.activity.idle_deadline(*this.timeout) {
                Some(deadline) if deadline <= now => return Poll::Ready(()),
                Some(deadline) => deadline,
                None => now + *this.timeout,
            };
            this.sleep.as_mut().reset(deadline);
            if this.sleep.as_mut().poll(cx).is_pending() {
                *this.registered = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
    }
}
