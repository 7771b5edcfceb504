//! Once warm, handling `get <uri>/cops` (and the other hot messages) allocates
//! nothing: checked with a counting global allocator. One test function only,
//! so no other test thread allocates while we count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cops_responder::{Outcome, Responder};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warm_hot_path_does_not_allocate() {
    let mut r = Responder::new("hybridos_controller", "/site").expect("valid");
    r.set_version("1.4.0", "a1b2c3d", "372");
    r.set_liveness_window(Some(Duration::from_secs(1)));
    let replyto = Some("/cops/heartbeat/hybridos_controller");
    let mut reply = Vec::new();
    let mut hb = u64::MAX - 2000;
    let mut body = Vec::with_capacity(32);
    let cycle = |r: &mut Responder, reply: &mut Vec<u8>, body: &mut Vec<u8>, hb: u64| {
        let now = Instant::now();
        r.pet(now);
        body.clear();
        // Format the body without allocating either (u64 Display writes into a stack buffer).
        use std::io::Write;
        let _ = write!(body, "{hb}");
        let o = r.handle(now, "set", "/site/cops/cops_heartbeat", None, body, reply);
        assert_eq!(o, Outcome::Handled);
        let o = r.handle(now, "get", "/site/cops", replyto, b"", reply);
        assert_eq!(o, Outcome::Reply);
        let o = r.handle(now, "get", "/site/cops/cops_heartbeat", replyto, b"", reply);
        assert_eq!(o, Outcome::Reply);
        let o = r.handle(
            now,
            "set",
            "/site/cops/cops_heartbeat",
            replyto,
            body,
            reply,
        );
        assert_eq!(o, Outcome::Reply);
        let o = r.handle(now, "get", "/site/cops/version_tag", replyto, b"", reply);
        assert_eq!(o, Outcome::Reply);
        let o = r.handle(now, "get", "/site/cops/nope", replyto, b"", reply);
        assert_eq!(o, Outcome::Reply);
        let o = r.handle(now, "pub", "/elsewhere", None, b"{}", reply);
        assert_eq!(o, Outcome::NotMine);
    };
    // Warm up: the reply buffer grows to its largest answer.
    for _ in 0..10 {
        cycle(&mut r, &mut reply, &mut body, hb);
        hb += 1;
    }
    // The counter works: a deliberate allocation is seen.
    let probe = ALLOCS.load(Ordering::Relaxed);
    drop(std::hint::black_box(Box::new(7u64)));
    assert!(
        ALLOCS.load(Ordering::Relaxed) > probe,
        "allocator not counting"
    );
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..1000 {
        cycle(&mut r, &mut reply, &mut body, hb);
        hb += 1;
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "allocations on the warm hot path");
    assert_eq!(r.heartbeat(), hb - 1);
}
