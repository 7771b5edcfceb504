//! `cops_responder_handle` (C, through the static library) against the Rust
//! `Responder::handle` on `get <uri>/cops` with a replyto. Target (issue 4):
//! the C call within 1.2x of the Rust call.
//!
//! Run: `cargo bench -p cops-c-bindings --bench handle` (release profile; it
//! builds `libcops_responder.a` and compiles tests/c/bench_handle.c with -O2).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use cops_responder::{Outcome, Responder};

const ITERS: u32 = 1_000_000;

fn rust_ns_per_call() -> f64 {
    let mut r = Responder::new("hybridos_controller", "/site").expect("valid responder");
    r.set_version("1.4.0", "a1b2c3d", "372");
    let mut reply = Vec::with_capacity(512);
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t0 = Instant::now();
        for _ in 0..ITERS {
            let out = r.handle(
                Instant::now(),
                black_box("get"),
                black_box("/site/cops"),
                black_box(Some("/cops/heartbeat/hybridos_controller")),
                black_box(b""),
                &mut reply,
            );
            assert_eq!(out, Outcome::Reply);
            black_box(&reply);
        }
        best = best.min(t0.elapsed().as_nanos() as f64 / f64::from(ITERS));
    }
    best
}

/// Best ns/call of one run of the C program (itself best of 7 rounds).
fn c_ns_per_call(exe: &std::path::Path) -> f64 {
    let out = Command::new(exe)
        .arg(ITERS.to_string())
        .output()
        .expect("bench_handle runs");
    assert!(out.status.success(), "bench_handle failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("bench_handle prints ns_per_call")
}

fn main() {
    let exe = common::compile_with("tests/c/bench_handle.c", common::Link::Static, &["-O2"]);
    // Alternate the two so load from other processes hits both alike; keep the best.
    let (mut c_ns, mut rust_ns) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        c_ns = c_ns.min(c_ns_per_call(&exe));
        rust_ns = rust_ns.min(rust_ns_per_call());
    }
    println!("get <uri>/cops, best of 3 x 7 rounds x {ITERS} calls, alternating:");
    println!("  Rust Responder::handle      {rust_ns:8.1} ns/call");
    println!("  C cops_responder_handle     {c_ns:8.1} ns/call");
    println!(
        "  ratio C / Rust              {:8.2} (target <= 1.20)",
        c_ns / rust_ns
    );
}
