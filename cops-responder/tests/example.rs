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
            .args(["--name", "mini", "--uri", "/mini", "--version-build", "77"])
            .arg("--socket")
            .arg(broker.socket())
            .env_remove("FIMS_SOCKET")
            .stderr(Stdio::null()),
    );
    let mut c = Client::connect_to(broker.socket(), "cops").expect("client");
    // Until the example has subscribed, the set may be lost while a later get
    // still lands: retry until an answer carries the value just set.
    let mut answer = serde_json::Value::Null;
    let ok = testkit::wait_for(Duration::from_secs(10), || {
        c.send(Method::Set, "/mini/cops/cops_heartbeat", None, b"12")
            .ok();
        if let Ok(m) = c.request(Method::Get, "/mini/cops", b"", Duration::from_millis(200)) {
            answer = serde_json::from_str(&m.body_text()).expect("JSON");
        }
        answer["cops_heartbeat"] == 12
    });
    assert!(
        ok,
        "the example answers with the stored heartbeat: {answer}"
    );
    let v = answer;
    assert_eq!(v["pid"], child.pid(), "pid of the example process");
    // All three version strings, non-empty: the crate's version by default.
    assert_eq!(v["version_tag"], env!("CARGO_PKG_VERSION"), "{v}");
    assert!(
        v["version_commit"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    assert_eq!(v["version_build"], "77", "{v}");
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
