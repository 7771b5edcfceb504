//! Every routing rule of docs/protocol/fims.md through the real broker binary.
//!
//! Negative checks use a sentinel: after the message that must not arrive, the
//! same sender sends one that must; the broker keeps one sender's order, so the
//! sentinel arriving first proves the other was not delivered (no timing).

mod common;

use common::*;
use fims::{Message, Method, Subscription};
use testkit::Broker;

#[test]
fn segment_prefix_not_sites_trailing_slash_and_root() {
    let b = Broker::start();
    let p = b.socket();
    let mut site = client(p, "site", &["/site"]);
    let mut slash = client(p, "slash", &["/site/"]);
    let mut root = client(p, "root", &["/"]);
    let mut tx = client(p, "tx", &[]);
    for uri in ["/site", "/site/cops", "/sites", "/sitex/a", "/other"] {
        tx.send(Method::Set, uri, None, b"1").unwrap();
    }
    tx.send(Method::Pub, "/site/end", None, b"2").unwrap();
    for c in [&mut site, &mut slash] {
        assert_eq!(next(c).uri, "/site");
        assert_eq!(next(c).uri, "/site/cops");
        assert_eq!(next(c).uri, "/site/end");
    }
    for uri in [
        "/site",
        "/site/cops",
        "/sites",
        "/sitex/a",
        "/other",
        "/site/end",
    ] {
        assert_eq!(next(&mut root).uri, uri);
    }
}

#[test]
fn pub_only_gets_only_pub() {
    let b = Broker::start();
    let p = b.socket();
    let mut ess = client_with(p, "ess", &[Subscription::pub_only("/ess")]);
    let mut tx = client(p, "tx", &[]);
    for m in [Method::Set, Method::Get, Method::Post, Method::Del] {
        tx.send(m, "/ess/x", Some("/tx/reply"), b"1").unwrap();
    }
    tx.send(Method::Pub, "/ess/x", None, b"2").unwrap();
    let m = next(&mut ess);
    assert_eq!((m.method.as_str(), m.body.as_slice()), ("pub", &b"2"[..]));
}

#[test]
fn at_most_once_per_connection() {
    let b = Broker::start();
    let p = b.socket();
    let mut rx = client_with(
        p,
        "rx",
        &[
            Subscription::all("/"),
            Subscription::all("/a"),
            Subscription::pub_only("/a/b"),
            Subscription::all("/a/b/"),
            Subscription::all("/a/b/c"),
        ],
    );
    let mut tx = client(p, "tx", &[]);
    tx.send(Method::Pub, "/a/b/c", None, b"1").unwrap();
    tx.send(Method::Set, "/a/b/c", None, b"2").unwrap();
    sentinel(&mut tx, "/z");
    assert_eq!(next(&mut rx).body, b"1");
    assert_eq!(next(&mut rx).body, b"2");
    assert_eq!(next(&mut rx).uri, "/z");
}

#[test]
fn no_echo_to_the_sender() {
    let b = Broker::start();
    let p = b.socket();
    let mut a = client(p, "a", &["/x"]);
    let mut other = client(p, "other", &["/x"]);
    a.send(Method::Pub, "/x", None, b"from a").unwrap();
    assert_eq!(next(&mut other).body, b"from a");
    other.send(Method::Pub, "/x", None, b"from other").unwrap();
    // The first thing `a` sees is other's message, not its own.
    assert_eq!(next(&mut a).body, b"from other");
}

#[test]
fn sub_answer_bytes_match_the_vector() {
    let b = Broker::start();
    let (r, _) = Raw::handshake(b.socket(), "cops");
    r.send(&hex(
        "03000004000000000e000000737562636f707302000501042f636f70732f657373",
    ))
    .unwrap();
    assert_eq!(
        r.recv(WAIT),
        Got::Datagram(hex(
            "0000000b000000000700000066696d735f73657276657253554343455353"
        ))
    );
    // The vector subscribed /cops (all) and /ess (pub-only): check both.
    let mut tx = client(b.socket(), "tx", &[]);
    tx.send(Method::Set, "/ess/a", None, b"no").unwrap();
    tx.send(Method::Set, "/cops/a", None, b"yes").unwrap();
    tx.send(Method::Pub, "/ess/a", None, b"yes too").unwrap();
    for body in [&b"yes"[..], b"yes too"] {
        match r.recv(WAIT) {
            Got::Datagram(d) => assert_eq!(Message::decode(&d).unwrap().body, body),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn bad_sub_body_answers_failure_and_keeps_the_connection() {
    let b = Broker::start();
    let (r, _) = Raw::handshake(b.socket(), "bad_sub");
    for body in [
        &b""[..],
        b"\x00",
        b"\x01\x00\x05/abc",
        b"\x01\x02\x01/",
        b"\x01\x00\x01x",
    ] {
        r.send_msg(&Message {
            method: "sub",
            process_name: "bad_sub",
            body,
            ..Message::default()
        });
        match r.recv(WAIT) {
            Got::Datagram(d) => {
                let m = Message::decode(&d).unwrap();
                assert_eq!(m.process_name, "fims_server");
                assert!(m.body.starts_with(b"FAILURE: "), "{:?}", m.body_str());
            }
            other => panic!("{other:?}"),
        }
    }
    r.send(&hex(
        "03000004000000000e000000737562636f707302000501042f636f70732f657373",
    ))
    .unwrap();
    match r.recv(WAIT) {
        Got::Datagram(d) => assert_eq!(Message::decode(&d).unwrap().body, b"SUCCESS"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn username_is_stamped_and_cannot_be_forged() {
    let b = Broker::start();
    let p = b.socket();
    let mut rx = client(p, "rx", &["/u"]);
    let mut tx = client(p, "tx", &[]);
    tx.send_message(&Message {
        method: "set",
        uri: "/u/1",
        process_name: "tx",
        username: "definitely_not_me",
        body: b"1",
        ..Message::default()
    })
    .unwrap();
    tx.send(Method::Set, "/u/2", None, b"2").unwrap();
    let me = my_user();
    for uri in ["/u/1", "/u/2"] {
        let m = next(&mut rx);
        assert_eq!((m.uri.as_str(), m.username.as_str()), (uri, me.as_str()));
    }
}

#[test]
fn empty_process_name_is_filled_with_the_handshake_name() {
    let b = Broker::start();
    let p = b.socket();
    let mut rx = client(p, "rx", &["/n"]);
    let mut tx = client(p, "handshake_name", &[]);
    tx.send_message(&Message {
        method: "pub",
        uri: "/n",
        body: b"1",
        ..Message::default()
    })
    .unwrap();
    tx.send_message(&Message {
        method: "pub",
        uri: "/n",
        process_name: "explicit",
        body: b"2",
        ..Message::default()
    })
    .unwrap();
    assert_eq!(next(&mut rx).process_name, "handshake_name");
    assert_eq!(next(&mut rx).process_name, "explicit");
}

/// The spec's data vectors sent raw: the receiver gets the same datagram with
/// only the username filled in.
#[test]
fn spec_vectors_through_the_broker() {
    let b = Broker::start();
    let p = b.socket();
    // The broker's first datagram is the handshake vector, byte for byte.
    let first = Raw::connect(p);
    assert_eq!(first.recv(WAIT), Got::Datagram(hex("01000000801a0e00")));
    drop(first);
    let (rx, max) = Raw::handshake(p, "rx");
    assert_eq!(max, fims::DEFAULT_MAX_LEN);
    rx.send(&hex(
        "03000004000000000e000000737562636f707302000501042f636f70732f657373",
    ))
    .unwrap();
    assert!(matches!(rx.recv(WAIT), Got::Datagram(_)));
    // Subscribe to /components and /site too (built with the codec).
    let mut body = Vec::new();
    fims::codec::encode_sub_body(
        &[Subscription::all("/components"), Subscription::all("/site")],
        &mut body,
    )
    .unwrap();
    rx.send_msg(&Message {
        method: "sub",
        process_name: "rx",
        body: &body,
        ..Message::default()
    });
    assert!(matches!(rx.recv(WAIT), Got::Datagram(_)));
    let (tx, _) = Raw::handshake(p, "tx");
    let me = my_user();
    for v in [
        "0315000900000000040000007365742f636f6d706f6e656e74732f626d735f392f63617066696d735f73656e6431323334",
        "030a1f0400000000000000006765742f736974652f636f70732f636f70732f6865617274626561742f736974655f636f6e74726f6c6c6572636f7073",
    ] {
        let sent = hex(v);
        tx.send(&sent).unwrap();
        let got = match rx.recv(WAIT) {
            Got::Datagram(d) => d,
            other => panic!("{other:?}"),
        };
        let mut want = Message::decode(&sent).unwrap();
        want.username = &me;
        let mut want_bytes = Vec::new();
        want.encode(&mut want_bytes).unwrap();
        assert_eq!(got, want_bytes);
    }
}

/// A sender whose uid has no user name is stamped with the number; a named
/// uid with its name. Needs root to send as other uids (a forked child that
/// drops to the uid and speaks raw syscalls, so no binary path must be
/// reachable by that uid).
#[test]
fn other_users_are_stamped_by_name_or_number() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to send as other uids");
        return;
    }
    let b = Broker::start_with(&["--mode", "0666"]);
    std::fs::set_permissions(b.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut rx = client(b.socket(), "rx", &["/who"]);
    let mut cases = vec![(54321u32, "54321".to_owned())];
    if let Some(name) = user_name(65534) {
        cases.push((65534, name));
    }
    for (uid, want) in cases {
        let mut dg = Vec::new();
        Message::new(Method::Pub, "/who", b"1")
            .encode(&mut dg)
            .unwrap();
        match send_as_uid(b.socket(), uid, &dg) {
            0 => {}
            3 => {
                // The temp dir's parents are closed to other users here.
                eprintln!("skipped: uid {uid} cannot reach {}", b.socket().display());
                return;
            }
            st => panic!("child as uid {uid} exited {st}"),
        }
        let m = next(&mut rx);
        assert_eq!(
            (m.username.as_str(), m.process_name.as_str()),
            (want.as_str(), "as_uid")
        );
    }
}

fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid returns NULL or an entry read before any other passwd call.
    unsafe {
        let pw = libc::getpwuid(uid);
        (!pw.is_null()).then(|| {
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned()
        })
    }
}

/// Forks a child that becomes `uid`, connects, handshakes as `as_uid`, sends
/// `dg` and exits; returns the child's exit status.
fn send_as_uid(sock: &std::path::Path, uid: u32, dg: &[u8]) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    // Everything the child needs is prepared before fork: it only makes syscalls.
    // SAFETY: sockaddr_un is plain old data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(sock.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    let name = b"as_uid";
    // SAFETY: the child runs only async-signal-safe syscalls and _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                libc::_exit(2);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            let ap = &addr as *const libc::sockaddr_un as *const libc::sockaddr;
            if fd < 0 || libc::connect(fd, ap, len) != 0 {
                libc::_exit(3);
            }
            let mut hs = [0u8; 8];
            if libc::recv(fd, hs.as_mut_ptr().cast(), 8, 0) != 8 {
                libc::_exit(4);
            }
            for buf in [&hs[..], &name[..], dg] {
                if libc::send(fd, buf.as_ptr().cast(), buf.len(), 0) < 0 {
                    libc::_exit(5);
                }
            }
            libc::_exit(0);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        }
    }
}
