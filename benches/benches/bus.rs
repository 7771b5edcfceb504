//! Request/answer round trip and publisher-to-subscriber throughput through a
//! real `fims_server`, each next to its bare-socket floor measured in the same run.
//!
//! Round trip (all processes pinned to one CPU): 4 hops either way (client ->
//! relay/broker -> answerer -> relay/broker -> client), three processes either
//! way. Throughput: 1 hop for the floor; 2 through a bare relay process (the
//! floor with the broker's hops) and through the broker.
// criterion_group! defines a `pub fn` that cannot carry a `///` line.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use cops_benches::{bins, bus, floor, msgs};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn peer_exe() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_perf-report"))
}

fn rtt(c: &mut Criterion) {
    // Every process of the measurement on one CPU, as perf-report's headline
    // (cross-CPU wakeups on a VM swing the medians several-fold by placement).
    let _pinned = cops_benches::sys::Pinned::first_cpu().expect("pin to one CPU");
    let mut fl = floor::RttFloor::start(&msgs::heartbeat_get(), &msgs::heartbeat_answer())
        .expect("floor starts");
    let broker_exe = bins::sibling("fims-server", "fims_server", true).expect("fims_server builds");
    let broker = bus::BrokerProc::start(&broker_exe).expect("broker starts");
    let mut echo = bus::BusRtt::start(&broker, &peer_exe(), "echo").expect("echo peer");
    let mut real = bus::BusRtt::start(&broker, &peer_exe(), "responder").expect("responder peer");
    let mut g = c.benchmark_group("rtt_4_hops");
    g.bench_function("floor_socketpairs", |b| {
        b.iter(|| fl.round_trip().expect("floor round trip"))
    });
    g.bench_function("broker_echo", |b| {
        b.iter(|| echo.round_trip().expect("broker round trip"))
    });
    g.bench_function("broker_responder", |b| {
        b.iter(|| real.round_trip().expect("broker round trip"))
    });
    g.finish();
}

fn throughput(c: &mut Criterion) {
    const BURST: u64 = 10_000;
    let msg = msgs::status_pub();
    let mut fl = floor::ThroughputFloor::start().expect("floor starts");
    let mut relay = floor::ThroughputFloor::start_relayed().expect("relay floor starts");
    let broker_exe = bins::sibling("fims-server", "fims_server", true).expect("fims_server builds");
    let broker = bus::BrokerProc::start(&broker_exe).expect("broker starts");
    let mut bt = bus::BusThroughput::start(&broker, &peer_exe()).expect("sink peer");
    let mut g = c.benchmark_group("pub_to_sub");
    g.throughput(Throughput::Elements(BURST));
    g.sample_size(20);
    // One iteration = one burst of BURST messages, timed until the sink has
    // counted them; the time is scaled so that lost messages count against it.
    g.bench_function("floor_socketpair", |b| {
        b.iter_custom(|iters| burst_time(iters, BURST, |n| fl.burst(&msg, n)))
    });
    g.bench_function("relay_floor", |b| {
        b.iter_custom(|iters| burst_time(iters, BURST, |n| relay.burst(&msg, n)))
    });
    g.bench_function("broker", |b| {
        b.iter_custom(|iters| burst_time(iters, BURST, |n| bt.burst(&msg, n)))
    });
    g.finish();
}

fn burst_time(
    iters: u64,
    n: u64,
    mut run: impl FnMut(u64) -> cops_benches::Result<floor::Burst>,
) -> Duration {
    let t = Instant::now();
    let mut delivered = 0u64;
    for _ in 0..iters {
        delivered += run(n).expect("burst").delivered;
    }
    let elapsed = t.elapsed();
    // Scale to the time `iters * n` deliveries would take at the measured rate.
    let want = (iters * n) as f64;
    elapsed.mul_f64(want / (delivered.max(1) as f64))
}

criterion_group!(benches, rtt, throughput);
criterion_main!(benches);
