//! Quick performance probe of the broker (not the project's benchmark, which
//! lives in `benches`): request/answer round trip and one-to-one throughput
//! through an in-process broker, next to the same over a bare socket pair.
//!
//! `cargo run --release -p fims-server --example probe`

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use fims::blocking::Client;
use fims::Method;

const ROUND_TRIPS: usize = 20_000;
const MESSAGES: usize = 200_000;

fn pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is valid for two descriptors; the result is checked.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: fresh descriptors owned here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn send(fd: &OwnedFd, b: &[u8]) {
    // SAFETY: b is valid for its length.
    let n = unsafe { libc::send(fd.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) };
    assert!(n >= 0);
}

fn recv(fd: &OwnedFd, b: &mut [u8]) -> usize {
    // SAFETY: b is valid for writing its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) };
    assert!(n > 0);
    n as usize
}

/// A relay thread: what it receives on `a` goes out on `b` and back.
fn relay(a: OwnedFd, b: OwnedFd) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut fds = [
            libc::pollfd {
                fd: a.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: b.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: two valid pollfds.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            for (i, (from, to)) in [(&a, &b), (&b, &a)].into_iter().enumerate() {
                if fds[i].revents & libc::POLLIN != 0 {
                    // SAFETY: buf is valid for writing.
                    let n = unsafe {
                        libc::recv(
                            from.as_raw_fd(),
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if n <= 0 {
                        return;
                    }
                    send(to, &buf[..n as usize]);
                }
                if fds[i].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                    return;
                }
            }
        }
    });
}

fn bare_round_trip() -> Duration {
    // A <-> relay <-> B, B answers: 4 hops like A -> broker -> B -> broker -> A.
    let (a, ra) = pair();
    let (rb, b) = pair();
    relay(ra, rb);
    let t = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        for _ in 0..ROUND_TRIPS {
            let n = recv(&b, &mut buf);
            send(&b, &buf[..n]);
        }
    });
    let msg = vec![7u8; 80];
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        send(&a, &msg);
        recv(&a, &mut buf);
    }
    let d = start.elapsed() / ROUND_TRIPS as u32;
    t.join().unwrap();
    d
}

fn broker_round_trip(sock: &std::path::Path) -> Duration {
    let mut svc = Client::connect_to(sock, "svc").unwrap();
    svc.subscribe(&["/svc"]).unwrap();
    let t = std::thread::spawn(move || {
        for _ in 0..ROUND_TRIPS {
            let m = svc.recv(None).unwrap().unwrap().to_owned();
            svc.send(Method::Set, &m.replyto, None, &m.body).unwrap();
        }
    });
    let mut req = Client::connect_to(sock, "req").unwrap();
    req.subscribe(&["/req"]).unwrap();
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        req.send(Method::Get, "/svc/x", Some("/req/r"), b"12345")
            .unwrap();
        let _ = req.recv(None).unwrap().unwrap();
    }
    let d = start.elapsed() / ROUND_TRIPS as u32;
    t.join().unwrap();
    d
}

fn bare_throughput() -> f64 {
    let (a, b) = pair();
    let t = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        for _ in 0..MESSAGES {
            recv(&b, &mut buf);
        }
    });
    let msg = vec![7u8; 100];
    let start = Instant::now();
    for _ in 0..MESSAGES {
        send(&a, &msg);
    }
    t.join().unwrap();
    MESSAGES as f64 / start.elapsed().as_secs_f64()
}

fn broker_throughput(sock: &std::path::Path) -> (f64, usize) {
    let mut rx = Client::connect_to(sock, "rx").unwrap();
    rx.subscribe(&["/t"]).unwrap();
    let t = std::thread::spawn(move || {
        // Plain blocking recv on the client's socket: measures the broker, not
        // the client's poll-then-recv.
        let fd = rx.as_raw_fd();
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 300_000,
        };
        // SAFETY: tv lives across the call and its size is passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        loop {
            // SAFETY: buf is valid for writing its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            got += 1;
            if buf[..n as usize].ends_with(b"end") {
                break;
            }
        }
        drop(rx);
        got
    });
    let mut tx = Client::connect_to(sock, "tx").unwrap();
    let body = vec![b'7'; 100 - 12 - 3 - 2 - 2];
    let start = Instant::now();
    for _ in 0..MESSAGES - 1 {
        tx.send(Method::Pub, "/t", None, &body).unwrap();
    }
    tx.send(Method::Pub, "/t", None, b"end").unwrap();
    let got = t.join().unwrap();
    (got as f64 / start.elapsed().as_secs_f64(), got)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fims.sock");
    let running = fims_server::spawn(fims_server::Config::new(&sock)).unwrap();
    let bare = bare_round_trip();
    let brok = broker_round_trip(&sock);
    println!(
        "round trip: bare 4-hop {bare:?}, broker {brok:?}, ratio {:.2}",
        brok.as_secs_f64() / bare.as_secs_f64()
    );
    let bt = bare_throughput();
    let (rt, got) = broker_throughput(&sock);
    println!(
        "throughput: bare {bt:.0}/s, broker {rt:.0}/s ({got} of {MESSAGES} received), ratio {:.2}",
        rt / bt
    );
    let (ticks, _) = broker_cpu();
    let s = running.shutdown().unwrap();
    let hz = 100.0; // USER_HZ on Linux
    println!(
        "broker thread CPU: {:.2} s for {} routed messages ({:.2} us each)",
        ticks as f64 / hz,
        s.routed,
        ticks as f64 / hz * 1e6 / s.routed as f64
    );
    println!("{s:?}");
}

/// utime+stime ticks of this process's thread named `fims_server`.
fn broker_cpu() -> (u64, u32) {
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() == "fims_server" {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap();
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
            return (ticks, 0);
        }
    }
    (0, 0)
}
