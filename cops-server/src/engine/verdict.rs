//! Verdicts and their consequences: declaring a process hung, deciding whether
//! (and with what) to signal it, the kill budget, escalation and the exit check.

use std::cmp::Reverse;
use std::time::Instant;

use super::{Action, Engine, EventKind, ExitCheck, Kill, Kind, Severity, SignalOutcome, State};
use crate::config::Signal;

/// When COPS first looks whether a signalled process exited.
const FIRST_EXIT_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

impl Engine {
    pub(super) fn declare_hung(&mut self, now: Instant, i: usize) {
        let p = &mut self.procs[i];
        let before = p.state;
        p.state = State::Hung;
        let since = now.saturating_duration_since(p.miss_base).as_millis();
        let pid = p
            .pid
            .map(|x| format!("pid {x}"))
            .unwrap_or_else(|| "no pid known".into());
        let head = format!(
            "{} ({pid}) hung ({} -> hung): {} heartbeats missed, {since} ms since the last good reply",
            p.cfg.name,
            before.as_str(),
            p.misses
        );
        let tail = match self.maybe_kill(now, i) {
            Ok(sig) => format!("; killing with {sig}"),
            Err(why) => format!("; not killed: {why}"),
        };
        self.event(
            now,
            Severity::Alarm,
            EventKind::Hung,
            Some(i),
            head + &tail,
            true,
        );
    }

    /// Decides whether to signal process `i` now; queues the action if so.
    pub(super) fn maybe_kill(&mut self, now: Instant, i: usize) -> Result<Signal, String> {
        let p = &mut self.procs[i];
        if !p.cfg.kill_on_hang {
            return Err("killOnHang is false".into());
        }
        if p.killed_incarnation == Some(p.incarnation) && p.pid.is_some() {
            return Err("already signalled this incarnation".into());
        }
        let Some(pid) = p.pid else {
            return Err("no verified PID known (it never answered)".into());
        };
        if let Some((max, window)) = p.cfg.kill_budget {
            while p.kills.front().is_some_and(|&t| t + window <= now) {
                p.kills.pop_front();
            }
            if p.kills.len() >= max as usize {
                let until = p
                    .kills
                    .front()
                    .map(|&t| (t + window).saturating_duration_since(now));
                let secs = until.unwrap_or_default().as_secs_f64();
                if !std::mem::replace(&mut p.quarantined, true) {
                    let msg = format!(
                        "{} (pid {pid}) quarantined: {max} kills within {} ms; alarms only for the next {secs:.1} s",
                        p.cfg.name,
                        window.as_millis()
                    );
                    self.event(
                        now,
                        Severity::Fault,
                        EventKind::Quarantined,
                        Some(i),
                        msg,
                        true,
                    );
                }
                return Err(format!("quarantined (kill budget of {max} spent)"));
            }
            if std::mem::replace(&mut p.quarantined, false) {
                let msg = format!("{}: kill budget window passed, quarantine over", p.cfg.name);
                self.event(
                    now,
                    Severity::Status,
                    EventKind::QuarantineOver,
                    Some(i),
                    msg,
                    true,
                );
            }
        }
        let p = &mut self.procs[i];
        p.kills.push_back(now);
        p.killed_incarnation = Some(p.incarnation);
        p.seq += 1;
        let signal = p.cfg.kill_signal;
        p.kill = Some(Kill {
            pid,
            signal,
            sent: now,
            seq: p.seq,
        });
        self.actions.push_back(Action::Signal {
            process: i,
            pid,
            signal,
        });
        Ok(signal)
    }

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
            SignalOutcome::Delivered { evidence } => {
                // Look early and then at doubling intervals, so the exit is
                // reported when it happened, not only at the escalation deadline.
                let check = now + p.cfg.kill_escalation.min(FIRST_EXIT_CHECK);
                self.timers
                    .push(Reverse((check, Kind::KillCheck, process as u32, kill.seq)));
                let msg = format!("{name} (pid {pid}) sent {sig}; threads: {evidence}");
                self.event(
                    now,
                    Severity::Alarm,
                    EventKind::Signalled,
                    Some(process),
                    msg,
                    true,
                );
                self.event_pid(pid);
            }
            SignalOutcome::DryRun { evidence } => {
                p.kill = None;
                let msg = format!(
                    "{name} (pid {pid}) would be sent {sig} (dry run); threads: {evidence}"
                );
                self.event(
                    now,
                    Severity::Alarm,
                    EventKind::WouldSignal,
                    Some(process),
                    msg,
                    true,
                );
                self.event_pid(pid);
            }
            SignalOutcome::Refused(reason) => {
                p.kill = None;
                if p.pid == Some(pid) {
                    // The pinned identity is no good: pin again from the next reply.
                    p.pid = None;
                }
                let msg = format!("{name} (pid {pid}) NOT sent {sig}: {reason}");
                self.event(
                    now,
                    Severity::Alarm,
                    EventKind::SignalRefused,
                    Some(process),
                    msg,
                    true,
                );
                self.event_pid(pid);
            }
        }
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
                self.event(
                    now,
                    Severity::Status,
                    EventKind::Exited,
                    Some(process),
                    msg,
                    true,
                );
                self.event_pid(pid);
            }
            ExitCheck::StillAlive { evidence } if !kill.signal.is_kill() => {
                p.seq += 1;
                p.kill = Some(Kill {
                    pid,
                    signal: Signal::KILL,
                    sent: now,
                    seq: p.seq,
                });
                self.actions.push_back(Action::Signal {
                    process,
                    pid,
                    signal: Signal::KILL,
                });
                let msg = format!(
                    "{name} (pid {pid}) still running {ms} ms after {}: escalating to SIGKILL; threads: {evidence}",
                    kill.signal
                );
                self.event(
                    now,
                    Severity::Alarm,
                    EventKind::Escalated,
                    Some(process),
                    msg,
                    true,
                );
                self.event_pid(pid);
                return;
            }
            ExitCheck::StillAlive { evidence } => {
                p.kill = None;
                let msg = format!(
                    "{name} (pid {pid}) did NOT exit {ms} ms after SIGKILL (stuck in the kernel?); threads: {evidence}"
                );
                self.event(
                    now,
                    Severity::Fault,
                    EventKind::DidNotExit,
                    Some(process),
                    msg,
                    true,
                );
                self.event_pid(pid);
            }
        }
        if unpin {
            self.actions.push_back(Action::Unpin { process, pid });
        }
    }
}
