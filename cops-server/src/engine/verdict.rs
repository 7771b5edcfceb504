//! Verdicts: declaring a process hung (saying truly how long it has been
//! silent), deciding whether and with what to signal it, and the two kill
//! budgets: `maxKills` per process (quarantine) and `maxKillsPerWindow` for the
//! whole site (kills past it wait their turn, in order).

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::time::Instant;

use super::ops::{KillReason, Suppressed};
use super::serve::iso8601;
use super::{Action, Engine, EventKind, Kill, Kind, Severity, State};
use crate::config::Signal;

/// The site-wide kill budget: recent kills and the processes waiting.
#[derive(Debug, Default)]
pub(super) struct SiteBudget {
    /// When the kills of the current window were decided.
    kills: VecDeque<Instant>,
    /// Hung processes whose kill waits for room, in the order they were found.
    waiting: VecDeque<u32>,
    /// Kills deferred so far (summary `kills_deferred`).
    pub(super) deferred: u64,
    /// A budget timer is set.
    timer: bool,
}

impl SiteBudget {
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// A kill decided at `at` was not made: it no longer uses the budget.
    pub(super) fn give_back(&mut self, at: Instant) {
        if let Some(k) = self.kills.iter().rposition(|&t| t == at) {
            self.kills.remove(k);
        }
    }

    /// Kills made within `window` before `now` (the budget used).
    pub(super) fn kills_within(&self, now: Instant, window: std::time::Duration) -> usize {
        self.kills.iter().filter(|&&t| t + window > now).count()
    }
}

/// What [`Engine::maybe_kill`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KillDecision {
    /// The signal action is queued.
    Killing(Signal),
    /// Waiting for room in the site kill budget.
    Deferred(String),
    /// Not killed, and why.
    No(String),
    /// A kill COPS would make, held back by a protection (counted in
    /// `cops_kills_suppressed_total` when a verdict decides it).
    Suppressed(Suppressed, String),
}

impl Engine {
    pub(super) fn declare_hung(&mut self, now: Instant, i: usize) {
        let p = &mut self.procs[i];
        let before = p.state;
        p.state = State::Hung;
        let since = match p.last_good {
            Some(t) => format!(
                "{} ms since the last good reply",
                now.saturating_duration_since(t).as_millis()
            ),
            None => format!(
                "never answered since COPS started at {}",
                self.evidence.started_at()
            ),
        };
        let pid = p
            .pid
            .map(|x| format!("pid {x}"))
            .unwrap_or_else(|| "no pid known".into());
        let head = format!(
            "{} ({pid}) hung ({} -> hung): {} heartbeats missed, {since}",
            p.cfg.name,
            before.as_str(),
            p.misses
        );
        let decision = self.maybe_kill(now, i);
        let (tail, what) = match &decision {
            KillDecision::Killing(sig) => (format!("; killing with {sig}"), "killing"),
            KillDecision::Deferred(why) => (format!("; kill deferred: {why}"), "deferred"),
            KillDecision::No(why) => (format!("; not killed: {why}"), "not_killed"),
            KillDecision::Suppressed(r, why) => {
                self.suppressed[*r as usize] += 1;
                (format!("; not killed: {why}"), r.as_str())
            }
        };
        let msg = head + &tail;
        self.event(now, Severity::Alarm, EventKind::Hung, Some(i), msg, true);
        let data = self.hung_data(now, i, what);
        self.event_data(i, data);
    }

    /// A miss of a process hung since an earlier verdict: kill it now if that
    /// was not possible before (its inhibit or quarantine ended), saying so.
    pub(super) fn kill_still_hung(&mut self, now: Instant, i: usize) {
        let KillDecision::Killing(sig) = self.maybe_kill(now, i) else {
            return;
        };
        let p = &self.procs[i];
        let since = match p.last_good {
            Some(t) => format!(
                "{} ms since the last good reply",
                now.saturating_duration_since(t).as_millis()
            ),
            None => "never answered".into(),
        };
        let msg = format!(
            "{} (pid {}) still hung: {} heartbeats missed, {since}; killing with {sig}",
            p.cfg.name,
            p.pid.unwrap_or_default(),
            p.misses
        );
        self.event(
            now,
            Severity::Alarm,
            EventKind::StillHung,
            Some(i),
            msg,
            true,
        );
        let data = self.hung_data(now, i, "killing");
        self.event_data(i, data);
    }

    /// The numbers behind a verdict, for the decision log.
    fn hung_data(&self, now: Instant, i: usize, decision: &str) -> String {
        let p = &self.procs[i];
        let since = p
            .last_good
            .map(|t| now.saturating_duration_since(t).as_millis().to_string());
        let last = p
            .last_good
            .map(|t| format!("\"{}\"", iso8601(self.wall(t))));
        let allow = p.cfg.hang_time_allowance.map(|d| d.as_millis().to_string());
        format!(
            r#"{{"missed":{},"allowance":{},"hang_time_allowance_ms":{},"since_last_good_ms":{},"last_good":{},"period_ms":{},"deadline_ms":{},"decision":"{decision}","signal":"{}"}}"#,
            p.misses,
            self.cfg.error_allowance,
            allow.as_deref().unwrap_or("null"),
            since.as_deref().unwrap_or("null"),
            last.as_deref().unwrap_or("null"),
            self.cfg.heartbeat.as_millis(),
            self.cfg.reply_deadline.as_millis(),
            p.cfg.kill_signal,
        )
    }

    /// Decides whether to signal hung process `i` now; queues the action if so.
    pub(super) fn maybe_kill(&mut self, now: Instant, i: usize) -> KillDecision {
        self.decide_kill(now, i, false, KillReason::Hung)
    }

    /// As [`maybe_kill`](Self::maybe_kill) for a process whose work loop
    /// failed (`loopAction: "kill"`): the same checks, budgets and path.
    pub(super) fn maybe_kill_loop(&mut self, now: Instant, i: usize) -> KillDecision {
        self.decide_kill(now, i, false, KillReason::Loop)
    }

    /// As [`maybe_kill`](Self::maybe_kill); `turn`: its turn in the site
    /// budget's queue has come (nobody waits before it); `reason`: why.
    fn decide_kill(
        &mut self,
        now: Instant,
        i: usize,
        turn: bool,
        reason: KillReason,
    ) -> KillDecision {
        let p = &self.procs[i];
        if !p.cfg.kill_on_hang {
            return KillDecision::No("killOnHang is false".into());
        }
        if p.killed_incarnation == Some(p.incarnation) && p.pid.is_some() {
            return KillDecision::No("already signalled this incarnation".into());
        }
        let Some(pid) = p.pid else {
            return KillDecision::No("no verified PID known (it never answered)".into());
        };
        if !p.confirmed {
            return KillDecision::No(format!(
                "pid {pid} answered one round only, not confirmed as this process's"
            ));
        }
        if let Some(why) = self.inhibit_reason(now, i) {
            return KillDecision::Suppressed(Suppressed::Inhibited, why);
        }
        let p = &self.procs[i];
        if p.waiting_site {
            return KillDecision::Deferred(self.site_reason());
        }
        if let Err(why) = self.process_budget(now, i, pid) {
            return KillDecision::Suppressed(Suppressed::Quarantined, why);
        }
        if !self.site_room(now, turn) {
            return self.defer(now, i, pid);
        }
        self.site.kills.push_back(now);
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
            reason,
        });
        self.actions.push_back(Action::Signal {
            process: i,
            pid,
            signal,
        });
        KillDecision::Killing(signal)
    }

    /// A kill decided at `sent` was not made (the kill layer held it): it no
    /// longer counts against either budget or this incarnation.
    pub(super) fn give_back_kill(&mut self, i: usize, sent: Instant) {
        let p = &mut self.procs[i];
        p.killed_incarnation = None;
        if p.kills.back() == Some(&sent) {
            p.kills.pop_back();
        }
        self.site.give_back(sent);
    }

    /// `maxKills` in `killWindowMS`: `Err` while quarantined (one fault event
    /// when it starts, one status event when it ends).
    fn process_budget(&mut self, now: Instant, i: usize, pid: u32) -> Result<(), String> {
        let p = &mut self.procs[i];
        let Some((max, window)) = p.cfg.kill_budget else {
            return Ok(());
        };
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
        Ok(())
    }

    /// Whether the site kill budget has room for one more kill now (and
    /// nobody is waiting before, unless it is this one's `turn`).
    fn site_room(&mut self, now: Instant, turn: bool) -> bool {
        let Some(max) = self.cfg.max_kills_per_window else {
            return true;
        };
        let window = self.cfg.kill_window();
        while self.site.kills.front().is_some_and(|&t| t + window <= now) {
            self.site.kills.pop_front();
        }
        self.site.kills.len() < max as usize && (turn || self.site.waiting.is_empty())
    }

    fn site_reason(&self) -> String {
        format!(
            "site kill budget of {} per {} ms spent ({} waiting)",
            self.cfg.max_kills_per_window.unwrap_or_default(),
            self.cfg.kill_window().as_millis(),
            self.site.waiting.len()
        )
    }

    /// Puts process `i` in the site budget's queue (alarmed, counted).
    fn defer(&mut self, now: Instant, i: usize, pid: u32) -> KillDecision {
        self.site.waiting.push_back(i as u32);
        self.site.deferred += 1;
        self.suppressed[Suppressed::SiteBudget as usize] += 1;
        self.procs[i].waiting_site = true;
        self.arm_site_timer();
        let why = self.site_reason();
        let msg = format!(
            "{} (pid {pid}) kill deferred: {why}",
            self.procs[i].cfg.name
        );
        self.event(
            now,
            Severity::Alarm,
            EventKind::KillDeferred,
            Some(i),
            msg,
            true,
        );
        KillDecision::Deferred(why)
    }

    fn arm_site_timer(&mut self) {
        if self.site.timer {
            return;
        }
        if let Some(&oldest) = self.site.kills.front() {
            let at = oldest + self.cfg.kill_window();
            self.timers.push(Reverse((at, Kind::SiteBudget, 0, 0)));
            self.site.timer = true;
        }
    }

    /// Room may have freed in the site budget: kill the waiting processes in
    /// the order they were found, as far as it goes.
    pub(super) fn on_site_budget(&mut self, now: Instant) {
        self.site.timer = false;
        let Some(max) = self.cfg.max_kills_per_window else {
            return;
        };
        let window = self.cfg.kill_window();
        while self.site.kills.front().is_some_and(|&t| t + window <= now) {
            self.site.kills.pop_front();
        }
        while self.site.kills.len() < max as usize {
            let Some(i) = self.site.waiting.pop_front() else {
                break;
            };
            let i = i as usize;
            self.procs[i].waiting_site = false;
            // Still hung or its loop still failing (it may have answered,
            // or recovered, meanwhile): its turn now.
            if self.procs[i].state == State::Hung {
                let _ = self.decide_kill(now, i, true, KillReason::Hung);
            } else if self.loop_kill_due(i) {
                let _ = self.decide_kill(now, i, true, KillReason::Loop);
            }
        }
        if !self.site.waiting.is_empty() {
            self.arm_site_timer();
        }
    }
}
