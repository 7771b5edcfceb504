//! The heartbeat cycle: round starts on a fixed grid, deadlines in a FIFO, and
//! what a missed deadline means (misses, verdicts, stalls).

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use fims::Method;

use super::{Engine, EventKind, Severity, State, Transmit};

/// Round starts: the monitored processes in offset order on a grid of `period`.
#[derive(Debug)]
pub(super) struct Schedule {
    pub(super) order: Vec<u32>,
    pub(super) cursor: usize,
    cycle: Instant,
    period: Duration,
    /// When the process under the cursor starts its round.
    next_at: Option<Instant>,
}

impl Schedule {
    pub(super) fn new(order: Vec<u32>, now: Instant, period: Duration) -> Schedule {
        let next_at = (!order.is_empty()).then_some(now);
        Schedule {
            order,
            cursor: 0,
            cycle: now,
            period,
            next_at,
        }
    }

    /// When the process under the cursor starts its round.
    pub(super) fn next(&self) -> Option<Instant> {
        self.next_at
    }

    /// The first start of the process at position `pos` after `after`.
    fn start_of(&self, pos: usize, after: Instant) -> Instant {
        let n = self.order.len() as u32;
        let mut t = self.cycle + self.period * pos as u32 / n;
        if pos < self.cursor {
            t += self.period;
        }
        while t <= after {
            t += self.period;
        }
        t
    }

    pub(super) fn advance(&mut self) {
        self.cursor += 1;
        if self.cursor == self.order.len() {
            self.cursor = 0;
            self.cycle += self.period;
        }
        let n = self.order.len() as u32;
        self.next_at = (n > 0).then(|| self.cycle + self.period * self.cursor as u32 / n);
    }
}

/// One heartbeat round of one process.
#[derive(Debug, Clone, Copy)]
pub(super) struct Round {
    /// Matches the deadline entry and the pending reply to this round.
    pub(super) seq: u64,
    /// When step 1 went out (response times are measured from here).
    pub(super) sent: Instant,
    /// Replies after this are late.
    pub(super) deadline: Instant,
    /// The connection epoch it was sent in (a reconnect voids it).
    pub(super) epoch: u64,
    /// Only rounds of live processes count toward a stall.
    pub(super) alive_at_start: bool,
    /// A good reply came.
    pub(super) answered: bool,
}

/// The sliding window of the last period's deadlines, for stall detection.
#[derive(Debug, Default)]
pub(super) struct Window {
    entries: VecDeque<(Instant, u32, bool)>,
    misses: usize,
    pub(super) stalled_since: Option<Instant>,
}

impl Engine {
    /// Whether a miss at the deadline `deadline` of process `i` (with its
    /// misses so far) would make it hung.
    pub(super) fn at_risk(&self, i: usize, deadline: Instant) -> bool {
        let p = &self.procs[i];
        p.state != State::Hung
            && match p.cfg.hang_time_allowance {
                Some(allow) => deadline.saturating_duration_since(p.miss_base) >= allow,
                None => p.misses + 1 >= self.cfg.error_allowance,
            }
    }

    pub(super) fn on_start(&mut self, now: Instant, t: Instant, i: usize) {
        // A start a whole period late is superseded by the next cycle's.
        if !self.connected || t + self.cfg.heartbeat <= now {
            return;
        }
        if self.procs[i].round.is_some() {
            // The last round was sent late and is still open: this one follows
            // right after its deadline instead of being lost.
            self.procs[i].deferred = true;
            return;
        }
        self.start_round(now, i);
    }

    fn start_round(&mut self, now: Instant, i: usize) {
        let deadline = self.cfg.reply_deadline;
        if self.at_risk(i, now + deadline) {
            self.urgent.push(Reverse(now + deadline));
        }
        let p = &mut self.procs[i];
        p.deferred = false;
        p.seq += 1;
        p.round = Some(Round {
            seq: p.seq,
            sent: now,
            deadline: now + deadline,
            epoch: self.epoch,
            alive_at_start: p.state == State::Alive,
            answered: false,
        });
        p.pending = None;
        self.deadlines.push_back((now + deadline, i as u32, p.seq));
        self.transmits.push_back(Transmit {
            method: Method::Set,
            uri: p.hb_uri.clone(),
            replyto: None,
            body: p.h.to_string().into_bytes(),
        });
        self.transmits.push_back(Transmit {
            method: Method::Get,
            uri: p.get_uri.clone(),
            replyto: Some(p.reply_uri.clone()),
            body: Vec::new(),
        });
    }

    pub(super) fn on_deadline(&mut self, now: Instant, t: Instant, i: usize, seq: u64) {
        if self.procs[i].round.is_none_or(|r| r.seq != seq) {
            return;
        }
        self.judge(now, t, i);
        if std::mem::take(&mut self.procs[i].deferred) && self.connected {
            self.start_round(now, i);
        }
    }

    /// Closes the open round of process `i` at its deadline `t`.
    fn judge(&mut self, now: Instant, t: Instant, i: usize) {
        let Some(round) = self.procs[i].round else {
            return;
        };
        self.procs[i].round = None;
        self.procs[i].pending = None;
        if now.saturating_duration_since(t) > self.cfg.heartbeat / 2 {
            // COPS itself was late: not the process's fault.
            let name = &self.procs[i].cfg.name;
            let late = now.saturating_duration_since(t).as_millis();
            let msg = format!(
                "{name}: deadline checked {late} ms late (COPS lagged): not counted as a miss"
            );
            self.event(
                now,
                Severity::Status,
                EventKind::OwnLag,
                Some(i),
                msg,
                false,
            );
            return;
        }
        if !self.connected || round.epoch != self.epoch {
            return; // the bus was down during the round
        }
        let missed = !round.answered;
        if round.alive_at_start {
            self.window_push(now, i, missed);
        }
        if !missed {
            return;
        }
        let p = &mut self.procs[i];
        if self.window.stalled_since.is_some() {
            // No verdicts in a stall; the stalled time does not count either.
            p.miss_base = now;
            return;
        }
        p.misses = p.misses.saturating_add(1);
        let due = match p.cfg.hang_time_allowance {
            Some(allow) => now.saturating_duration_since(p.miss_base) >= allow,
            None => p.misses >= self.cfg.error_allowance,
        };
        if p.state == State::Hung {
            // Already hung: kill now if it was not possible before (quarantine over, ...).
            let _ = self.maybe_kill(now, i);
        } else if due {
            self.declare_hung(now, i);
        } else if let Some(&pos) = self.positions.get(i).filter(|&&p| p != u32::MAX) {
            // The start of the round that would bring the verdict is urgent.
            let (period, deadline) = (self.cfg.heartbeat, self.cfg.reply_deadline);
            let p = &self.procs[i];
            let mut start = self.schedule.start_of(pos as usize, t);
            match p.cfg.hang_time_allowance {
                None => start += period * (self.cfg.error_allowance - p.misses - 1),
                Some(allow) => {
                    while (start + deadline).saturating_duration_since(p.miss_base) < allow {
                        start += period;
                    }
                }
            }
            if start > now {
                self.urgent.push(Reverse(start));
            }
        }
    }

    fn window_push(&mut self, now: Instant, i: usize, missed: bool) {
        let period = self.cfg.heartbeat;
        let w = &mut self.window;
        while let Some(&(t, _, m)) = w.entries.front() {
            if t + period > now {
                break;
            }
            w.entries.pop_front();
            w.misses -= usize::from(m);
        }
        let misses = w.misses + usize::from(missed);
        let total = w.entries.len() + 1;
        let stall = misses >= 3 && misses * 2 > total;
        match (w.stalled_since.is_some(), stall) {
            (false, true) => {
                w.stalled_since = Some(now);
                // Forgive the misses of this window counted before the stall was seen.
                let forgiven: Vec<u32> = w.entries.iter().filter(|e| e.2).map(|e| e.1).collect();
                for j in forgiven {
                    let p = &mut self.procs[j as usize];
                    p.misses = p.misses.saturating_sub(1);
                    p.miss_base = p.miss_base.max(now);
                }
                let msg = format!(
                    "bus or host stall: {misses} of {total} processes alive at the start of their round missed it; no verdicts until it passes"
                );
                self.event(now, Severity::Alarm, EventKind::Stall, None, msg, true);
            }
            (true, false) => {
                let since = self.window.stalled_since.take().unwrap_or(now);
                let ms = now.saturating_duration_since(since).as_millis();
                let msg = format!("bus or host stall over after {ms} ms");
                self.event(now, Severity::Status, EventKind::StallOver, None, msg, true);
            }
            _ => {}
        }
        let w = &mut self.window;
        w.entries.push_back((now, i as u32, missed));
        w.misses += usize::from(missed);
    }
}
