//! The blocking client against the real broker (`fims_server`), each test with
//! its own broker in a temp directory.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use fims::blocking::Client;
use fims::{Error, Message, Method, OwnedMessage, Subscription};
use testkit::Broker;

const WAIT: Duration = Duration::from_secs(5);

fn client(b: &Broker, name: &str, uris: &[&str]) -> Client {
    let mut c = Client::connect_to(b.socket(), name).expect("connect");
    if !uris.is_empty() {
        c.subscribe(uris).expect("subscribe");
    }
    c
}

fn next(c: &mut Client) -> OwnedMessage {
    c.recv(Some(WAIT))
        .expect("recv")
        .expect("a message in time")
        .to_owned()
}

#[test]
fn send_subscribe_receive() {
    let b = Broker::start();
    let mut rx = client(&b, "rx", &["/site"]);
    let mut tx = client(&b, "tx", &[]);
    assert_eq!(tx.max_len(), fims::DEFAULT_MAX_LEN);
    tx.send(Method::Set, "/site/cops", Some("/tx/r"), b"{\"a\":1}")
        .unwrap();
    let m = next(&mut rx);
    assert_eq!(m.method, "set");
    assert_eq!(m.uri, "/site/cops");
    assert_eq!(m.replyto, "/tx/r");
    assert_eq!(m.process_name, "tx");
    assert!(!m.username.is_empty());
    assert_eq!(m.body, b"{\"a\":1}");
    assert_eq!(rx.subscriptions(), &[Subscription::all("/site")]);
}

#[test]
fn recv_times_out_with_none() {
    let b = Broker::start();
    let mut rx = client(&b, "rx", &["/quiet"]);
    assert!(rx.recv(Some(Duration::from_millis(20))).unwrap().is_none());
    assert!(rx.recv(Some(Duration::ZERO)).unwrap().is_none());
}

#[test]
fn pub_only_subscription() {
    let b = Broker::start();
    let mut rx = Client::connect_to(b.socket(), "rx").unwrap();
    rx.subscribe_with(&[Subscription::pub_only("/ess")])
        .unwrap();
    let mut tx = client(&b, "tx", &[]);
    tx.send(Method::Set, "/ess/1", None, b"set").unwrap();
    tx.send(Method::Pub, "/ess/1", None, b"pub").unwrap();
    assert_eq!(next(&mut rx).body, b"pub");
}

#[test]
fn request_answer_and_other_messages_kept() {
    let b = Broker::start();
    let mut svc = client(&b, "svc", &["/svc"]);
    let mut noise = client(&b, "noise", &[]);
    let t = std::thread::spawn(move || {
        let m = next(&mut svc);
        // Something unrelated reaches the requester before its answer.
        noise.send(Method::Pub, "/req/news", None, b"news").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        svc.send(Method::Set, &m.replyto, None, b"42").unwrap();
    });
    let mut req = client(&b, "req", &["/req"]);
    let answer = req.request(Method::Get, "/svc/x", b"", WAIT).unwrap();
    assert_eq!(answer.body, b"42");
    assert_eq!(answer.process_name, "svc");
    assert_eq!(next(&mut req).body, b"news");
    t.join().unwrap();
}

#[test]
fn request_on_given_replyto_and_timeout() {
    let b = Broker::start();
    let mut svc = client(&b, "svc", &["/svc"]);
    let t = std::thread::spawn(move || {
        let m = next(&mut svc);
        svc.send(Method::Set, &m.replyto, None, &m.body).unwrap();
    });
    let mut req = client(&b, "req", &[]);
    let a = req
        .request_on(Method::Set, "/svc/x", "/req/answers", b"7", WAIT)
        .unwrap();
    assert_eq!(
        (a.uri.as_str(), a.body.as_slice()),
        ("/req/answers", &b"7"[..])
    );
    t.join().unwrap();
    let e = req
        .request(Method::Get, "/nobody", b"", Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(50)), "{e}");
}

/// The handshake number limits the whole datagram; a client keeps 255 bytes of
/// room for the user name the broker writes in, so what it accepts gets through.
#[test]
fn announced_max_len_is_honoured() {
    let b = Broker::start_with(&["--max-len", "1000"]);
    let mut rx = client(&b, "rx", &["/big"]);
    let mut tx = client(&b, "tx", &[]);
    assert_eq!(tx.max_len(), 1000);
    // header 12 + "set" + "/big" + "tx" = 21 bytes, plus 255 kept for the username
    let room = 1000 - 21 - 255;
    let e = tx
        .send(Method::Set, "/big", None, &vec![b'x'; room + 1])
        .unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { len, max: 1000 } if len == 21 + room + 1),
        "{e}"
    );
    tx.send(Method::Set, "/big", None, &vec![b'y'; room])
        .unwrap();
    assert_eq!(next(&mut rx).body, vec![b'y'; room]);
}

#[test]
fn largest_default_body_goes_through_intact() {
    let b = Broker::start();
    let mut rx = client(&b, "rx", &["/big"]);
    let mut tx = client(&b, "tx", &[]);
    // The largest body this client accepts for this message on a default broker.
    let room = fims::DEFAULT_MAX_LEN as usize - (12 + 3 + 4 + 2) - 255;
    let body: Vec<u8> = (0..room).map(|i| (i % 251) as u8).collect();
    tx.send(Method::Pub, "/big", None, &body).unwrap();
    assert!(next(&mut rx).body == body);
    let e = tx
        .send(Method::Pub, "/big", None, &vec![0; room + 1])
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}

#[test]
fn raw_send_and_receive() {
    let b = Broker::start();
    let mut rx = client(&b, "rx", &["/raw"]);
    let mut tx = client(&b, "tx", &[]);
    let mut dg = Vec::new();
    Message {
        method: "pub",
        uri: "/raw",
        process_name: "tx",
        body: b"r",
        ..Message::default()
    }
    .encode(&mut dg)
    .unwrap();
    tx.send_raw(&dg).unwrap();
    let got = rx.recv_raw(Some(WAIT)).unwrap().unwrap().to_vec();
    let m = Message::decode(&got).unwrap();
    assert_eq!((m.uri, m.body), ("/raw", &b"r"[..]));
}

#[test]
fn errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let e = Client::connect_to(dir.path().join("none.sock"), "x").unwrap_err();
    assert!(matches!(e, Error::BrokerNotRunning { .. }), "{e}");
    assert!(e.is_disconnect());
    assert!(e.to_string().contains("none.sock"));
    let b = Broker::start();
    let long = "n".repeat(256);
    let e = Client::connect_to(b.socket(), &long).unwrap_err();
    assert!(matches!(e, Error::NameLength { len: 256, .. }), "{e}");
    let e = Client::connect_to(b.socket(), "").unwrap_err();
    assert!(matches!(e, Error::NameLength { len: 0, .. }), "{e}");
    let mut c = client(&b, "c", &[]);
    let e = c.send(Method::Set, "no_slash", None, b"").unwrap_err();
    assert!(matches!(e, Error::InvalidUri { .. }), "{e}");
}

#[test]
fn reconnect_restores_subscriptions_after_a_restart() {
    let mut b = Broker::start();
    let mut rx = Client::connect_to(b.socket(), "rx").unwrap();
    rx.subscribe_with(&[Subscription::all("/a"), Subscription::pub_only("/p")])
        .unwrap();
    b.kill();
    b.restart();
    let e = rx.recv(Some(WAIT)).unwrap_err();
    assert!(e.is_disconnect(), "{e}");
    rx.reconnect().unwrap();
    assert_eq!(rx.subscriptions().len(), 2);
    let mut tx = client(&b, "tx", &[]);
    tx.send(Method::Set, "/p", None, b"not for pub-only")
        .unwrap();
    tx.send(Method::Set, "/a/b", None, b"1").unwrap();
    tx.send(Method::Pub, "/p/q", None, b"2").unwrap();
    assert_eq!(next(&mut rx).body, b"1");
    assert_eq!(next(&mut rx).body, b"2");
}

/// A fake broker that speaks layout version 2: the client refuses it.
#[test]
fn version_mismatch_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.sock");
    // SAFETY: plain syscalls on descriptors owned here; results checked.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let addr_ptr = &addr as *const libc::sockaddr_un as *const libc::sockaddr;
        assert_eq!(libc::bind(fd.as_raw_fd(), addr_ptr, len), 0);
        assert_eq!(libc::listen(fd.as_raw_fd(), 4), 0);
        fd
    };
    let server = std::thread::spawn(move || {
        // SAFETY: accept on our listener; the new descriptor is owned below.
        let conn = unsafe {
            let c = libc::accept(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            assert!(c >= 0);
            OwnedFd::from_raw_fd(c)
        };
        let hs = [2u8, 0, 0, 0, 0x7d, 0x15, 0x0e, 0];
        // SAFETY: hs is valid for its length.
        unsafe { libc::send(conn.as_raw_fd(), hs.as_ptr().cast(), hs.len(), 0) };
        conn
    });
    let e = Client::connect_to(&path, "x").unwrap_err();
    assert!(matches!(e, Error::VersionMismatch(2)), "{e}");
    drop(server.join().unwrap());
}
