//! The responder turning `get <uri>/cops` into its answer bytes, and one naked
//! SET, through the Rust API and through the C ABI (`cops_responder_handle`
//! called from Rust exactly as a C host calls it); and the work loop's tick.
// criterion_group! defines a `pub fn` that cannot carry a `///` line.
#![allow(missing_docs)]

use std::time::Instant;

use cops_benches::cabi::{self, CResponder};
use cops_benches::msgs;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let mut r = cops_benches::responder::bench_responder().expect("responder");
    let mut cr = CResponder::new().expect("C responder");
    let mut reply = Vec::with_capacity(512);
    let now = Instant::now();
    let mut g = c.benchmark_group("responder_get_cops");
    g.bench_function("rust_handle", |b| {
        b.iter(|| {
            let o = r.handle(
                now,
                black_box("get"),
                black_box(msgs::COPS_URI),
                Some(black_box(msgs::REPLY_URI)),
                b"",
                &mut reply,
            );
            (o, reply.len())
        })
    });
    g.bench_function("c_abi_handle", |b| {
        b.iter(|| {
            cr.handle(
                black_box(cabi::METHOD_GET),
                black_box(cabi::COPS_URI),
                Some(black_box(cabi::REPLY_URI)),
                b"",
            )
        })
    });
    g.finish();
    let mut g = c.benchmark_group("responder_naked_set");
    g.bench_function("rust_handle", |b| {
        b.iter(|| {
            let o = r.handle(
                now,
                black_box("set"),
                black_box("/bench/cops/cops_heartbeat"),
                None,
                black_box(b"17"),
                &mut reply,
            );
            (o, reply.len())
        })
    });
    g.bench_function("c_abi_handle", |b| {
        b.iter(|| {
            cr.handle(
                black_box(cabi::METHOD_SET),
                black_box(cabi::HEARTBEAT_URI),
                None,
                black_box(b"17"),
            )
        })
    });
    g.finish();
}

/// One end-of-iteration tick: the core with the time given, and the C ABI
/// (which reads the clock itself).
fn tick(c: &mut Criterion) {
    let r = cops_benches::responder::bench_responder().expect("responder");
    let mut cr = CResponder::new().expect("C responder");
    let now = Instant::now();
    let mut g = c.benchmark_group("responder_loop_tick");
    g.bench_function("rust_loop_tick", |b| b.iter(|| r.loop_tick(black_box(now))));
    g.bench_function("c_abi_tick", |b| b.iter(|| cr.tick()));
    g.bench_function("clock_read", |b| b.iter(Instant::now));
    g.finish();
}

criterion_group!(benches, bench, tick);
criterion_main!(benches);
