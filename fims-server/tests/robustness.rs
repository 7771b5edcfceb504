//! Garbage, bad handshakes, oversize bodies and slow receivers: the broker
//! stays up, drops what it must, counts it, and keeps serving everyone else.
//!
//! These run the broker in-process ([`fims_server::spawn`], the same code as
//! the binary) so the counters can be checked exactly after shutdown.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use fims::{Message, Method};
use fims_server::{Config, Running, Stats};

fn start(tweak: impl FnOnce(&mut Config)) -> (tempfile::TempDir, PathBuf, Running) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fims.sock");
    let mut cfg = Config::new(&sock);
    tweak(&mut cfg);
    let running = fims_server::spawn(cfg).expect("broker starts");
    (dir, sock, running)
}

fn expect_datagram(r: &Raw) -> Vec<u8> {
    match r.recv(WAIT) {
        Got::Datagram(d) => d,
        other => panic!("expected a datagram, got {other:?}"),
    }
}

#[test]
fn garbage_and_oversize_are_dropped_and_counted_and_the_connection_stays_up() {
    // The handshake number limits the whole datagram (header and strings included).
    let (_d, sock, running) = start(|c| c.max_len = 200);
    let mut rx = client(&sock, "rx", &["/"]);
    let (tx, max) = Raw::handshake(&sock, "tx");
    assert_eq!(max, 200);
    let msg = |method: &'static str, uri: &'static str, body: &'static [u8]| Message {
        method,
        uri,
        process_name: "tx",
        body,
        ..Message::default()
    };
    let enc = |m: Message<'_>| {
        let mut v = Vec::new();
        m.encode(&mut v).unwrap();
        v
    };
    let mut too_long = enc(msg("set", "/a", b"1"));
    too_long.push(b'x');
    let mut not_utf8 = enc(msg("set", "/ab", b"1"));
    not_utf8[12 + 3 + 1] = 0xff;
    let malformed: Vec<Vec<u8>> = vec![
        vec![1],
        vec![],
        too_long,
        not_utf8,
        enc(msg("set", "no_slash", b"1")),
    ];
    let unknown = [enc(msg("put", "/a", b"1")), enc(msg("SET", "/a", b"1"))];
    // "set" "/a" "tx" and the 12-byte header: 19 bytes before the body.
    let oversize = [
        enc(msg("set", "/a", &[b'1'; 182])),
        enc(msg("set", "/a", &[b'1'; 5000])),
        // exactly 200 bytes as sent, over once the broker writes the user name in
        enc(msg("set", "/a", &[b'1'; 181])),
    ];
    for dg in malformed.iter().chain(&unknown).chain(&oversize) {
        tx.send(dg).unwrap();
    }
    tx.send(&enc(msg("set", "/a", &[b'2'; 100]))).unwrap();
    tx.send(&enc(msg("pub", "/end", b"3"))).unwrap();
    assert_eq!(next(&mut rx).body, [b'2'; 100]);
    assert_eq!(next(&mut rx).uri, "/end");
    drop((tx, rx));
    let s = running.shutdown().unwrap();
    assert_eq!(
        (s.malformed, s.unknown_method, s.oversize, s.routed),
        (5, 2, 3, 2),
        "{s:?}"
    );
}

#[test]
fn bad_handshakes_close_only_that_connection() {
    let (_d, sock, running) = start(|_| {});
    let mut rx = client(&sock, "rx", &["/"]);
    let good_hs = fims::Handshake {
        version: 1,
        max_len: 0,
    }
    .encode();
    let mut v2 = good_hs;
    v2[0] = 2;
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("7 bytes", vec![good_hs[..7].to_vec()]),
        ("9 bytes", vec![[&good_hs[..], &[0]].concat()]),
        ("version 2", vec![v2.to_vec()]),
        ("empty name", vec![good_hs.to_vec(), vec![]]),
        ("256-byte name", vec![good_hs.to_vec(), vec![b'n'; 256]]),
        ("non-UTF-8 name", vec![good_hs.to_vec(), vec![0xff, 0xfe]]),
    ];
    for (what, datagrams) in &cases {
        let r = Raw::connect(&sock);
        assert_eq!(expect_datagram(&r).len(), 8, "{what}");
        for d in datagrams {
            r.send(d).unwrap();
        }
        assert_eq!(r.recv(WAIT), Got::Closed, "{what}: broker must close");
    }
    // Closed mid-handshake: right after connecting, and after the 8 bytes.
    drop(Raw::connect(&sock));
    let r = Raw::connect(&sock);
    expect_datagram(&r);
    r.send(&good_hs).unwrap();
    drop(r);
    // Padding garbage (one client sends 0x91EC) is fine.
    let r = Raw::connect(&sock);
    let mut hs = expect_datagram(&r);
    hs[2..4].copy_from_slice(&[0x91, 0xec]);
    r.send(&hs).unwrap();
    r.send(b"padded").unwrap();
    r.send_msg(&Message::new(Method::Pub, "/still/up", b"1"));
    let m = next(&mut rx);
    assert_eq!(
        (m.uri.as_str(), m.process_name.as_str()),
        ("/still/up", "padded")
    );
    drop((r, rx));
    let s = running.shutdown().unwrap();
    assert_eq!(s.bad_handshakes, 6, "{s:?}");
    assert_eq!(s.handshakes, 2, "{s:?}");
}

/// A subscriber that never reads: its socket fills, then its bounded queue,
/// then its messages are dropped and counted; the other subscriber gets every
/// message and new clients are served meanwhile.
#[test]
fn slow_receiver_overflows_alone() {
    const N: usize = 6000;
    const BATCH: usize = 500;
    let (_d, sock, running) = start(|c| c.queue_datagrams = 64);
    let (slow, _) = Raw::handshake(&sock, "slow");
    slow.send(&hex(
        "03000004000000000e000000737562636f707302000501042f636f70732f657373",
    ))
    .unwrap();
    assert_eq!(
        Message::decode(&expect_datagram(&slow)).unwrap().body,
        b"SUCCESS"
    );
    let mut fast = client(&sock, "fast", &["/cops"]);
    let mut tx = client(&sock, "tx", &[]);
    let body = vec![b'7'; 1000];
    for batch in 0..N / BATCH {
        for i in 0..BATCH {
            let uri = format!("/cops/{}", batch * BATCH + i);
            tx.send(Method::Pub, &uri, None, &body).unwrap();
        }
        // Pace on the fast reader only, so it never overflows itself.
        for i in 0..BATCH {
            assert_eq!(next(&mut fast).uri, format!("/cops/{}", batch * BATCH + i));
        }
    }
    // Broker still answers new clients while `slow` is stuck.
    let mut late = client(&sock, "late", &["/late"]);
    tx.send(Method::Set, "/late", None, b"1").unwrap();
    assert_eq!(next(&mut late).body, b"1");
    // Now `slow` reads: it gets an in-order prefix-with-gaps of the messages.
    let mut got = 0usize;
    let mut last = None;
    while let Got::Datagram(d) = slow.recv(Duration::from_secs(2)) {
        let m = Message::decode(&d).unwrap();
        let n: usize = m.uri["/cops/".len()..].parse().unwrap();
        assert!(last < Some(n), "out of order: {last:?} then {n}");
        last = Some(n);
        got += 1;
    }
    drop((slow, fast, tx, late));
    let s: Stats = running.shutdown().unwrap();
    assert!(s.overflow > 0, "{s:?}");
    assert!(got > 0 && got < N, "slow got {got}");
    assert_eq!(got as u64 + s.overflow, N as u64, "{s:?}");
    eprintln!("slow receiver: got {got}, overflow {}", s.overflow);
}

/// A closed connection's subscriptions go with it, even when its slot is
/// reused by the next client; a receiver that leaves with a full queue is
/// cleaned up without send errors.
#[test]
fn closed_connections_leave_nothing_behind() {
    let (_d, sock, running) = start(|c| c.queue_datagrams = 8);
    let mut tx = client(&sock, "tx", &[]);
    let stuck = client(&sock, "stuck", &["/x"]);
    let body = vec![b'x'; 200_000];
    for _ in 0..30 {
        tx.send(Method::Pub, "/x", None, &body).unwrap();
    }
    drop(stuck);
    // The next client likely takes the freed slot; it must not inherit /x.
    let mut fresh = client(&sock, "fresh", &["/y"]);
    tx.send(Method::Pub, "/x", None, b"not for fresh").unwrap();
    tx.send(Method::Pub, "/y", None, b"for fresh").unwrap();
    assert_eq!(next(&mut fresh).body, b"for fresh");
    drop((tx, fresh));
    let s = running.shutdown().unwrap();
    assert_eq!(s.send_errors, 0, "{s:?}");
    assert!(s.overflow > 0, "{s:?}");
}
