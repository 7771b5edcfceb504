//! A PID reused between a reply and its pin, forced in a PID namespace of the
//! suite's own.
//!
//! The outer test re-runs this test binary as PID 1 of a new PID namespace
//! (`unshare --pid --fork --mount-proc`, root only), where the whole site runs
//! and `/proc/sys/kernel/ns_last_pid` chooses the next PID:
//! 1. a fresh process `reuse` (the `oneshot` helper) receives its first round,
//!    stops COPS (SIGSTOP), sends the reply naming its own PID P, and exits;
//! 2. the suite reaps it, sets `ns_last_pid` to P-1 and starts a bus client of
//!    the same user, which gets P (checked; retried if not);
//! 3. COPS continues and reads the reply, whose PID now belongs to a process
//!    started after the reply was sent. It must never signal it (the pin at
//!    read time: a process younger than the reply is not the one that answered).
//!    The old rule (accept any existing PID, pin later) pins the newcomer, sees
//!    `reuse` go silent, and kills it.

use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::ChildGuard;

use crate::faults::cases::site;
use crate::faults::harness::{bins, is_root, Decoy, Spec, Timing};
use crate::faults::outcome::{Outcome, Stalls};

/// The test that runs inside the namespace.
pub const INNER: &str = "pid_reuse_in_namespace";
/// Set (to the timing's name) only inside the namespace.
pub const INNER_ENV: &str = "COPS_FAULTS_PIDNS";
/// Prefix of the line that carries the inner outcome out.
pub const MARK: &str = "FAULTS-OUTCOME ";

const CASE: &str = "PID reused between reply and pin";

fn skipped(t: Timing, why: &str) -> Outcome {
    Outcome::skipped(CASE, t.name, why)
}

/// Runs the case in a new PID namespace and returns its outcome.
pub fn pid_reuse(t: Timing) -> Outcome {
    if !is_root() {
        return skipped(t, "needs root (a PID namespace of its own, ns_last_pid)");
    }
    // Root in a container may still be refused namespaces: say so, do not fail.
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--", "true"])
        .stdin(Stdio::null())
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr).trim().to_owned();
            return skipped(
                t,
                &format!("unshare --pid --fork --mount-proc refused: {err}"),
            );
        }
        Err(e) => return skipped(t, &format!("cannot run unshare: {e}")),
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Outcome::broken(CASE, t.name, format!("no test binary path: {e}")),
    };
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(exe)
        .args(["--exact", INNER, "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, t.name)
        .envs(bins().env())
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return Outcome::broken(CASE, t.name, format!("cannot run unshare: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let found = stdout
        .lines()
        // The harness prints "test <name> ... " on the same line first.
        .find_map(|l| l.find(MARK).map(|i| &l[i + MARK.len()..]))
        .and_then(|j| serde_json::from_str::<Outcome>(j).ok());
    match found {
        Some(o) => o,
        None => Outcome::broken(
            CASE,
            t.name,
            format!(
                "no outcome from the namespace ({}):\n{}\n{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
    }
}

/// Inside the namespace: forces the reuse and watches COPS.
pub fn inner(t: Timing) -> Outcome {
    let mut spec = Spec::new(0, t);
    spec.unsupervised.push(("reuse".into(), "/reuse".into()));
    let mut site = site!(CASE, spec);
    let cops = site.cops.pid().to_string();
    let socket = site.bus.socket().to_owned();
    let mut forced = false;
    for attempt in 1..=5 {
        let mut x = ChildGuard::spawn(
            Command::new(&bins().helper)
                .arg("oneshot")
                .arg("--socket")
                .arg(&socket)
                .args(["--uri", "/reuse", "--stop-pid", &cops])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let p = x.pid();
        match x.wait_timeout(Duration::from_secs(5) + t.period * 3) {
            Some(st) if st.success() => {}
            other => {
                site.problems.push(format!(
                    "the one-shot responder did not answer and exit: {other:?}"
                ));
                break;
            }
        }
        // P is free (reaped): the next process started here gets it.
        if let Err(e) = std::fs::write("/proc/sys/kernel/ns_last_pid", (p - 1).to_string()) {
            site.problems.push(format!("cannot write ns_last_pid: {e}"));
            break;
        }
        let mut cmd = Command::new(&bins().helper);
        cmd.arg("idle")
            .arg("--socket")
            .arg(&socket)
            .args(["--uri", "/newcomer"]);
        match Decoy::spawn_ready("newcomer on the bus", &mut cmd, Duration::from_secs(10)) {
            Ok(y) if y.pid() == p => {
                site.notes
                    .push(format!("pid {p} reused on attempt {attempt}"));
                site.decoys.push(y);
                forced = true;
                break;
            }
            Ok(y) => site.notes.push(format!(
                "attempt {attempt}: the newcomer got pid {}, not {p}",
                y.pid()
            )),
            Err(e) => site.problems.push(e),
        }
        site.cops.signal(libc::SIGCONT);
        site.periods(t.allowance + 2);
    }
    site.cops.signal(libc::SIGCONT);
    if !forced {
        site.problems
            .push("could not hand the replying PID to another process".into());
    }
    // The verdict on the silent `reuse` comes within a bound; watch past it.
    std::thread::sleep(t.bound() * 3);
    site.finish(Stalls::AtMost(1), 1)
}
