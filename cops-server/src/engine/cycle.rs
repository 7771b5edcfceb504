//! The heartbeat cycle: round starts on a fixed grid, deadlines in a FIFO, and
//! what a missed deadline means. A deadline without a good reply is not a miss
//! yet: it waits for the probe sent at that deadline (see `evidence`), and
//! becomes a miss only when the bus and COPS were sound throughout the round.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use fims::Method;

use super::{Action, Body, Engine, State, Transmit, Via};

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
    /// Matches the deadline entry to this round.
    pub(super) seq: u64,
    /// When step 1 went out (response times are measured from here).
    pub(super) sent: Instant,
    /// Replies after this are late.
    pub(super) deadline: Instant,
    /// The connection epoch it was sent in (a reconnect voids it).
    pub(super) epoch: u64,
    /// A good reply came.
    pub(super) answered: bool,
    /// New PIDs checked (through the kill layer) in this round: bounded, so a
    /// flood of forged replies costs a few `/proc` reads per round at most.
    pub(super) checks: u32,
}

/// A round that ended without a good reply, waiting for its probe.
#[derive(Debug, Clone, Copy)]
pub(super) struct Awaiting {
    /// Process index.
    pub(super) i: u32,
    /// The process's counter at the round: a success since makes the miss moot.
    pub(super) h: u64,
    /// When the round was sent.
    pub(super) sent: Instant,
    /// Its deadline.
    pub(super) deadline: Instant,
    /// Its connection epoch.
    pub(super) epoch: u64,
    /// The probe (sequence number) sent at or after the deadline that decides it.
    pub(super) probe: u64,
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
            answered: false,
            checks: 0,
        });
        self.deadlines.push_back((now + deadline, i as u32, p.seq));
        self.transmits.push_back(Transmit {
            via: Via::Heartbeat,
            method: Method::Set,
            uri: p.hb_uri.clone(),
            replyto: None,
            body: Body::counter(p.h),
        });
        self.transmits.push_back(Transmit {
            via: Via::Heartbeat,
            method: Method::Get,
            uri: p.get_uri.clone(),
            replyto: Some(p.reply_uri.clone()),
            body: Body::empty(),
        });
    }

    /// The deadline `t` of round `seq` of process `i`, handled at `now`.
    /// Returns whether a probe is needed to decide it.
    pub(super) fn on_deadline(&mut self, now: Instant, t: Instant, i: usize, seq: u64) -> bool {
        if self.procs[i].round.is_none_or(|r| r.seq != seq) {
            return false;
        }
        let probe = self.close_round(now, t, i);
        if std::mem::take(&mut self.procs[i].deferred) && self.connected {
            self.start_round(now, i);
        }
        probe
    }

    /// Closes the open round of process `i` at its deadline `t`: answered, it
    /// is done; void when the bus was down or COPS handled the deadline late;
    /// otherwise it awaits the probe about to be sent (returns true).
    fn close_round(&mut self, now: Instant, t: Instant, i: usize) -> bool {
        let Some(round) = self.procs[i].round.take() else {
            return false;
        };
        if round.answered {
            return false;
        }
        // Whatever the process answered (late, lost) started a beat unseen.
        self.procs[i].loops.broken();
        if !self.connected || round.epoch != self.epoch {
            self.void_round(i, t); // the bus was down during the round
            return false;
        }
        if now.saturating_duration_since(t) > self.evidence.lag_bound() {
            // COPS itself was late to look: it, not the process, was stalled.
            self.note_lag(t, now);
            self.void_round(i, t);
            return false;
        }
        self.awaiting.push_back(Awaiting {
            i: i as u32,
            h: self.procs[i].h,
            sent: round.sent,
            deadline: t,
            epoch: round.epoch,
            probe: self.evidence.next_seq(),
        });
        true
    }

    /// Decides the awaiting rounds up to probe `seq`, sent at `probe_sent`:
    /// `sound` says whether that probe came back in time.
    pub(super) fn resolve_awaiting(
        &mut self,
        now: Instant,
        seq: u64,
        probe_sent: Instant,
        sound: bool,
    ) {
        while let Some(a) = self.awaiting.front().copied().filter(|a| a.probe <= seq) {
            self.awaiting.pop_front();
            let i = a.i as usize;
            if self.procs[i].h != a.h {
                continue; // a later round succeeded: this miss no longer matters
            }
            let void = !sound
                || !self.connected
                || a.epoch != self.epoch
                || self.evidence.disturbed(a.sent, probe_sent);
            if void {
                self.void_round(i, a.deadline);
            } else {
                self.missed(now, a.deadline, i);
            }
        }
    }

    /// Every awaiting round is void (the bus went away).
    pub(super) fn void_awaiting(&mut self, _now: Instant) {
        while let Some(a) = self.awaiting.pop_front() {
            if self.procs[a.i as usize].h == a.h {
                self.void_round(a.i as usize, a.deadline);
            }
        }
    }

    /// A round that proves nothing about the process: no miss, and its time
    /// does not count toward `hangTimeAllowanceMS`.
    pub(super) fn void_round(&mut self, i: usize, deadline: Instant) {
        let p = &mut self.procs[i];
        p.miss_base = p.miss_base.max(deadline);
        self.evidence.count_void();
    }

    /// A real miss at deadline `t`: count it, and declare the process hung (or
    /// kill an already hung one) when it is due.
    fn missed(&mut self, now: Instant, t: Instant, i: usize) {
        let p = &mut self.procs[i];
        p.misses = p.misses.saturating_add(1);
        p.ops.misses += 1;
        if p.misses == 1 && p.confirmed {
            if let Some(pid) = p.pid {
                // The baseline that tells a starved process from a hung one.
                self.actions.push_back(Action::Watch { process: i, pid });
            }
        }
        let p = &self.procs[i];
        let due = match p.cfg.hang_time_allowance {
            Some(allow) => t.saturating_duration_since(p.miss_base) >= allow,
            None => p.misses >= self.cfg.error_allowance,
        };
        if p.state == State::Hung {
            // Already hung: kill now if it was not possible before (quarantine
            // or inhibit over, ...).
            self.kill_still_hung(now, i);
        } else if due {
            self.declare_hung(now, i);
        } else {
            self.urge_verdict(now, t, i);
        }
    }

    /// Marks the start of the round that would bring the verdict as urgent
    /// (or the deadline of the open round, when that one would).
    fn urge_verdict(&mut self, now: Instant, t: Instant, i: usize) {
        if let Some(r) = self.procs[i].round {
            // A round started before this miss was decided.
            if self.at_risk(i, r.deadline) {
                self.urgent.push(Reverse(r.deadline));
                return;
            }
        }
        let Some(&pos) = self.positions.get(i).filter(|&&p| p != u32::MAX) else {
            return;
        };
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
