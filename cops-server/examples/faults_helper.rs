//! Helper programs of the fault-injection suite (`cops-server/tests/faults.rs`),
//! one binary with a sub-command per role. None of them is a monitored process
//! (those are `test_responder`); each is an adversary or a bystander:
//!
//! - `forge --socket S --uri U --reply-uri R --pids LIST --duration-ms D`:
//!   a bus client that listens on `U` like the real process and, for every
//!   `set U/cops/cops_heartbeat H` and every `get U/cops`, sends at once a forged
//!   reply to `R` (and three to the get's replyto) with the right counter `H`
//!   and the next PID of `LIST` (comma separated; `self` is the forger's own
//!   PID). The one sent on the `set` arrives before the real process has even
//!   seen the `get`; the three sent on the `get` race the real reply into the
//!   same read of COPS's socket. Prints `ready` once subscribed; exits 0 after
//!   `D` ms.
//! - `oneshot --socket S --uri U --stop-pid P`: answers the first complete round
//!   (a `set` of the counter, then the `get`) with its own PID, but stops
//!   process `P` (COPS) with SIGSTOP just before sending the reply, then exits 0.
//!   The suite then hands the freed PID to another process before COPS reads
//!   the reply (a PID reused between the reply and its pin).
//! - `idle --socket S --uri U`: a bus client that answers nothing (a process that
//!   is on the bus but is not the one COPS monitors). Prints `ready` once
//!   subscribed.
//! - `spin`: a busy loop (saturates one core) until killed.
//! - `flood --socket S --method pub|get --uri U [--replyto R] [--body-bytes B]
//!   --duration-ms D`: sends as fast as the broker takes them; prints `ready`
//!   once connected and the count on stderr at the end; reconnects if dropped.
//!
//! Every role reconnects (every 20 ms) when it cannot reach the broker.

use std::io::Write;
use std::time::{Duration, Instant};

use fims::{blocking::Client, Method};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn need(name: &str) -> String {
    arg(name).unwrap_or_else(|| {
        eprintln!("faults_helper: missing {name}");
        std::process::exit(2)
    })
}

fn num(name: &str, default: u64) -> u64 {
    match arg(name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("faults_helper: {name} must be a number, not {v:?}");
            std::process::exit(2)
        }),
    }
}

fn connect(socket: &str, name: &str, uris: &[&str]) -> Client {
    loop {
        if let Ok(mut c) = Client::connect_to(socket, name) {
            // One `sub` with the whole set: a `sub` replaces the set.
            if uris.is_empty() || c.subscribe(uris).is_ok() {
                return c;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ready() {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
}

fn reply_body(h: u64, pid: u32, tag: &str) -> String {
    format!(
        r#"{{"cops_heartbeat":{h},"pid":{pid},"version_tag":"{tag}","version_commit":"","version_build":""}}"#
    )
}

fn main() {
    let role = std::env::args().nth(1).unwrap_or_default();
    match role.as_str() {
        "forge" => forge(),
        "oneshot" => oneshot(),
        "idle" => idle(),
        "spin" => loop {
            std::hint::spin_loop();
        },
        "flood" => flood(),
        other => {
            eprintln!("faults_helper: unknown role {other:?} (forge, oneshot, idle, spin, flood)");
            std::process::exit(2)
        }
    }
}

fn forge() {
    let socket = need("--socket");
    let uri = need("--uri");
    let reply_uri = need("--reply-uri");
    let own = std::process::id();
    let pids: Vec<u32> = need("--pids")
        .split(',')
        .map(|p| match p.trim() {
            "self" => own,
            n => n.parse().unwrap_or_else(|_| {
                eprintln!("faults_helper: bad pid {n:?}");
                std::process::exit(2)
            }),
        })
        .collect();
    let end = Instant::now() + Duration::from_millis(num("--duration-ms", 5000));
    let hb_uri = format!("{uri}/cops/cops_heartbeat");
    let get_uri = format!("{uri}/cops");
    let mut c = connect(&socket, "forger", &[&uri]);
    ready();
    let (mut h, mut next) = (0u64, 0usize);
    let mut sent = 0u64;
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        let (method, target, replyto, body) = match c.recv(Some(left)) {
            Ok(Some(m)) => (
                m.method.to_owned(),
                m.uri.to_owned(),
                m.replyto.to_owned(),
                String::from_utf8_lossy(m.body).trim().to_owned(),
            ),
            Ok(None) => continue,
            Err(e) if e.is_disconnect() => {
                c = connect(&socket, "forger", &[&uri]);
                continue;
            }
            Err(_) => continue,
        };
        let (to, copies) = match (method.as_str(), target.as_str()) {
            ("set", t) if t == hb_uri => match body.parse() {
                Ok(v) => {
                    h = v;
                    (reply_uri.clone(), 1)
                }
                Err(_) => continue,
            },
            ("get", t) if t == get_uri && !replyto.is_empty() => (replyto, 3),
            _ => continue,
        };
        for _ in 0..copies {
            let pid = pids[next % pids.len()];
            next += 1;
            let body = reply_body(h, pid, "forged");
            if c.send(Method::Set, &to, None, body.as_bytes()).is_ok() {
                sent += 1;
            }
        }
    }
    eprintln!("faults_helper forge: {sent} forged replies sent");
}

fn oneshot() {
    let socket = need("--socket");
    let uri = need("--uri");
    let stop_pid = num("--stop-pid", 0) as libc::pid_t;
    let hb_uri = format!("{uri}/cops/cops_heartbeat");
    let get_uri = format!("{uri}/cops");
    let mut c = connect(&socket, "oneshot", &[&uri]);
    let mut h: Option<u64> = None;
    loop {
        let (method, target, replyto, body) = match c.recv(None) {
            Ok(Some(m)) => (
                m.method.to_owned(),
                m.uri.to_owned(),
                m.replyto.to_owned(),
                String::from_utf8_lossy(m.body).trim().to_owned(),
            ),
            Ok(None) => continue,
            Err(e) if e.is_disconnect() => std::process::exit(3),
            Err(_) => continue,
        };
        match (method.as_str(), target.as_str(), h) {
            ("set", t, _) if t == hb_uri => h = body.parse().ok(),
            ("get", t, Some(h)) if t == get_uri && !replyto.is_empty() => {
                // COPS stops before the reply exists, so it cannot read the
                // reply before the suite has handed this PID to another process.
                if stop_pid > 1 {
                    // SAFETY: plain syscall; the suite passes COPS's PID, its own child.
                    unsafe { libc::kill(stop_pid, libc::SIGSTOP) };
                }
                let body = reply_body(h, std::process::id(), "oneshot");
                let _ = c.send(Method::Set, &replyto, None, body.as_bytes());
                std::process::exit(0);
            }
            _ => {}
        }
    }
}

fn idle() {
    let socket = need("--socket");
    let uri = need("--uri");
    let mut c = connect(&socket, "idle", &[&uri]);
    ready();
    loop {
        match c.recv(None) {
            Err(e) if e.is_disconnect() => c = connect(&socket, "idle", &[&uri]),
            _ => {}
        }
    }
}

fn flood() {
    let socket = need("--socket");
    let uri = need("--uri");
    let method = match need("--method").as_str() {
        "pub" => Method::Pub,
        "get" => Method::Get,
        m => {
            eprintln!("faults_helper: flood --method pub|get, not {m:?}");
            std::process::exit(2)
        }
    };
    let replyto = arg("--replyto");
    let body = "x".repeat(num("--body-bytes", 0) as usize);
    let body = if body.is_empty() {
        Vec::new()
    } else {
        format!("\"{body}\"").into_bytes()
    };
    let end = Instant::now() + Duration::from_millis(num("--duration-ms", 5000));
    let mut c = connect(&socket, "flooder", &[]);
    ready();
    let mut sent = 0u64;
    while Instant::now() < end {
        match c.send(method, &uri, replyto.as_deref(), &body) {
            Ok(()) => sent += 1,
            Err(e) if e.is_disconnect() => c = connect(&socket, "flooder", &[]),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    eprintln!("faults_helper flood: {sent} messages sent");
}
