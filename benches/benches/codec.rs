//! Encode and decode of realistic FIMS datagrams.
// criterion_group! defines a `pub fn` that cannot carry a `///` line.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fims::Message;

fn bench(c: &mut Criterion) {
    let cases = [
        ("heartbeat_get", cops_benches::msgs::heartbeat_get()),
        ("heartbeat_answer", cops_benches::msgs::heartbeat_answer()),
        ("status_pub_170b", cops_benches::msgs::status_pub()),
        ("points_pub_1k", cops_benches::msgs::big_pub()),
    ];
    let mut g = c.benchmark_group("decode");
    for (name, dg) in &cases {
        g.throughput(Throughput::Bytes(dg.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| Message::decode(black_box(dg)).map(|m| m.body.len()))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("encode");
    for (name, dg) in &cases {
        let Ok(msg) = Message::decode(dg) else {
            continue;
        };
        let mut out = Vec::with_capacity(dg.len());
        g.throughput(Throughput::Bytes(dg.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| {
                out.clear();
                black_box(&msg).encode(&mut out).map(|()| out.len())
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("decode_check");
    let dg = cops_benches::msgs::heartbeat_get();
    g.bench_function("heartbeat_get", |b| {
        b.iter(|| Message::decode(black_box(&dg)).map(|m| m.check_data().is_ok()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
