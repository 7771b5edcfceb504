//! What COPS serves and publishes: `get ourUri[/summary|/stats[/N[/field]]]`
//! answered to the replyto, and `pub ourUri/summary` + `pub ourUri/stats/N`
//! every `briefingFrequencyMS` (spread over the first half of that period).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fims::{Message, Method};
use serde_json::{json, Map, Value};

use super::{Engine, Kind, State, Transmit};
use std::cmp::Reverse;

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
];

/// Ticks a briefing is spread over.
const BRIEFING_TICK: Duration = Duration::from_millis(10);

/// A duration in ms with 3 decimals, or null.
fn push_ms(out: &mut String, d: Option<Duration>) {
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
fn push_str(out: &mut String, s: &str) {
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
        let Some(replyto) = msg.replyto() else {
            return; // nothing to answer (our own pubs, sets without replyto)
        };
        let rest = &msg.uri[self.cfg.our_uri.len()..];
        let answer = match msg.method() {
            Some(Method::Get) => self.get(now, rest),
            _ => Err(format!("{} is not supported on {}", msg.method, msg.uri)),
        };
        let body = match answer {
            Ok(v) => v.to_string(),
            Err(e) => Value::String(format!("Error: {e}")).to_string(),
        };
        self.transmits.push_back(Transmit {
            method: Method::Set,
            uri: Arc::from(replyto),
            replyto: None,
            body: body.into_bytes(),
        });
    }

    fn get(&self, now: Instant, rest: &str) -> Result<Value, String> {
        let mut parts = fims::uri::frags(rest);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (None, ..) => Ok(json!({
                "summary": self.summary(now),
                "stats": self.all_stats(now),
            })),
            (Some("summary"), None, ..) => Ok(self.summary(now)),
            (Some("stats"), None, ..) => Ok(self.all_stats(now)),
            (Some("stats"), Some(name), field, None) => {
                let i = self
                    .process_index(name)
                    .ok_or_else(|| format!("no process named {name}"))?;
                let stats = self.stats(i, now);
                match field {
                    None => Ok(stats),
                    Some(f) => stats
                        .get(f)
                        .cloned()
                        .ok_or_else(|| format!("no stat {f} (one of {})", STAT_FIELDS.join(", "))),
                }
            }
            _ => Err(format!("nothing at {}{rest}", self.cfg.our_uri)),
        }
    }

    fn all_stats(&self, now: Instant) -> Value {
        let mut m = Map::new();
        for (i, p) in self.procs.iter().enumerate() {
            m.insert(p.cfg.name.clone(), self.stats(i, now));
        }
        Value::Object(m)
    }

    /// The stats object of process `i`.
    pub(super) fn stats(&self, i: usize, _now: Instant) -> Value {
        let mut out = String::with_capacity(512);
        self.write_stats(i, &mut out);
        // write_stats writes valid JSON; Null would only show a bug, not crash COPS.
        serde_json::from_str(&out).unwrap_or(Value::Null)
    }

    /// Writes the stats object of process `i` as JSON text (the briefing's hot
    /// path: 10,000 of these every briefing, so no JSON tree is built).
    pub(super) fn write_stats(&self, i: usize, out: &mut String) {
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
                let _ = write!(out, "\"{}\"", iso8601(self.wall(t)));
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
        let _ = write!(out, ",\"kill_on_hang\":{}}}", p.cfg.kill_on_hang);
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
        json!({
            "controller_name": self.cfg.controller_name,
            "status": if healthy { "healthy" } else { "unhealthy" },
            "processes": self.procs.len(),
            "monitored": counts.iter().sum::<usize>(),
            "unknown": counts[State::Unknown as usize],
            "alive": counts[State::Alive as usize],
            "hung": counts[State::Hung as usize],
            "stalled": self.window.stalled_since.is_some(),
            "uptime_s": now.saturating_duration_since(self.started).as_secs(),
        })
    }

    pub(super) fn on_briefing(&mut self, now: Instant) {
        let n = self.procs.len();
        let ticks = (self.cfg.briefing.as_millis() / BRIEFING_TICK.as_millis() / 2).max(1) as usize;
        let chunk = n.div_ceil(ticks).max(1);
        if self.connected {
            if self.briefing_cursor == 0 {
                let body = self.summary(now).to_string().into_bytes();
                self.transmits.push_back(Transmit {
                    method: Method::Pub,
                    uri: self.summary_uri.clone(),
                    replyto: None,
                    body,
                });
            }
            let end = (self.briefing_cursor + chunk).min(n);
            let mut text = String::with_capacity(512);
            for i in self.briefing_cursor..end {
                text.clear();
                self.write_stats(i, &mut text);
                self.transmits.push_back(Transmit {
                    method: Method::Pub,
                    uri: self.procs[i].stats_uri.clone(),
                    replyto: None,
                    body: text.as_bytes().to_vec(),
                });
            }
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
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
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
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}
