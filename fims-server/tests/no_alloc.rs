//! Once warm, the broker routes without allocating: receiving a batch,
//! decoding, matching subscriptions, writing the outgoing datagrams and
//! sending them to every receiver whose socket has room. Checked with a
//! counting global allocator that counts only on the broker's thread (the
//! clients of this test run on other threads and allocate as they like).
//!
//! Only a receiver whose socket is full costs an allocation (the queued copy,
//! shared by all such receivers): that path is not measured here.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fims::blocking::Client;
use fims_server::{Config, Server};
use testkit::alloc::watched_allocs;

#[global_allocator]
static GLOBAL: testkit::alloc::Counting = testkit::alloc::Counting;

/// A subscriber thread counting what it receives on `/load`.
fn subscriber(sock: &std::path::Path, name: &str) -> Arc<AtomicU64> {
    let mut c = common::client(sock, name, &["/load"]);
    let got = Arc::new(AtomicU64::new(0));
    let g = Arc::clone(&got);
    std::thread::spawn(move || {
        while let Ok(Some(_)) = c.recv(None) {
            g.fetch_add(1, Ordering::SeqCst);
        }
    });
    got
}

fn wait_for(counts: &[Arc<AtomicU64>], n: u64) {
    let end = Instant::now() + Duration::from_secs(30);
    while counts.iter().any(|c| c.load(Ordering::SeqCst) < n) {
        assert!(Instant::now() < end, "subscribers stuck below {n}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `bursts` bursts of 20 `pub /load/data` (150 bytes), each once both
/// subscribers have everything before it (so no socket ever fills up).
fn publish(tx: &mut Client, dg: &[u8], counts: &[Arc<AtomicU64>], sent: &mut u64, bursts: u64) {
    for _ in 0..bursts {
        for _ in 0..20 {
            tx.send_raw(dg).expect("publish");
        }
        *sent += 20;
        wait_for(counts, *sent);
    }
}

#[test]
fn warm_routing_does_not_allocate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("fims.sock");
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let path = sock.clone();
    // The broker is bound on its own thread (it is not Send), as `spawn` does.
    let broker = std::thread::spawn(move || {
        testkit::alloc::watch_this_thread();
        let mut server = Server::bind(Config::new(&path)).expect("broker binds");
        // As with --metrics-listen: the counters are published every turn.
        let _published = server.publish_stats();
        handle_tx
            .send(server.shutdown_handle())
            .expect("test waits");
        server.run()
    });
    let stop = handle_rx.recv().expect("broker started");
    let counts = [subscriber(&sock, "sub1"), subscriber(&sock, "sub2")];
    let mut tx = common::client(&sock, "publisher", &[]);
    let mut dg = Vec::new();
    let body = vec![b'0'; 150 - 12 - "pub/load/datapublisher".len()];
    fims::Message {
        method: "pub",
        uri: "/load/data",
        process_name: "publisher",
        body: &body,
        ..fims::Message::default()
    }
    .encode(&mut dg)
    .expect("encodes");
    assert_eq!(dg.len(), 150);
    let mut sent = 0;
    // Warm: the batch, the ring's pages and every list grow to their size.
    publish(&mut tx, &dg, &counts, &mut sent, 50);
    let before = watched_allocs();
    assert!(
        before > 0,
        "the counter sees the broker's thread (binding allocates)"
    );
    let t = Instant::now();
    publish(&mut tx, &dg, &counts, &mut sent, 500);
    let during = watched_allocs() - before;
    eprintln!(
        "{} messages routed to 2 subscribers in {:.2} s: {during} allocations on the broker's thread",
        500 * 20,
        t.elapsed().as_secs_f64()
    );
    stop.shutdown();
    let stats = broker.join().expect("broker thread").expect("broker ran");
    assert_eq!(
        stats.delivered,
        2 * sent + 2,
        "every message reached both subscribers (and their sub answers)"
    );
    assert_eq!(during, 0, "allocations while routing 10,000 warm messages");
}
