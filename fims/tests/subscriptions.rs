//! The blocking client's subscription set on the wire: one `sub` holding the
//! complete set, sent whole after every change and after a reconnect (a `sub`
//! replaces the set on the existing broker). The exact datagrams are read off a
//! recording fake broker; the behaviour a program sees is checked on our broker.

mod common;

use std::time::Duration;

use common::*;
use fims::blocking::Client;
use fims::{Error, Method, Subscription};
use testkit::fake_broker::FakeBroker;
use testkit::Broker;

#[test]
fn every_change_sends_the_whole_set_in_one_sub() {
    let fake = FakeBroker::start(answer_subs_and_gets);
    let mut c = Client::connect_to(fake.socket(), "setter").unwrap();
    c.subscribe(&["/a"]).unwrap();
    c.subscribe_with(&[Subscription::pub_only("/b"), Subscription::all("/c")])
        .unwrap();
    // Already in the set (a trailing `/` is the same URI): the set is resent unchanged.
    c.subscribe(&["/a/"]).unwrap();
    // Wider than before: /b is no longer pub-only.
    c.subscribe(&["/b"]).unwrap();
    let dgs = fake.wait_datagrams(0, 4, WAIT);
    assert_eq!(dgs.len(), 4, "one datagram per call");
    let set1 = [Subscription::all("/a")];
    let set2 = [
        Subscription::all("/a"),
        Subscription::pub_only("/b"),
        Subscription::all("/c"),
    ];
    let set4 = [
        Subscription::all("/a"),
        Subscription::all("/b"),
        Subscription::all("/c"),
    ];
    assert_eq!(dgs[0], sub_datagram("setter", &set1));
    assert_eq!(dgs[1], sub_datagram("setter", &set2));
    assert_eq!(dgs[2], sub_datagram("setter", &set2));
    assert_eq!(dgs[3], sub_datagram("setter", &set4));
    assert_eq!(c.subscriptions(), &set4);
    // An empty list changes nothing and sends nothing.
    c.subscribe(&[]).unwrap();
    c.send(Method::Pub, "/sentinel", None, b"").unwrap();
    let dgs = fake.wait_datagrams(0, 5, WAIT);
    assert_eq!(decode(&dgs[4]).uri, "/sentinel");
}

#[test]
fn set_subscriptions_replaces_the_set() {
    let fake = FakeBroker::start(answer_subs_and_gets);
    let mut c = Client::connect_to(fake.socket(), "replacer").unwrap();
    c.subscribe(&["/a", "/b"]).unwrap();
    let only = [Subscription::pub_only("/b"), Subscription::all("/d")];
    c.set_subscriptions(&only).unwrap();
    assert_eq!(c.subscriptions(), &only);
    let e = c.set_subscriptions(&[]).unwrap_err();
    assert!(matches!(e, Error::NoSubscriptions), "{e}");
    assert!(e.to_string().contains("no unsubscribe"), "{e}");
    assert_eq!(c.subscriptions(), &only, "a refused change keeps the set");
    c.send(Method::Pub, "/sentinel", None, b"").unwrap();
    let dgs = fake.wait_datagrams(0, 3, WAIT);
    assert_eq!(dgs[1], sub_datagram("replacer", &only));
    assert_eq!(
        decode(&dgs[2]).uri,
        "/sentinel",
        "nothing sent for the empty set"
    );
}

#[test]
fn the_reply_prefix_joins_the_set() {
    let fake = FakeBroker::start(answer_subs_and_gets);
    let mut c = Client::connect_to(fake.socket(), "asker").unwrap();
    c.subscribe(&["/mine"]).unwrap();
    let a = c.request(Method::Get, "/svc/x", b"", WAIT).unwrap();
    assert_eq!(a.body, b"\"answer\"");
    // The second request reuses the subscribed prefix: no new `sub`.
    c.request(Method::Get, "/svc/y", b"", WAIT).unwrap();
    let dgs = fake.wait_datagrams(0, 4, WAIT);
    let sub2 = decode(&dgs[1]);
    assert_eq!(sub2.method, "sub");
    let uris = sub_uris(&dgs[1]);
    assert_eq!(uris.len(), 2, "{uris:?}");
    assert_eq!(uris[0], ("/mine".to_string(), false));
    assert!(uris[1].0.starts_with("/_fims_reply/"), "{uris:?}");
    let get1 = decode(&dgs[2]);
    assert_eq!((get1.method.as_str(), get1.uri.as_str()), ("get", "/svc/x"));
    assert!(get1.replyto.starts_with(&uris[1].0));
    assert_eq!(decode(&dgs[3]).uri, "/svc/y");
    // request_on with a replyto the set does not cover adds it to the set.
    c.request_on(Method::Get, "/svc/z", "/answers/z", b"", WAIT)
        .unwrap();
    let dgs = fake.wait_datagrams(0, 6, WAIT);
    let uris = sub_uris(&dgs[4]);
    assert_eq!(uris.len(), 3, "{uris:?}");
    assert_eq!(uris[2], ("/answers/z".to_string(), false));
    assert_eq!(decode(&dgs[5]).uri, "/svc/z");
    assert_eq!(c.subscriptions().len(), 3);
}

#[test]
fn reconnect_resends_the_whole_set_in_one_sub() {
    let fake = FakeBroker::start(answer_subs_and_gets);
    let mut c = Client::connect_to(fake.socket(), "again").unwrap();
    let uris: Vec<String> = (0..70).map(|i| format!("/u/{i}")).collect();
    let refs: Vec<&str> = uris.iter().map(String::as_str).collect();
    c.subscribe(&refs[..40]).unwrap();
    c.subscribe_with(&[Subscription::pub_only("/p")]).unwrap();
    c.subscribe(&refs[40..]).unwrap();
    let before = fake.wait_datagrams(0, 3, WAIT);
    fake.disconnect_all();
    let e = c.recv(Some(WAIT)).unwrap_err();
    assert!(e.is_disconnect(), "{e}");
    c.reconnect().unwrap();
    let after = fake.wait_datagrams(1, 1, WAIT);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0], before[2], "the same complete set, in one sub");
    assert_eq!(sub_uris(&after[0]).len(), 71);
    assert_eq!(fake.name(1), "again");
}

#[test]
fn more_than_255_is_refused_before_anything_is_sent() {
    let fake = FakeBroker::start(answer_subs_and_gets);
    let mut c = Client::connect_to(fake.socket(), "greedy").unwrap();
    let uris: Vec<String> = (0..256).map(|i| format!("/n/{i}")).collect();
    let refs: Vec<&str> = uris.iter().map(String::as_str).collect();
    c.subscribe(&refs[..255]).unwrap();
    let e = c.subscribe(&refs[255..]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooManySubscriptions {
                count: 256,
                max: 255
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("at most 255"), "{e}");
    assert_eq!(c.subscriptions().len(), 255, "the set is unchanged");
    let e = c.request(Method::Get, "/svc", b"", WAIT).unwrap_err();
    assert!(matches!(e, Error::TooManySubscriptions { .. }), "{e}");
    c.send(Method::Pub, "/sentinel", None, b"").unwrap();
    let dgs = fake.wait_datagrams(0, 2, WAIT);
    assert_eq!(dgs.len(), 2);
    assert_eq!(sub_uris(&dgs[0]).len(), 255);
    assert_eq!(dgs[0][12 + 3 + 6], 255, "count byte of the sub body");
    assert_eq!(decode(&dgs[1]).uri, "/sentinel");
}

#[test]
fn a_refused_sub_keeps_the_old_set_for_reconnects() {
    let fake = FakeBroker::start(|dg| {
        let m = decode(dg);
        if m.method == "sub" && String::from_utf8_lossy(&m.body).contains("/refused") {
            return vec![broker_answer(b"FAILURE: not today")];
        }
        answer_subs_and_gets(dg)
    });
    let mut c = Client::connect_to(fake.socket(), "kept").unwrap();
    c.subscribe(&["/ok"]).unwrap();
    let e = c.subscribe(&["/refused"]).unwrap_err();
    assert!(
        matches!(&e, Error::SubscribeRefused(s) if s == "FAILURE: not today"),
        "{e}"
    );
    assert_eq!(c.subscriptions(), &[Subscription::all("/ok")]);
    fake.disconnect_all();
    assert!(c.recv(Some(WAIT)).unwrap_err().is_disconnect());
    c.reconnect().unwrap();
    let after = fake.wait_datagrams(1, 1, WAIT);
    assert_eq!(after[0], sub_datagram("kept", &[Subscription::all("/ok")]));
}

#[test]
fn invalid_uris_are_refused_before_anything_is_sent() {
    let fake = FakeBroker::start(answer_subs_and_gets);
    let mut c = Client::connect_to(fake.socket(), "strict").unwrap();
    for bad in ["no_slash", "/a//b", &format!("/{}", "x".repeat(255))] {
        let e = c.subscribe(&["/fine", bad]).unwrap_err();
        assert!(matches!(e, Error::InvalidUri { .. }), "{bad}: {e}");
    }
    assert!(c.subscriptions().is_empty());
    c.send(Method::Pub, "/sentinel", None, b"").unwrap();
    let dgs = fake.wait_datagrams(0, 1, WAIT);
    assert_eq!(decode(&dgs[0]).uri, "/sentinel");
}

// ---- on our broker: what a program sees ----

#[test]
fn request_after_subscribe_keeps_the_earlier_subscriptions() {
    let b = Broker::start();
    let mut svc = client(&b, "svc", &["/svc"]);
    let t = std::thread::spawn(move || {
        let m = next(&mut svc);
        svc.send(Method::Set, &m.replyto, None, b"1").unwrap();
    });
    let mut c = client(&b, "c", &["/first", "/second"]);
    c.request(Method::Get, "/svc/x", b"", WAIT).unwrap();
    t.join().unwrap();
    let mut tx = client(&b, "tx", &[]);
    tx.send(Method::Set, "/first/x", None, b"f").unwrap();
    tx.send(Method::Set, "/second/x", None, b"s").unwrap();
    assert_eq!(next(&mut c).body, b"f");
    assert_eq!(next(&mut c).body, b"s");
}

#[test]
fn two_hundred_fifty_five_uris_in_one_sub_all_route() {
    let b = Broker::start();
    let uris: Vec<String> = (0..255).map(|i| format!("/many/{i}")).collect();
    let refs: Vec<&str> = uris.iter().map(String::as_str).collect();
    let mut rx = client(&b, "rx", &refs);
    assert_eq!(rx.subscriptions().len(), 255);
    let mut tx = client(&b, "tx", &[]);
    for i in [0, 63, 64, 200, 254] {
        tx.send(
            Method::Pub,
            &format!("/many/{i}/x"),
            None,
            i.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(next(&mut rx).body, i.to_string().as_bytes());
    }
    tx.send(Method::Pub, "/many/255", None, b"no").unwrap();
    assert!(rx.recv(Some(Duration::from_millis(200))).unwrap().is_none());
}

#[test]
fn reconnect_after_a_restart_restores_the_set_and_the_reply_prefix() {
    let mut b = Broker::start();
    let mut c = client(&b, "c", &["/keep"]);
    c.subscribe_with(&[Subscription::pub_only("/pubs")])
        .unwrap();
    let mut svc = client(&b, "svc", &["/svc"]);
    let t = std::thread::spawn(move || {
        let m = next(&mut svc);
        svc.send(Method::Set, &m.replyto, None, b"1").unwrap();
    });
    c.request(Method::Get, "/svc/x", b"", WAIT).unwrap();
    t.join().unwrap();
    b.kill();
    b.restart();
    assert!(c.recv(Some(WAIT)).unwrap_err().is_disconnect());
    c.reconnect().unwrap();
    assert_eq!(c.subscriptions().len(), 3);
    let mut svc = client(&b, "svc", &["/svc"]);
    let t = std::thread::spawn(move || {
        let m = next(&mut svc);
        svc.send(Method::Set, &m.replyto, None, b"2").unwrap();
    });
    assert_eq!(
        c.request(Method::Get, "/svc/y", b"", WAIT).unwrap().body,
        b"2"
    );
    t.join().unwrap();
    let mut tx = client(&b, "tx", &[]);
    tx.send(Method::Set, "/pubs/x", None, b"not for pub-only")
        .unwrap();
    tx.send(Method::Set, "/keep/x", None, b"k").unwrap();
    tx.send(Method::Pub, "/pubs/x", None, b"p").unwrap();
    assert_eq!(next(&mut c).body, b"k");
    assert_eq!(next(&mut c).body, b"p");
}
