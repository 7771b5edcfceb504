//! The `minimal` example answers through a broker and exits 0 on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use fims::blocking::Client;
use fims::Method;
use testkit::{Broker, ChildGuard};

#[test]
fn minimal_answers_and_stops_on_sigterm() {
    let broker = Broker::start();
    let exe = testkit::example("cops-responder", "minimal");
    let mut child = ChildGuard::spawn(
        Command::new(exe)
            .args(["--name", "mini", "--uri", "/mini"])
            .arg("--socket")
            .arg(broker.socket())
            .env_remove("FIMS_SOCKET")
            .stderr(Stdio::null()),
    );
    let mut c = Client::connect_to(broker.socket(), "cops").expect("client");
    let mut answer = None;
    let ok = testkit::wait_for(Duration::from_secs(10), || {
        c.send(Method::Set, "/mini/cops/cops_heartbeat", None, b"12")
            .ok();
        answer = c
            .request(Method::Get, "/mini/cops", b"", Duration::from_millis(200))
            .ok();
        answer.is_some()
    });
    assert!(ok, "the example answers");
    let v: serde_json::Value =
        serde_json::from_str(&answer.expect("answer").body_text()).expect("JSON");
    assert_eq!(v["cops_heartbeat"], 12);
    assert_eq!(v["pid"], child.pid(), "pid of the example process");
    child.signal(libc::SIGTERM);
    let status = child
        .wait_timeout(Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn minimal_refuses_bad_arguments() {
    let exe = testkit::example("cops-responder", "minimal");
    for args in [
        &["--name", "x"][..],
        &["--name", "x", "--uri", "bad"],
        &["--bogus"],
    ] {
        let out = Command::new(&exe).args(args).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}
