//! What COPS serves and publishes: `get ourUri[/summary|/stats[/N[/field]]]`
//! answered to the replyto, and `pub ourUri/summary` + `pub ourUri/stats/N`
//! every `briefingFrequencyMS` (spread over the first half of that period).
//!
//! Serving is rate-limited (a token bucket; the whole-site answers cost more)
//! so that a flood of requests costs COPS a bounded amount of work and never
//! delays the heartbeat cycle: requests over the limit are dropped and counted.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fims::{Message, Method};
use serde_json::{json, Value};

use super::{Engine, EventKind, Kind, Severity, State, Transmit, Via};
use std::cmp::Reverse;

/// Requests served per second at most, on average (a whole-site answer counts
/// as one per [`PROCS_PER_TOKEN`] processes).
pub const SERVE_PER_SEC: f64 = 1000.0;
/// Requests served in a burst at most.
const SERVE_BURST: f64 = 200.0;
/// A whole-site answer (`get ourUri`, `get ourUri/stats`) costs one token per
/// this many processes, plus one.
const PROCS_PER_TOKEN: usize = 50;
/// At most one log line about dropped requests this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// The serving rate limit: a token bucket.
#[derive(Debug)]
pub(super) struct Tokens {
    tokens: f64,
    at: Instant,
    /// Requests dropped so far (summary `requests_dropped`).
    pub(super) dropped: u64,
    /// Dropped since the last log line, and when that was.
    unlogged: u64,
    last_log: Option<Instant>,
}

impl Tokens {
    pub(super) fn new(now: Instant) -> Tokens {
        Tokens {
            tokens: SERVE_BURST,
            at: now,
            dropped: 0,
            unlogged: 0,
            last_log: None,
        }
    }

    /// Takes `cost` tokens if there are that many.
    fn take(&mut self, now: Instant, cost: f64) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + dt * SERVE_PER_SEC).min(SERVE_BURST);
        if self.tokens >= cost {
            self.tokens -= cost;
            return true;
        }
        self.dropped += 1;
        self.unlogged += 1;
        false
    }

    /// Whether to log the drops now; when so, how many.
    fn log_due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last_log
            .is_some_and(|t| now.saturating_duration_since(t) < DROP_LOG_EVERY)
        {
            return None;
        }
        self.last_log = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// The fields of `ourUri/stats/N`, in order.
pub const STAT_FIELDS: &[&str] = &[
    "name",
    "uri",
    "state",
    "alive",
    "pid",
    "heartbeat",
    "missed_heartbeats",
    "total_restarts",
    "cops_restarts",
    "last_response_time_ms",
    "max_response_time_ms",
    "avg_response_time_ms",
    "last_confirmed_alive",
    "version_tag",
    "version_commit",
    "version_build",
    "kill_on_hang",
    "rejected_replies",
    "unchecked",
    "pid_confirmed",
    "last_beat_age_ms",
    "rtt_p50_ms",
    "rtt_p99_ms",
    "rtt_replies_1m",
    "misses_total",
    "miss_allowance",
    "hang_time_allowance_ms",
    "kills_total",
    "last_kill",
    "last_restart",
    "last_restart_age_ms",
    "monitored",
    "inhibited",
    "inhibited_until",
    "inhibit_left_ms",
    "inhibit_reason",
    "inhibited_by",
    "loop_count",
    "loop_max_us",
    "loop_p99_us",
    "loop_overruns",
    "loop_slow_beats",
    "loop_fast_beats",
    "loop_failing_beats",
    "loop_alarm",
    "loop_alarms_total",
];

/// Ticks a briefing is spread over.
const BRIEFING_TICK: Duration = Duration::from_millis(10);

/// A duration in ms with 3 decimals, or null.
pub(super) fn push_ms(out: &mut String, d: Option<Duration>) {
    use std::fmt::Write;
    match d {
        Some(d) => {
            let us = d.as_micros();
            let _ = write!(out, "{}.{:03}", us / 1000, us % 1000);
        }
        None => out.push_str("null"),
    }
}

/// A JSON string (escaped when it has to be).
pub(super) fn push_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&Value::String(s.to_owned()).to_string());
    }
}

impl Engine {
    pub(super) fn serve(&mut self, now: Instant, msg: &Message<'_>) {
        let rest = fims::uri::route_rest(&self.cfg.our_uri, msg.uri).unwrap_or("");
        let mut parts = fims::uri::frags(rest);
        let (first, second, third) = (parts.next(), parts.next(), parts.next());
        let control = match (msg.method(), first, second, third) {
            (Some(Method::Set), Some("control"), Some(name), None) => Some(name),
            _ => None,
        };
        let replyto = msg.replyto();
        if replyto.is_none() && control.is_none() {
            return; // nothing to answer (our own pubs, sets without replyto)
        }
        // The answers that cover every process cost in proportion.
        let whole =
            matches!((first, second), (None, _) | (Some("stats"), None)) || first == Some("status");
        // A status row is half a stats object: twice the rows per token, so
        // `cops status` of 10,000 processes (20 pages) fits in the burst.
        let cost = match (whole, first) {
            (true, Some("status")) => {
                let rows = self.procs.len().min(super::STATUS_PAGE);
                1.0 + (rows / (2 * PROCS_PER_TOKEN)) as f64
            }
            (true, _) => 1.0 + (self.procs.len() / PROCS_PER_TOKEN) as f64,
            (false, _) => 1.0,
        };
        if !self.serve_tokens.take(now, cost) {
            if let Some(n) = self.serve_tokens.log_due(now) {
                let msg = format!(
                    "serving rate limit: {n} requests to {} dropped (at most {SERVE_PER_SEC} a second are answered)",
                    self.cfg.our_uri
                );
                self.event(
                    now,
                    Severity::Status,
                    EventKind::ServeLimited,
                    None,
                    msg,
                    false,
                );
            }
            return;
        }
        let answer = match (msg.method(), control) {
            (_, Some(name)) => self.control(now, name, msg),
            (Some(Method::Get), None) => self.get(now, rest),
            _ => Err(format!("{} is not supported on {}", msg.method, msg.uri)),
        };
        let Some(replyto) = replyto else {
            return;
        };
        let body = match answer {
            Ok(text) => text,
            Err(e) => Value::String(format!("Error: {e}")).to_string(),
        };
        self.transmits.push_back(Transmit {
            via: Via::Serve,
            method: Method::Set,
            uri: Arc::from(replyto),
            replyto: None,
            body: body.into(),
        });
    }

    /// The answer to `get ourUri<rest>` as JSON text, written directly (no
    /// JSON tree for the whole site).
    fn get(&self, now: Instant, rest: &str) -> Result<String, String> {
        let mut parts = fims::uri::frags(rest);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (None, ..) => {
                let mut out = format!("{{\"summary\":{},\"stats\":", self.summary(now));
                self.write_all_stats(now, &mut out);
                out.push('}');
                Ok(out)
            }
            (Some("summary"), None, ..) => Ok(self.summary(now).to_string()),
            (Some("status"), offset, None, ..) => self.status_page(now, offset),
            (Some("events"), name, None, ..) => self.events_answer(now, name),
            (Some("stats"), None, ..) => {
                let mut out = String::new();
                self.write_all_stats(now, &mut out);
                Ok(out)
            }
            (Some("stats"), Some(name), field, None) => {
                let i = self
                    .process_index(name)
                    .ok_or_else(|| format!("no process named {name}"))?;
                let Some(f) = field else {
                    let mut out = String::with_capacity(1024);
                    self.write_stats(i, now, &mut out);
                    return Ok(out);
                };
                self.stats(i, now)
                    .get(f)
                    .map(Value::to_string)
                    .ok_or_else(|| format!("no stat {f} (one of {})", STAT_FIELDS.join(", ")))
            }
            _ => Err(format!("nothing at {}{rest}", self.cfg.our_uri)),
        }
    }

    /// `{"<name>":{stats},...}` for every process.
    fn write_all_stats(&self, now: Instant, out: &mut String) {
        out.push('{');
        for (i, p) in self.procs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_str(out, &p.cfg.name);
            out.push(':');
            self.write_stats(i, now, out);
        }
        out.push('}');
    }

    /// The stats object of process `i`.
    pub(super) fn stats(&self, i: usize, now: Instant) -> Value {
        let mut out = String::with_capacity(1024);
        self.write_stats(i, now, &mut out);
        // write_stats writes valid JSON; Null would only show a bug, not crash COPS.
        serde_json::from_str(&out).unwrap_or(Value::Null)
    }

    /// Writes the stats object of process `i` as JSON text (the briefing's hot
    /// path: 10,000 of these every briefing, so no JSON tree is built).
    pub(super) fn write_stats(&self, i: usize, now: Instant, out: &mut String) {
        use std::fmt::Write;
        let p = &self.procs[i];
        let s = &p.stats;
        let avg = (s.n_rt > 0).then(|| s.sum_rt / s.n_rt as u32);
        out.push_str("{\"name\":");
        push_str(out, &p.cfg.name);
        out.push_str(",\"uri\":");
        push_str(out, &p.cfg.uri);
        let _ = write!(
            out,
            ",\"state\":\"{}\",\"alive\":{},\"pid\":",
            p.state.as_str(),
            p.state == State::Alive
        );
        match p.pid {
            Some(pid) => {
                let _ = write!(out, "{pid}");
            }
            None => out.push_str("null"),
        }
        let _ = write!(
            out,
            ",\"heartbeat\":{},\"missed_heartbeats\":{},\"total_restarts\":{},\"cops_restarts\":{}",
            p.h, p.misses, s.total_restarts, s.cops_restarts
        );
        out.push_str(",\"last_response_time_ms\":");
        push_ms(out, s.last_rt);
        out.push_str(",\"max_response_time_ms\":");
        push_ms(out, Some(s.max_rt));
        out.push_str(",\"avg_response_time_ms\":");
        push_ms(out, avg);
        out.push_str(",\"last_confirmed_alive\":");
        match s.last_alive {
            Some(t) => {
                let _ = write!(out, "\"{}\"", Iso8601(self.wall(t)));
            }
            None => out.push_str("null"),
        }
        for (k, v) in ["version_tag", "version_commit", "version_build"]
            .iter()
            .zip(&s.versions)
        {
            let _ = write!(out, ",\"{k}\":");
            push_str(out, v);
        }
        let r = &p.rejects;
        let _ = write!(
            out,
            ",\"kill_on_hang\":{},\"rejected_replies\":{{\"malformed\":{},\"late\":{},\"duplicate\":{},\"stale\":{},\"refused_pid\":{},\"conflict\":{}}},\"unchecked\":[",
            p.cfg.kill_on_hang, r.malformed, r.late, r.duplicate, r.stale, r.refused_pid, r.conflict
        );
        for (k, u) in p.unchecked.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            push_str(out, &u.to_string());
        }
        let _ = write!(
            out,
            "],\"pid_confirmed\":{}",
            p.confirmed && p.pid.is_some()
        );
        self.write_ops(i, now, out);
        super::loops::write_loop_stats(out, &p.loops);
        out.push('}');
    }

    /// The summary: controller name, status, counts by state, uptime.
    pub(super) fn summary(&self, now: Instant) -> Value {
        let mut counts = [0usize; 3];
        let mut healthy = true;
        for p in &self.procs {
            if !p.cfg.required {
                continue;
            }
            counts[p.state as usize] += 1;
            healthy &= p.state == State::Alive;
        }
        let mut v = json!({
            "controller_name": self.cfg.controller_name,
            "status": if healthy { "healthy" } else { "unhealthy" },
            "processes": self.procs.len(),
            "monitored": counts.iter().sum::<usize>(),
            "unknown": counts[State::Unknown as usize],
            "alive": counts[State::Alive as usize],
            "hung": counts[State::Hung as usize],
            "stalled": self.evidence.stalled(),
            "stalls": self.evidence.stalls(),
            "void_rounds": self.evidence.void_rounds(),
            "kills_deferred": self.site.deferred,
            "kills_waiting": self.site.waiting(),
            "requests_dropped": self.serve_tokens.dropped,
            "loop_alarms": self.loop_alarms(),
            "uptime_s": now.saturating_duration_since(self.started).as_secs(),
        });
        if let Some(m) = v.as_object_mut() {
            self.summary_ops(now, m);
        }
        v
    }

    pub(super) fn on_briefing(&mut self, now: Instant) {
        let n = self.procs.len();
        let ticks = (self.cfg.briefing.as_millis() / BRIEFING_TICK.as_millis() / 2).max(1) as usize;
        let chunk = n.div_ceil(ticks).max(1);
        if self.connected {
            if self.briefing_cursor == 0 {
                let body = self.summary(now).to_string().into_bytes();
                self.transmits.push_back(Transmit {
                    via: Via::Serve,
                    method: Method::Pub,
                    uri: self.summary_uri.clone(),
                    replyto: None,
                    body: body.into(),
                });
            }
            let end = (self.briefing_cursor + chunk).min(n);
            // One buffer for the whole part: each body is copied out once.
            let mut text = std::mem::take(&mut self.scratch);
            for i in self.briefing_cursor..end {
                text.clear();
                self.write_stats(i, now, &mut text);
                self.transmits.push_back(Transmit {
                    via: Via::Serve,
                    method: Method::Pub,
                    uri: self.procs[i].stats_uri.clone(),
                    replyto: None,
                    body: text.as_bytes().into(),
                });
            }
            self.scratch = text;
            self.briefing_cursor = end;
        } else {
            self.briefing_cursor = n;
        }
        let next = if self.briefing_cursor >= n {
            self.briefing_cursor = 0;
            let mut next = self.briefing_round + self.cfg.briefing;
            while next <= now {
                next += self.cfg.briefing;
            }
            self.briefing_round = next;
            next
        } else {
            now + BRIEFING_TICK
        };
        self.timers.push(Reverse((next, Kind::Briefing, 0, 0)));
    }
}

/// `2026-11-26T13:28:41.123Z`.
pub fn iso8601(t: SystemTime) -> String {
    Iso8601(t).to_string()
}

/// An instant written as [`iso8601`] spells it, straight into a formatter
/// (no `String` per timestamp in the stats).
pub struct Iso8601(pub SystemTime);

impl std::fmt::Display for Iso8601 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            d.subsec_millis()
        )
    }
}
