//! Judging heartbeat replies. Any client on the bus can send one, so a reply is
//! evidence, not truth (docs/protocol/cops.md, "Failure actions"):
//! - a round succeeds when *any* reply within its deadline carries the right
//!   counter and a PID that passes the identity rules; a wrong, forged, late or
//!   duplicate reply is counted and logged (rate-limited), never ends a round
//!   and never stands in the way of another reply;
//! - a PID not pinned yet is checked and pinned through the [`Verifier`] while
//!   the reply is read: no check is ever pending;
//! - while the pinned process lives, a reply naming another PID is a conflict
//!   (one alarm), never a restart, and never a success.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use fims::Message;

use super::parse::{parse_reply, versions_hash, Reply};
use super::{Action, Engine, EventKind, Severity, State};
use crate::identity::{
    pid_rule, unchecked_note, PidRefusal, PinOutcome, PinRequest, Pinned, Verifier,
};

pub(super) use super::parse::BuildFnv;

/// New PIDs checked per process per round at most (the kill layer reads
/// `/proc` for each): a flood of forged replies costs this much, no more.
pub const MAX_CHECKS_PER_ROUND: u32 = 4;

/// At most one log line about rejected replies per process this often.
const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a reply was not taken (the counters of stats `rejected_replies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RejectKind {
    Malformed,
    Late,
    Duplicate,
    Stale,
    RefusedPid,
    Conflict,
}

/// Rejected replies of one process: counters and the log rate limit.
#[derive(Debug, Clone, Default)]
pub(super) struct Rejects {
    pub(super) malformed: u64,
    pub(super) late: u64,
    pub(super) duplicate: u64,
    pub(super) stale: u64,
    pub(super) refused_pid: u64,
    pub(super) conflict: u64,
    /// The rate limit of the log lines about bad replies.
    log: Throttle,
    /// The rate limit of the alarms about refused PIDs.
    alarm: Throttle,
}

/// At most one line per [`REJECT_LOG_EVERY`]; counts what it held back.
#[derive(Debug, Clone, Default)]
struct Throttle {
    /// When the last line went out.
    last: Option<Instant>,
    /// Lines held back since.
    held: u64,
}

impl Throttle {
    /// Whether a line may go out now; when so, how many were held back before.
    fn may(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < REJECT_LOG_EVERY)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

impl Rejects {
    fn count(&mut self, kind: RejectKind) {
        let c = match kind {
            RejectKind::Malformed => &mut self.malformed,
            RejectKind::Late => &mut self.late,
            RejectKind::Duplicate => &mut self.duplicate,
            RejectKind::Stale => &mut self.stale,
            RejectKind::RefusedPid => &mut self.refused_pid,
            RejectKind::Conflict => &mut self.conflict,
        };
        *c += 1;
    }
}

impl Engine {
    pub(super) fn on_reply(
        &mut self,
        now: Instant,
        i: usize,
        msg: &Message<'_>,
        verifier: &mut dyn Verifier,
    ) {
        let reply = match parse_reply(msg.body) {
            Ok(r) => r,
            Err(why) => return self.reject(now, i, RejectKind::Malformed, why),
        };
        let p = &self.procs[i];
        let Some(round) = p.round else {
            let why = "no round open (late or unsolicited)".to_string();
            return self.reject(now, i, RejectKind::Late, why);
        };
        if round.answered {
            let why = "the round was answered already".to_string();
            return self.reject(now, i, RejectKind::Duplicate, why);
        }
        if now > round.deadline {
            let late = now.saturating_duration_since(round.deadline).as_millis();
            let why = format!("{late} ms after the deadline");
            return self.reject(now, i, RejectKind::Late, why);
        }
        if reply.heartbeat != p.h {
            let why = format!("stale heartbeat {} (expected {})", reply.heartbeat, p.h);
            return self.reject(now, i, RejectKind::Stale, why);
        }
        let pid = match pid_rule(reply.pid, self.own_pid) {
            Ok(pid) => pid,
            Err(why) => return self.refuse_pid(now, i, reply.pid, why),
        };
        if p.pid == Some(pid) {
            // The pinned process: it must still come from its owner.
            if !msg.username.is_empty() && !verifier.sent_by_owner(msg.username, p.uids) {
                let why = PidRefusal::NotTheSender {
                    uids: p.uids,
                    sender: msg.username.to_owned(),
                };
                return self.refuse_pid(now, i, reply.pid, why);
            }
            return self.succeed(now, i, &reply, None);
        }
        self.new_pid(now, i, pid, &reply, msg.username, verifier);
    }

    /// A reply with the right counter naming a PID not pinned for process `i`.
    fn new_pid(
        &mut self,
        now: Instant,
        i: usize,
        pid: u32,
        reply: &Reply<'_>,
        sender: &str,
        verifier: &mut dyn Verifier,
    ) {
        if let Some(&j) = self.pinned_by.get(&pid) {
            if j as usize != i && verifier.alive(j as usize, pid) {
                let process = self.procs[j as usize].cfg.name.clone();
                let why = PidRefusal::PinnedForOther { process };
                return self.refuse_pid(now, i, i64::from(pid), why);
            }
        }
        let p = &mut self.procs[i];
        let Some(round) = p.round.as_mut() else {
            return;
        };
        if round.checks >= MAX_CHECKS_PER_ROUND {
            return self.refuse_pid(now, i, i64::from(pid), PidRefusal::CheckBudgetSpent);
        }
        round.checks += 1;
        let req = PinRequest {
            process: i,
            pid,
            received: now,
            round_sent: round.sent,
            sender,
            expected_exe: p.cfg.expected_exe.as_deref(),
            expected_user: p.cfg.expected_user.as_deref(),
        };
        let pinned = match verifier.pin(&req) {
            PinOutcome::Pinned(pinned) => pinned,
            PinOutcome::Refused(why) => return self.refuse_pid(now, i, i64::from(pid), why),
        };
        if let Some(old) = self.procs[i].pid {
            if verifier.alive(i, old) {
                // Two live processes answer as one: keep the pinned one.
                verifier.unpin(i, pid);
                return self.conflict(now, i, old, pid);
            }
        }
        self.succeed(now, i, reply, Some((pid, pinned)));
    }

    /// A good reply: counter, misses, stats, and the PID (a new one is a restart).
    fn succeed(&mut self, now: Instant, i: usize, r: &Reply<'_>, new: Option<(u32, Pinned)>) {
        let p = &mut self.procs[i];
        let Some(round) = p.round.as_mut() else {
            return;
        };
        round.answered = true;
        if new.is_none() && round.seq > p.pinned_in {
            p.confirmed = true;
        }
        let sent = round.sent;
        let rt = now.saturating_duration_since(sent);
        p.h += 1;
        p.misses = 0;
        p.miss_base = now;
        let first = p.last_good.replace(now).is_none();
        p.rejected_pid = None;
        let hash = versions_hash(&r.versions);
        // Allocate (and touch the stored strings) only when the versions changed.
        let versions = if hash == p.stats.versions_hash {
            [None, None, None]
        } else {
            r.versions.clone().map(|v| v.map(Cow::into_owned))
        };
        p.stats.record(rt, now, versions, hash);
        p.ops
            .record_rtt(super::ops::rtt_slice(self.started, now), rt);
        let seq = round.seq;
        let adopted = new.is_some();
        let restarted = match new {
            Some((pid, pinned)) => self.adopt_pid(i, pid, pinned, seq),
            None => None,
        };
        let p = &mut self.procs[i];
        if restarted.is_some() {
            p.ops.last_restart = Some(now);
        }
        let before = std::mem::replace(&mut p.state, State::Alive);
        if restarted.is_some() || before != State::Alive {
            self.announce_alive(now, i, before, first, restarted, rt);
        }
        if adopted {
            self.loop_incarnation(now, i, restarted);
        }
        self.on_loop(now, i, &r.loop_, sent);
    }

    /// Makes `pid` the current incarnation of process `i`; returns the old PID
    /// when this is a restart.
    fn adopt_pid(&mut self, i: usize, pid: u32, pinned: Pinned, seq: u64) -> Option<u32> {
        let p = &mut self.procs[i];
        let old = p.pid.replace(pid);
        p.confirmed = pinned.started_before_round;
        p.pinned_in = seq;
        p.uids = pinned.uids;
        p.unchecked = pinned.unchecked;
        p.incarnation += 1;
        p.conflict = None;
        self.pinned_by.insert(pid, i as u32);
        let old = old?;
        let p = &mut self.procs[i];
        // A process still being killed stays pinned (and its PID taken)
        // until its exit is seen.
        let dying = p.kill.is_some_and(|k| k.pid == old);
        if !dying && self.pinned_by.get(&old) == Some(&(i as u32)) {
            self.pinned_by.remove(&old);
        }
        let p = &mut self.procs[i];
        p.stats.total_restarts += 1;
        if p.killed_incarnation == Some(p.incarnation - 1) {
            p.stats.cops_restarts += 1;
        }
        if !dying {
            self.actions.push_back(Action::Unpin {
                process: i,
                pid: old,
            });
        }
        Some(old)
    }

    /// The events of a state change on a good reply (first answer, restart,
    /// alive again); the common case (alive, same PID) reports nothing.
    fn announce_alive(
        &mut self,
        now: Instant,
        i: usize,
        before: State,
        first: bool,
        restarted: Option<u32>,
        rt: Duration,
    ) {
        let p = &self.procs[i];
        let (name, total) = (p.cfg.name.clone(), p.stats.total_restarts);
        let pid = p.pid.unwrap_or_default();
        let ms = rt.as_secs_f64() * 1000.0;
        let note = if first || restarted.is_some() {
            unchecked_note(&p.unchecked)
        } else {
            String::new()
        };
        if let Some(old) = restarted {
            let msg = format!("{name} restarted: pid {old} -> {pid} (restart #{total}){note}");
            self.event(
                now,
                Severity::Status,
                EventKind::Restarted,
                Some(i),
                msg,
                true,
            );
        }
        if first {
            // Its first answer ever (even after an alarm for never answering).
            let msg = format!("{name} (pid {pid}) alive, answered in {ms:.1} ms{note}");
            let (sev, post) = match before {
                State::Hung => (Severity::Status, true),
                _ => (Severity::Info, false),
            };
            self.event(now, sev, EventKind::Alive, Some(i), msg, post);
        } else if before == State::Hung {
            let msg =
                format!("{name} (pid {pid}) alive again after being hung, answered in {ms:.1} ms");
            self.event(
                now,
                Severity::Status,
                EventKind::Resurrected,
                Some(i),
                msg,
                true,
            );
        }
    }

    /// A reply not taken: counted; logged at most once per 10 s per process.
    fn reject(&mut self, now: Instant, i: usize, kind: RejectKind, why: String) {
        let p = &mut self.procs[i];
        // It may have been the process's own answer, which started a beat.
        p.loops.broken();
        p.rejects.count(kind);
        let Some(unlogged) = p.rejects.log.may(now) else {
            return;
        };
        let more = match unlogged {
            0 => String::new(),
            n => format!(" ({n} more rejected since the last such line)"),
        };
        let msg = format!("{}: bad heartbeat reply: {why}{more}", p.cfg.name);
        self.event(
            now,
            Severity::Status,
            EventKind::BadReply,
            Some(i),
            msg,
            false,
        );
    }

    /// A reply whose PID is not believed: counted; one alarm per bad PID (and
    /// at most one per 10 s per process), the rest logged with the others.
    fn refuse_pid(&mut self, now: Instant, i: usize, pid: i64, why: PidRefusal) {
        let p = &mut self.procs[i];
        let repeated = p.rejected_pid.replace(pid) == Some(pid);
        if repeated || why == PidRefusal::CheckBudgetSpent {
            let why = format!("reply with pid {pid} not accepted: {why}");
            return self.reject(now, i, RejectKind::RefusedPid, why);
        }
        p.rejects.count(RejectKind::RefusedPid);
        if let Some(unlogged) = p.rejects.alarm.may(now) {
            let more = match unlogged {
                0 => String::new(),
                n => format!(" ({n} more refused since the last such alarm)"),
            };
            let msg = format!(
                "{}: reply with pid {pid} not accepted: {why}{more}",
                p.cfg.name
            );
            self.event(
                now,
                Severity::Alarm,
                EventKind::PidRejected,
                Some(i),
                msg,
                true,
            );
        }
    }

    /// A live pinned process `a` and another, `b`, both answer as process `i`.
    fn conflict(&mut self, now: Instant, i: usize, a: u32, b: u32) {
        let p = &mut self.procs[i];
        if p.conflict == Some(a) {
            let why = format!("pid {b} answers while pid {a} (pinned) lives");
            return self.reject(now, i, RejectKind::Conflict, why);
        }
        p.rejects.count(RejectKind::Conflict);
        p.conflict = Some(a);
        let name = &p.cfg.name;
        let msg = format!(
            "{name}: two processes answer as {name}: pids {a} and {b}; keeping {a} until it is gone"
        );
        self.event(
            now,
            Severity::Alarm,
            EventKind::Conflict,
            Some(i),
            msg,
            true,
        );
    }
}
