//! `fims_send` and `fims_listen` end to end against the real broker.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use fims::Method;
use testkit::fake_broker::{FakeBroker, SUB_SUCCESS};
use testkit::{bin, Broker, ChildGuard};

fn send_cmd(b: &Broker) -> Command {
    let mut c = Command::new(bin("fims-server", "fims_send"));
    c.arg("--socket")
        .arg(b.socket())
        .env_remove("FIMS_ENCRYPTION_KEY")
        .stdin(Stdio::null());
    c
}

/// A running `fims_listen` whose stdout and stderr lines arrive on channels.
struct Listener {
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
    errs: mpsc::Receiver<String>,
}

/// Sends each line `out` gives on a channel, from a thread of its own.
fn line_channel(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Listener {
    fn start(b: &Broker, args: &[&str]) -> Listener {
        Listener::start_at(b.socket(), args)
    }

    fn start_at(socket: &Path, args: &[&str]) -> Listener {
        let mut child = ChildGuard::spawn(
            Command::new(bin("fims-server", "fims_listen"))
                .arg("--socket")
                .arg(socket)
                .args(args)
                .env_remove("FIMS_ENCRYPTION_KEY")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let lines = line_channel(child.0.stdout.take().unwrap());
        let errs = line_channel(child.0.stderr.take().unwrap());
        Listener { child, lines, errs }
    }

    /// The next stderr line, failing the test after `within`.
    fn err_line(&self, within: Duration) -> String {
        self.errs
            .recv_timeout(within)
            .expect("a line from fims_listen on stderr")
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

// ---- issue 12: every -u in one sub; issue 14: operations ----

/// The `-u` arguments for `/u/0` .. `/u/{n-1}`.
fn many_uris(n: usize) -> Vec<String> {
    (0..n)
        .flat_map(|i| ["-u".to_string(), format!("/u/{i}")])
        .collect()
}

/// The `(uri, pub_only)` pairs of a `sub` datagram.
fn sub_uris(dg: &[u8]) -> Vec<(String, bool)> {
    let m = fims::Message::decode(dg).expect("well formed");
    assert_eq!(m.method, "sub");
    fims::codec::decode_sub_body(m.body)
        .expect("valid sub body")
        .into_iter()
        .map(|(u, p)| (u.to_owned(), p))
        .collect()
}

/// Answers every `sub` with SUCCESS.
fn answer_subs(dg: &[u8]) -> Vec<Vec<u8>> {
    match fims::Message::decode(dg) {
        Ok(m) if m.method == "sub" => vec![SUB_SUCCESS.to_vec()],
        _ => Vec::new(),
    }
}

#[test]
fn listen_sends_70_uris_in_one_sub_and_resends_them_whole_after_a_reconnect() {
    let fake = FakeBroker::start(answer_subs);
    let args = many_uris(70);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let l = Listener::start_at(fake.socket(), &refs);
    let first = fake.wait_datagrams(0, 1, WAIT);
    let uris = sub_uris(&first[0]);
    let want: Vec<(String, bool)> = (0..70).map(|i| (format!("/u/{i}"), false)).collect();
    assert_eq!(uris, want, "all 70, in order, in the first sub");
    // No second `sub` follows (the old client sent 64 + 6).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fake.datagrams(0).len(), 1);
    fake.disconnect_all();
    assert!(l.err_line(WAIT).contains("lost the broker"));
    let again = fake.wait_datagrams(1, 1, WAIT);
    assert_eq!(again, first, "the same single sub after the reconnect");
    let back = l.err_line(WAIT);
    assert!(
        back.contains("reconnected") && back.contains("70 URI"),
        "{back}"
    );
}

#[test]
fn listen_with_70_uris_on_our_broker_receives_on_all_of_them() {
    let b = Broker::start();
    let args = many_uris(70);
    let mut refs: Vec<&str> = args.iter().map(String::as_str).collect();
    refs.push("--json");
    let l = Listener::start(&b, &refs);
    l.wait_subscribed(&b, "/u/0", |s| s.contains("\"ping\""));
    let mut c = client(b.socket(), "tx", &[]);
    for i in [69, 1, 64] {
        c.send(
            Method::Set,
            &format!("/u/{i}/x"),
            None,
            i.to_string().as_bytes(),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&l.line()).unwrap();
        assert_eq!(v["uri"], format!("/u/{i}/x"));
    }
}

#[test]
fn listen_refuses_more_than_255_uris_before_subscribing() {
    let fake = FakeBroker::start(answer_subs);
    let args = many_uris(256);
    let out = Command::new(bin("fims-server", "fims_listen"))
        .arg("--socket")
        .arg(fake.socket())
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("256 subscription URIs") && err.contains("at most 255"),
        "{err}"
    );
    assert!(fake.datagrams(0).is_empty(), "no sub was sent");
}

#[test]
fn listen_survives_a_broker_restart() {
    let mut b = Broker::start();
    let l = Listener::start(&b, &["--json", "-u", "/events"]);
    l.wait_subscribed(&b, "/events", |s| s.contains("\"ping\""));
    b.kill();
    let lost = l.err_line(WAIT);
    assert!(
        lost.contains("lost the broker at") && lost.contains("reconnecting"),
        "{lost}"
    );
    b.restart();
    let back = l.err_line(Duration::from_secs(15));
    assert!(back.contains("reconnected to the broker at"), "{back}");
    let mut c = client(b.socket(), "after", &[]);
    c.send(Method::Pub, "/events/e", None, b"{\"n\":1}")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&l.line()).unwrap();
    assert_eq!(
        (v["uri"].as_str(), v["body"]["n"].as_i64()),
        (Some("/events/e"), Some(1))
    );
    // stdout carried only JSON: every line parsed above; stderr had the two lines only.
    assert!(l.errs.try_recv().is_err());
}

#[test]
fn listen_with_no_reconnect_exits_1_when_the_broker_goes() {
    let mut b = Broker::start();
    let mut l = Listener::start(&b, &["--no-reconnect", "-u", "/x"]);
    l.wait_subscribed(&b, "/x", |s| s.contains("\"ping\""));
    b.kill();
    let status = l.child.wait_timeout(WAIT).expect("fims_listen exits");
    assert_eq!(status.code(), Some(1));
    assert!(l.err_line(WAIT).contains("closed the connection"));
}

#[test]
fn send_exits_1_after_printing_an_error_answer() {
    let b = Broker::start();
    let mut svc = client(b.socket(), "svc", &["/svc"]);
    let responder = std::thread::spawn(move || {
        for answer in [
            &br#""Error: cops_heartbeat must be a non-negative integer""#[..],
            br#""Errors: none""#,
        ] {
            let m = next(&mut svc);
            svc.send(Method::Set, &m.replyto, None, answer).unwrap();
        }
    });
    let out = send_cmd(&b)
        .args([
            "-m",
            "set",
            "-u",
            "/svc/cops_heartbeat",
            "-r",
            "/me/r",
            "\"soon\"",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        out.stdout,
        b"\"Error: cops_heartbeat must be a non-negative integer\"\n"
    );
    let out = send_cmd(&b)
        .args(["-m", "get", "-u", "/svc/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "not the error convention");
    responder.join().unwrap();
}

#[test]
fn each_tool_says_its_own_purpose_in_help() {
    let mut firsts = Vec::new();
    for tool in ["fims_server", "fims_send", "fims_listen"] {
        let out = Command::new(bin("fims-server", tool))
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool} --help");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let first = text.lines().next().unwrap_or_default().to_string();
        assert!(first.len() > 20, "{tool}: {first:?}");
        assert!(
            !first.contains("fims_send / fims_listen tools"),
            "{tool}: the crate's description"
        );
        firsts.push(first);
    }
    assert!(firsts[0].contains("broker"), "{}", firsts[0]);
    assert!(
        firsts[1].starts_with("Send one FIMS message"),
        "{}",
        firsts[1]
    );
    assert!(
        firsts[2].starts_with("Print every FIMS message"),
        "{}",
        firsts[2]
    );
}
