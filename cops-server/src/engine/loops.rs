//! Supervising the work loop (docs/cops.md, "Deadline supervision"): every
//! good reply that carries `"loop":{"count":N,"max_us":M,"p99_us":P}` is one
//! *beat* of the process's loop, judged against its `loopDeadlineMS`
//! (deadline supervision) and `minLoopsPerBeat`/`maxLoopsPerBeat` (alive
//! supervision). After `loopToleranceBeats` failing beats in a row COPS raises
//! one alarm, and with `loopAction: "kill"` signals the process through the
//! very path a hang takes ([`Engine::maybe_kill_loop`]: identity, budgets,
//! inhibit, evidence); after as many good beats in a row, one event ends the alarm.
//!
//! What a beat can prove depends on what COPS saw of the beats before it (the
//! responder starts a new beat with every answer, to anyone):
//! - the longest iteration (`max_us`) proves an overrun whatever came before;
//! - the count, and "no iteration ended" (`count` 0), are judged only when the
//!   previous answer COPS saw is the previous beat: a round without a good
//!   reply, or any rejected reply, breaks that chain until the next good one.
//!
//! A reply without `loop` is never judged on loops (a host that never ticks,
//! or any existing process): it answers the pulse, as it always did.

use std::time::{Duration, Instant};

use super::parse::{LoopField, LoopFigures};
use super::verdict::KillDecision;
use super::{Action, Engine, EventKind, Severity};
use crate::config::{LoopAction, LoopConfig};

/// Judged beats the events quote at most ("3 of the last 5 beats").
const HISTORY: u32 = 64;
/// Good replies without `loop` in a row before COPS says, once per
/// incarnation, that a supervised process reports no loop figures.
const NO_LOOP_NOTE_AFTER: u32 = 3;
/// At most one log line per process this often about tolerated beats and
/// bad loop figures.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What COPS keeps about the work loop of one process.
#[derive(Debug, Clone, Default)]
pub(super) struct LoopWatch {
    /// The figures of the last good reply that carried them.
    pub(super) last: Option<LoopFigures>,
    /// Beats with an overrun, since COPS started (all incarnations).
    pub(super) overruns: u64,
    /// Beats with too few iterations, since COPS started.
    pub(super) slow_beats: u64,
    /// Beats with too many iterations, since COPS started.
    pub(super) fast_beats: u64,
    /// Failing beats in a row now.
    pub(super) failing: u32,
    /// Good beats in a row now.
    passing: u32,
    /// One bit per judged beat of this incarnation, newest lowest: 1 = failed.
    history: u64,
    /// Beats judged in this incarnation (at most [`HISTORY`]).
    judged: u32,
    /// The loop alarm is raised.
    pub(super) alarm: bool,
    /// Loop alarms raised since COPS started (all incarnations).
    pub(super) alarms: u64,
    /// The previous good reply with figures, while nothing since can have
    /// taken a beat unseen: (its round's send time, its arrival).
    chain: Option<(Instant, Instant)>,
    /// No iteration is known to have ended since then: the arrival of the
    /// last reply whose beat had iterations (or that started the chain).
    quiet_since: Option<Instant>,
    /// Good replies without `loop` in a row.
    no_loop: u32,
    /// The note about missing figures was made for this incarnation.
    noted: bool,
    /// When the last throttled log line went out.
    logged: Option<Instant>,
    /// The worst beat of the failing run now (the longest overrun, else the
    /// latest): what the alarm quotes.
    worst: Option<(u64, Beat)>,
}

impl LoopWatch {
    /// Something may have taken a beat COPS did not see (a round without a
    /// good reply, a rejected reply): counts are not judged until the chain
    /// starts again.
    pub(super) fn broken(&mut self) {
        self.chain = None;
    }

    /// A new incarnation (new PID): everything but the totals starts over.
    /// Returns whether an alarm was raised.
    fn restart(&mut self) -> bool {
        let alarm = self.alarm;
        *self = LoopWatch {
            overruns: self.overruns,
            slow_beats: self.slow_beats,
            fast_beats: self.fast_beats,
            alarms: self.alarms,
            logged: self.logged,
            ..LoopWatch::default()
        };
        alarm
    }

    /// Whether a throttled log line may go out now.
    fn may_log(&mut self, now: Instant) -> bool {
        if self
            .logged
            .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            return false;
        }
        self.logged = Some(now);
        true
    }

    /// Failed beats among the last `n` judged (`n` at most [`HISTORY`]).
    fn failed_in_last(&self, n: u32) -> u32 {
        let mask = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        (self.history & mask).count_ones()
    }
}

/// How an overrun showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overrun {
    /// The longest iteration of the beat, microseconds.
    Longest(u64),
    /// No iteration ended for at least this long (the one running overran).
    NoneEnded(Duration),
}

/// What one beat showed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Beat {
    /// At least one check could be made.
    judged: bool,
    overrun: Option<Overrun>,
    /// (iterations, at least expected, span of the beat).
    slow: Option<(u64, u64, Duration)>,
    /// (iterations, at most expected, span of the beat).
    fast: Option<(u64, u64, Duration)>,
}

impl Beat {
    fn failed(&self) -> bool {
        self.overrun.is_some() || self.slow.is_some() || self.fast.is_some()
    }

    /// How bad: the overrun in microseconds (0 without one).
    fn score(&self) -> u64 {
        match self.overrun {
            Some(Overrun::Longest(us)) => us,
            Some(Overrun::NoneEnded(d)) => d.as_micros() as u64,
            None => 0,
        }
    }

    /// `loop overran its 100 ms deadline: 340 ms; loop too slow: ...`.
    fn describe(&self, cfg: &LoopConfig) -> String {
        let mut parts = Vec::new();
        let deadline = cfg.deadline.unwrap_or_default().as_millis();
        match self.overrun {
            Some(Overrun::Longest(us)) => parts.push(format!(
                "loop overran its {deadline} ms deadline: {}",
                fmt_us(us)
            )),
            Some(Overrun::NoneEnded(d)) => parts.push(format!(
                "loop overran its {deadline} ms deadline: no iteration ended for {} ms",
                d.as_millis()
            )),
            None => {}
        }
        if let Some((n, want, span)) = self.slow {
            parts.push(format!(
                "loop too slow: {n} iteration{} in {} ms, at least {want} expected",
                plural(n),
                span.as_millis()
            ));
        }
        if let Some((n, want, span)) = self.fast {
            parts.push(format!(
                "loop too fast (spinning?): {n} iterations in {} ms, at most {want} expected",
                span.as_millis()
            ));
        }
        parts.join("; ")
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `340 ms`, `2.5 ms`, `0.1 ms`.
fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{} ms", (us + 500) / 1000)
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

/// Whole heartbeat periods in `span` (at least one): the alive bounds are
/// per period, and a beat after a late round start spans more.
fn periods(span: Duration, period: Duration) -> u64 {
    let p = period.as_nanos().max(1);
    ((span.as_nanos() + p / 2) / p).max(1) as u64
}

/// Judges one beat. `chain`: the previous beat COPS saw, when it is the one
/// right before (else counts prove nothing); `quiet_since`: since when no
/// iteration is known to have ended; `sent`: when this round was sent (the
/// answer was written after it).
fn judge(
    cfg: &LoopConfig,
    fig: &LoopFigures,
    chain: Option<(Instant, Instant)>,
    quiet_since: Option<Instant>,
    sent: Instant,
    period: Duration,
) -> Beat {
    let mut b = Beat::default();
    if let Some(d) = cfg.deadline_us() {
        if fig.count > 0 {
            b.judged = true;
            if fig.max_us > d {
                b.overrun = Some(Overrun::Longest(fig.max_us));
            }
        } else if let (Some(_), Some(q)) = (chain, quiet_since) {
            // No tick between the earlier answer's arrival and this round's
            // request: the iteration running has lasted at least that long.
            // Shorter than the deadline so far proves nothing either way (a
            // loop slower than the period has such beats): not judged.
            let quiet = sent.saturating_duration_since(q);
            if quiet.as_micros() > u128::from(d) {
                b.judged = true;
                b.overrun = Some(Overrun::NoneEnded(quiet));
            }
        }
    }
    if let Some((prev_sent, _)) = chain {
        let span = sent.saturating_duration_since(prev_sent);
        let k = periods(span, period);
        if let Some(lo) = cfg.min_per_beat {
            b.judged = true;
            let want = lo.saturating_mul(k);
            if fig.count < want {
                b.slow = Some((fig.count, want, span));
            }
        }
        if let Some(hi) = cfg.max_per_beat {
            b.judged = true;
            let want = hi.saturating_mul(k);
            if fig.count > want {
                b.fast = Some((fig.count, want, span));
            }
        }
    }
    b
}

impl Engine {
    /// A good reply of process `i` (sent at `sent`) carried `field`.
    pub(super) fn on_loop(&mut self, now: Instant, i: usize, field: &LoopField, sent: Instant) {
        let period = self.cfg.heartbeat;
        let w = &mut self.procs[i].loops;
        let fig = match field {
            LoopField::Figures(f) => *f,
            LoopField::Absent => return self.no_loop(now, i),
            LoopField::Bad(why) => return self.bad_loop(now, i, why),
        };
        w.no_loop = 0;
        w.last = Some(fig);
        let chain = w.chain.replace((sent, now));
        let quiet = w.quiet_since;
        if fig.count > 0 || chain.is_none() || quiet.is_none() {
            w.quiet_since = Some(now);
        }
        let Some(cfg) = self.procs[i].cfg.loops else {
            return; // figures kept for the stats; nothing to judge
        };
        let beat = judge(&cfg, &fig, chain, quiet, sent, period);
        if beat.judged {
            self.count_beat(now, i, &cfg, &beat);
        }
    }

    /// Records a judged beat and acts on the runs of failing or good beats.
    fn count_beat(&mut self, now: Instant, i: usize, cfg: &LoopConfig, beat: &Beat) {
        let w = &mut self.procs[i].loops;
        let failed = beat.failed();
        w.history = (w.history << 1) | u64::from(failed);
        w.judged = (w.judged + 1).min(HISTORY);
        w.overruns += u64::from(beat.overrun.is_some());
        w.slow_beats += u64::from(beat.slow.is_some());
        w.fast_beats += u64::from(beat.fast.is_some());
        if failed {
            w.failing = w.failing.saturating_add(1);
            w.passing = 0;
            if w.worst.is_none_or(|(s, _)| beat.score() >= s) {
                w.worst = Some((beat.score(), *beat));
            }
        } else {
            w.passing = w.passing.saturating_add(1);
            w.failing = 0;
            w.worst = None;
        }
        if failed && w.failing == 1 && cfg.action == LoopAction::Kill {
            self.loop_watch(i);
        }
        let w = &mut self.procs[i].loops;
        if !failed {
            if w.alarm && w.passing >= cfg.tolerance {
                self.loop_over(now, i);
            }
        } else if w.alarm {
            // Raised already: kill now if it was not possible before
            // (quarantine over, budget freed, PID confirmed since).
            if cfg.action == LoopAction::Kill {
                let _ = self.maybe_kill_loop(now, i);
            }
        } else if w.failing >= cfg.tolerance {
            let quote = self.quote(i, cfg, beat);
            self.loop_alarm(now, i, cfg, quote);
        } else if w.may_log(now) {
            let failing = w.failing;
            let quote = self.quote(i, cfg, beat);
            let (name, pid) = self.name_pid(i);
            let msg = format!(
                "{name} ({pid}) {quote}; tolerated: {failing} of {} failing beats in a row",
                cfg.tolerance
            );
            self.event(
                now,
                Severity::Info,
                EventKind::LoopTolerated,
                Some(i),
                msg,
                false,
            );
        }
    }

    /// The first failing beat of a run that may end in a loop kill: the
    /// scheduler baseline that tells a loop starved of CPU from a broken one
    /// (the kill layer holds the signal when the process hardly ran since,
    /// as for a hang: see docs/cops.md, "A starved process is not a hung one").
    fn loop_watch(&mut self, i: usize) {
        let p = &self.procs[i];
        if let (true, Some(pid)) = (p.confirmed, p.pid) {
            self.actions.push_back(Action::Watch { process: i, pid });
        }
    }

    /// What a failing run is quoted as (only built when an event needs it):
    /// the worst beat of the run and how many of the last beats failed.
    fn quote(&self, i: usize, cfg: &LoopConfig, beat: &Beat) -> String {
        let w = &self.procs[i].loops;
        let window = cfg
            .tolerance
            .saturating_add(2)
            .clamp(5, HISTORY)
            .min(w.judged);
        let worst = w.worst.map_or(*beat, |(_, b)| b);
        format!(
            "{} ({} of the last {window} beats)",
            worst.describe(cfg),
            w.failed_in_last(window)
        )
    }

    /// `loopToleranceBeats` failing beats in a row: one alarm, and the kill
    /// with `loopAction: "kill"`.
    fn loop_alarm(&mut self, now: Instant, i: usize, cfg: &LoopConfig, quote: String) {
        let w = &mut self.procs[i].loops;
        w.alarm = true;
        w.alarms += 1;
        let (tail, decision) = match cfg.action {
            LoopAction::Alarm => (String::new(), "alarm"),
            LoopAction::Kill => match self.maybe_kill_loop(now, i) {
                KillDecision::Killing(sig) => (format!("; killing with {sig}"), "killing"),
                KillDecision::Deferred(why) => (format!("; kill deferred: {why}"), "deferred"),
                KillDecision::No(why) => (format!("; not killed: {why}"), "not_killed"),
                KillDecision::Suppressed(r, why) => {
                    // Counted like a hang's verdict (cops_kills_suppressed_total).
                    self.suppressed[r as usize] += 1;
                    (format!("; not killed: {why}"), r.as_str())
                }
            },
        };
        let (name, pid) = self.name_pid(i);
        let msg = format!("{name} ({pid}) {quote}{tail}");
        self.event(
            now,
            Severity::Alarm,
            EventKind::LoopFault,
            Some(i),
            msg,
            true,
        );
        let data = self.loop_data(i, cfg, decision);
        self.event_data(i, data);
    }

    /// `loopToleranceBeats` good beats in a row end the alarm.
    fn loop_over(&mut self, now: Instant, i: usize) {
        let w = &mut self.procs[i].loops;
        w.alarm = false;
        let passing = w.passing;
        let figures = match w.last {
            Some(f) => format!(
                "last beat {} iteration{}, longest {}, p99 over the last minute {}",
                f.count,
                plural(f.count),
                fmt_us(f.max_us),
                fmt_us(f.p99_us)
            ),
            None => String::new(),
        };
        let (name, pid) = self.name_pid(i);
        let msg = format!(
            "{name} ({pid}) loop back within its limits ({passing} good beats in a row): {figures}"
        );
        self.event(
            now,
            Severity::Status,
            EventKind::LoopOver,
            Some(i),
            msg,
            true,
        );
    }

    /// Process `i` has a new incarnation (`old`: the PID it replaces, if any).
    pub(super) fn loop_incarnation(&mut self, now: Instant, i: usize, old: Option<u32>) {
        if !self.procs[i].loops.restart() {
            return;
        }
        let p = &self.procs[i];
        let new = p.pid.unwrap_or_default();
        let old = old.map_or_else(|| "the old process".to_owned(), |o| format!("pid {o}"));
        let msg = format!(
            "{} loop alarm over: {old} was replaced by pid {new}",
            p.cfg.name
        );
        self.event(
            now,
            Severity::Status,
            EventKind::LoopOver,
            Some(i),
            msg,
            true,
        );
    }

    /// A good reply without `loop`: nothing to judge; a supervised process
    /// that keeps answering so gets one note per incarnation.
    fn no_loop(&mut self, now: Instant, i: usize) {
        let p = &mut self.procs[i];
        p.loops.broken();
        p.loops.no_loop = p.loops.no_loop.saturating_add(1);
        if p.cfg.loops.is_none() || p.loops.noted || p.loops.no_loop < NO_LOOP_NOTE_AFTER {
            return;
        }
        p.loops.noted = true;
        let (name, pid) = self.name_pid(i);
        let msg = format!(
            "{name} ({pid}) reports no loop figures (its host does not call loop_tick or cops_responder_tick): its loop supervision cannot apply"
        );
        self.event(
            now,
            Severity::Status,
            EventKind::LoopUnmeasured,
            Some(i),
            msg,
            true,
        );
    }

    /// A good reply whose `loop` is not the protocol's object: the heartbeat
    /// counts, the loop is not judged (logged at most once per 10 s).
    fn bad_loop(&mut self, now: Instant, i: usize, why: &str) {
        let w = &mut self.procs[i].loops;
        w.broken();
        if !w.may_log(now) {
            return;
        }
        let name = self.procs[i].cfg.name.clone();
        let msg = format!(
            "{name}: bad loop figures in a heartbeat reply (the heartbeat counts, the loop is not judged): {why}"
        );
        self.event(
            now,
            Severity::Status,
            EventKind::BadReply,
            Some(i),
            msg,
            false,
        );
    }

    /// Whether process `i` waits for a kill because of its loop (the site
    /// kill budget's queue kills it when its turn comes).
    pub(super) fn loop_kill_due(&self, i: usize) -> bool {
        let p = &self.procs[i];
        p.loops.alarm && p.cfg.loops.is_some_and(|l| l.action == LoopAction::Kill)
    }

    /// Processes with a loop alarm raised (summary `loop_alarms`).
    pub(super) fn loop_alarms(&self) -> usize {
        self.procs.iter().filter(|p| p.loops.alarm).count()
    }

    /// (name, "pid P") of process `i`.
    fn name_pid(&self, i: usize) -> (String, String) {
        let p = &self.procs[i];
        let pid = p
            .pid
            .map_or_else(|| "no pid known".to_owned(), |x| format!("pid {x}"));
        (p.cfg.name.clone(), pid)
    }
}

mod view;

pub(super) use view::{loop_metrics, write_loop_row, write_loop_stats};
pub use view::{LoopCounts, LoopMetrics};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod scale_tests;

#[cfg(test)]
mod ops_tests;
