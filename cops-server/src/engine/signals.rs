//! After the decision to signal: the signal's outcome, the exit checks at
//! doubling intervals, escalation to SIGKILL, and the fault when a process
//! does not exit.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::ops::{KillReason, Suppressed};
use super::{Action, Engine, EventKind, ExitCheck, Kill, Kind, Severity, SignalOutcome};
use crate::config::Signal;
use crate::identity::unchecked_note;

/// When COPS first looks whether a signalled process exited.
const FIRST_EXIT_CHECK: Duration = Duration::from_millis(50);

impl Engine {
    /// The runtime's answer to [`Action::Signal`].
    pub fn signal_result(
        &mut self,
        now: Instant,
        process: usize,
        pid: u32,
        outcome: SignalOutcome,
    ) {
        let Some(p) = self.procs.get_mut(process) else {
            return;
        };
        let Some(kill) = p.kill.filter(|k| k.pid == pid) else {
            return;
        };
        let name = p.cfg.name.clone();
        let sig = kill.signal;
        match outcome {
            SignalOutcome::Delivered {
                evidence,
                unchecked,
            } => {
                // Look early and then at doubling intervals, so the exit is
                // reported when it happened, not only at the escalation deadline.
                p.ops.killed(sig, kill.reason, pid, now);
                let check = now + p.cfg.kill_escalation.min(FIRST_EXIT_CHECK);
                self.timers
                    .push(Reverse((check, Kind::KillCheck, process as u32, kill.seq)));
                let note = unchecked_note(&unchecked);
                let msg = format!("{name} (pid {pid}) sent {sig}; threads: {evidence}{note}");
                self.pid_event(
                    now,
                    Severity::Alarm,
                    EventKind::Signalled,
                    process,
                    pid,
                    msg,
                );
            }
            SignalOutcome::DryRun { evidence } => {
                p.kill = None;
                self.suppressed[Suppressed::DryRun as usize] += 1;
                let msg = format!(
                    "{name} (pid {pid}) would be sent {sig} (dry run); threads: {evidence}"
                );
                self.pid_event(
                    now,
                    Severity::Alarm,
                    EventKind::WouldSignal,
                    process,
                    pid,
                    msg,
                );
            }
            SignalOutcome::Starved(s) => {
                p.kill = None;
                self.give_back_kill(process, kill.sent);
                self.suppressed[Suppressed::Starved as usize] += 1;
                let next = match kill.reason {
                    KillReason::Loop => "its loop had no CPU to run with, COPS decides again at the loop's next failing beat",
                    _ => "it had no CPU to answer with, COPS decides again at its next missed heartbeat",
                };
                let msg = format!(
                    "{name} (pid {pid}) NOT sent {sig}: runnable but starved of CPU: {s}; {next}"
                );
                self.pid_event(now, Severity::Alarm, EventKind::Starved, process, pid, msg);
            }
            SignalOutcome::Refused(reason) => {
                // The PID stays in the stats: a new one is pinned once this one
                // is gone (while it lives, another PID is a conflict).
                p.kill = None;
                self.suppressed[Suppressed::Refused as usize] += 1;
                let msg = format!("{name} (pid {pid}) NOT sent {sig}: {reason}");
                self.pid_event(
                    now,
                    Severity::Alarm,
                    EventKind::SignalRefused,
                    process,
                    pid,
                    msg,
                );
            }
        }
    }

    /// A posted event about process `i`'s pinned PID `pid`.
    fn pid_event(
        &mut self,
        now: Instant,
        severity: Severity,
        kind: EventKind,
        i: usize,
        pid: u32,
        msg: String,
    ) {
        self.event(now, severity, kind, Some(i), msg, true);
        self.event_pid(pid);
    }

    /// A signal other than SIGKILL did not end the process in time: SIGKILL.
    fn escalate(&mut self, now: Instant, process: usize, kill: Kill, evidence: &str) {
        if let Some(why) = self.inhibit_reason(now, process) {
            return self.escalation_inhibited(now, process, kill, why);
        }
        let p = &mut self.procs[process];
        let pid = kill.pid;
        p.seq += 1;
        p.kill = Some(Kill {
            pid,
            signal: Signal::KILL,
            sent: now,
            seq: p.seq,
            reason: KillReason::Escalation,
        });
        self.actions.push_back(Action::Signal {
            process,
            pid,
            signal: Signal::KILL,
        });
        let ms = now.saturating_duration_since(kill.sent).as_millis();
        let msg = format!(
            "{} (pid {pid}) still running {ms} ms after {}: escalating to SIGKILL; threads: {evidence}",
            p.cfg.name, kill.signal
        );
        self.pid_event(
            now,
            Severity::Alarm,
            EventKind::Escalated,
            process,
            pid,
            msg,
        );
    }

    /// An inhibit came while a signal other than SIGKILL was in flight: no
    /// escalation. The incarnation may be signalled again once the inhibit
    /// ends and it is still hung.
    fn escalation_inhibited(&mut self, now: Instant, process: usize, kill: Kill, why: String) {
        self.suppressed[Suppressed::Inhibited as usize] += 1;
        let p = &mut self.procs[process];
        p.kill = None;
        p.killed_incarnation = None;
        let pid = kill.pid;
        let msg = format!(
            "{} (pid {pid}) still running after {}: not escalating to SIGKILL: {why}",
            p.cfg.name, kill.signal
        );
        self.pid_event(
            now,
            Severity::Alarm,
            EventKind::Escalated,
            process,
            pid,
            msg,
        );
    }

    /// First look after a signal; later looks double the interval up to
    /// `killEscalationMS`.
    pub(super) fn on_kill_check(&mut self, i: usize, seq: u64) {
        if let Some(k) = self.procs[i].kill.filter(|k| k.seq == seq) {
            self.actions.push_back(Action::CheckExit {
                process: i,
                pid: k.pid,
            });
        }
    }

    /// The runtime's answer to [`Action::CheckExit`].
    pub fn exit_result(&mut self, now: Instant, process: usize, pid: u32, result: ExitCheck) {
        let Some(p) = self.procs.get_mut(process) else {
            return;
        };
        let Some(kill) = p.kill.filter(|k| k.pid == pid) else {
            return;
        };
        let name = p.cfg.name.clone();
        let elapsed = now.saturating_duration_since(kill.sent);
        let deadline = kill.sent + p.cfg.kill_escalation;
        if result != ExitCheck::Exited && now < deadline {
            // Still running, but its time is not up: look again later.
            let next = (now + elapsed.max(FIRST_EXIT_CHECK)).min(deadline);
            self.timers
                .push(Reverse((next, Kind::KillCheck, process as u32, kill.seq)));
            return;
        }
        let ms = elapsed.as_millis();
        let unpin = p.pid != Some(pid);
        match result {
            ExitCheck::Exited => {
                p.kill = None;
                let msg = format!("{name} (pid {pid}) exited after {} ({ms} ms)", kill.signal);
                self.pid_event(now, Severity::Status, EventKind::Exited, process, pid, msg);
            }
            ExitCheck::StillAlive { evidence } if !kill.signal.is_kill() => {
                return self.escalate(now, process, kill, &evidence);
            }
            ExitCheck::StillAlive { evidence } => {
                p.kill = None;
                let msg = format!(
                    "{name} (pid {pid}) did NOT exit {ms} ms after SIGKILL (stuck in the kernel?); threads: {evidence}"
                );
                self.pid_event(
                    now,
                    Severity::Fault,
                    EventKind::DidNotExit,
                    process,
                    pid,
                    msg,
                );
            }
        }
        if unpin {
            if self.pinned_by.get(&pid) == Some(&(process as u32)) {
                self.pinned_by.remove(&pid);
            }
            self.actions.push_back(Action::Unpin { process, pid });
        }
    }
}
