//! Compiles every example against the header and both libraries
//! (`-Wall -Wextra -Werror`), runs it against a real `fims_server` and checks
//! its answers over FIMS.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{compile, spawn_ready, Link};
use fims::blocking::Client;
use fims::Method;
use testkit::{Broker, ChildGuard};

const T: Duration = Duration::from_secs(5);

fn start(example: &str, link: Link, broker: &Broker, uri: &str) -> ChildGuard {
    let exe = compile(example, link);
    let (child, line) = spawn_ready(
        Command::new(exe)
            .args(["--name", "c_example", "--uri", uri, "--socket"])
            .arg(broker.socket()),
    );
    assert!(line.contains("ready"), "unexpected first line {line:?}");
    child
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(body)))
}

/// `get <uri>/cops` answers the object with the child's pid; a heartbeat `set`
/// without replyto is stored, one with replyto is echoed; then SIGTERM ends it with 0.
fn check_heartbeat_cycle(mut child: ChildGuard, broker: &Broker, uri: &str) {
    let mut c = Client::connect_to(broker.socket(), "c_test").expect("connect");
    let cops = format!("{uri}/cops");
    let obj = json(
        &c.request(Method::Get, &cops, b"", T)
            .expect("get /cops")
            .body,
    );
    assert_eq!(obj["pid"], child.pid(), "{obj}");
    assert_eq!(obj["cops_heartbeat"], 0, "{obj}");
    for f in ["version_tag", "version_commit", "version_build"] {
        assert!(obj[f].as_str().is_some_and(|s| !s.is_empty()), "{f}: {obj}");
    }

    let hb = format!("{cops}/cops_heartbeat");
    c.send(Method::Set, &hb, None, b"17")
        .expect("set heartbeat");
    let obj = json(
        &c.request(Method::Get, &cops, b"", T)
            .expect("get /cops")
            .body,
    );
    assert_eq!(obj["cops_heartbeat"], 17, "{obj}");
    let echo = c
        .request(Method::Set, &hb, b"18", T)
        .expect("set with replyto");
    assert_eq!(echo.body, b"18");
    let bad = c.request(Method::Set, &hb, b"-1", T).expect("bad set");
    assert!(bad.body.starts_with(b"\"Error: "), "{:?}", bad.body_text());
    let pid = c
        .request(Method::Get, &format!("{cops}/pid"), b"", T)
        .expect("get pid");
    assert_eq!(json(&pid.body), child.pid());

    child.signal(libc::SIGTERM);
    let status = child.wait_timeout(T).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn host_routed_static() {
    let broker = Broker::start();
    let child = start("examples/host_routed.c", Link::Static, &broker, "/hr_s");
    check_heartbeat_cycle(child, &broker, "/hr_s");
}

#[test]
fn host_routed_shared() {
    let broker = Broker::start();
    let child = start("examples/host_routed.c", Link::Shared, &broker, "/hr_d");
    check_heartbeat_cycle(child, &broker, "/hr_d");
}

#[test]
fn own_connection_static() {
    let broker = Broker::start();
    let child = start("examples/own_connection.c", Link::Static, &broker, "/oc_s");
    check_heartbeat_cycle(child, &broker, "/oc_s");
}

#[test]
fn own_connection_shared() {
    let broker = Broker::start();
    let child = start("examples/own_connection.c", Link::Shared, &broker, "/oc_d");
    check_heartbeat_cycle(child, &broker, "/oc_d");
}

#[test]
fn controller_static() {
    let broker = Broker::start();
    let child = start("examples/controller.cpp", Link::Static, &broker, "/site_s");
    check_heartbeat_cycle(child, &broker, "/site_s");
}

#[test]
fn controller_shared() {
    let broker = Broker::start();
    let child = start("examples/controller.cpp", Link::Shared, &broker, "/site_d");
    check_heartbeat_cycle(child, &broker, "/site_d");
}

/// Mode B survives a broker restart: poll reports the loss and reconnects.
#[test]
fn own_connection_reconnects_after_broker_restart() {
    let mut broker = Broker::start();
    let child = start("examples/own_connection.c", Link::Static, &broker, "/oc_r");
    broker.kill();
    broker.restart();
    let mut c = Client::connect_to(broker.socket(), "c_test").expect("connect");
    let answered = testkit::wait_for(Duration::from_secs(10), || {
        c.request(
            Method::Get,
            "/oc_r/cops/pid",
            b"",
            Duration::from_millis(200),
        )
        .is_ok_and(|m| json(&m.body) == child.pid())
    });
    assert!(answered, "no answer after the broker restarted");
}

/// The hang hook: after `set <uri>/debug/hang` the controller's main loop
/// spins and the heartbeat goes unanswered; SIGTERM still ends it.
#[test]
fn controller_hang_hook_silences_the_responder() {
    let broker = Broker::start();
    let mut child = start("examples/controller.cpp", Link::Static, &broker, "/site_h");
    let mut c = Client::connect_to(broker.socket(), "c_test").expect("connect");
    c.request(Method::Get, "/site_h/cops", b"", T)
        .expect("answers before the hang");
    c.send(Method::Set, "/site_h/debug/hang", None, b"true")
        .expect("send hang");
    let silent = c.request(Method::Get, "/site_h/cops", b"", Duration::from_millis(500));
    assert!(matches!(silent, Err(fims::Error::Timeout(_))), "{silent:?}");
    child.signal(libc::SIGTERM);
    assert_eq!(child.wait_timeout(T).and_then(|s| s.code()), Some(0));
}

/// The crash hook: `set <uri>/debug/crash` exits with status 1.
#[test]
fn controller_crash_hook_exits_1() {
    let broker = Broker::start();
    let mut child = start("examples/controller.cpp", Link::Shared, &broker, "/site_c");
    let mut c = Client::connect_to(broker.socket(), "c_test").expect("connect");
    c.send(Method::Set, "/site_c/debug/crash", None, b"true")
        .expect("send crash");
    assert_eq!(child.wait_timeout(T).and_then(|s| s.code()), Some(1));
}
