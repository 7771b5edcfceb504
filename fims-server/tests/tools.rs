//! `fims_send` and `fims_listen` end to end against the real broker.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use fims::Method;
use testkit::{bin, Broker, ChildGuard};

fn send_cmd(b: &Broker) -> Command {
    let mut c = Command::new(bin("fims-server", "fims_send"));
    c.arg("--socket")
        .arg(b.socket())
        .env_remove("FIMS_ENCRYPTION_KEY")
        .stdin(Stdio::null());
    c
}

/// A running `fims_listen` whose stdout lines arrive on a channel.
struct Listener {
    _child: ChildGuard,
    lines: mpsc::Receiver<String>,
}

impl Listener {
    fn start(b: &Broker, args: &[&str]) -> Listener {
        let mut child = ChildGuard::spawn(
            Command::new(bin("fims-server", "fims_listen"))
                .arg("--socket")
                .arg(b.socket())
                .args(args)
                .env_remove("FIMS_ENCRYPTION_KEY")
                .stdin(Stdio::null())
                .stdout(Stdio::piped()),
        );
        let out = child.0.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Listener {
            _child: child,
            lines,
        }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .expect("a line from fims_listen")
    }

    /// Sends pings on `uri` until the listener shows it has subscribed, and
    /// swallows output up to the first ping.
    fn wait_subscribed(&self, b: &Broker, uri: &str, is_ping: impl Fn(&str) -> bool) {
        let mut c = client(b.socket(), "pinger", &[]);
        for _ in 0..100 {
            c.send(Method::Pub, uri, None, b"\"ping\"").unwrap();
            while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(50)) {
                if is_ping(&l) {
                    // Drain the other pings that may follow.
                    while self.lines.recv_timeout(Duration::from_millis(100)).is_ok() {}
                    return;
                }
            }
        }
        panic!("fims_listen never showed a ping");
    }
}

#[test]
fn send_and_listen_json() {
    let b = Broker::start();
    let l = Listener::start(&b, &["--json", "-u", "/components", "-u", "/ping"]);
    l.wait_subscribed(&b, "/ping", |s| s.contains("\"ping\""));
    let st = send_cmd(&b)
        .args(["-m", "set", "-u", "/components/bms_9/cap", "1234"])
        .status()
        .unwrap();
    assert!(st.success());
    let file = b.dir().join("body.json");
    std::fs::write(&file, br#"{"value":5,"s":"x"}"#).unwrap();
    let st = send_cmd(&b)
        .args(["-m", "PUB", "-u", "/components/x", "-f"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    send_cmd(&b)
        .args(["-m", "post", "-u", "/elsewhere", "1"])
        .status()
        .unwrap();
    send_cmd(&b)
        .args(["-m", "del", "-u", "/components/t", "not json"])
        .status()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&l.line()).unwrap();
    assert_eq!(v["method"], "set");
    assert_eq!(v["uri"], "/components/bms_9/cap");
    assert_eq!(v["replyto"], serde_json::Value::Null);
    assert_eq!(v["process_name"], "fims_send");
    assert_eq!(v["username"], my_user().as_str());
    assert_eq!(v["body"], 1234);
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    let v: serde_json::Value = serde_json::from_str(&l.line()).unwrap();
    assert_eq!(
        (v["method"].as_str(), v["body"]["value"].as_i64()),
        (Some("pub"), Some(5))
    );
    let v: serde_json::Value = serde_json::from_str(&l.line()).unwrap();
    assert_eq!(v["body"], "not json");
}

#[test]
fn listen_text_mode_prints_every_field() {
    let b = Broker::start();
    let l = Listener::start(&b, &[]);
    l.wait_subscribed(&b, "/ping", |s| s.contains("\"ping\""));
    let mut c = client(b.socket(), "texter", &[]);
    c.send(Method::Set, "/t/1", Some("/t/reply"), b"{\"a\":1}")
        .unwrap();
    let block: Vec<String> = (0..7).map(|_| l.line()).collect();
    assert_eq!(block[0], "Method:       set");
    assert_eq!(block[1], "Uri:          /t/1");
    assert_eq!(block[2], "ReplyTo:      /t/reply");
    assert_eq!(block[3], "Process Name: texter");
    assert_eq!(block[4], format!("Username:     {}", my_user()));
    assert_eq!(block[5], "Body:         {\"a\":1}");
    assert!(block[6].starts_with("Timestamp:    "));
}

#[test]
fn get_prints_the_answer() {
    let b = Broker::start();
    let mut svc = client(b.socket(), "svc", &["/svc"]);
    let responder = std::thread::spawn(move || {
        for _ in 0..2 {
            let m = next(&mut svc);
            let reply = format!("{{\"you_sent\":\"{}\"}}", m.body_text());
            svc.send(Method::Set, &m.replyto, None, reply.as_bytes())
                .unwrap();
        }
    });
    let out = send_cmd(&b)
        .args(["-m", "get", "-u", "/svc/x"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"{\"you_sent\":\"\"}\n");
    let out = send_cmd(&b)
        .args(["-m", "set", "-u", "/svc/x", "-r", "/my/reply", "7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"{\"you_sent\":\"7\"}\n");
    responder.join().unwrap();
}

#[test]
fn send_failures_exit_non_zero_with_a_clear_message() {
    let b = Broker::start();
    let out = send_cmd(&b)
        .args(["-m", "get", "-u", "/nobody/home", "-t", "200"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no answer to get /nobody/home within 200 ms"),
        "{err}"
    );

    let out = Command::new(bin("fims-server", "fims_send"))
        .arg("--socket")
        .arg(b.dir().join("no_broker.sock"))
        .args(["-m", "set", "-u", "/a", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no FIMS broker is running at"), "{err}");

    let out = send_cmd(&b)
        .args(["-m", "set", "-u", "/a", "--encrypt", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("encryption is not supported"));
    let out = send_cmd(&b)
        .env("FIMS_ENCRYPTION_KEY", "/etc/key")
        .args(["-m", "set", "-u", "/a", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    let out = send_cmd(&b)
        .args(["-m", "bogus", "-u", "/a"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = send_cmd(&b)
        .args(["-m", "set", "-u", "no_slash", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = send_cmd(&b)
        .args(["-m", "sub", "-u", "/a"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn listen_without_broker_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("fims-server", "fims_listen"))
        .arg("--socket")
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no FIMS broker is running"));
}

#[test]
fn socket_from_environment() {
    let b = Broker::start();
    let mut rx = client(b.socket(), "rx", &["/env"]);
    let st = Command::new(bin("fims-server", "fims_send"))
        .env("FIMS_SOCKET", b.socket())
        .args(["-m", "pub", "-u", "/env", "1"])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(next(&mut rx).body, b"1");
}
