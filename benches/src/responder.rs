//! The real responder on the far side of a heartbeat round trip.

use std::path::Path;
use std::time::Instant;

use cops_responder::{Outcome, Responder};
use fims::blocking::Client;
use fims::Method;

use crate::msgs;
use crate::{err, Result};

/// A responder configured like the benches' monitored process.
pub fn bench_responder() -> Result<Responder> {
    let mut r = Responder::new("bench", msgs::BASE_URI).map_err(|e| err!("responder: {e:?}"))?;
    r.set_version("1.4.0", "a1b2c3d", "372");
    Ok(r)
}

/// Connects to `socket`, subscribes to `/bench/cops`, calls `ready`, and answers
/// through [`Responder::handle`] until the broker goes away.
pub fn serve(socket: &Path, ready: fn() -> Result<()>) -> Result<()> {
    let mut r = bench_responder()?;
    let mut c = Client::connect_to(socket, "bench_responder")?;
    c.subscribe(&[msgs::COPS_URI])?;
    ready()?;
    let mut reply = Vec::with_capacity(512);
    let mut replyto = String::with_capacity(256);
    loop {
        let outcome = match c.recv(None) {
            Ok(Some(m)) => {
                replyto.clear();
                replyto.push_str(m.replyto);
                r.handle(
                    Instant::now(),
                    m.method,
                    m.uri,
                    m.replyto(),
                    m.body,
                    &mut reply,
                )
            }
            Ok(None) => continue,
            Err(e) if e.is_disconnect() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if outcome == Outcome::Reply {
            c.send(Method::Set, &replyto, None, &reply)?;
        }
    }
}

/// Median time per call of a batch-timed call, and its heap allocations.
#[derive(Debug, Clone, Copy)]
pub struct Calls {
    /// Median ns per call over the batches.
    pub ns: f64,
    /// Heap allocations counted during the timed batches.
    pub allocs: u64,
}

/// Calls per timed batch.
const PER_BATCH: u32 = 10_000;

/// ns per call of one batch of `call`.
fn batch(call: &mut impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..PER_BATCH {
        call();
    }
    t.elapsed().as_nanos() as f64 / f64::from(PER_BATCH)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `call` timed over `batches` batches of 10,000 (after one warm-up batch);
/// `allocs` reads the process's allocation counter.
pub fn time_calls(batches: usize, allocs: &dyn Fn() -> u64, mut call: impl FnMut()) -> Calls {
    batch(&mut call);
    let mut ns = Vec::with_capacity(batches.max(1));
    let before = allocs();
    for _ in 0..batches.max(1) {
        ns.push(batch(&mut call));
    }
    let allocs = allocs() - before;
    Calls {
        ns: median(&mut ns),
        allocs,
    }
}

/// `a` and `b` timed in alternating batches, so load from other processes
/// falls on both alike; also the median of the per-pair differences `b - a`
/// (ns per call), steadier than the difference of the two medians.
pub fn time_interleaved(
    batches: usize,
    allocs: &dyn Fn() -> u64,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (Calls, Calls, f64) {
    batch(&mut a);
    batch(&mut b);
    let n = batches.max(1);
    let (mut ta, mut tb, mut diff) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::new());
    let (mut alloc_a, mut alloc_b) = (0, 0);
    for _ in 0..n {
        let before = allocs();
        let x = batch(&mut a);
        let mid = allocs();
        let y = batch(&mut b);
        alloc_a += mid - before;
        alloc_b += allocs() - mid;
        ta.push(x);
        tb.push(y);
        diff.push(y - x);
    }
    let ca = Calls {
        ns: median(&mut ta),
        allocs: alloc_a,
    };
    let cb = Calls {
        ns: median(&mut tb),
        allocs: alloc_b,
    };
    (ca, cb, median(&mut diff))
}

/// The responder's figures of one perf-report run.
#[derive(Debug, Clone, Copy)]
pub struct HandleFigures {
    /// `Responder::handle(get /bench/cops)` (a replyto, the heartbeat query).
    pub rust: Calls,
    /// The same through `cops_responder_handle`, in alternating batches.
    pub c: Calls,
    /// Median of the per-batch differences C - Rust, ns per call.
    pub overhead_ns: f64,
    /// `Responder::loop_tick(now)` with the time given (the core's cost).
    pub tick: Calls,
    /// `cops_responder_tick` (a C host's whole cost: its clock read included).
    pub c_tick: Calls,
    /// One `Instant::now()` (CLOCK_MONOTONIC), for reading `c_tick`.
    pub clock: Calls,
}

/// Measures [`HandleFigures`] with `batches` batches of 10,000 calls each.
pub fn measure_handle(batches: usize, allocs: &dyn Fn() -> u64) -> Result<HandleFigures> {
    use std::hint::black_box;

    use crate::cabi::{self, CResponder};

    let mut r = bench_responder()?;
    let mut cr = CResponder::new()?;
    // Both answer with the loop object, as a ticking host's responder does.
    r.loop_tick(Instant::now());
    cr.tick()?;
    let mut reply = Vec::with_capacity(512);
    let now = Instant::now();
    let mut failed = false;
    let (rust, c, overhead_ns) = time_interleaved(
        batches,
        allocs,
        || {
            let o = r.handle(
                now,
                black_box("get"),
                black_box(msgs::COPS_URI),
                Some(black_box(msgs::REPLY_URI)),
                b"",
                &mut reply,
            );
            let _ = black_box((o, &reply));
        },
        || {
            let res = cr.handle(
                black_box(cabi::METHOD_GET),
                black_box(cabi::COPS_URI),
                Some(black_box(cabi::REPLY_URI)),
                b"",
            );
            failed |= black_box(res).is_err();
        },
    );
    if failed {
        return Err(err!("cops_responder_handle did not return COPS_OK"));
    }
    let tick = time_calls(batches, allocs, || r.loop_tick(black_box(now)));
    let c_tick = time_calls(batches, allocs, || failed |= cr.tick().is_err());
    let clock = time_calls(batches, allocs, || {
        black_box(Instant::now());
    });
    if failed {
        return Err(err!("cops_responder_tick did not return COPS_OK"));
    }
    Ok(HandleFigures {
        rust,
        c,
        overhead_ns,
        tick,
        c_tick,
        clock,
    })
}
