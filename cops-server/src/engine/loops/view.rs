//! The work loop in what operators see (docs/cops.md, "Deadline
//! supervision" and "Operating COPS"): the loop fields of `/cops/stats/<name>`
//! and of the `get ourUri/status` rows, the numbers behind a loop verdict in
//! the decision log (`cops why`), and the loop's part of a metrics snapshot.

use std::fmt::Write;
use std::time::Duration;

use super::{Beat, LoopWatch};
use crate::config::LoopConfig;
use crate::engine::Engine;

/// The loop figures of one process in a metrics snapshot (the
/// `cops_loop_*` series, docs/cops.md "Metrics").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopMetrics {
    /// The p99 of the iterations over the process's last minute, from the
    /// last reply that carried `loop` (`None`: none did).
    pub p99: Option<Duration>,
    /// The longest iteration of that reply's beat.
    pub max: Option<Duration>,
    /// `(overrun, too slow, too fast)` beats so far, the loop alarms raised
    /// so far and whether one is raised now (`None`: no loop keys).
    pub judged: Option<LoopCounts>,
}

/// What loop supervision counted for one process (all incarnations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopCounts {
    /// Beats with an overrun.
    pub overruns: u64,
    /// Beats with too few iterations.
    pub slow_beats: u64,
    /// Beats with too many iterations.
    pub fast_beats: u64,
    /// Loop alarms raised.
    pub alarms: u64,
    /// The loop alarm is raised now.
    pub alarm: bool,
}

impl Beat {
    /// What failed, in one word: `overrun`, `slow` or `fast`.
    fn kind(&self) -> &'static str {
        if self.overrun.is_some() {
            "overrun"
        } else if self.slow.is_some() {
            "slow"
        } else {
            "fast"
        }
    }
}

/// `"name":value` for an optional number (null without one).
fn opt(out: &mut String, name: &str, v: Option<u64>) {
    match v {
        Some(n) => {
            let _ = write!(out, ",\"{name}\":{n}");
        }
        None => {
            let _ = write!(out, ",\"{name}\":null");
        }
    }
}

/// The loop fields of a process's stats: the last figures (null until a
/// reply carried them), the failing beats so far and now, the alarms.
pub(in crate::engine) fn write_loop_stats(out: &mut String, w: &LoopWatch) {
    opt(out, "loop_count", w.last.map(|f| f.count));
    opt(out, "loop_max_us", w.last.map(|f| f.max_us));
    opt(out, "loop_p99_us", w.last.map(|f| f.p99_us));
    let _ = write!(
        out,
        ",\"loop_overruns\":{},\"loop_slow_beats\":{},\"loop_fast_beats\":{},\"loop_failing_beats\":{},\"loop_alarm\":{},\"loop_alarms_total\":{}",
        w.overruns, w.slow_beats, w.fast_beats, w.failing, w.alarm, w.alarms
    );
}

/// The loop fields of a `get ourUri/status` row (what `cops status` shows):
/// the last beat's iterations and longest one and the p99 (null until a reply carried
/// them), the overruns so far, the failing beats in a row now against
/// `loopToleranceBeats` (null without loop keys), what fails (`overrun`,
/// `slow`, `fast`, null while nothing does) and the alarm.
pub(in crate::engine) fn write_loop_row(out: &mut String, w: &LoopWatch, cfg: Option<&LoopConfig>) {
    opt(out, "loop_count", w.last.map(|f| f.count));
    opt(out, "loop_max_us", w.last.map(|f| f.max_us));
    opt(out, "loop_p99_us", w.last.map(|f| f.p99_us));
    opt(out, "loop_tolerance", cfg.map(|c| u64::from(c.tolerance)));
    let _ = write!(
        out,
        ",\"loop_overruns\":{},\"loop_failing\":{},\"loop_alarm\":{}",
        w.overruns, w.failing, w.alarm
    );
    match w.worst.filter(|_| w.failing > 0) {
        Some((_, b)) => {
            let _ = write!(out, ",\"loop_fault\":\"{}\"", b.kind());
        }
        None => out.push_str(",\"loop_fault\":null"),
    }
}

/// The loop part of a process's metrics.
pub(in crate::engine) fn loop_metrics(w: &LoopWatch, cfg: Option<&LoopConfig>) -> LoopMetrics {
    LoopMetrics {
        p99: w.last.map(|f| Duration::from_micros(f.p99_us)),
        max: w.last.map(|f| Duration::from_micros(f.max_us)),
        judged: cfg.map(|_| LoopCounts {
            overruns: w.overruns,
            slow_beats: w.slow_beats,
            fast_beats: w.fast_beats,
            alarms: w.alarms,
            alarm: w.alarm,
        }),
    }
}

impl Engine {
    /// The numbers behind a loop verdict, for the decision log (`cops why`):
    /// the last figures, the failing run against the tolerance, the limits,
    /// what was decided (`alarm`, `killing`, `deferred`, `not_killed`, or
    /// the reason a kill was suppressed: `inhibited`, `quarantined`, ...).
    pub(super) fn loop_data(&self, i: usize, cfg: &LoopConfig, decision: &str) -> String {
        let p = &self.procs[i];
        let w = &p.loops;
        let mut out = String::from("{\"loop\":");
        match w.last {
            Some(f) => {
                let _ = write!(
                    out,
                    r#"{{"count":{},"max_us":{},"p99_us":{}}}"#,
                    f.count, f.max_us, f.p99_us
                );
            }
            None => out.push_str("null"),
        }
        let _ = write!(
            out,
            ",\"failing\":{},\"tolerance\":{}",
            w.failing, cfg.tolerance
        );
        opt(
            &mut out,
            "deadline_ms",
            cfg.deadline.map(|d| d.as_millis() as u64),
        );
        opt(&mut out, "min_per_beat", cfg.min_per_beat);
        opt(&mut out, "max_per_beat", cfg.max_per_beat);
        let _ = write!(
            out,
            r#","period_ms":{},"decision":"{decision}","signal":"{}"}}"#,
            self.cfg.heartbeat.as_millis(),
            p.cfg.kill_signal
        );
        out
    }
}
