//! Reading what COPS publishes: `pub <ourUri>/stats/<name>`, the answer to
//! `get <ourUri>/stats`, and the events it posts on `/events`.
//!
//! Parsing is tolerant on purpose: a missing field reads as unknown and a
//! clothed value (`{"value":x}`) is unwrapped, so the demo shows what it can.

use serde_json::Value;

/// One process's stats as COPS serves them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcStats {
    /// Configured name.
    pub name: String,
    /// Base URI.
    pub uri: String,
    /// `unknown`, `alive` or `hung`.
    pub state: String,
    /// Whether COPS counts it alive.
    pub alive: bool,
    /// The PID from its last reply.
    pub pid: Option<u64>,
    /// The heartbeat counter.
    pub heartbeat: Option<u64>,
    /// Consecutive misses.
    pub missed_heartbeats: Option<u64>,
    /// Restarts seen (new PIDs).
    pub total_restarts: Option<u64>,
    /// Restarts caused by COPS's kills.
    pub cops_restarts: Option<u64>,
    /// Last response time, ms.
    pub last_response_time_ms: Option<f64>,
    /// Max response time, ms.
    pub max_response_time_ms: Option<f64>,
    /// Average response time, ms.
    pub avg_response_time_ms: Option<f64>,
    /// Iterations of the work loop in the last beat (hosts that tick).
    pub loop_count: Option<u64>,
    /// The longest of them, microseconds.
    pub loop_max_us: Option<u64>,
    /// The loop's 99th percentile over the last minute, microseconds.
    pub loop_p99_us: Option<u64>,
    /// Beats with an iteration over `loopDeadlineMS`, so far.
    pub loop_overruns: Option<u64>,
    /// The loop alarm is raised.
    pub loop_alarm: bool,
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let x = v.get(key)?;
    Some(match x.get("value") {
        Some(inner) if x.is_object() => inner,
        _ => x,
    })
}

fn u(v: &Value, key: &str) -> Option<u64> {
    let x = field(v, key)?;
    x.as_u64().or_else(|| x.as_f64().map(|f| f as u64))
}

fn f(v: &Value, key: &str) -> Option<f64> {
    field(v, key)?.as_f64()
}

fn s(v: &Value, key: &str) -> String {
    field(v, key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl ProcStats {
    /// Reads one process's stats object; `None` unless it is an object with a `name`
    /// (or `fallback_name` is given).
    pub fn parse(v: &Value, fallback_name: Option<&str>) -> Option<ProcStats> {
        if !v.is_object() {
            return None;
        }
        let mut name = s(v, "name");
        if name.is_empty() {
            name = fallback_name?.to_owned();
        }
        let state = s(v, "state");
        let alive = field(v, "alive")
            .and_then(Value::as_bool)
            .unwrap_or(state == "alive");
        Some(ProcStats {
            name,
            uri: s(v, "uri"),
            state,
            alive,
            pid: u(v, "pid").filter(|p| *p != 0),
            heartbeat: u(v, "heartbeat"),
            missed_heartbeats: u(v, "missed_heartbeats"),
            total_restarts: u(v, "total_restarts"),
            cops_restarts: u(v, "cops_restarts"),
            last_response_time_ms: f(v, "last_response_time_ms"),
            max_response_time_ms: f(v, "max_response_time_ms"),
            avg_response_time_ms: f(v, "avg_response_time_ms"),
            loop_count: u(v, "loop_count"),
            loop_max_us: u(v, "loop_max_us"),
            loop_p99_us: u(v, "loop_p99_us"),
            loop_overruns: u(v, "loop_overruns"),
            loop_alarm: field(v, "loop_alarm")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// Reads every process in the answer to `get <ourUri>/stats` or `get <ourUri>`:
    /// an object keyed by name, an array, or either under a `stats` key.
    pub fn parse_all(v: &Value) -> Vec<ProcStats> {
        let v = v.get("stats").unwrap_or(v);
        let mut out: Vec<ProcStats> = match v {
            Value::Array(items) => items
                .iter()
                .filter_map(|i| ProcStats::parse(i, None))
                .collect(),
            Value::Object(map) => map
                .iter()
                .filter_map(|(k, i)| ProcStats::parse(i, Some(k)))
                .collect(),
            _ => Vec::new(),
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// One timeline line: "alive  pid 4242  heartbeat 17  missed 0  reply
    /// 0.31 ms", and for a host that ticks "  loop 3 x <= 101 ms, overruns 0"
    /// (", LOOP ALARM" while it is raised).
    pub fn brief(&self) -> String {
        let mut line = format!("{:<7} pid {}", self.state, opt(self.pid));
        line += &format!("  heartbeat {}", opt(self.heartbeat));
        line += &format!("  missed {}", opt(self.missed_heartbeats));
        if let Some(ms) = self.last_response_time_ms {
            line += &format!("  reply {ms:.2} ms");
        }
        match (self.loop_count, self.loop_max_us) {
            (Some(0), _) => line += "  loop: no iteration ended",
            (Some(n), Some(us)) => line += &format!("  loop {n} x <= {} ms", us_as_ms(us)),
            _ => {}
        }
        if self.loop_count.is_some() {
            line += &format!(", overruns {}", opt(self.loop_overruns));
            if self.loop_alarm {
                line += ", LOOP ALARM";
            }
        }
        line
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| x.to_string())
}

/// Microseconds as whole milliseconds (rounded).
fn us_as_ms(us: u64) -> u64 {
    (us + 500) / 1000
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
}

/// The final stats table, one row per process.
pub fn table(rows: &[ProcStats]) -> String {
    let head = [
        "name",
        "state",
        "pid",
        "heartbeat",
        "missed",
        "restarts",
        "by cops",
        "last ms",
        "avg ms",
        "max ms",
        "loop p99 ms",
        "overruns",
    ];
    let body: Vec<[String; 12]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.state.clone(),
                opt(r.pid),
                opt(r.heartbeat),
                opt(r.missed_heartbeats),
                opt(r.total_restarts),
                opt(r.cops_restarts),
                opt_ms(r.last_response_time_ms),
                opt_ms(r.avg_response_time_ms),
                opt_ms(r.max_response_time_ms),
                opt(r.loop_p99_us.map(us_as_ms)),
                opt(r.loop_overruns),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for row in &body {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let fmt_row = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        parts.join("  ").trim_end().to_owned()
    };
    let mut out = fmt_row(head.to_vec());
    out.push('\n');
    out += &fmt_row(
        width
            .iter()
            .map(|w| &"----------------------------"[..*w])
            .collect(),
    );
    for row in &body {
        out.push('\n');
        out += &fmt_row(row.iter().map(String::as_str).collect());
    }
    out
}

/// An event COPS posted on `/events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `source` (COPS's is "COPS").
    pub source: String,
    /// The text.
    pub message: String,
    /// 1 info, 2 status, 3 alarm, 4 fault (0 when missing).
    pub severity: u64,
}

impl Event {
    /// Reads an `/events` body; `None` when it is not a JSON object.
    pub fn parse(body: &[u8]) -> Option<Event> {
        let v: Value = serde_json::from_slice(body).ok()?;
        v.is_object().then(|| Event {
            source: s(&v, "source"),
            message: s(&v, "message"),
            severity: u(&v, "severity").unwrap_or(0),
        })
    }

    /// "info", "status", "ALARM", "FAULT".
    pub fn severity_label(&self) -> &'static str {
        match self.severity {
            1 => "info",
            2 => "status",
            3 => "ALARM",
            4 => "FAULT",
            _ => "event",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_naked_and_clothed_stats() {
        let v = serde_json::json!({"name":"a","uri":"/a","state":"alive","alive":true,
            "pid":{"value":42},"heartbeat":7,"missed_heartbeats":0,
            "last_response_time_ms":0.25});
        let p = ProcStats::parse(&v, None).expect("object with name");
        assert_eq!(p.pid, Some(42));
        assert_eq!(p.heartbeat, Some(7));
        assert!(p.alive);
        assert_eq!(
            p.brief(),
            "alive   pid 42  heartbeat 7  missed 0  reply 0.25 ms"
        );
    }

    #[test]
    fn reads_the_loop_figures() {
        let v = serde_json::json!({"name":"m","state":"alive","pid":7,"heartbeat":3,
            "missed_heartbeats":0,"loop_count":2,"loop_max_us":400_321,"loop_p99_us":399_999,
            "loop_overruns":4,"loop_alarm":true});
        let p = ProcStats::parse(&v, None).expect("object with name");
        assert_eq!(
            (p.loop_count, p.loop_max_us, p.loop_overruns, p.loop_alarm),
            (Some(2), Some(400_321), Some(4), true)
        );
        assert_eq!(
            p.brief(),
            "alive   pid 7  heartbeat 3  missed 0  loop 2 x <= 400 ms, overruns 4, LOOP ALARM"
        );
        let t = table(&[p]);
        assert!(
            t.lines().next().unwrap().ends_with("loop p99 ms  overruns"),
            "{t}"
        );
        assert!(t.lines().nth(2).unwrap().ends_with("400          4"), "{t}");
    }

    #[test]
    fn parses_all_shapes() {
        let keyed = serde_json::json!({"b":{"state":"hung"},"a":{"name":"a","state":"alive"}});
        let names: Vec<_> = ProcStats::parse_all(&keyed)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        let arr = serde_json::json!({"stats":[{"name":"x"}]});
        assert_eq!(ProcStats::parse_all(&arr).len(), 1);
    }

    #[test]
    fn table_aligns() {
        let rows = [ProcStats {
            name: "hybridos_controller".into(),
            state: "alive".into(),
            pid: Some(1),
            ..Default::default()
        }];
        let t = table(&rows);
        assert!(t.starts_with("name                 state"), "{t}");
        assert_eq!(t.lines().count(), 3);
    }

    #[test]
    fn reads_events() {
        let e = Event::parse(br#"{"source":"COPS","message":"x hung","severity":3}"#);
        assert_eq!(e.map(|e| e.severity_label()), Some("ALARM"));
        assert!(Event::parse(b"nope").is_none());
    }
}
