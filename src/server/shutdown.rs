//! The stop signal shared by listeners and connections. Every client connection checks it each
//! time hyper polls the connection, so checking is one atomic load; the wakers of the waiting
//! connections are registered once per connection and woken all together on stop.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub(crate) struct Shutdown {
    stopped: AtomicBool,
    next_id: AtomicU64,
    waiters: Mutex<HashMap<u64, Waker>>,
}

impl Shutdown {
    pub(crate) fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    /// Signals every waiter, now and later.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in waiters.into_values() {
            waker.wake();
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Resolves once `stop` has been called.
    pub(crate) fn stopped(&self) -> Stopped<'_> {
        Stopped {
            shutdown: self,
            registered: None,
        }
    }
}

pub(crate) struct Stopped<'a> {
    shutdown: &'a Shutdown,
    /// Our id in `waiters` and the waker stored there, to skip the lock when it still fits.
    registered: Option<(u64, Waker)>,
}

impl Future for Stopped<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.is_stopped() {
            return Poll::Ready(());
        }
        if let Some((_, waker)) = &self.registered {
            if waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        // Register (or refresh, if the task's waker changed) under the lock, then look again:
        // a stop between the first look and the registration is not missed.
        let id = match &self.registered {
            Some((id, _)) => *id,
            None => self.shutdown.next_id.fetch_add(1, Ordering::Relaxed),
        };
        let waker = cx.waker().clone();
        self.shutdown
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, waker.clone());
        self.registered = Some((id, waker));
        if self.shutdown.is_stopped() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if let Some((id, _)) = &self.registered {
            self.shutdown
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_every_waiter_and_forgets_dropped_ones() {
        let shutdown = Shutdown::new();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let s = Arc::clone(&shutdown);
            tasks.push(tokio::spawn(async move { s.stopped().await }));
        }
        {
            // A waiter that goes away deregisters itself.
            let gone = shutdown.stopped();
            let _ = tokio::time::timeout(Duration::from_millis(10), gone).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(shutdown.waiters.lock().unwrap().len(), 3);
        shutdown.stop();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .unwrap()
                .unwrap();
        }
        // After the stop, new waiters resolve at once.
        shutdown.stopped().await;
    }
}
