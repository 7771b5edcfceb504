//! `cops_responder_tick` from a work thread while the main thread polls and
//! handles on the same responder (tests/c/tick_threads.c), against a real
//! broker, under ThreadSanitizer (gcc `-fsanitize=thread`) and under
//! valgrind's helgrind. Each prints a NOTICE and passes when its tool is
//! missing (`.ci/run` installs valgrind; gcc's TSan runtime comes with gcc).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{compile_with, crate_dir, spawn_ready, Link};
use fims::blocking::Client;
use fims::Method;
use testkit::Broker;

/// Runs the program `cmd` (tick_threads, perhaps under a tool) against
/// `broker`, asks for heartbeats until an answer carries ticks, stops it with
/// SIGTERM and returns (exit code, stdout tail, stderr).
fn exercise(
    cmd: &mut Command,
    broker: &Broker,
    uri: &str,
    patience: Duration,
) -> (Option<i32>, String) {
    let log = broker
        .dir()
        .join(format!("{}.stderr", uri.trim_start_matches('/')));
    let file = std::fs::File::create(&log).expect("stderr file");
    let (mut child, line) = spawn_ready(cmd.stderr(file));
    assert!(line.contains("tick_threads ready"), "{line:?}");
    let mut c = Client::connect_to(broker.socket(), "threads_test").expect("connect");
    let mut ticked = 0;
    let counted = testkit::wait_for(patience, || {
        let Ok(m) = c.request(
            Method::Get,
            &format!("{uri}/cops"),
            b"",
            Duration::from_millis(500),
        ) else {
            return false;
        };
        let v: serde_json::Value = serde_json::from_slice(&m.body).expect("JSON answer");
        assert_eq!(v["pid"], child.pid(), "{v}");
        if v["loop"]["count"].as_u64().is_some_and(|n| n > 0) {
            ticked += 1;
        }
        ticked >= 3
    });
    assert!(
        counted,
        "no three answers with ticks; stderr:\n{}",
        read(&log)
    );
    child.signal(libc::SIGTERM);
    let status = child.wait_timeout(patience).expect("exits on SIGTERM");
    (status.code(), read(&log))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Whether gcc can build and run a `-fsanitize=thread` program here.
fn tsan_works() -> bool {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("t.c");
    let exe = dir.path().join("t");
    std::fs::write(&src, "int main(void) { return 0; }\n").expect("write probe");
    let built = Command::new("gcc")
        .args(["-fsanitize=thread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .is_ok_and(|o| o.status.success());
    built
        && Command::new(&exe)
            .output()
            .is_ok_and(|o| o.status.success())
}

#[test]
fn tick_while_polling_under_thread_sanitizer() {
    if !tsan_works() {
        eprintln!(
            "NOTICE: gcc -fsanitize=thread does not build or run here; skipping the TSan check"
        );
        return;
    }
    let exe = compile_with(
        "tests/c/tick_threads.c",
        Link::Static,
        &["-fsanitize=thread", "-pthread"],
    );
    let broker = Broker::start();
    let mut cmd = Command::new(exe);
    cmd.args(["--uri", "/tsan", "--socket"])
        .arg(broker.socket())
        .env("TSAN_OPTIONS", "halt_on_error=1 exitcode=66");
    let (code, stderr) = exercise(&mut cmd, &broker, "/tsan", Duration::from_secs(20));
    assert!(
        !stderr.contains("ThreadSanitizer"),
        "TSan reports:\n{stderr}"
    );
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
}

#[test]
fn tick_while_polling_under_helgrind() {
    let exe = compile_with("tests/c/tick_threads.c", Link::Static, &["-pthread"]);
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("NOTICE: valgrind is not installed; skipping the helgrind check");
        return;
    }
    let broker = Broker::start();
    let mut cmd = Command::new("valgrind");
    let supp = crate_dir().join("tests/helgrind.supp");
    cmd.args(["--tool=helgrind", "-q", "--error-exitcode=1"])
        .arg(format!("--suppressions={}", supp.display()))
        .arg(exe)
        .args(["--uri", "/helgrind", "--socket"])
        .arg(broker.socket());
    let (code, stderr) = exercise(&mut cmd, &broker, "/helgrind", Duration::from_secs(60));
    assert!(
        !stderr.contains("Possible data race"),
        "helgrind reports:\n{stderr}"
    );
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
}
