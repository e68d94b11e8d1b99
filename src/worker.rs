//! Which worker thread is running: per-worker state (connection pools, metric shards) is
//! indexed by it, so the request path never shares a lock with another core.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Called once by each worker thread; other threads count as worker 0.
pub(crate) fn set_index(index: usize) {
    INDEX.with(|i| i.set(index));
}

pub(crate) fn index() -> usize {
    INDEX.with(Cell::get)
}
