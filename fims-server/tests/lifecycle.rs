//! The broker binary's life: socket file handling, signals, restarts, many
//! clients, idle memory.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use fims::Method;
use testkit::{bin, Broker, ChildGuard};

fn server_cmd(sock: &std::path::Path) -> Command {
    let mut c = Command::new(bin("fims-server", "fims_server"));
    c.arg("--socket").arg(sock).stdin(Stdio::null());
    c
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_socket_file() {
    let mut b = Broker::start();
    let sock = b.socket().to_path_buf();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o660);
    let _c = client(&sock, "connected", &["/"]);
    let status = b.terminate().expect("broker exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn sigint_also_stops_and_mode_flag_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let mut child = ChildGuard::spawn(server_cmd(&sock).args(["--mode", "0600"]));
    assert!(testkit::wait_for(WAIT, || testkit::seqpacket_accepts(
        &sock
    )));
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    child.signal(libc::SIGINT);
    let status = child.wait_timeout(WAIT).expect("exits on SIGINT");
    assert!(status.success());
    assert!(!sock.exists());
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fims.sock");
    // A socket file nobody listens on, as a crashed broker leaves it.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let _child = ChildGuard::spawn(&mut server_cmd(&sock));
    assert!(testkit::wait_for(WAIT, || testkit::seqpacket_accepts(
        &sock
    )));
    let mut rx = client(&sock, "rx", &["/x"]);
    client(&sock, "tx", &[])
        .send(Method::Pub, "/x", None, b"1")
        .unwrap();
    assert_eq!(next(&mut rx).body, b"1");
}

#[test]
fn second_broker_refuses_and_first_keeps_working() {
    let b = Broker::start();
    let out = server_cmd(b.socket()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    let mut rx = client(b.socket(), "rx", &["/x"]);
    client(b.socket(), "tx", &[])
        .send(Method::Pub, "/x", None, b"1")
        .unwrap();
    assert_eq!(next(&mut rx).body, b"1");
}

#[test]
fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fims.sock");
    std::fs::write(&sock, b"precious").unwrap();
    let out = server_cmd(&sock).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&sock).unwrap(), b"precious");
}

#[test]
fn clients_reconnect_after_a_broker_restart_with_their_subscriptions() {
    let mut b = Broker::start();
    let sock = b.socket().to_path_buf();
    let mut rx = client(&sock, "rx", &["/a", "/b"]);
    let mut tx = client(&sock, "tx", &[]);
    b.kill();
    b.restart();
    // The old connections are gone.
    let e = rx.recv(Some(WAIT)).unwrap_err();
    assert!(e.is_disconnect(), "{e}");
    rx.reconnect().unwrap();
    let e = tx.send(Method::Pub, "/a", None, b"lost");
    if e.is_ok() {
        // The send may land in the dead socket's buffer; reconnect on the next error.
        assert!(tx
            .recv(Some(Duration::from_millis(1)))
            .is_err_and(|e| e.is_disconnect()));
    }
    tx.reconnect().unwrap();
    tx.send(Method::Pub, "/a/1", None, b"1").unwrap();
    tx.send(Method::Set, "/b", None, b"2").unwrap();
    assert_eq!(next(&mut rx).uri, "/a/1");
    assert_eq!(next(&mut rx).uri, "/b");
}

#[test]
fn two_hundred_clients_at_once() {
    const N: usize = 200;
    let b = Broker::start();
    let sock = b.socket().to_path_buf();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let (sock, barrier) = (sock.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let name = format!("c{i}");
                client(&sock, &name, &["/all", &format!("/c/{i}")])
            })
        })
        .collect();
    let mut clients: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut tx = client(&sock, "tx", &[]);
    tx.send(Method::Pub, "/all", None, b"hello").unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(next(c).body, b"hello");
        let to = format!("/c/{}", (i + 1) % N);
        c.send(Method::Set, &to, None, i.to_string().as_bytes())
            .unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let m = next(c);
        assert_eq!(m.uri, format!("/c/{i}"));
        assert_eq!(m.body, ((i + N - 1) % N).to_string().as_bytes());
        assert_eq!(m.process_name, format!("c{}", (i + N - 1) % N));
    }
}

/// 1,000 idle connections (handshaken and subscribed) cost the broker at most
/// 50 MB resident.
#[test]
fn thousand_idle_connections_stay_under_50_mb() {
    const N: usize = 1000;
    raise_nofile_limit();
    let b = Broker::start();
    let pid = b.pid().unwrap();
    let before = rss_kib(pid);
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        clients.push(client(
            b.socket(),
            &format!("idle_{i}"),
            &[&format!("/idle/{i}")],
        ));
    }
    // Every connection is known to the broker: a message reaches the last one.
    client(b.socket(), "tx", &[])
        .send(Method::Pub, &format!("/idle/{}", N - 1), None, b"1")
        .unwrap();
    assert_eq!(next(&mut clients[N - 1]).body, b"1");
    let after = rss_kib(pid);
    eprintln!(
        "broker RSS: {before} KiB at start, {after} KiB with {N} idle connections ({} KiB each)",
        (after.saturating_sub(before)) / N as u64
    );
    assert!(
        after <= 50 * 1000,
        "broker RSS {after} KiB with {N} connections"
    );
}

/// Drops are logged rate-limited (one line per kind per second) and the
/// totals are in the summary the broker logs when it stops.
#[test]
fn drops_are_logged_rate_limited_with_totals_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fims.sock");
    let log = dir.path().join("broker.log");
    let mut child = ChildGuard::spawn(
        server_cmd(&sock)
            .args(["--queue-datagrams", "4"])
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    assert!(testkit::wait_for(WAIT, || testkit::seqpacket_accepts(
        &sock
    )));
    // A subscriber that never reads.
    let _slow = client(&sock, "slow", &["/flood"]);
    let mut tx = client(&sock, "tx", &[]);
    let body = vec![b'x'; 100_000];
    for _ in 0..100 {
        tx.send(Method::Pub, "/flood", None, &body).unwrap();
    }
    let (garbage, _) = Raw::handshake(&sock, "garbage");
    for _ in 0..50 {
        garbage.send(b"not a fims datagram").unwrap();
    }
    // Round trip through the broker so everything above was processed.
    let mut probe = client(&sock, "probe", &["/probe"]);
    tx.send(Method::Pub, "/probe", None, b"1").unwrap();
    garbage.send_msg(&fims::Message::new(Method::Pub, "/probe", b"2"));
    let mut bodies = vec![next(&mut probe).body, next(&mut probe).body];
    bodies.sort();
    assert_eq!(bodies, [b"1".to_vec(), b"2".to_vec()]);
    child.signal(libc::SIGTERM);
    assert!(child.wait_timeout(WAIT).expect("stops").success());
    let text = std::fs::read_to_string(&log).unwrap();
    let overflow_lines = text
        .lines()
        .filter(|l| l.contains("outbound queue full"))
        .count();
    let malformed_lines = text
        .lines()
        .filter(|l| l.contains("datagram dropped") && l.contains("Malformed"))
        .count();
    assert!((1..=3).contains(&overflow_lines), "{text}");
    assert!((1..=3).contains(&malformed_lines), "{text}");
    let summary = text
        .lines()
        .find(|l| l.contains("fims_server stopped"))
        .unwrap_or_else(|| panic!("no summary in {text}"));
    assert!(summary.contains("malformed=50"), "{summary}");
    assert!(!summary.contains("overflow=0 "), "{summary}");
}

#[test]
fn tells_systemd_when_ready() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sd = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sd.set_read_timeout(Some(WAIT)).unwrap();
    let sock = dir.path().join("fims.sock");
    let _child = ChildGuard::spawn(server_cmd(&sock).env("NOTIFY_SOCKET", &notify));
    let mut buf = [0u8; 256];
    let n = sd.recv(&mut buf).expect("a notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert!(testkit::seqpacket_accepts(&sock));
}
