//! The broker core's rules, exactly, through the sans-IO driver: `sub`
//! replaces, empty segments, per-connection and per-uid limits, handshake
//! deadlines, the memory budget and who loses under a flood.

use std::time::Duration;

use fims::{Message, Method, Subscription};

use super::Sim;
use crate::Config;

fn cfg(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::new("/unused");
    tweak(&mut c);
    c
}

/// A handshaken client of uid 1000 named `name`, its handshake datagram read.
fn ready(sim: &mut Sim, name: &str) -> usize {
    let c = sim.connect(1000);
    sim.handshake(c, name);
    assert_eq!(sim.read(c, 1).len(), 1, "handshake datagram");
    c
}

fn sub_dg(subs: &[(&str, bool)]) -> Vec<u8> {
    let subs: Vec<_> = subs
        .iter()
        .map(|(u, p)| Subscription {
            uri: (*u).into(),
            pub_only: *p,
        })
        .collect();
    let mut body = Vec::new();
    fims::codec::encode_sub_body(&subs, &mut body).unwrap();
    enc(Message {
        method: "sub",
        body: &body,
        ..Message::default()
    })
}

fn enc(m: Message<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v).unwrap();
    v
}

/// Subscribes and returns the broker's answer body.
fn subscribe(sim: &mut Sim, c: usize, uris: &[&str]) -> String {
    let subs: Vec<_> = uris.iter().map(|u| (*u, false)).collect();
    sim.send(c, &sub_dg(&subs));
    let answer = sim.read(c, 1);
    let m = Message::decode(&answer[0]).unwrap();
    String::from_utf8(m.body.to_vec()).unwrap()
}

fn send(sim: &mut Sim, c: usize, method: Method, uri: &str, body: &[u8]) {
    sim.send(c, &enc(Message::new(method, uri, body)));
}

/// The URIs of everything `c` has received (and reads now).
fn uris(sim: &mut Sim, c: usize) -> Vec<String> {
    sim.read(c, usize::MAX)
        .iter()
        .map(|d| Message::decode(d).unwrap().uri.to_owned())
        .collect()
}

#[test]
fn sub_replaces_the_whole_set() {
    let mut sim = Sim::new(&cfg(|_| {}));
    let (tx, rx) = (ready(&mut sim, "tx"), ready(&mut sim, "rx"));
    assert_eq!(subscribe(&mut sim, rx, &["/a", "/b"]), "SUCCESS");
    assert_eq!(subscribe(&mut sim, rx, &["/b", "/c"]), "SUCCESS");
    for u in ["/a", "/b", "/c/x", "/a/y"] {
        send(&mut sim, tx, Method::Set, u, b"1");
    }
    assert_eq!(uris(&mut sim, rx), ["/b", "/c/x"]);
    assert_eq!(sim.stats().subscriptions, 2);
    sim.check().unwrap();
}

#[test]
fn a_sub_over_the_limit_is_refused_and_changes_nothing() {
    let mut sim = Sim::new(&cfg(|c| c.max_subs_per_conn = 3));
    let (tx, rx) = (ready(&mut sim, "tx"), ready(&mut sim, "rx"));
    assert_eq!(subscribe(&mut sim, rx, &["/keep"]), "SUCCESS");
    let answer = subscribe(&mut sim, rx, &["/a", "/b", "/c", "/d"]);
    assert!(
        answer.starts_with("FAILURE: too many subscriptions"),
        "{answer}"
    );
    // Duplicates (after collapsing) count once: 3 distinct URIs fit.
    send(&mut sim, tx, Method::Set, "/keep", b"1");
    assert_eq!(uris(&mut sim, rx), ["/keep"]);
    let answer = subscribe(&mut sim, rx, &["/a", "/a/", "/a//", "/b", "//c"]);
    assert_eq!(answer, "SUCCESS");
    send(&mut sim, tx, Method::Set, "/keep", b"1");
    send(&mut sim, tx, Method::Set, "/c", b"1");
    assert_eq!(uris(&mut sim, rx), ["/c"]);
    let s = sim.stats();
    assert_eq!((s.sub_refused, s.too_many_subs, s.subscriptions), (1, 1, 3));
}

#[test]
fn empty_segments_collapse_in_subscriptions_and_messages() {
    let mut sim = Sim::new(&cfg(|_| {}));
    let (tx, ef, e_f_) = (
        ready(&mut sim, "tx"),
        ready(&mut sim, "ef"),
        ready(&mut sim, "e_f_"),
    );
    assert_eq!(subscribe(&mut sim, ef, &["/e//f"]), "SUCCESS");
    assert_eq!(subscribe(&mut sim, e_f_, &["/e/f/"]), "SUCCESS");
    for u in ["/e/f", "/e//f", "/e/f/", "//e/f/g", "/e/fg", "/e"] {
        send(&mut sim, tx, Method::Set, u, b"1");
    }
    // Forwarded as written; routed as collapsed.
    let want = ["/e/f", "/e//f", "/e/f/", "//e/f/g"];
    assert_eq!(uris(&mut sim, ef), want);
    assert_eq!(uris(&mut sim, e_f_), want);
}

#[test]
fn a_pub_nobody_wants_is_only_counted() {
    let mut sim = Sim::new(&cfg(|_| {}));
    let (tx, rx) = (ready(&mut sim, "tx"), ready(&mut sim, "rx"));
    subscribe(&mut sim, rx, &["/wanted"]);
    for _ in 0..100 {
        send(&mut sim, tx, Method::Pub, "/junk", b"1");
    }
    let s = sim.stats();
    assert_eq!((s.routed, s.unrouted, s.delivered), (100, 100, 1), "{s:?}");
}

#[test]
fn silent_connections_are_closed_at_the_handshake_deadline() {
    let mut sim = Sim::new(&cfg(|c| c.handshake_timeout = Duration::from_secs(3)));
    let silent = sim.connect(1);
    let half = sim.connect(1);
    sim.send(
        half,
        &fims::Handshake {
            version: 1,
            max_len: 0,
        }
        .encode(),
    );
    let good = ready(&mut sim, "good");
    sim.advance(Duration::from_millis(2999));
    assert!(sim.is_open(silent) && sim.is_open(half));
    sim.advance(Duration::from_millis(1));
    assert!(!sim.is_open(silent) && !sim.is_open(half));
    assert!(sim.is_open(good));
    let late = sim.connect(1);
    sim.advance(Duration::from_secs(2));
    assert!(sim.is_open(late), "its own deadline, not the first one's");
    let s = sim.stats();
    assert_eq!((s.handshake_timeouts, s.connections), (2, 2), "{s:?}");
}

#[test]
fn connections_per_uid_are_limited_when_asked() {
    let mut sim = Sim::new(&cfg(|c| c.max_conns_per_uid = 2));
    let a = sim.connect(7);
    let _b = sim.connect(7);
    let c = sim.connect(7);
    let other = sim.connect(8);
    assert!(sim.is_open(a) && !sim.is_open(c) && sim.is_open(other));
    assert_eq!(sim.pending(c), 0, "refused before the handshake");
    sim.hangup(a);
    let d = sim.connect(7);
    assert!(sim.is_open(d));
    assert_eq!(sim.stats().uid_refused, 1);
    sim.check().unwrap();
}

#[test]
fn a_flood_loses_its_own_messages_in_a_full_queue_not_the_quiet_senders() {
    // `cops` subscribes /cops and reads, but slower than a junk flood.
    let mut sim = Sim::new(&cfg(|c| c.queue_datagrams = 16));
    let (cops, junk, proc_a) = (
        ready(&mut sim, "cops"),
        ready(&mut sim, "junk"),
        ready(&mut sim, "a"),
    );
    subscribe(&mut sim, cops, &["/cops"]);
    sim.set_room(cops, 0);
    let mut heartbeats = 0;
    for round in 0..50 {
        for _ in 0..20 {
            send(&mut sim, junk, Method::Pub, "/cops/junk", b"x");
        }
        send(
            &mut sim,
            proc_a,
            Method::Set,
            "/cops/heartbeat/a",
            round.to_string().as_bytes(),
        );
        // cops reads 8 datagrams per round: its socket takes 8 more.
        sim.set_room(cops, 8);
        for d in sim.read(cops, 8) {
            heartbeats += usize::from(Message::decode(&d).unwrap().uri == "/cops/heartbeat/a");
        }
        sim.check().unwrap();
    }
    sim.set_room(cops, 1 << 20);
    heartbeats += uris(&mut sim, cops)
        .iter()
        .filter(|u| *u == "/cops/heartbeat/a")
        .count();
    assert_eq!(heartbeats, 50, "every heartbeat reply reaches cops");
    assert!(sim.stats().overflow > 0);
}

#[test]
fn the_budget_sheds_the_largest_queues_first() {
    // Budget for about 10 datagrams of 1000 bytes in all queues together.
    let mut sim = Sim::new(&cfg(|c| c.max_queued_bytes = 10 * 1064));
    let tx = ready(&mut sim, "tx");
    let stuck: Vec<usize> = (0..4)
        .map(|i| ready(&mut sim, &format!("stuck{i}")))
        .collect();
    let quiet = ready(&mut sim, "quiet");
    for (i, &s) in stuck.iter().enumerate() {
        subscribe(&mut sim, s, &[&format!("/s/{i}")]);
        sim.set_room(s, 0);
    }
    subscribe(&mut sim, quiet, &["/q"]);
    sim.set_room(quiet, 0);
    let body = vec![b'b'; 1000 - 20];
    for round in 0..30 {
        for i in 0..4 {
            send(&mut sim, tx, Method::Pub, &format!("/s/{i}"), &body);
        }
        if round % 10 == 0 {
            send(&mut sim, tx, Method::Pub, "/q", &body[..10]);
        }
        sim.check().unwrap();
    }
    let s = sim.stats();
    assert!(s.shed > 0 && s.queued_bytes <= 10 * 1064, "{s:?}");
    assert_eq!(sim.drops(quiet), (0, 0), "the small queue loses nothing");
    for &st in &stuck {
        assert!(sim.drops(st).1 > 0, "every large queue shed");
    }
    sim.set_room(quiet, 100);
    assert_eq!(uris(&mut sim, quiet).len(), 3);
}

/// The bodies of everything `c` has received (and reads now).
fn bodies(sim: &mut Sim, c: usize) -> Vec<String> {
    sim.read(c, usize::MAX)
        .iter()
        .map(|d| Message::decode(d).unwrap().body_str().unwrap().to_owned())
        .collect()
}

#[test]
fn one_turns_batch_goes_out_in_order_and_what_did_not_fit_is_queued_behind() {
    let mut sim = Sim::new(&cfg(|_| {}));
    let (tx, a, b) = (
        ready(&mut sim, "tx"),
        ready(&mut sim, "a"),
        ready(&mut sim, "b"),
    );
    subscribe(&mut sim, a, &["/x"]);
    subscribe(&mut sim, b, &["/x"]);
    sim.set_room(a, 3);
    sim.cork(true);
    for i in 0..8 {
        send(&mut sim, tx, Method::Pub, "/x/y", i.to_string().as_bytes());
    }
    assert_eq!(sim.pending(a) + sim.pending(b), 0, "nothing sent mid-turn");
    sim.check().unwrap();
    sim.cork(false);
    let want: Vec<String> = (0..8).map(|i| i.to_string()).collect();
    assert_eq!(bodies(&mut sim, b), want);
    assert_eq!(sim.pending(a), 3, "a's socket took 3, 5 are queued");
    sim.set_room(a, 100);
    assert_eq!(bodies(&mut sim, a).len(), 8);
    let s = sim.stats();
    assert_eq!(
        (s.delivered, s.overflow, s.queued_bytes),
        (16 + 2, 0, 0),
        "{s:?}"
    );
    sim.check().unwrap();
}

#[test]
fn a_sub_answer_in_a_batch_comes_after_what_was_routed_before_it() {
    let mut sim = Sim::new(&cfg(|_| {}));
    let (tx, rx) = (ready(&mut sim, "tx"), ready(&mut sim, "rx"));
    subscribe(&mut sim, rx, &["/x"]);
    sim.cork(true);
    send(&mut sim, tx, Method::Pub, "/x", b"before");
    sim.send(rx, &sub_dg(&[("/x", false), ("/y", false)]));
    send(&mut sim, tx, Method::Pub, "/y", b"after");
    sim.cork(false);
    assert_eq!(bodies(&mut sim, rx), ["before", "SUCCESS", "after"]);
}

/// A receiver that closes while its datagrams wait in the batch loses them;
/// a new connection that takes its slot in the same turn gets none of them.
#[test]
fn a_closed_receivers_waiting_datagrams_never_reach_the_next_in_its_slot() {
    let mut sim = Sim::new(&cfg(|_| {}));
    let (tx, gone) = (ready(&mut sim, "tx"), ready(&mut sim, "gone"));
    subscribe(&mut sim, gone, &["/x"]);
    sim.cork(true);
    send(&mut sim, tx, Method::Pub, "/x", b"for gone");
    sim.hangup(gone);
    let next = sim.connect(1000);
    sim.handshake(next, "next");
    sim.check().unwrap();
    sim.cork(false);
    assert_eq!(sim.read(next, 10).len(), 1, "its handshake only");
    assert!(!sim.is_open(gone));
    sim.check().unwrap();
}

#[test]
fn a_peer_that_vanished_mid_turn_is_closed_when_the_batch_goes_out() {
    let mut sim = Sim::new(&cfg(|_| {}));
    let (tx, v, ok) = (
        ready(&mut sim, "tx"),
        ready(&mut sim, "v"),
        ready(&mut sim, "ok"),
    );
    subscribe(&mut sim, v, &["/x"]);
    subscribe(&mut sim, ok, &["/x"]);
    sim.cork(true);
    send(&mut sim, tx, Method::Pub, "/x", b"1");
    sim.vanish(v);
    send(&mut sim, tx, Method::Pub, "/x", b"2");
    sim.cork(false);
    assert!(!sim.is_open(v));
    assert_eq!(bodies(&mut sim, ok), ["1", "2"]);
    sim.check().unwrap();
}
