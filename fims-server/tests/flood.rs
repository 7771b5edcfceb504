//! Fair service under a flood, against a real `fims_server` process: one
//! client publishes at full speed while a request/reply pair keeps its round
//! trip under a bound, and the flood's slow receiver is the one that loses
//! messages; a `pub /cops/junk` flood does not cost `cops` a single heartbeat
//! reply while it keeps reading. Figures are printed (`--nocapture`) and
//! recorded in docs/RELIABILITY.md. The two tests run one at a time (each
//! loads both cores).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fims::{Message, Method};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long each flood lasts.
const FLOOD: Duration = Duration::from_secs(3);

/// Starts a client that sends `pub <uri>` with a 200-byte body as fast as the
/// broker takes them until `stop`; returns the count sent.
fn flooder(
    sock: &std::path::Path,
    uri: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let (tx, _) = Raw::handshake(sock, "flooder");
    let mut dg = Vec::new();
    Message::new(Method::Pub, uri, &[b'j'; 200])
        .encode(&mut dg)
        .expect("encode");
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            tx.send(&dg).expect("flood send");
            n += 1;
        }
        n
    })
}

/// Answers every request on `/b` with a `set` to its replyto.
fn answerer(sock: &std::path::Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut b = client(sock, "answerer", &["/b"]);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(Some(m)) = b.recv(Some(Duration::from_millis(50))) {
                let (reply, body) = (m.replyto.to_owned(), m.body.to_vec());
                if !reply.is_empty() {
                    b.send(Method::Set, &reply, None, &body).expect("answer");
                }
            }
        }
    })
}

/// Round trips of `get /b/x` from a fresh client during `for_how_long`, in µs.
fn round_trips(sock: &std::path::Path, for_how_long: Duration) -> Vec<u64> {
    let mut a = client(sock, "requester", &["/a"]);
    let mut rtts = Vec::new();
    let end = Instant::now() + for_how_long;
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let t = Instant::now();
        let reply = a
            .request_on(
                Method::Get,
                "/b/x",
                &format!("/a/reply/{n}"),
                b"",
                Duration::from_secs(2),
            )
            .unwrap_or_else(|e| panic!("request {n} not answered: {e}"));
        assert_eq!(reply.uri, format!("/a/reply/{n}"));
        rtts.push(t.elapsed().as_micros() as u64);
        std::thread::sleep(Duration::from_millis(2));
    }
    rtts.sort_unstable();
    rtts
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[test]
fn request_reply_stays_fast_while_another_client_floods() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let broker = BrokerProc::start(&[], None);
    let stop = Arc::new(AtomicBool::new(false));
    let ans = answerer(&broker.sock, Arc::clone(&stop));
    let quiet = round_trips(&broker.sock, Duration::from_millis(500));
    // The flood's receiver reads, but slowly (64 datagrams per 5 ms).
    let (slow, _) = Raw::handshake(&broker.sock, "slow");
    assert_eq!(slow.subscribe(&["/flood"]), "SUCCESS");
    let slow_got = Arc::new(AtomicU64::new(0));
    let (got, done) = (Arc::clone(&slow_got), Arc::clone(&stop));
    let slow_reader = std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            for _ in 0..64 {
                if let Got::Datagram(_) = slow.recv(Duration::from_millis(1)) {
                    got.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let flood_stop = Arc::new(AtomicBool::new(false));
    let flood = flooder(&broker.sock, "/flood/x", Arc::clone(&flood_stop));
    std::thread::sleep(Duration::from_millis(200));
    let flooded = round_trips(&broker.sock, FLOOD);
    flood_stop.store(true, Ordering::Relaxed);
    let sent = flood.join().expect("flooder");
    stop.store(true, Ordering::Relaxed);
    ans.join().expect("answerer");
    slow_reader.join().expect("slow reader");
    let log = broker.stop();
    let lost = sent - slow_got.load(Ordering::Relaxed);
    eprintln!(
        "flood of {sent} pubs in {FLOOD:?} ({:.0}/s): round trip quiet p50 {} us p99 {} us max {} us; \
         flooded ({} round trips) p50 {} us p99 {} us max {} us; the slow flood receiver lost {lost}; \
         overflow counted {}",
        sent as f64 / FLOOD.as_secs_f64(),
        pct(&quiet, 0.5), pct(&quiet, 0.99), pct(&quiet, 1.0),
        flooded.len(), pct(&flooded, 0.5), pct(&flooded, 0.99), pct(&flooded, 1.0),
        counter(&log, "overflow"),
    );
    // Every request was answered (round_trips panics otherwise); the bound is
    // generous for a loaded 2-core machine running debug builds.
    assert!(pct(&flooded, 0.99) < 50_000, "p99 round trip under a flood");
    // Lost = dropped for the slow receiver, plus what was still queued when it stopped.
    let overflow = counter(&log, "overflow");
    assert!(
        overflow > 0 && overflow <= lost,
        "the flood's receiver loses: {log}"
    );
}

#[test]
fn cops_keeps_every_heartbeat_reply_under_a_junk_flood() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let broker = BrokerProc::start(&[], None);
    // `cops` subscribes /cops and keeps reading, slower than the flood.
    let mut cops = client(&broker.sock, "cops", &["/cops"]);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&stop);
    let reader = std::thread::spawn(move || {
        let (mut beats, mut junk) = (Vec::new(), 0u64);
        loop {
            match cops.recv(Some(Duration::from_millis(200))) {
                Ok(Some(m)) if m.uri == "/cops/heartbeat/p" => {
                    beats.push(String::from_utf8_lossy(m.body).into_owned())
                }
                Ok(Some(_)) => {
                    junk += 1;
                    if junk % 32 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Ok(None) if done.load(Ordering::Relaxed) => return (beats, junk),
                Ok(None) => {}
                Err(e) => panic!("cops recv: {e}"),
            }
        }
    });
    let flood_stop = Arc::new(AtomicBool::new(false));
    let flood = flooder(&broker.sock, "/cops/junk", Arc::clone(&flood_stop));
    std::thread::sleep(Duration::from_millis(200));
    // A monitored process answers a heartbeat every 5 ms during the flood.
    let mut p = client(&broker.sock, "p", &[]);
    let beats_sent = (FLOOD.as_millis() / 5) as u64;
    for n in 0..beats_sent {
        p.send(
            Method::Set,
            "/cops/heartbeat/p",
            None,
            n.to_string().as_bytes(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    flood_stop.store(true, Ordering::Relaxed);
    let sent = flood.join().expect("flooder");
    stop.store(true, Ordering::Relaxed);
    let (beats, junk) = reader.join().expect("cops reader");
    let log = broker.stop();
    eprintln!(
        "/cops/junk flood of {sent} pubs: cops read {junk} junk ({} lost) and {}/{beats_sent} heartbeat replies",
        sent - junk,
        beats.len()
    );
    let want: Vec<String> = (0..beats_sent).map(|n| n.to_string()).collect();
    assert_eq!(beats, want, "every heartbeat reply, in order");
    assert!(
        sent > junk && counter(&log, "overflow") > 0,
        "the junk is what was dropped: {log}"
    );
}
