//! The broker's resource limits against a real `fims_server` process: the
//! memory budget under 64 stuck readers, descriptor exhaustion, the handshake
//! deadline and the per-uid connection limit. Figures are printed (run with
//! `--nocapture`) and recorded in docs/RELIABILITY.md.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fims::{Message, Method};

const MIB: u64 = 1 << 20;

fn pub_datagram(uri: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Message::new(Method::Pub, uri, body)
        .encode(&mut out)
        .expect("encode");
    out
}

/// 64 subscribers that never read and a publisher sending each of them 16 MiB
/// (1 GiB in all, 64 KiB messages, so no copy is shared): without the budget
/// the broker would hold about 1 GiB; with the default 256 MiB budget its peak
/// RSS stays under 256 + 64 MiB, the largest queues shed, and a reader that
/// keeps up loses nothing.
#[test]
fn sixty_four_stuck_readers_keep_the_broker_within_its_budget() {
    raise_nofile_limit();
    let budget_mib: u64 = std::env::var("FIMS_TEST_BUDGET_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let budget = (budget_mib * MIB).to_string();
    let broker = BrokerProc::start(&["--max-queued-bytes", &budget], None);
    let stuck: Vec<Raw> = (0..64)
        .map(|i| {
            let (r, _) = Raw::handshake(&broker.sock, &format!("stuck{i}"));
            assert_eq!(r.subscribe(&[&format!("/r/{i}")]), "SUCCESS");
            r
        })
        .collect();
    let mut live = client(&broker.sock, "live", &["/live"]);
    let live_got = Arc::new(AtomicU64::new(0));
    let got = Arc::clone(&live_got);
    let reader = std::thread::spawn(move || loop {
        let m = next(&mut live);
        if m.body == b"end" {
            return;
        }
        got.fetch_add(1, Ordering::SeqCst);
    });
    let (tx, _) = Raw::handshake(&broker.sock, "publisher");
    let body = vec![b'p'; 64 << 10];
    let per_reader: Vec<Vec<u8>> = (0..64)
        .map(|i| pub_datagram(&format!("/r/{i}"), &body))
        .collect();
    let t0 = Instant::now();
    let mut live_sent = 0u64;
    for n in 0..16 * 1024 {
        tx.send(&per_reader[n % 64]).expect("publish");
        if n % 64 == 0 {
            tx.send(&pub_datagram("/live", b"tick")).expect("publish");
            live_sent += 1;
        }
    }
    tx.send(&pub_datagram("/live", b"end")).expect("publish");
    reader.join().expect("live reader");
    let secs = t0.elapsed().as_secs_f64();
    let pid = broker.child.pid();
    let peak = peak_rss_kib(pid) * 1024;
    let log = broker.stop();
    drop(stuck);
    let (shed, peak_queued) = (counter(&log, "shed"), counter(&log, "peak_queued_bytes"));
    eprintln!(
        "64 stuck readers, 1 GiB published in {secs:.1} s: broker peak RSS {:.1} MiB, \
         peak queued {:.1} MiB (budget {budget_mib} MiB), {shed} deliveries shed; \
         live reader got {}/{live_sent}",
        peak as f64 / MIB as f64,
        peak_queued as f64 / MIB as f64,
        live_got.load(Ordering::SeqCst)
    );
    assert!(peak_queued <= budget_mib * MIB, "{log}");
    assert!(shed > 0, "the budget was reached: {log}");
    assert!(peak < (budget_mib + 64) * MIB, "peak RSS {peak}");
    assert_eq!(
        live_got.load(Ordering::SeqCst),
        live_sent,
        "the live reader lost nothing"
    );
}

/// The broker runs with 64 descriptors. Silent connections fill them; a
/// normal client waits in the backlog and is served within 2 s of the silent
/// ones closing. Then silent connections that stay open are closed by the
/// handshake deadline, and a normal client is served again. `accept` failing
/// is logged once per episode.
#[test]
fn descriptor_exhaustion_is_survived() {
    raise_nofile_limit();
    let broker = BrokerProc::start(&["--handshake-timeout-ms", "1500"], Some(64));
    let stalled = |b: &BrokerProc, n: usize| {
        testkit::wait_for(Duration::from_secs(10), || {
            b.log_text().matches("cannot accept connections").count() >= n
        })
    };
    // 1. Silent connections the clients close themselves.
    let silent: Vec<Raw> = (0..100).map(|_| Raw::connect(&broker.sock)).collect();
    assert!(stalled(&broker, 1), "{}", broker.log_text());
    let waiting = Raw::connect(&broker.sock);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        waiting.recv(Duration::ZERO),
        Got::Timeout,
        "still in the backlog"
    );
    let t0 = Instant::now();
    drop(silent);
    assert!(
        matches!(waiting.recv(Duration::from_secs(2)), Got::Datagram(d) if d.len() == 8),
        "served within 2 s of the silent ones closing"
    );
    let served_ms = t0.elapsed().as_millis();
    assert!(
        testkit::wait_for(WAIT, || broker
            .log_text()
            .contains("accepting connections again")),
        "the episode ends once the backlog is empty: {}",
        broker.log_text()
    );
    // 2. Silent connections that stay open: the deadline closes them.
    let silent: Vec<Raw> = (0..100).map(|_| Raw::connect(&broker.sock)).collect();
    assert!(stalled(&broker, 2), "{}", broker.log_text());
    let t1 = Instant::now();
    for (i, r) in silent.iter().enumerate() {
        let closed = testkit::wait_for(Duration::from_secs(20), || {
            matches!(r.recv(Duration::from_millis(50)), Got::Closed)
        });
        assert!(closed, "silent connection {i} closed by the deadline");
    }
    let all_closed_ms = t1.elapsed().as_millis();
    let mut rx = client(&broker.sock, "rx", &["/after"]);
    let mut tx = client(&broker.sock, "tx", &[]);
    tx.send(Method::Set, "/after", None, b"1").unwrap();
    assert_eq!(next(&mut rx).body, b"1");
    drop((rx, tx, waiting));
    let log = broker.stop();
    let episodes = counter(&log, "accept_stalls");
    let lines = log.matches("cannot accept connections").count() as u64;
    let timeouts = counter(&log, "handshake_timeouts");
    eprintln!(
        "RLIMIT_NOFILE 64: backlog client served {served_ms} ms after 100 silent connections closed; \
         100 silent connections kept open all closed by the 1.5 s deadline within {all_closed_ms} ms; \
         {episodes} exhaustion episodes, {lines} log lines, {timeouts} handshake timeouts"
    );
    assert_eq!(lines, episodes, "one line per episode: {log}");
    assert!((2..=4).contains(&episodes), "{log}");
    assert!(timeouts >= 100, "{log}");
}

/// A connection that never sends its handshake (or stops after the 8 bytes)
/// is closed at the deadline and counted; a handshaken one stays.
#[test]
fn handshake_deadline_closes_silent_connections() {
    let broker = BrokerProc::start(&["--handshake-timeout-ms", "300"], None);
    let silent = Raw::connect(&broker.sock);
    let half = Raw::connect(&broker.sock);
    let Got::Datagram(hs) = half.recv(WAIT) else {
        panic!("no handshake")
    };
    half.send(&hs).unwrap();
    let (good, _) = Raw::handshake(&broker.sock, "good");
    let t0 = Instant::now();
    for r in [&silent, &half] {
        assert!(testkit::wait_for(WAIT, || matches!(
            r.recv(Duration::from_millis(20)),
            Got::Closed
        )));
    }
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert_eq!(good.subscribe(&["/x"]), "SUCCESS", "handshaken one stays");
    let log = broker.stop();
    assert_eq!(counter(&log, "handshake_timeouts"), 2, "{log}");
}

/// With `--max-conns-per-uid 3` a fourth connection of the same user is
/// closed before the handshake; once one closes, the next is taken.
#[test]
fn connections_per_uid_limit() {
    let broker = BrokerProc::start(&["--max-conns-per-uid", "3"], None);
    let held: Vec<Raw> = (0..3)
        .map(|i| Raw::handshake(&broker.sock, &format!("c{i}")).0)
        .collect();
    let refused = Raw::connect(&broker.sock);
    assert_eq!(refused.recv(WAIT), Got::Closed);
    drop(held);
    assert!(testkit::wait_for(WAIT, || {
        let r = Raw::connect(&broker.sock);
        matches!(r.recv(WAIT), Got::Datagram(d) if d.len() == 8)
    }));
    let log = broker.stop();
    assert!(counter(&log, "uid_refused") >= 1, "{log}");
    assert!(log.contains("connection refused"), "{log}");
}

/// SIGUSR1 logs the counters and current holdings without stopping.
#[test]
fn sigusr1_logs_the_counters() {
    let broker = BrokerProc::start(&[], None);
    let (r, _) = Raw::handshake(&broker.sock, "one");
    assert_eq!(r.subscribe(&["/a", "/b", "/c"]), "SUCCESS");
    broker.child.signal(libc::SIGUSR1);
    assert!(testkit::wait_for(WAIT, || broker
        .log_text()
        .contains("fims_server counters")));
    let log = broker.log_text();
    assert_eq!(counter(&log, "connections"), 1, "{log}");
    assert_eq!(counter(&log, "subscriptions"), 3, "{log}");
    drop(r);
    broker.stop();
}
