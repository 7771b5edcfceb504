//! The blocking client's connect and handshake never block past a deadline,
//! and `Connecting` sets a connection up step by step without blocking at all.
//! The brokers here are raw listeners the test drives by hand: one that never
//! accepts (a full backlog), one that accepts and stays silent.

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::*;
use fims::blocking::{Client, Connecting, Progress, Wait};
use fims::{Error, Method, Subscription};
use testkit::fake_broker::{
    recv_datagram, send_datagram, Received, SeqpacketListener, HANDSHAKE, SUB_SUCCESS,
};

#[test]
fn a_silent_broker_times_out_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let _listener = SeqpacketListener::bind(&path, 16);
    let t = Duration::from_millis(300);
    let start = Instant::now();
    let e = Client::connect_timeout(&path, "patient", t).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(e, Error::Timeout(300)), "{e}");
    assert!(took >= t && took < t + SLACK, "{took:?}");
}

#[test]
fn a_full_backlog_times_out_at_the_deadline_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let (_listener, path, _held) = full_backlog(&dir);
    let t = Duration::from_millis(300);
    let start = Instant::now();
    let e = Client::connect_timeout(&path, "patient", t).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(e, Error::Timeout(300)), "{e}");
    assert!(took >= t && took < t + SLACK, "{took:?}");
}

#[test]
fn no_broker_is_reported_by_start_itself() {
    let dir = tempfile::tempdir().unwrap();
    let e = Connecting::start(dir.path().join("none.sock"), "x", WAIT).unwrap_err();
    assert!(matches!(e, Error::BrokerNotRunning { .. }), "{e}");
    let e = Connecting::start(dir.path().join("none.sock"), "", WAIT).unwrap_err();
    assert!(matches!(e, Error::NameLength { len: 0, .. }), "{e}");
}

/// Each `advance` returns at once; the connection is ready once the broker's
/// handshake and `SUCCESS` have come, and messages that came before the answer
/// are kept for `recv`.
#[test]
fn connecting_advances_step_by_step_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steps.sock");
    let listener = SeqpacketListener::bind(&path, 16);
    let subs = [Subscription::all("/steps"), Subscription::pub_only("/news")];
    let c = Connecting::start(&path, "stepper", WAIT)
        .unwrap()
        .with_subscriptions(&subs)
        .unwrap();
    assert!(matches!(c.wait(), Wait::Readable(_)), "connected at once");
    let c = pending(advance_quickly(c));
    assert!(
        matches!(c.wait(), Wait::Readable(_)),
        "waits for the broker's handshake"
    );

    let conn = listener.accept(WAIT).expect("the client connected");
    assert!(send_datagram(conn.as_fd(), &HANDSHAKE));
    assert!(c.wait_until(Instant::now() + WAIT).unwrap(), "readable");
    let c = pending(advance_quickly(c));
    assert!(
        matches!(c.wait(), Wait::Readable(_)),
        "waits for the sub answer"
    );
    assert_eq!(next_dg(&conn), HANDSHAKE, "max_len echoed, version 1");
    assert_eq!(next_dg(&conn), b"stepper");
    assert_eq!(
        next_dg(&conn),
        sub_datagram("stepper", &subs),
        "one sub, whole set"
    );

    let c = pending(advance_quickly(c));
    let mut news = Vec::new();
    fims::Message::new(Method::Pub, "/news/1", b"early")
        .encode(&mut news)
        .unwrap();
    assert!(send_datagram(conn.as_fd(), &news));
    assert!(send_datagram(conn.as_fd(), SUB_SUCCESS));
    assert!(c.wait_until(Instant::now() + WAIT).unwrap());
    let mut client = match advance_quickly(c) {
        Progress::Ready(client) => client,
        Progress::Pending(c) => {
            // Both datagrams were sent before the wait ended; one more step at most.
            assert!(c.wait_until(Instant::now() + WAIT).unwrap());
            match advance_quickly(c) {
                Progress::Ready(client) => client,
                Progress::Pending(_) => panic!("not ready after SUCCESS"),
            }
        }
    };
    assert_eq!(client.subscriptions(), &subs);
    assert_eq!(client.max_len(), fims::DEFAULT_MAX_LEN);
    let m = client.recv(Some(WAIT)).unwrap().unwrap();
    assert_eq!((m.uri, m.body), ("/news/1", &b"early"[..]));
    // The client is in blocking mode again: a send goes through, recv waits.
    client.send(Method::Set, "/x", None, b"1").unwrap();
    assert_eq!(decode(&next_dg(&conn)).uri, "/x");
    assert!(client
        .recv(Some(Duration::from_millis(20)))
        .unwrap()
        .is_none());
}

#[test]
fn connecting_fails_at_its_deadline_and_on_a_refused_sub() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.sock");
    let listener = SeqpacketListener::bind(&path, 16);
    let c = Connecting::start(&path, "late", Duration::from_millis(100)).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let e = c.advance().unwrap_err();
    assert!(matches!(e, Error::Timeout(100)), "{e}");
    drop(listener.accept(WAIT));

    let c = Connecting::start(&path, "refused", WAIT)
        .unwrap()
        .with_subscriptions(&[Subscription::all("/no")])
        .unwrap();
    let conn = listener.accept(WAIT).expect("connected");
    assert!(send_datagram(conn.as_fd(), &HANDSHAKE));
    assert!(c.wait_until(Instant::now() + WAIT).unwrap());
    let c = pending(advance_quickly(c));
    for _ in 0..3 {
        next_dg(&conn);
    }
    assert!(send_datagram(conn.as_fd(), &broker_answer(b"FAILURE: no")));
    let e = c.finish().unwrap_err();
    assert!(
        matches!(&e, Error::SubscribeRefused(s) if s == "FAILURE: no"),
        "{e}"
    );
}

#[test]
fn with_subscriptions_refuses_a_set_that_does_not_fit_one_sub() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.sock");
    let _listener = SeqpacketListener::bind(&path, 16);
    let subs: Vec<Subscription> = (0..256)
        .map(|i| Subscription::all(format!("/b/{i}")))
        .collect();
    let e = Connecting::start(&path, "big", WAIT)
        .unwrap()
        .with_subscriptions(&subs)
        .unwrap_err();
    assert!(
        matches!(e, Error::TooManySubscriptions { count: 256, .. }),
        "{e}"
    );
}

/// Advances once and checks it returned at once (never waiting for the broker).
fn advance_quickly(c: Connecting) -> Progress {
    let start = Instant::now();
    let p = c.advance().unwrap();
    // A blocking step would wait for the 5 s handshake timeout; returning at
    // once takes microseconds. One second leaves room for a loaded machine.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    p
}

fn pending(p: Progress) -> Connecting {
    match p {
        Progress::Pending(c) => c,
        Progress::Ready(_) => panic!("ready too early"),
    }
}

fn next_dg(conn: &std::os::fd::OwnedFd) -> Vec<u8> {
    match recv_datagram(conn.as_fd(), WAIT) {
        Received::Datagram(d) => d,
        other => panic!("{other:?}"),
    }
}
