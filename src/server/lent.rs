//! A request's future in a block its worker lends for the duration of the request, as nginx
//! lends request buffers. hyper keeps an HTTP/1.1 connection's in-flight future in a slot of
//! its own for the connection's whole life, so a future stored inline costs every idle
//! connection its full size (a few KiB). Boxed per request instead, it costs a large
//! allocation and free per request, which the C library's allocator serves on its slow path
//! (about 900 instructions). A per-worker list of blocks serves both: an idle connection holds
//! no block, and a request takes one that a finished request gave back.

use std::alloc::{alloc, dealloc, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Room for a request's future; a larger one (or one more aligned) is boxed instead.
const BLOCK_BYTES: usize = 8192;
const BLOCK_ALIGN: usize = 16;
const BLOCK: Layout = match Layout::from_size_align(BLOCK_BYTES, BLOCK_ALIGN) {
    Ok(layout) => layout,
    Err(_) => panic!("invalid block layout"),
};
/// Blocks a worker keeps for the next requests: as many as it served at once, up to this;
/// beyond it a finished request's block is freed.
const KEPT_BLOCKS: usize = 64;

/// The blocks given back on this thread, freed with it.
struct FreeBlocks(Vec<NonNull<u8>>);

impl Drop for FreeBlocks {
    fn drop(&mut self) {
        for block in self.0.drain(..) {
            // SAFETY: every block in the list was allocated with `BLOCK` and is unused.
            unsafe { dealloc(block.as_ptr(), BLOCK) };
        }
    }
}

thread_local! {
    static FREE: RefCell<FreeBlocks> = const { RefCell::new(FreeBlocks(Vec::new())) };
}

/// A future in a lent block (or, when it does not fit one, in a box of its own).
pub(crate) enum Lent<F> {
    Block(NonNull<F>),
    Boxed(Pin<Box<F>>),
}

// SAFETY: a `Lent` owns its future as a box does; the block holds nothing else.
unsafe impl<F: Send> Send for Lent<F> {}

// The future stays where it was written (the block or the box) until dropped, whatever
// happens to the `Lent`: the `Lent` is a pointer and may move.
impl<F> Unpin for Lent<F> {}

impl<F: Future> Lent<F> {
    pub(crate) fn new(future: F) -> Lent<F> {
        let layout = Layout::new::<F>();
        if layout.size() > BLOCK_BYTES || layout.align() > BLOCK_ALIGN {
            return Lent::Boxed(Box::pin(future));
        }
        let kept = FREE
            .try_with(|free| free.borrow_mut().0.pop())
            .ok()
            .flatten();
        // SAFETY: `BLOCK` has a non-zero size.
        let block = kept.or_else(|| NonNull::new(unsafe { alloc(BLOCK) }));
        let Some(block) = block else {
            return Lent::Boxed(Box::pin(future));
        };
        let slot = block.cast::<F>();
        // SAFETY: the block is unused, large and aligned enough for `F` (checked above).
        unsafe { slot.as_ptr().write(future) };
        Lent::Block(slot)
    }
}

impl<F: Future> Future for Lent<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.get_mut() {
            // SAFETY: the future is never moved out of its block before it is dropped there.
            Lent::Block(slot) => unsafe { Pin::new_unchecked(slot.as_mut()) }.poll(cx),
            Lent::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}

impl<F> Drop for Lent<F> {
    fn drop(&mut self) {
        let Lent::Block(slot) = *self else {
            return;
        };
        // SAFETY: the block holds a live `F`, dropped once here; nothing uses it after.
        unsafe { slot.as_ptr().drop_in_place() };
        let block = slot.cast::<u8>();
        let kept = FREE
            .try_with(|free| {
                let mut free = free.borrow_mut();
                let room = free.0.len() < KEPT_BLOCKS;
                if room {
                    free.0.push(block);
                }
                room
            })
            .unwrap_or(false);
        if !kept {
            // SAFETY: the block was allocated with `BLOCK` and holds nothing now.
            unsafe { dealloc(block.as_ptr(), BLOCK) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts its drops; ready at once with its value.
    struct Counted(Arc<AtomicUsize>, u32);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn free_blocks() -> usize {
        FREE.with(|free| free.borrow().0.len())
    }

    #[tokio::test]
    async fn a_block_is_reused_and_its_future_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let first = {
            let counted = Counted(Arc::clone(&drops), 7);
            Lent::new(async move {
                let held = counted;
                held.1
            })
        };
        let Lent::Block(slot) = &first else {
            panic!("a small future was boxed");
        };
        let address = slot.as_ptr() as usize;
        assert_eq!(first.await, 7);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let kept = free_blocks();
        assert!(kept >= 1);

        // Dropped before it ran: its future (and what it holds) is dropped too.
        let counted = Counted(Arc::clone(&drops), 8);
        let second = Lent::new(async move {
            let held = counted;
            held.1
        });
        let Lent::Block(slot) = &second else {
            panic!("a small future was boxed");
        };
        assert_eq!(
            slot.as_ptr() as usize,
            address,
            "the free block was not reused"
        );
        assert_eq!(free_blocks(), kept - 1);
        drop(second);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        assert_eq!(free_blocks(), kept);
    }

    #[tokio::test]
    async fn a_future_larger_than_a_block_is_boxed() {
        let big = [1u8; BLOCK_BYTES + 1];
        let lent = Lent::new(async move { big[BLOCK_BYTES] });
        assert!(matches!(lent, Lent::Boxed(_)));
        assert_eq!(lent.await, 1);
    }

    #[test]
    fn a_worker_keeps_a_bounded_number_of_blocks() {
        let many: Vec<_> = (0..KEPT_BLOCKS + 10)
            .map(|n| Lent::new(std::future::ready(n)))
            .collect();
        drop(many);
        assert_eq!(free_blocks(), KEPT_BLOCKS);
    }
}
