//! A counting global allocator for the no-allocation tests: each thread
//! counts its own allocations (so other test threads do not disturb a count),
//! and a thread that calls [`watch_this_thread`] also adds to one shared total
//! (for a count made on a thread the test does not run on, e.g. the broker's).
//!
//! A test binary installs it with
//! `#[global_allocator] static GLOBAL: testkit::alloc::Counting = testkit::alloc::Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting `alloc`, `alloc_zeroed` and `realloc` calls.
#[derive(Debug)]
pub struct Counting;

thread_local! {
    static MINE: Cell<usize> = const { Cell::new(0) };
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

/// Allocations of the watched threads.
static WATCHED_TOTAL: AtomicUsize = AtomicUsize::new(0);

fn count() {
    // try_with: the thread-locals may be gone while a thread exits.
    let _ = MINE.try_with(|c| c.set(c.get() + 1));
    if WATCHED.try_with(Cell::get).unwrap_or(false) {
        WATCHED_TOTAL.fetch_add(1, Ordering::Relaxed);
    }
}

/// Allocations made so far on this thread.
pub fn allocs() -> usize {
    MINE.with(Cell::get)
}

/// From now on this thread's allocations also count in [`watched_allocs`].
pub fn watch_this_thread() {
    WATCHED.with(|w| w.set(true));
}

/// Allocations made so far by the threads that called [`watch_this_thread`].
pub fn watched_allocs() -> usize {
    WATCHED_TOTAL.load(Ordering::SeqCst)
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
