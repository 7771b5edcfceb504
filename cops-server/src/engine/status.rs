//! What operators read (docs/cops.md, "Operating COPS"):
//! - the operator fields of `ourUri/stats/<name>` (last beat age, RTT
//!   percentiles of the last minute, misses, kills, restarts, inhibit);
//! - `get ourUri/status[/<offset>]`: the summary and one compact row per
//!   process, [`STATUS_PAGE`] rows per answer (what `cops status` shows);
//! - `get ourUri/events/<name>`: the decision log of a process, newest first,
//!   with the site's events (stalls, the bus) of the same span; `get
//!   ourUri/events`: the site's events alone;
//! - [`MetricsSnapshot`]: the numbers `cops --metrics-listen` exposes.

use std::fmt::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ops::{rtt_slice, LogEntry, RttHistogram, Suppressed};
use super::serve::{iso8601, push_ms, push_str, Iso8601};
use super::{Engine, State};

/// Processes per `get ourUri/status` answer: 500 rows stay well within the
/// broker's datagram limit even with the longest names and reasons.
pub const STATUS_PAGE: usize = 500;

/// The state a process shows in `cops status` and the metrics: the engine's
/// state, or `not_monitored` for a process listed but not heartbeated.
fn shown_state(required: bool, state: State) -> &'static str {
    if required {
        state.as_str()
    } else {
        "not_monitored"
    }
}

/// One process in a [`MetricsSnapshot`].
#[derive(Debug, Clone)]
pub struct ProcessMetrics {
    /// Its configured name.
    pub name: String,
    /// `unknown`, `alive`, `hung` or `not_monitored`.
    pub state: &'static str,
    /// A maintenance inhibit is in force.
    pub inhibited: bool,
    /// Response times since COPS started.
    pub rtt: RttHistogram,
    /// Real misses since COPS started.
    pub missed: u64,
    /// Signals delivered, by signal (e.g. `SIGKILL`) and reason; the
    /// signals COPS would send (`killSignal` for `hung`, SIGKILL for
    /// `escalation` after another signal) are listed with 0 before the
    /// first kill, so a monitoring sees the first one as an increase.
    pub kills: Vec<(String, &'static str, u64)>,
    /// Restarts seen (a new PID answered).
    pub restarts: u64,
    /// Of those, restarts after a kill by COPS.
    pub cops_restarts: u64,
    /// Time since the last good reply (`None`: never answered).
    pub last_beat_age: Option<Duration>,
    /// The work loop's figures and what loop supervision counted.
    pub loops: super::LoopMetrics,
}

/// A copy of the numbers COPS exposes as metrics, taken at one instant.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// `controllerName`.
    pub controller: String,
    /// Time since COPS started.
    pub uptime: Duration,
    /// COPS holds its bus connections.
    pub connected: bool,
    /// A stall episode is in progress.
    pub stalled: bool,
    /// Stall episodes so far.
    pub stalls: u64,
    /// Time spent stalled so far.
    pub stall_time: Duration,
    /// Rounds voided by stalls or a lost bus.
    pub void_rounds: u64,
    /// The worst lag of COPS's loop over the last 10 to 20 s.
    pub loop_lag: Duration,
    /// Kills decided but not made, by reason.
    pub kills_suppressed: Vec<(&'static str, u64)>,
    /// Requests to `ourUri` dropped by the serving rate limit.
    pub requests_dropped: u64,
    /// Every configured process, in configuration order.
    pub processes: Vec<ProcessMetrics>,
}

impl Engine {
    /// Writes the operator fields of process `i`'s stats (each after a comma).
    pub(super) fn write_ops(&self, i: usize, now: Instant, out: &mut String) {
        let p = &self.procs[i];
        let o = &p.ops;
        out.push_str(",\"last_beat_age_ms\":");
        push_ms(out, p.last_good.map(|t| now.saturating_duration_since(t)));
        let slice = rtt_slice(self.started, now);
        for (k, q) in [("rtt_p50_ms", 0.5), ("rtt_p99_ms", 0.99)] {
            let _ = write!(out, ",\"{k}\":");
            let us = o.rtt.quantile(slice, q);
            push_ms(out, us.map(|us| Duration::from_nanos((us * 1000.0) as u64)));
        }
        let _ = write!(
            out,
            ",\"rtt_replies_1m\":{},\"misses_total\":{},\"miss_allowance\":{},\"hang_time_allowance_ms\":",
            o.rtt.count(slice),
            o.misses,
            self.cfg.error_allowance
        );
        match p.cfg.hang_time_allowance {
            Some(d) => {
                let _ = write!(out, "{}", d.as_millis());
            }
            None => out.push_str("null"),
        }
        let _ = write!(out, ",\"kills_total\":{},\"last_kill\":", o.kills_total());
        match &o.last_kill {
            Some(k) => {
                let _ = write!(
                    out,
                    "{{\"signal\":\"{}\",\"reason\":\"{}\",\"pid\":{},\"at\":\"{}\",\"age_ms\":{}}}",
                    k.signal,
                    k.reason.as_str(),
                    k.pid,
                    Iso8601(self.wall(k.at)),
                    now.saturating_duration_since(k.at).as_millis()
                );
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"last_restart\":");
        self.push_time(out, o.last_restart);
        out.push_str(",\"last_restart_age_ms\":");
        push_age(out, now, o.last_restart);
        let inh = o.inhibited(now);
        let _ = write!(
            out,
            ",\"monitored\":{},\"inhibited\":{},\"inhibited_until\":",
            p.cfg.required,
            inh.is_some()
        );
        self.push_time(out, inh.map(|x| x.until));
        out.push_str(",\"inhibit_left_ms\":");
        match inh {
            Some(x) => {
                let _ = write!(
                    out,
                    "{}",
                    x.until.saturating_duration_since(now).as_millis()
                );
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"inhibit_reason\":");
        match inh {
            Some(x) => push_str(out, &x.reason),
            None => out.push_str("null"),
        }
        out.push_str(",\"inhibited_by\":");
        match inh {
            Some(x) => push_str(out, &x.by),
            None => out.push_str("null"),
        }
    }

    /// An instant as a quoted UTC time, or null.
    fn push_time(&self, out: &mut String, t: Option<Instant>) {
        match t {
            Some(t) => {
                let _ = write!(out, "\"{}\"", Iso8601(self.wall(t)));
            }
            None => out.push_str("null"),
        }
    }

    /// `get ourUri/status[/<offset>]`: the summary and the rows of processes
    /// `offset..offset + STATUS_PAGE`.
    pub(super) fn status_page(&self, now: Instant, offset: Option<&str>) -> Result<String, String> {
        let from = match offset {
            None => 0,
            Some(o) => o
                .parse::<usize>()
                .ok()
                .filter(|&o| o <= self.procs.len())
                .ok_or_else(|| format!("no status page at {o} (0..={})", self.procs.len()))?,
        };
        let to = (from + STATUS_PAGE).min(self.procs.len());
        let mut out = String::with_capacity(256 + (to - from) * 400);
        let _ = write!(out, "{{\"summary\":{},\"processes\":[", self.summary(now));
        for i in from..to {
            if i > from {
                out.push(',');
            }
            self.write_row(i, now, &mut out);
        }
        let _ = write!(
            out,
            "],\"offset\":{from},\"total\":{},\"next\":",
            self.procs.len()
        );
        if to < self.procs.len() {
            let _ = write!(out, "{to}");
        } else {
            out.push_str("null");
        }
        out.push('}');
        Ok(out)
    }

    /// One row of `get ourUri/status`: what `cops status` shows of process `i`.
    fn write_row(&self, i: usize, now: Instant, out: &mut String) {
        let p = &self.procs[i];
        out.push_str("{\"name\":");
        push_str(out, &p.cfg.name);
        let _ = write!(
            out,
            ",\"state\":\"{}\",\"pid\":",
            shown_state(p.cfg.required, p.state)
        );
        match p.pid {
            Some(pid) => {
                let _ = write!(out, "{pid}");
            }
            None => out.push_str("null"),
        }
        let _ = write!(
            out,
            ",\"missed_heartbeats\":{},\"total_restarts\":{},\"cops_restarts\":{}",
            p.misses, p.stats.total_restarts, p.stats.cops_restarts
        );
        self.write_ops(i, now, out);
        super::loops::write_loop_row(out, &p.loops, p.cfg.loops.as_ref());
        out.push('}');
    }

    /// `get ourUri/events/<name>` (newest first, with the site's events of
    /// the same span) or, without a name, the site's events alone.
    pub(super) fn events_answer(&self, now: Instant, name: Option<&str>) -> Result<String, String> {
        let mut merged: Vec<(&LogEntry, &str)> = Vec::new();
        let mut out = String::with_capacity(4096);
        match name {
            Some(name) => {
                let i = self
                    .process_index(name)
                    .ok_or_else(|| format!("no process named {name}"))?;
                let log = &self.procs[i].ops.log;
                // A full log has lost older entries: site events before its
                // oldest one would stand alone, out of context.
                let from = log.oldest().filter(|_| log.is_full());
                merged.extend(log.iter().map(|e| (e, "process")));
                merged.extend(
                    self.site_log
                        .iter()
                        .filter(|e| from.is_none_or(|f| e.at >= f))
                        .map(|e| (e, "site")),
                );
                out.push_str("{\"name\":");
                push_str(&mut out, name);
                out.push(',');
            }
            None => {
                merged.extend(self.site_log.iter().map(|e| (e, "site")));
                out.push('{');
            }
        }
        // Newest first; at the same instant, the later-logged first.
        merged.reverse();
        merged.sort_by_key(|e| std::cmp::Reverse(e.0.at));
        out.push_str("\"events\":[");
        for (k, (e, scope)) in merged.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            self.write_entry(now, e, scope, &mut out);
        }
        out.push_str("]}");
        Ok(out)
    }

    fn write_entry(&self, now: Instant, e: &LogEntry, scope: &str, out: &mut String) {
        let _ = write!(
            out,
            "{{\"at\":\"{}\",\"age_ms\":{},\"kind\":\"{}\",\"severity\":{},\"scope\":\"{scope}\",\"pid\":",
            iso8601(self.wall(e.at)),
            now.saturating_duration_since(e.at).as_millis(),
            e.kind.as_str(),
            e.severity as u8
        );
        match e.pid {
            Some(pid) => {
                let _ = write!(out, "{pid}");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"message\":");
        push_str(out, &e.message);
        if let Some(d) = &e.data {
            let _ = write!(out, ",\"data\":{d}");
        }
        out.push('}');
    }

    /// The summary's operator fields (added to [`Engine::summary`]).
    pub(super) fn summary_ops(&self, now: Instant, m: &mut serde_json::Map<String, Value>) {
        let ev = &self.evidence;
        let inhibited = self
            .procs
            .iter()
            .filter(|p| p.ops.inhibited(now).is_some())
            .count();
        let kills: u64 = self.procs.iter().map(|p| p.ops.kills_total()).sum();
        let suppressed: serde_json::Map<String, Value> = Suppressed::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), self.suppressed[*r as usize].into()))
            .collect();
        let budget = self.cfg.max_kills_per_window.map(|max| {
            let window = self.cfg.kill_window();
            let used = self.site.kills_within(now, window);
            serde_json::json!({
                "max": max,
                "window_ms": window.as_millis() as u64,
                "used": used,
                "left": (max as usize).saturating_sub(used),
            })
        });
        let mut put = |k: &str, v: Value| {
            m.insert(k.into(), v);
        };
        put("started_at", iso8601(self.wall_at_start).into());
        put("connected", self.connected.into());
        put(
            "stalled_since",
            ev.stalled_since()
                .map(|t| Value::from(iso8601(self.wall(t))))
                .unwrap_or(Value::Null),
        );
        put(
            "stall_seconds_total",
            ev.stall_time(now).as_secs_f64().into(),
        );
        put("kill_budget", budget.unwrap_or(Value::Null));
        put("kills_total", kills.into());
        put("kills_suppressed", Value::Object(suppressed));
        put("inhibited", inhibited.into());
        let lag = self.lag.worst(self.started, now);
        put("loop_lag_ms", (lag.as_micros() as f64 / 1000.0).into());
    }

    /// The numbers `cops --metrics-listen` exposes, at `now`.
    pub fn metrics_snapshot(&self, now: Instant) -> MetricsSnapshot {
        let processes = self
            .procs
            .iter()
            .map(|p| ProcessMetrics {
                name: p.cfg.name.clone(),
                state: shown_state(p.cfg.required, p.state),
                inhibited: p.ops.inhibited(now).is_some(),
                rtt: p.ops.hist.clone(),
                missed: p.ops.misses,
                kills: kill_series(p),
                restarts: p.stats.total_restarts,
                cops_restarts: p.stats.cops_restarts,
                last_beat_age: p.last_good.map(|t| now.saturating_duration_since(t)),
                loops: super::loops::loop_metrics(&p.loops, p.cfg.loops.as_ref()),
            })
            .collect();
        MetricsSnapshot {
            controller: self.cfg.controller_name.clone(),
            uptime: now.saturating_duration_since(self.started),
            connected: self.connected,
            stalled: self.evidence.stalled(),
            stalls: self.evidence.stalls(),
            stall_time: self.evidence.stall_time(now),
            void_rounds: self.evidence.void_rounds(),
            loop_lag: self.lag.worst(self.started, now),
            kills_suppressed: Suppressed::ALL
                .iter()
                .map(|r| (r.as_str(), self.suppressed[*r as usize]))
                .collect(),
            requests_dropped: self.serve_tokens.dropped,
            processes,
        }
    }
}

/// The kill counters of `p`, with zeros for the kills it could get.
fn kill_series(p: &super::process::Proc) -> Vec<(String, &'static str, u64)> {
    use super::ops::KillReason;
    let mut out: Vec<(String, &'static str, u64)> = Vec::new();
    let mut add = |sig: crate::config::Signal, reason: KillReason, n: u64| {
        let (sig, reason) = (sig.to_string(), reason.as_str());
        match out.iter_mut().find(|k| k.0 == sig && k.1 == reason) {
            Some(k) => k.2 += n,
            None => out.push((sig, reason, n)),
        }
    };
    if p.cfg.kill_on_hang && p.cfg.required {
        add(p.cfg.kill_signal, KillReason::Hung, 0);
        if !p.cfg.kill_signal.is_kill() {
            add(crate::config::Signal::KILL, KillReason::Escalation, 0);
        }
        if p.cfg
            .loops
            .is_some_and(|l| l.action == crate::config::LoopAction::Kill)
        {
            add(p.cfg.kill_signal, KillReason::Loop, 0);
        }
    }
    for &(sig, reason, n) in &p.ops.kills {
        add(sig, reason, n);
    }
    out
}

/// Milliseconds from `t` to `now`, or null.
fn push_age(out: &mut String, now: Instant, t: Option<Instant>) {
    match t {
        Some(t) => {
            let _ = write!(out, "{}", now.saturating_duration_since(t).as_millis());
        }
        None => out.push_str("null"),
    }
}
