//! The work-loop supervision of one process (docs/cops.md, "Deadline
//! supervision"): the keys `loopDeadlineMS`, `minLoopsPerBeat`,
//! `maxLoopsPerBeat`, `loopToleranceBeats` and `loopAction`, validated in
//! `read`, judged by the engine on every heartbeat reply that carries
//! `"loop":{"count":N,"max_us":M,"p99_us":P}`.

use std::time::Duration;

use serde_json::{Map, Value};

/// The per-process loop keys, in the order the docs list them.
pub const LOOP_KEYS: &[&str] = &[
    "loopDeadlineMS",
    "minLoopsPerBeat",
    "maxLoopsPerBeat",
    "loopToleranceBeats",
    "loopAction",
];

/// `loopToleranceBeats` when the file does not say.
pub const DEFAULT_TOLERANCE: u32 = 3;

/// What COPS does once a loop has failed `loopToleranceBeats` beats in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopAction {
    /// An alarm event and the stats; the process is not signalled.
    Alarm,
    /// Treated like a hang: signalled through the same kill path (identity
    /// checks, kill budgets, evidence, escalation).
    Kill,
}

impl LoopAction {
    /// The spelling in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            LoopAction::Alarm => "alarm",
            LoopAction::Kill => "kill",
        }
    }
}

/// The loop supervision of one process (present when any loop key is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopConfig {
    /// An iteration longer than this is an overrun (deadline supervision).
    pub deadline: Option<Duration>,
    /// Fewer iterations per heartbeat period is a fault (alive supervision: too slow).
    pub min_per_beat: Option<u64>,
    /// More iterations per heartbeat period is a fault (alive supervision: spinning).
    pub max_per_beat: Option<u64>,
    /// Consecutive failing beats before COPS acts (and passing beats before
    /// an alarm ends).
    pub tolerance: u32,
    /// What COPS does then.
    pub action: LoopAction,
}

impl LoopConfig {
    /// `loopDeadlineMS` in microseconds (the unit of the reply's figures).
    pub fn deadline_us(&self) -> Option<u64> {
        self.deadline.map(|d| d.as_micros() as u64)
    }

    /// The effective keys (defaults filled in) into a process's `--check` object.
    pub fn insert_json(&self, m: &mut Map<String, Value>) {
        if let Some(d) = self.deadline {
            m.insert("loopDeadlineMS".into(), (d.as_millis() as u64).into());
        }
        if let Some(n) = self.min_per_beat {
            m.insert("minLoopsPerBeat".into(), n.into());
        }
        if let Some(n) = self.max_per_beat {
            m.insert("maxLoopsPerBeat".into(), n.into());
        }
        m.insert("loopToleranceBeats".into(), self.tolerance.into());
        m.insert("loopAction".into(), self.action.as_str().into());
    }

    /// One sentence for `cops --check`: what is judged, per what, and what
    /// happens, e.g. `an iteration longer than 200 ms is an overrun; after 3
    /// failing beats in a row: an alarm (event and stats, no signal)`.
    pub fn explain(&self, period: Duration) -> String {
        let mut checks = Vec::new();
        if let Some(d) = self.deadline {
            checks.push(format!(
                "an iteration longer than {} ms (or none ending for that long) is an overrun",
                d.as_millis()
            ));
        }
        let per = format!("{} ms heartbeat period", period.as_millis());
        match (self.min_per_beat, self.max_per_beat) {
            (Some(lo), Some(hi)) => checks.push(format!(
                "fewer than {lo} or more than {hi} iterations per {per} is a fault"
            )),
            (Some(lo), None) => {
                checks.push(format!("fewer than {lo} iterations per {per} is a fault"))
            }
            (None, Some(hi)) => {
                checks.push(format!("more than {hi} iterations per {per} is a fault"))
            }
            (None, None) => {}
        }
        let action = match self.action {
            LoopAction::Alarm => "an alarm (event and stats, no signal)",
            LoopAction::Kill => {
                "killed like a hung process (same identity checks, kill budgets and evidence)"
            }
        };
        let t = self.tolerance;
        format!(
            "{}; after {t} failing beat{} in a row: {action}; the alarm ends after {t} good beat{} in a row. Judged only on replies that carry \"loop\" (hosts that tick)",
            checks.join("; "),
            if t == 1 { "" } else { "s" },
            if t == 1 { "" } else { "s" },
        )
    }
}

#[cfg(test)]
mod tests;
