//! Maintenance inhibit: `set ourUri/control/<name>` with
//! `{"inhibit_ms":600000,"reason":"..."}` or `{"resume":true}`, answered on
//! the replyto (docs/cops.md, "Operating COPS").
//!
//! While a process is inhibited COPS keeps heartbeating it, judging it and
//! reporting it, but never signals it (no kill, no escalation). An inhibit
//! ends by a resume or by itself at its end (at most [`MAX_INHIBIT`]), so a
//! forgotten one cannot switch supervision off for good; each start, change
//! and end is an event. After the end, a process that is still hung is killed
//! at its next missed heartbeat (fresh evidence, not the instant of the resume).
//!
//! Only users in `controlUsers` (as the broker stamps them) are obeyed; a bad
//! body or a refused user gets an `"Error: ..."` answer and changes nothing.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use fims::Message;
use serde_json::{Map, Value};

use super::ops::Inhibit;
use super::serve::iso8601;
use super::{Engine, EventKind, Kind, Severity};
use crate::human;

/// The longest inhibit.
pub const MAX_INHIBIT: Duration = Duration::from_secs(24 * 3600);
/// The longest reason, in bytes.
pub const MAX_REASON: usize = 256;

/// A control request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Control {
    /// Hold off signals for this long.
    Inhibit { time: Duration, reason: String },
    /// End the inhibit now.
    Resume,
}

/// Parses a control body (no side effects; every error says what is wrong).
pub(super) fn parse_control(body: &[u8]) -> Result<Control, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON ({e})"))?;
    let obj = v.as_object().ok_or(
        r#"the body must be an object: {"inhibit_ms":600000,"reason":"..."} or {"resume":true}"#,
    )?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "inhibit_ms" | "reason" | "resume") {
            return Err(format!(
                "unknown key {k:?} (known: inhibit_ms, reason, resume)"
            ));
        }
    }
    match (obj.get("inhibit_ms"), obj.get("resume")) {
        (Some(_), Some(_)) => Err("give inhibit_ms or resume, not both".into()),
        (None, Some(Value::Bool(true))) if obj.len() == 1 => Ok(Control::Resume),
        (None, Some(Value::Bool(true))) => Err("resume takes no reason".into()),
        (None, Some(_)) => Err("resume must be true".into()),
        (Some(ms), None) => inhibit(ms, obj),
        (None, None) => Err(r#"nothing to do: give {"inhibit_ms":N} or {"resume":true}"#.into()),
    }
}

fn inhibit(ms: &Value, obj: &Map<String, Value>) -> Result<Control, String> {
    let max = MAX_INHIBIT.as_millis() as u64;
    let ms = ms
        .as_u64()
        .filter(|&m| (1..=max).contains(&m))
        .ok_or_else(|| format!("inhibit_ms must be an integer 1..={max} (24 h), got {ms}"))?;
    let reason = match obj.get("reason") {
        None => String::new(),
        Some(Value::String(r)) if r.len() > MAX_REASON => {
            return Err(format!("reason is over {MAX_REASON} bytes"))
        }
        Some(Value::String(r)) if r.chars().any(char::is_control) => {
            return Err("reason must not hold control characters".into())
        }
        Some(Value::String(r)) => r.clone(),
        Some(_) => return Err("reason must be a string".into()),
    };
    Ok(Control::Inhibit {
        time: Duration::from_millis(ms),
        reason,
    })
}

impl Engine {
    /// The users whose control requests are taken, as the broker stamps them
    /// (names, or uids where a uid has no name). The runtime sets root and
    /// COPS's own user, or `controlUsers` resolved to names and uids.
    pub fn set_control_users(&mut self, users: Vec<String>) {
        self.control_users = users;
    }

    /// The users whose control requests are taken.
    pub fn control_users(&self) -> &[String] {
        &self.control_users
    }

    /// `set ourUri/control/<name>`: the answer's JSON text, or an error.
    pub(super) fn control(
        &mut self,
        now: Instant,
        name: &str,
        msg: &Message<'_>,
    ) -> Result<String, String> {
        let i = self
            .process_index(name)
            .ok_or_else(|| format!("no process named {name}"))?;
        let user = msg.username;
        if user.is_empty() {
            return Err("the broker did not say who sent this (no username): control needs a broker that stamps the sender's user, as fims_server does".into());
        }
        if !self.control_users.iter().any(|u| u == user) {
            let msg =
                format!("{name}: control request from user {user:?} refused (not in controlUsers)");
            self.event(
                now,
                Severity::Status,
                EventKind::ControlRefused,
                Some(i),
                msg,
                false,
            );
            return Err(format!(
                "user {user:?} may not control COPS (allowed: {})",
                self.control_users.join(", ")
            ));
        }
        let control = parse_control(msg.body)?;
        if !self.procs[i].cfg.required {
            return Err(format!(
                "{name} is not monitored (requiredForHealthyStatus is false): COPS never signals it"
            ));
        }
        Ok(match control {
            Control::Inhibit { time, reason } => self.inhibit(now, i, time, reason, user),
            Control::Resume => self.resume(now, i, user),
        })
    }

    /// Starts (or replaces) the inhibit of process `i`.
    fn inhibit(
        &mut self,
        now: Instant,
        i: usize,
        time: Duration,
        reason: String,
        by: &str,
    ) -> String {
        self.inhibit_seq += 1;
        let seq = self.inhibit_seq;
        let until = now + time;
        let p = &mut self.procs[i];
        let replaced = p.ops.inhibited(now).is_some();
        p.ops.inhibit = Some(Inhibit {
            since: now,
            until,
            reason: reason.as_str().into(),
            by: by.into(),
            seq,
        });
        self.timers
            .push(Reverse((until, Kind::InhibitEnd, i as u32, seq)));
        let name = &self.procs[i].cfg.name;
        let why = if reason.is_empty() {
            "no reason given".to_owned()
        } else {
            reason.clone()
        };
        let until_s = iso8601(self.wall(until));
        let msg = if replaced {
            format!(
                "{name}: maintenance inhibit changed by {by}: now for {} until {until_s} ({why})",
                human::duration(time)
            )
        } else {
            format!(
                "{name}: maintenance inhibit by {by} for {} until {until_s} ({why}): heartbeats go on, no signals",
                human::duration(time)
            )
        };
        self.event(
            now,
            Severity::Status,
            EventKind::Inhibited,
            Some(i),
            msg,
            true,
        );
        serde_json::json!({
            "name": self.procs[i].cfg.name,
            "inhibited": true,
            "until": until_s,
            "inhibit_left_ms": time.as_millis() as u64,
            "reason": reason,
            "by": by,
        })
        .to_string()
    }

    /// Ends the inhibit of process `i` now (a no-op answer when there is none).
    fn resume(&mut self, now: Instant, i: usize, by: &str) -> String {
        let p = &mut self.procs[i];
        let was = p.ops.inhibited(now).is_some();
        if let Some(inh) = p.ops.inhibit.take().filter(|_| was) {
            let took = human::duration(now.saturating_duration_since(inh.since));
            let msg = format!(
                "{}: maintenance inhibit ended by {by} after {took}: supervision back to normal",
                p.cfg.name
            );
            self.event(
                now,
                Severity::Status,
                EventKind::InhibitEnded,
                Some(i),
                msg,
                true,
            );
        }
        serde_json::json!({
            "name": self.procs[i].cfg.name,
            "inhibited": false,
            "was_inhibited": was,
        })
        .to_string()
    }

    /// The expiry timer of inhibit `seq` of process `i`.
    pub(super) fn on_inhibit_end(&mut self, now: Instant, i: usize, seq: u64) {
        let Some(p) = self.procs.get_mut(i) else {
            return;
        };
        if p.ops.inhibit.as_ref().is_none_or(|inh| inh.seq != seq) {
            return; // resumed or replaced meanwhile
        }
        let Some(inh) = p.ops.inhibit.take() else {
            return;
        };
        let took = human::duration(inh.until.saturating_duration_since(inh.since));
        let why = if inh.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", inh.reason)
        };
        let msg = format!(
            "{}: maintenance inhibit expired after {took} (set by {}{why}): supervision back to normal",
            p.cfg.name, inh.by
        );
        self.event(
            now,
            Severity::Status,
            EventKind::InhibitEnded,
            Some(i),
            msg,
            true,
        );
    }

    /// Why process `i` must not be signalled now, if it is inhibited.
    pub(super) fn inhibit_reason(&self, now: Instant, i: usize) -> Option<String> {
        let inh = self.procs[i].ops.inhibited(now)?;
        let why = if inh.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", inh.reason)
        };
        Some(format!(
            "inhibited until {} by {}{why}",
            iso8601(self.wall(inh.until)),
            inh.by
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let ok = |b: &str| parse_control(b.as_bytes());
        assert_eq!(
            ok(r#"{"inhibit_ms":600000,"reason":"firmware upgrade"}"#),
            Ok(Control::Inhibit {
                time: Duration::from_secs(600),
                reason: "firmware upgrade".into()
            })
        );
        assert_eq!(
            ok(r#"{"inhibit_ms":1}"#),
            Ok(Control::Inhibit {
                time: Duration::from_millis(1),
                reason: String::new()
            })
        );
        assert_eq!(ok(r#"{"resume":true}"#), Ok(Control::Resume));
        for bad in [
            "",
            "nope",
            "600000",
            r#""inhibit""#,
            "[]",
            "{}",
            r#"{"inhibit_ms":0}"#,
            r#"{"inhibit_ms":86400001}"#,
            r#"{"inhibit_ms":-5}"#,
            r#"{"inhibit_ms":1.5}"#,
            r#"{"inhibit_ms":"600000"}"#,
            r#"{"inhibit_ms":1000,"reason":5}"#,
            r#"{"inhibit_ms":1000,"reason":"a\nb"}"#,
            r#"{"inhibit_ms":1000,"resume":true}"#,
            r#"{"resume":false}"#,
            r#"{"resume":true,"reason":"x"}"#,
            r#"{"inhibit_ms":1000,"for":"10m"}"#,
        ] {
            assert!(ok(bad).is_err(), "{bad} accepted");
        }
        let long = format!(r#"{{"inhibit_ms":1000,"reason":"{}"}}"#, "x".repeat(300));
        assert!(ok(&long).is_err());
        assert_eq!(
            ok(r#"{"inhibit_ms":1,"rason":"x"}"#),
            Err(r#"unknown key "rason" (known: inhibit_ms, reason, resume)"#.into())
        );
    }
}
