//! Helpers shared by the fims client tests.
#![allow(dead_code)]

use std::time::Duration;

use fims::blocking::{Client, Connecting, Wait};
use fims::{Message, OwnedMessage, Subscription};
use testkit::fake_broker::{SeqpacketListener, SUB_SUCCESS};
use testkit::Broker;

/// Generous wait for things that must happen (the machine may be loaded).
pub const WAIT: Duration = Duration::from_secs(5);

/// Margin for "returned at its deadline" on a loaded machine.
pub const SLACK: Duration = Duration::from_secs(2);

/// A listener that never accepts, with its backlog filled by pending
/// connections (kept open in the returned vector): a new connect gets `EAGAIN`.
pub fn full_backlog(
    dir: &tempfile::TempDir,
) -> (SeqpacketListener, std::path::PathBuf, Vec<Connecting>) {
    let path = dir.path().join("full.sock");
    let listener = SeqpacketListener::bind(&path, 0);
    let mut held = Vec::new();
    for _ in 0..64 {
        let c = Connecting::start(&path, "filler", Duration::from_secs(60)).expect("connects");
        if matches!(c.wait(), Wait::Until(_)) {
            return (listener, path, held);
        }
        held.push(c);
    }
    panic!("the backlog never filled");
}

/// A client of a real broker, subscribed to `uris` when there are any.
pub fn client(b: &Broker, name: &str, uris: &[&str]) -> Client {
    let mut c = Client::connect_to(b.socket(), name).expect("connect");
    if !uris.is_empty() {
        c.subscribe(uris).expect("subscribe");
    }
    c
}

/// The next message, failing the test after [`WAIT`].
pub fn next(c: &mut Client) -> OwnedMessage {
    c.recv(Some(WAIT))
        .expect("recv")
        .expect("a message in time")
        .to_owned()
}

/// Decodes a datagram a client sent (it must be well formed).
pub fn decode(dg: &[u8]) -> OwnedMessage {
    Message::decode(dg)
        .expect("a well-formed datagram")
        .to_owned()
}

/// The `(uri, pub_only)` pairs of a `sub` datagram.
pub fn sub_uris(dg: &[u8]) -> Vec<(String, bool)> {
    let m = Message::decode(dg).expect("a well-formed datagram");
    assert_eq!(m.method, "sub");
    fims::codec::decode_sub_body(m.body)
        .expect("a valid sub body")
        .into_iter()
        .map(|(u, p)| (u.to_owned(), p))
        .collect()
}

/// The exact `sub` datagram for `set` from process `name`, built by hand from
/// docs/protocol/fims.md (count, then pub_only and length per URI, then the URIs).
pub fn sub_datagram(name: &str, set: &[Subscription]) -> Vec<u8> {
    let mut body = vec![set.len() as u8];
    for s in set {
        body.push(u8::from(s.pub_only));
        body.push(s.uri.len() as u8);
    }
    for s in set {
        body.extend_from_slice(s.uri.as_bytes());
    }
    let mut dg = vec![3, 0, 0, name.len() as u8, 0, 0, 0, 0];
    dg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    dg.extend_from_slice(b"sub");
    dg.extend_from_slice(name.as_bytes());
    dg.extend_from_slice(&body);
    dg
}

/// A broker answer (method, uri, replyto, username empty; `fims_server`).
pub fn broker_answer(body: &[u8]) -> Vec<u8> {
    let mut dg = Vec::new();
    Message {
        process_name: "fims_server",
        body,
        ..Message::default()
    }
    .encode(&mut dg)
    .expect("encodes");
    dg
}

/// A fake broker's handler: `SUCCESS` to every `sub`; a `get` with a replyto
/// is answered with a `set` to it, body `"answer"`.
pub fn answer_subs_and_gets(dg: &[u8]) -> Vec<Vec<u8>> {
    let Ok(m) = Message::decode(dg) else {
        return Vec::new();
    };
    match m.method {
        "sub" => vec![SUB_SUCCESS.to_vec()],
        "get" if !m.replyto.is_empty() => {
            let mut out = Vec::new();
            Message {
                method: "set",
                uri: m.replyto,
                process_name: "fake_service",
                body: b"\"answer\"",
                ..Message::default()
            }
            .encode(&mut out)
            .expect("encodes");
            vec![out]
        }
        _ => Vec::new(),
    }
}
