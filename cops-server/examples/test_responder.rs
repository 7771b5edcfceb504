//! A monitored process for COPS's end-to-end tests: answers the heartbeat with
//! its real PID, and has the hang hooks of docs/protocol/cops.md.
//!
//! `test_responder --socket P --uri /victim [--delay-ms 60]`
//! - `set U/cops/cops_heartbeat N`: store N; `get U/cops`: answer after the delay;
//! - `set U/debug/hang`: spin forever on the main thread;
//! - `set U/debug/crash`: exit 1 at once;
//! - `set U/debug/delay N`: answer heartbeats N ms late from now on.
//!
//! `test_responder --socket P --uri /victim --forge-as victim --forge-pid N`
//! is a forger instead: on every `set U/cops/cops_heartbeat H` it sees, it
//! sends COPS a reply for `victim` with that H and PID N (0: its own) at once,
//! before the real process can answer (the attack of issue 10).
//!
//! Reconnects (every 50 ms) when the broker goes away.

use std::time::Duration;

use fims::{blocking::Client, Method};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn connect(socket: &str, uri: &str) -> Client {
    loop {
        if let Ok(mut c) = Client::connect_to(socket, "test_responder") {
            if c.subscribe(&[uri]).is_ok() {
                return c;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The forger: answers for `name` with the counter it overhears and `pid`.
fn forge(socket: &str, uri: &str, name: &str, pid: u32) -> ! {
    let hb_uri = format!("{uri}/cops/cops_heartbeat");
    let reply_uri = format!("/cops/heartbeat/{name}");
    let pid = if pid == 0 { std::process::id() } else { pid };
    let mut c = connect(socket, uri);
    loop {
        let h = match c.recv(None) {
            Ok(Some(m)) if m.method == "set" && m.uri == hb_uri => {
                String::from_utf8_lossy(m.body).trim().to_owned()
            }
            Ok(_) => continue,
            Err(e) if e.is_disconnect() => {
                c = connect(socket, uri);
                continue;
            }
            Err(_) => continue,
        };
        let body = format!(
            r#"{{"cops_heartbeat":{h},"pid":{pid},"version_tag":"forged","version_commit":"","version_build":""}}"#
        );
        let _ = c.send(Method::Set, &reply_uri, None, body.as_bytes());
    }
}

fn main() {
    let socket = arg("--socket").unwrap_or_else(|| fims::socket_path().display().to_string());
    let uri = arg("--uri").unwrap_or_else(|| "/test".into());
    if let Some(name) = arg("--forge-as") {
        let pid = arg("--forge-pid").and_then(|p| p.parse().ok()).unwrap_or(0);
        forge(&socket, &uri, &name, pid);
    }
    let mut delay: u64 = arg("--delay-ms").and_then(|d| d.parse().ok()).unwrap_or(0);
    let hb_uri = format!("{uri}/cops/cops_heartbeat");
    let get_uri = format!("{uri}/cops");
    let hang_uri = format!("{uri}/debug/hang");
    let crash_uri = format!("{uri}/debug/crash");
    let delay_uri = format!("{uri}/debug/delay");
    let mut stored: u64 = 0;
    let mut c = connect(&socket, &uri);
    loop {
        let (method, target, replyto, body) = match c.recv(None) {
            Ok(Some(m)) => (
                m.method.to_owned(),
                m.uri.to_owned(),
                m.replyto.to_owned(),
                m.body.to_vec(),
            ),
            Ok(None) => continue,
            Err(e) if e.is_disconnect() => {
                c = connect(&socket, &uri);
                continue;
            }
            Err(_) => continue,
        };
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        let answer = match (method.as_str(), target.as_str()) {
            ("set", t) if t == hb_uri => {
                if let Ok(n) = text.parse() {
                    stored = n;
                }
                Some(stored.to_string())
            }
            ("get", t) if t == get_uri => {
                std::thread::sleep(Duration::from_millis(delay));
                Some(format!(
                    r#"{{"cops_heartbeat":{stored},"pid":{},"version_tag":"test","version_commit":"0000000","version_build":"1"}}"#,
                    std::process::id()
                ))
            }
            ("set", t) if t == hang_uri => loop {
                std::hint::spin_loop();
            },
            ("set", t) if t == crash_uri => std::process::exit(1),
            ("set", t) if t == delay_uri => {
                delay = text.parse().unwrap_or(delay);
                Some(delay.to_string())
            }
            _ => None,
        };
        if let (Some(a), false) = (answer, replyto.is_empty()) {
            let _ = c.send(Method::Set, &replyto, None, a.as_bytes());
        }
    }
}
