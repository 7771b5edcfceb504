//! ABI misuse (tests/c/misuse.c, static and shared) and memory checks under
//! valgrind: misuse.c, and a connect/poll/free cycle of the mode-B example
//! against a real broker. Without valgrind installed the valgrind tests print a
//! notice and pass (.ci/run installs it).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{compile, spawn_ready, Link};
use fims::blocking::Client;
use fims::Method;
use testkit::Broker;

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("program runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn valgrind() -> Option<Command> {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("NOTICE: valgrind is not installed; skipping the valgrind check");
        return None;
    }
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "-q",
        "--error-exitcode=1",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite,indirect,possible",
    ]);
    Some(cmd)
}

#[test]
fn misuse_static() {
    run_ok(&mut Command::new(compile("tests/c/misuse.c", Link::Static)));
}

#[test]
fn misuse_shared() {
    run_ok(&mut Command::new(compile("tests/c/misuse.c", Link::Shared)));
}

#[test]
fn misuse_under_valgrind() {
    let exe = compile("tests/c/misuse.c", Link::Static);
    if let Some(mut vg) = valgrind() {
        run_ok(vg.arg(exe));
    }
}

/// connect, poll (answering real requests), free: no errors, no leaks.
#[test]
fn connect_poll_free_under_valgrind() {
    run_example_under_valgrind("examples/own_connection.c");
}

/// Mode A the same way: new, handle for each message, free.
#[test]
fn host_routed_under_valgrind() {
    run_example_under_valgrind("examples/host_routed.c");
}

fn run_example_under_valgrind(example: &str) {
    let exe = compile(example, Link::Static);
    let Some(mut vg) = valgrind() else { return };
    let broker = Broker::start();
    let (mut child, _) = spawn_ready(
        vg.arg(exe)
            .args(["--name", "vg_proc", "--uri", "/vg", "--socket"])
            .arg(broker.socket()),
    );
    let mut c = Client::connect_to(broker.socket(), "c_test").expect("connect");
    for n in 1..=3u64 {
        let body = n.to_string();
        let echo = c
            .request(
                Method::Set,
                "/vg/cops/cops_heartbeat",
                body.as_bytes(),
                Duration::from_secs(10),
            )
            .expect("answer under valgrind");
        assert_eq!(echo.body, body.as_bytes());
        let obj = c
            .request(Method::Get, "/vg/cops", b"", Duration::from_secs(10))
            .expect("get");
        let v: serde_json::Value = serde_json::from_slice(&obj.body).expect("json");
        assert_eq!(v["pid"], child.pid());
    }
    child.signal(libc::SIGTERM);
    let status = child
        .wait_timeout(Duration::from_secs(30))
        .expect("exits on SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "valgrind found errors or leaks (see stderr)"
    );
}
