//! Kill safety. No test signals a PID it did not start itself: the refusals for
//! PID 1, COPS's own PID and strangers are checked without any signal.

use super::*;
use std::process::{Child, Command};
use std::time::Duration;

const OWN: u32 = 777_777;

fn sleeper() -> Child {
    Command::new("sleep")
        .arg("100")
        .spawn()
        .expect("spawn sleep")
}

fn reap(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn alive(c: &mut Child) -> bool {
    c.try_wait().expect("try_wait").is_none()
}

#[test]
fn pin_refuses_pid_one_and_own_pid_without_signalling() {
    // PID 1 exists, and so does our own: the rule refuses both before any syscall.
    assert_eq!(
        Identity::pin(1, OWN).unwrap_err(),
        PidRefusal::NotAboveOne(1)
    );
    let me = std::process::id();
    assert_eq!(Identity::pin(me, me).unwrap_err(), PidRefusal::OwnPid);
    let mut layer = KillLayer::new(me, false);
    assert!(matches!(layer.pin(0, 1), PinOutcome::Refused(_)));
    assert!(matches!(layer.pin(0, me), PinOutcome::Refused(_)));
    assert_eq!(layer.pinned(), 0);
    // Nothing pinned: a signal action for them is refused.
    let out = layer.signal(0, 1, Signal::KILL, None);
    assert_eq!(out, SignalOutcome::Refused(SignalRefusal::NotPinned));
}

#[test]
fn nonexistent_pid_refused() {
    let c = sleeper();
    let pid = c.id();
    reap(c);
    if pid_exists(pid) {
        return; // reused already (very unlikely); nothing to test honestly
    }
    assert_eq!(
        Identity::pin(pid, OWN).unwrap_err(),
        PidRefusal::NoSuchProcess
    );
}

#[test]
fn parse_stat_counts_after_the_last_paren() {
    let text =
        "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 100 0\n";
    assert_eq!(parse_stat(text), Some(('S', 987_654)));
    assert_eq!(parse_stat("garbage"), None);
    let me = read_stat(std::process::id()).expect("own stat");
    assert!(me.1 > 0);
}

#[test]
fn exited_and_reused_identities_are_never_signalled() {
    // A: pinned, then killed and reaped by this test (its own child).
    let a = sleeper();
    let a_pid = a.id();
    let pinned_a = Identity::pin(a_pid, OWN).expect("pin A");
    assert!(pinned_a.verify().is_ok());
    let a_start = read_stat(a_pid).unwrap().1;
    reap(a);
    assert!(pinned_a.exited());
    assert_eq!(
        pinned_a.signal(libc::SIGTERM),
        Err(SignalRefusal::IdentityGone)
    );

    // B: another child of ours. An identity with B's PID number but A's start
    // time is what a reused PID looks like: refused, and B lives on.
    let mut b = sleeper();
    let b_pid = b.id();
    let b_start = read_stat(b_pid).unwrap().1;
    // (A started before B, so an earlier start time stands for A's.)
    let _ = a_start;
    let reused = Identity::from_parts(b_pid, b_start - 1, None);
    assert!(reused.exited());
    assert_eq!(
        reused.signal(libc::SIGKILL),
        Err(SignalRefusal::IdentityGone)
    );
    // Same with A's (dead) pidfd and B's PID number and start time.
    let a2 = sleeper();
    let a2_pid = a2.id();
    let fd = pidfd_open(a2_pid);
    reap(a2);
    if let Some(fd) = fd {
        let stale = Identity::from_parts(b_pid, b_start, Some(fd));
        assert!(stale.exited());
        assert_eq!(
            stale.signal(libc::SIGKILL),
            Err(SignalRefusal::IdentityGone)
        );
    }
    std::thread::sleep(Duration::from_millis(20));
    assert!(alive(&mut b), "B must not have been signalled");
    reap(b);
}

#[test]
fn layer_signals_its_pinned_child_with_evidence() {
    let mut c = sleeper();
    let pid = c.id();
    let mut layer = KillLayer::new(std::process::id(), false);
    assert_eq!(layer.pin(3, pid), PinOutcome::Pinned);
    assert!(matches!(
        layer.check_exit(3, pid),
        ExitCheck::StillAlive { evidence } if !evidence.is_empty()
    ));
    match layer.signal(3, pid, Signal::parse("TERM").unwrap(), Some("sleep")) {
        SignalOutcome::Delivered { evidence } => {
            assert!(evidence.starts_with(&format!("tid {pid} ")), "{evidence}")
        }
        other => panic!("{other:?}"),
    }
    let status = c.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );
    assert_eq!(layer.check_exit(3, pid), ExitCheck::Exited);
    layer.unpin(3, pid);
    assert_eq!(layer.pinned(), 0);
}

#[test]
fn dry_run_and_exe_mismatch_signal_nothing() {
    let mut c = sleeper();
    let pid = c.id();
    let mut dry = KillLayer::new(std::process::id(), true);
    assert_eq!(dry.pin(0, pid), PinOutcome::Pinned);
    assert!(matches!(
        dry.signal(0, pid, Signal::KILL, None),
        SignalOutcome::DryRun { .. }
    ));
    let mut layer = KillLayer::new(std::process::id(), false);
    assert_eq!(layer.pin(0, pid), PinOutcome::Pinned);
    match layer.signal(0, pid, Signal::KILL, Some("site_controller")) {
        SignalOutcome::Refused(SignalRefusal::ExeMismatch { actual, .. }) => {
            assert_eq!(actual, "sleep")
        }
        other => panic!("{other:?}"),
    }
    // Not pinned for that process index: refused.
    assert_eq!(
        layer.signal(1, pid, Signal::KILL, None),
        SignalOutcome::Refused(SignalRefusal::NotPinned)
    );
    std::thread::sleep(Duration::from_millis(20));
    assert!(alive(&mut c));
    reap(c);
}
