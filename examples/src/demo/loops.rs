//! The demo's deadline-supervision acts: a process whose work loop slows from
//! `--work-ms` to 400 ms iterations while it keeps answering its heartbeats.
//! `modbus_client` (`loopAction: "alarm"`) gets the overrun alarm within the
//! tolerance, its stats show it, and the alarm ends when it speeds up again;
//! `hybridos_controller` (`loopAction: "kill"`) is killed like a hung process
//! and its restart comes back healthy.

use std::time::{Duration, Instant};

use fims::Method;
use serde_json::Value;

use super::{Demo, DemoError, CONTROLLER, MODBUS};
use crate::children::describe;
use crate::stats::{Event, ProcStats};

/// How long an iteration lasts once slowed down, ms.
pub const SLOW_MS: u64 = 400;

/// The first event at or after `since` about `name` whose message holds `needle`.
fn event_about(
    events: &[(Instant, Event)],
    since: Instant,
    name: &str,
    needle: &str,
) -> Option<Event> {
    events
        .iter()
        .filter(|(at, e)| *at >= since && e.message.starts_with(name) && e.message.contains(needle))
        .map(|(_, e)| e.clone())
        .next()
}

impl Demo {
    /// The loop keys of process `name` in the configuration COPS runs with
    /// (`None`: a `--config` without them; the act is skipped).
    fn loop_deadline(&self, name: &str) -> Option<u64> {
        let list = self.cfg["processList"].as_array()?;
        let p = list.iter().find(|p| p["name"] == name)?;
        p["loopDeadlineMS"].as_u64()
    }

    fn loop_action(&self, name: &str) -> &str {
        let list = self.cfg["processList"].as_array();
        let p = list.and_then(|l| l.iter().find(|p| p["name"] == name));
        p.and_then(|p| p["loopAction"].as_str()).unwrap_or("alarm")
    }

    /// `set <uri>/debug/slow <ms>` (0: back to the normal pace).
    fn set_pace(&mut self, uri: &str, ms: u64) -> Result<Instant, DemoError> {
        let slow = format!("{uri}/debug/slow");
        self.send(&slow, ms.to_string().as_bytes())?;
        let t = Instant::now();
        let text = match ms {
            0 => format!("set {slow} 0: iterations back to {} ms", self.work_ms),
            ms => format!(
                "set {slow} {ms}: every iteration of its work loop now takes {ms} ms instead of {} ms; it keeps answering heartbeats",
                self.work_ms
            ),
        };
        self.world.say(t, "demo", &text);
        Ok(t)
    }

    /// COPS's answer to `get <ourUri>/stats/<name>`.
    fn stats_now(&mut self, name: &str) -> Result<ProcStats, DemoError> {
        let uri = format!("{}/stats/{name}", self.our_uri);
        let answer = self
            .client
            .request(Method::Get, &uri, b"", Duration::from_secs(2))
            .map_err(super::fims_err(format!("get {uri}")))?;
        let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        ProcStats::parse(&v, Some(name))
            .ok_or_else(|| DemoError::Unexpected(format!("get {uri}: not stats: {v}")))
    }

    /// Act 4: the modbus client's loop overruns; COPS alarms, does not kill,
    /// and ends the alarm when the loop is back within its deadline.
    pub(super) fn loop_alarm_act(&mut self, linger: Duration) -> Result<(), DemoError> {
        let (name, uri) = MODBUS;
        let Some(deadline) = self.loop_deadline(name) else {
            let text = format!("act 4 skipped: {name} has no loopDeadlineMS in the configuration");
            self.world.now("demo", &text);
            return Ok(());
        };
        let pid = self.pid_of(name)?;
        self.world.focus = Some(name.to_owned());
        let action = self.loop_action(name).to_owned();
        let text = format!(
            "act 4: {name}'s work loop slows down (loopDeadlineMS {deadline}, loopAction \"{action}\")"
        );
        self.world.now("demo", &text);
        let t0 = self.set_pace(uri, SLOW_MS)?;
        let alarm = self.wait_for("COPS's loop alarm", Duration::from_secs(10), |w| {
            event_about(&w.events, t0, name, "loop overran")
        })?;
        let secs = Instant::now().saturating_duration_since(t0).as_secs_f64();
        self.world.now(
            "demo",
            &format!("COPS raised after {secs:.2} s: {}", alarm.message),
        );
        let s = self.stats_now(name)?;
        self.world.now(
            "demo",
            &format!("get {}/stats/{name}: {}", self.our_uri, s.brief()),
        );
        if !s.loop_alarm || s.loop_overruns.unwrap_or(0) == 0 || s.pid != Some(u64::from(pid)) {
            return Err(DemoError::Unexpected(format!(
                "the stats of {name} do not show the loop alarm on pid {pid}: {}",
                s.brief()
            )));
        }
        let t1 = self.set_pace(uri, 0)?;
        let over = self.wait_for("the end of the loop alarm", Duration::from_secs(10), |w| {
            event_about(&w.events, t1, name, "loop back within its limits")
        })?;
        self.world.now("demo", &format!("COPS: {}", over.message));
        if let Some(exit) = self.world.exit_of(name, pid) {
            return Err(DemoError::Unexpected(format!(
                "{name} pid {pid} ended ({}) though its loopAction is \"alarm\"",
                describe(exit.status)
            )));
        }
        self.pause(linger)
    }

    /// Act 5: the controller's loop overruns; with `loopAction: "kill"` COPS
    /// kills it like a hung process and the restart runs at its normal pace.
    pub(super) fn loop_kill_act(&mut self, linger: Duration) -> Result<(), DemoError> {
        let (name, uri) = CONTROLLER;
        if self.loop_deadline(name).is_none() || self.loop_action(name) != "kill" {
            let text = format!("act 5 skipped: {name} has no loopDeadlineMS with loopAction \"kill\" in the configuration");
            self.world.now("demo", &text);
            return Ok(());
        }
        let old = self.pid_of(name)?;
        self.world.focus = Some(name.to_owned());
        self.world.now(
            "demo",
            &format!("act 5: {name}'s work loop slows down (loopAction \"kill\")"),
        );
        let t0 = self.set_pace(uri, SLOW_MS)?;
        let what = format!("COPS to kill pid {old} of {name} for its loop");
        let exit = self.wait_for(&what, Duration::from_secs(15), |w| {
            w.exit_of(name, old).cloned()
        })?;
        if exit.status.code().is_some() {
            return Err(DemoError::Unexpected(format!(
                "pid {old} ended with {} instead of being killed",
                describe(exit.status)
            )));
        }
        let fault = self.wait_for("COPS's loop alarm", Duration::from_secs(3), |w| {
            event_about(&w.events, t0, name, "loop overran")
        })?;
        self.world
            .now("demo", &format!("COPS raised: {}", fault.message));
        let new = self.wait_alive(name, Duration::from_secs(20))?;
        let what = format!("{name}'s restart (pid {new}) to run its loop at the normal pace");
        let limit = self
            .loop_deadline(name)
            .unwrap_or(u64::MAX)
            .saturating_mul(1000);
        self.wait_for(&what, Duration::from_secs(10), |w| {
            let (_, p) = w.stats.get(name)?;
            let healthy = p.pid == Some(u64::from(new))
                && p.alive
                && !p.loop_alarm
                && p.loop_max_us.is_some_and(|us| us <= limit);
            healthy.then_some(())
        })?;
        let secs = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
        let text = format!(
            "{name}: loop overran -> killed in {:.2} s, new pid {new} healthy after {:.2} s",
            secs(exit.at),
            secs(Instant::now())
        );
        self.world.now("demo", &text);
        self.pause(linger)
    }
}
