//! Deadlines that almost never fire, kept cheaply: every request has a header-read deadline
//! (hyper's, for the next request on its connection) and an upstream response deadline,
//! and nearly all are cancelled long before they are due. A tokio timer costs a wheel
//! registration, its removal and clock conversions each time: about a tenth of a proxied
//! request's instructions for those two. Here a deadline is an entry in its thread's list,
//! under an uncontended lock, and one task per thread looks at the list every `TICK` while it
//! holds any entry, waking what is due. Entries come and go without touching tokio's timer;
//! a deadline fires up to `TICK` late. The look is one pass over the entries: 100 passes a
//! second over 10,000 idle connections' deadlines is about a million comparisons a second.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often the firing task looks at a list that holds entries: how late a deadline may fire.
const TICK: Duration = Duration::from_millis(10);

/// The deadlines of one thread, and the task that fires them.
#[derive(Default)]
struct Wheel {
    entries: Mutex<Entries>,
    /// Told when a first entry arrives while the firing task rests.
    woken: Notify,
    /// Whether the firing task runs (it ends with the runtime it was spawned on).
    firing: AtomicBool,
}

#[derive(Default)]
struct Entries {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The firing task rests: the list was empty when it last looked.
    resting: bool,
}

struct Slot {
    deadline: Instant,
    waker: Option<Waker>,
    fired: bool,
    used: bool,
}

thread_local! {
    static WHEEL: RefCell<Option<Arc<Wheel>>> = const { RefCell::new(None) };
}

/// This thread's wheel, made (with its firing task, on the current runtime) on first use, and
/// again should the runtime that ran the task have ended.
fn wheel() -> Arc<Wheel> {
    WHEEL.with(|cell| {
        let mut cell = cell.borrow_mut();
        match &*cell {
            Some(wheel) if wheel.firing.load(Ordering::Relaxed) => Arc::clone(wheel),
            _ => {
                let wheel = Arc::new(Wheel::default());
                wheel.firing.store(true, Ordering::Relaxed);
                tokio::spawn(fire(Arc::clone(&wheel)));
                *cell = Some(Arc::clone(&wheel));
                wheel
            }
        }
    })
}

impl Wheel {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks the wheel as without its firing task when the task ends with its runtime.
struct Firing(Arc<Wheel>);

impl Drop for Firing {
    fn drop(&mut self) {
        self.0.firing.store(false, Ordering::Relaxed);
    }
}

/// Wakes due entries every `TICK` while there are any; rests while there are none.
async fn fire(wheel: Arc<Wheel>) {
    let firing = Firing(wheel);
    let wheel = &firing.0;
    loop {
        let mut due = Vec::new();
        let resting = {
            let mut entries = wheel.lock();
            let now = Instant::now();
            let mut waiting = false;
            for slot in entries.slots.iter_mut().filter(|s| s.used && !s.fired) {
                if slot.deadline <= now {
                    slot.fired = true;
                    due.extend(slot.waker.take());
                } else {
                    waiting = true;
                }
            }
            entries.resting = !waiting;
            entries.resting
        };
        due.into_iter().for_each(Waker::wake);
        if resting {
            // A registration since the look above left a permit: this returns at once.
            wheel.woken.notified().await;
        } else {
            tokio::time::sleep(TICK).await;
        }
    }
}

/// A deadline on this thread's wheel: ready once it passed. Registers on its first pending
/// poll and leaves the wheel when dropped.
pub(crate) struct Sleep {
    wheel: Arc<Wheel>,
    deadline: Instant,
    slot: Option<usize>,
}

impl Sleep {
    pub(crate) fn until(deadline: Instant) -> Sleep {
        Sleep {
            wheel: wheel(),
            deadline,
            slot: None,
        }
    }

    pub(crate) fn after(duration: Duration) -> Sleep {
        Sleep::until(Instant::now() + duration)
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut entries = this.wheel.lock();
        match this.slot {
            Some(index) => {
                let Some(slot) = entries.slots.get_mut(index) else {
                    return Poll::Ready(());
                };
                if slot.fired {
                    return Poll::Ready(());
                }
                match &mut slot.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    waker => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            None => {
                let slot = Slot {
                    deadline: this.deadline,
                    waker: Some(cx.waker().clone()),
                    fired: false,
                    used: true,
                };
                let index = match entries.free.pop() {
                    Some(index) if index < entries.slots.len() => {
                        entries.slots[index] = slot;
                        index
                    }
                    _ => {
                        entries.slots.push(slot);
                        entries.slots.len() - 1
                    }
                };
                this.slot = Some(index);
                if entries.resting {
                    entries.resting = false;
                    drop(entries);
                    this.wheel.woken.notify_one();
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(index) = self.slot.take() {
            let mut entries = self.wheel.lock();
            if let Some(slot) = entries.slots.get_mut(index) {
                slot.used = false;
                slot.waker = None;
                entries.free.push(index);
            }
        }
    }
}

impl hyper::rt::Sleep for Sleep {}

/// hyper's timer on the wheel: for the header-read deadline of every request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WheelTimer;

impl hyper::rt::Timer for WheelTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep::after(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep::until(deadline))
    }
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// `future`, unless `duration` passes first.
pub(crate) fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: Sleep::after(duration),
    }
}

pin_project_lite::pin_project! {
    /// A future with a deadline (see [`timeout`]). A struct rather than an `async fn`, so the
    /// wrapped future is held once, not once as an argument and again as a pinned local.
    pub(crate) struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Sleep,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(Elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::{timeout, Elapsed, Sleep};
    use std::future::Future;
    use std::time::{Duration, Instant};

    /// A deadline that never fires must fail its test, not hang it.
    async fn within<F: Future>(future: F) -> F::Output {
        let guarded = tokio::time::timeout(Duration::from_secs(2), future);
        guarded.await.expect("a deadline did not fire")
    }

    #[tokio::test]
    async fn deadlines_fire_in_order_and_cancelled_ones_do_not() {
        let start = Instant::now();
        // A later deadline first: the earlier one must not wait for it.
        let late = tokio::spawn(within(Sleep::after(Duration::from_millis(300))));
        let cancelled = Sleep::after(Duration::from_millis(50));
        drop(cancelled);
        within(Sleep::after(Duration::from_millis(100))).await;
        let early = start.elapsed();
        assert!(early >= Duration::from_millis(100), "{early:?}");
        assert!(early < Duration::from_millis(250), "{early:?}");
        late.await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_timeout_gives_the_output_or_elapsed() {
        let fast = timeout(Duration::from_secs(5), async { 7 }).await;
        assert_eq!(fast, Ok(7));
        let started = Instant::now();
        let slow = within(timeout(
            Duration::from_millis(50),
            std::future::pending::<()>(),
        ))
        .await;
        assert_eq!(slow, Err(Elapsed));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_deadline_after_a_quiet_spell_fires() {
        within(Sleep::after(Duration::from_millis(20))).await;
        // Nothing registered: the firing task rests, and a new deadline must wake it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(super::wheel().lock().resting);
        within(Sleep::after(Duration::from_millis(20))).await;
    }

    #[test]
    fn a_sleep_stays_small() {
        // hyper boxes one per request. At 64 bytes instead of 40 its box lands in another size
        // class of the C allocator, and the proxy under load spent about 600 more instructions
        // per request in malloc.
        assert!(std::mem::size_of::<Sleep>() <= 40);
    }

    #[tokio::test]
    async fn slots_are_reused() {
        for _ in 0..100 {
            let _ = within(timeout(
                Duration::from_millis(1),
                std::future::pending::<()>(),
            ))
            .await;
        }
        let wheel = super::wheel();
        let entries = wheel.lock();
        assert!(entries.slots.len() <= 2, "{}", entries.slots.len());
    }
}
