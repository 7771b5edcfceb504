//! The one-command demo runs end to end (in its fast mode) and exits 0, having
//! shown the hang, COPS's alarm, the kill, the restarts, the loop overrun
//! alarm, the loop kill and the final stats.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn cops_demo_runs_end_to_end_and_exits_zero() {
    // The demo finds its siblings next to itself (target/<profile>/); make sure
    // the other packages' binaries are there, as `cargo run` would.
    testkit::bin("fims-server", "fims_server");
    testkit::bin("cops-server", "cops");
    let mut child = testkit::ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_cops-demo"))
            .args(["--fast", "--no-build"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdout = child.0.stdout.take().expect("piped");
    let mut stderr = child.0.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = child.wait_timeout(Duration::from_secs(90));
    drop(child);
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    let report = format!("status {status:?}\n--- stdout\n{out}\n--- stderr\n{err}");
    assert!(status.is_some_and(|s| s.success()), "{report}");
    for needle in [
        "set /site/debug/hang",
        "hybridos_controller pid",
        "ended: killed by SIGKILL",
        "restarted hybridos_controller as pid",
        "ALARM",
        "modbus_client pid",
        "ended: exit status 3",
        "restarted modbus_client as pid",
        "set /components/modbus_test_client/debug/slow 400",
        "modbus_client (pid",
        "loop overran its 200 ms deadline",
        "LOOP ALARM",
        "loop back within its limits",
        "set /site/debug/slow 400",
        "; killing with SIGKILL",
        "hybridos_controller loop alarm over: pid",
        "restarted hybridos_controller as pid",
        "new pid",
        "all children stopped",
    ] {
        assert!(out.contains(needle), "missing {needle:?}\n{report}");
    }
    assert!(
        out.contains("name") && out.contains("restarts") && out.contains("loop p99 ms"),
        "no stats table\n{report}"
    );
}
