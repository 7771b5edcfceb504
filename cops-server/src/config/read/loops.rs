//! Reading the loop keys of one process: ranges, and the combinations that
//! would not mean what they seem to (errors, not guesses).

use std::time::Duration;

use serde_json::{Map, Value};

use super::Ctx;
use crate::config::limits::{LOOPS_PER_BEAT, LOOP_DEADLINE_MS, LOOP_TOLERANCE};
use crate::config::loops::{LoopAction, LoopConfig, DEFAULT_TOLERANCE, LOOP_KEYS};
use crate::config::{ConfigError, ProcessConfig};

impl Ctx<'_> {
    /// The loop supervision of a process, `None` when it sets no loop key.
    /// `required` and `kill_on_hang` are the process's own settings.
    pub(super) fn loops(
        &self,
        map: &Map<String, Value>,
        required: bool,
        kill_on_hang: bool,
    ) -> Result<Option<LoopConfig>, ConfigError> {
        let Some(first) = LOOP_KEYS.iter().find(|k| map.contains_key(**k)) else {
            return Ok(None);
        };
        let deadline = self
            .ranged(map, "loopDeadlineMS", LOOP_DEADLINE_MS)?
            .map(Duration::from_millis);
        let min_per_beat = self.ranged(map, "minLoopsPerBeat", LOOPS_PER_BEAT)?;
        let max_per_beat = self.ranged(map, "maxLoopsPerBeat", LOOPS_PER_BEAT)?;
        let tolerance = self
            .ranged(map, "loopToleranceBeats", LOOP_TOLERANCE)?
            .map_or(DEFAULT_TOLERANCE, |t| t as u32);
        let action = self.loop_action(map)?;
        if deadline.is_none() && min_per_beat.is_none() && max_per_beat.is_none() {
            return Err(self.err(
                Some(first),
                "supervises nothing without loopDeadlineMS, minLoopsPerBeat or maxLoopsPerBeat",
            ));
        }
        if let (Some(lo), Some(hi)) = (min_per_beat, max_per_beat) {
            if lo > hi {
                return Err(self.err(
                    Some("maxLoopsPerBeat"),
                    format!("must be >= minLoopsPerBeat ({lo}), got {hi}"),
                ));
            }
        }
        if !required {
            return Err(self.err(
                Some(first),
                "the process is not heartbeated (requiredForHealthyStatus is false), so its loop is never judged",
            ));
        }
        if action == LoopAction::Kill && !kill_on_hang {
            return Err(self.err(
                Some("loopAction"),
                "\"kill\" needs killOnHang: true (a loop fault is killed like a hang, with the same safety); use \"alarm\" or set killOnHang",
            ));
        }
        Ok(Some(LoopConfig {
            deadline,
            min_per_beat,
            max_per_beat,
            tolerance,
            action,
        }))
    }

    fn loop_action(&self, map: &Map<String, Value>) -> Result<LoopAction, ConfigError> {
        match map.get("loopAction") {
            None => Ok(LoopAction::Alarm),
            Some(Value::String(s)) if s == "alarm" => Ok(LoopAction::Alarm),
            Some(Value::String(s)) if s == "kill" => Ok(LoopAction::Kill),
            Some(Value::String(s)) => Err(self.err(
                Some("loopAction"),
                format!("unknown action {s:?}: \"alarm\" (the default) or \"kill\""),
            )),
            Some(v) => Err(self.err(
                Some("loopAction"),
                format!("must be \"alarm\" or \"kill\", got {v}"),
            )),
        }
    }
}

impl Ctx<'_> {
    /// Loop settings that are valid but probably not meant.
    pub(super) fn loop_warnings(&self, p: &ProcessConfig) -> Vec<String> {
        let Some(l) = p.loops else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let name = &p.name;
        if l.tolerance == 1 && l.action == LoopAction::Kill {
            out.push(format!(
                "{}: process \"{name}\": loopToleranceBeats 1 with loopAction \"kill\": a single bad beat kills the process (2 or more recommended)",
                self.file
            ));
        }
        out
    }
}
