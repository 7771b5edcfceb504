//! Where a program could tell our broker from the existing C++ one, ours
//! behaves the same (docs/protocol/fims.md, "Behaviour of the existing
//! broker"): a `sub` replaces the whole set, one `sub` carries up to 255
//! URIs, and empty URI segments collapse when routing. Against a real
//! `fims_server` process; the receivers are raw connections, so each `sub`
//! is exactly the datagram the test writes.

mod common;

use common::*;
use fims::Method;

/// The URIs `r` receives until `/end` (sent last by the test).
fn received(r: &Raw) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match r.recv(WAIT) {
            Got::Datagram(d) => {
                let m = fims::Message::decode(&d).expect("decodes");
                if m.uri == "/end" {
                    return out;
                }
                out.push(m.uri.to_owned());
            }
            other => panic!("expected a message, got {other:?} after {out:?}"),
        }
    }
}

#[test]
fn a_second_sub_replaces_the_whole_set() {
    let broker = testkit::Broker::start();
    let (rx, _) = Raw::handshake(broker.socket(), "rx");
    let mut tx = client(broker.socket(), "tx", &[]);
    assert_eq!(rx.subscribe(&["/a", "/b", "/end"]), "SUCCESS");
    assert_eq!(rx.subscribe(&["/b", "/c", "/end"]), "SUCCESS");
    for uri in ["/a", "/a/x", "/b", "/c/y", "/end"] {
        tx.send(Method::Set, uri, None, b"1").unwrap();
    }
    assert_eq!(received(&rx), ["/b", "/c/y"]);
    // Dropping every URI but one: a program "unsubscribes" this way.
    assert_eq!(rx.subscribe(&["/end"]), "SUCCESS");
    for uri in ["/b", "/c", "/end"] {
        tx.send(Method::Pub, uri, None, b"1").unwrap();
    }
    assert!(received(&rx).is_empty());
}

#[test]
fn one_sub_carries_255_uris() {
    let broker = testkit::Broker::start();
    let (rx, _) = Raw::handshake(broker.socket(), "rx");
    let mut tx = client(broker.socket(), "tx", &[]);
    let mut uris: Vec<String> = (0..254).map(|i| format!("/u/{i}")).collect();
    uris.push("/end".into());
    let refs: Vec<&str> = uris.iter().map(String::as_str).collect();
    assert_eq!(rx.subscribe(&refs), "SUCCESS");
    for uri in ["/u/0", "/u/127", "/u/253", "/u/254", "/end"] {
        tx.send(Method::Set, uri, None, b"1").unwrap();
    }
    assert_eq!(received(&rx), ["/u/0", "/u/127", "/u/253"]);
}

#[test]
fn a_sub_over_the_subscription_limit_fails_and_keeps_the_set() {
    let broker = testkit::Broker::start_with(&["--max-subs-per-conn", "3"]);
    let (rx, _) = Raw::handshake(broker.socket(), "rx");
    let mut tx = client(broker.socket(), "tx", &[]);
    assert_eq!(rx.subscribe(&["/keep", "/end"]), "SUCCESS");
    let answer = rx.subscribe(&["/a", "/b", "/c", "/end"]);
    assert!(
        answer.starts_with("FAILURE: too many subscriptions"),
        "{answer}"
    );
    for uri in ["/keep", "/a", "/end"] {
        tx.send(Method::Set, uri, None, b"1").unwrap();
    }
    assert_eq!(received(&rx), ["/keep"], "the old set still holds");
}

#[test]
fn empty_uri_segments_collapse_when_routing() {
    let broker = testkit::Broker::start();
    let (ef, _) = Raw::handshake(broker.socket(), "ef");
    let (ef_slash, _) = Raw::handshake(broker.socket(), "ef_slash");
    let (root, _) = Raw::handshake(broker.socket(), "root");
    let mut tx = client(broker.socket(), "tx", &[]);
    assert_eq!(ef.subscribe(&["/e//f", "/end"]), "SUCCESS");
    assert_eq!(ef_slash.subscribe(&["/e/f/", "/end"]), "SUCCESS");
    assert_eq!(root.subscribe(&["//"]), "SUCCESS");
    for uri in ["/e/f", "/e//f", "/e/f/", "//e///f/g", "/e/fg", "/e", "/end"] {
        tx.send(Method::Set, uri, None, b"1").unwrap();
    }
    // Routed by the collapsed form, forwarded as written.
    let want = ["/e/f", "/e//f", "/e/f/", "//e///f/g"];
    assert_eq!(received(&ef), want);
    assert_eq!(received(&ef_slash), want);
    assert_eq!(received(&root).len(), 6, "`//` is `/`: everything");
}
