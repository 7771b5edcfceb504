//! What the demo has seen so far (stats, events, starts and exits), and the
//! timeline it prints as it sees it.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::Instant;

use crate::children::{describe, SupervisorEvent};
use crate::stats::{Event, ProcStats};

/// Prints one line on stdout. A closed stdout (`cops-demo | head`) is not a
/// reason to abandon the run half way, so write errors are ignored.
pub fn out(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// One exit the supervisor saw.
#[derive(Debug, Clone)]
pub struct Exit {
    /// When.
    pub at: Instant,
    /// Supervised name.
    pub name: String,
    /// The PID that exited.
    pub pid: u32,
    /// How.
    pub status: ExitStatus,
}

/// The demo's view of the run.
#[derive(Debug)]
pub struct World {
    start: Instant,
    our_uri: String,
    /// Latest stats per process name, with the instant they arrived.
    pub stats: HashMap<String, (Instant, ProcStats)>,
    /// Every event COPS posted, in order.
    pub events: Vec<(Instant, Event)>,
    /// PID of the incarnation running now, per name (absent while down).
    pub running: HashMap<String, u32>,
    /// Every exit, in order.
    pub exits: Vec<Exit>,
    /// Restarts per name.
    pub restarts: HashMap<String, u32>,
    /// While set, routine stats of other processes are printed only when they change.
    pub focus: Option<String>,
    printed: HashMap<String, ProcStats>,
    summary_status: Option<String>,
}

impl World {
    /// A fresh view; times print relative to `start`.
    pub fn new(start: Instant, our_uri: &str) -> World {
        World {
            start,
            our_uri: our_uri.trim_end_matches('/').to_owned(),
            stats: HashMap::new(),
            events: Vec::new(),
            running: HashMap::new(),
            exits: Vec::new(),
            restarts: HashMap::new(),
            focus: None,
            printed: HashMap::new(),
            summary_status: None,
        }
    }

    /// Prints one timeline line: `  +12.345s  tag         text`.
    pub fn say(&self, at: Instant, tag: &str, text: &str) {
        let t = at.saturating_duration_since(self.start).as_secs_f64();
        out(format_args!("  +{t:>7.3}s  {tag:<11} {text}"));
    }

    /// Prints a line stamped now.
    pub fn now(&self, tag: &str, text: &str) {
        self.say(Instant::now(), tag, text);
    }

    /// Takes in what a supervisor reported. Printed stamped now (so the
    /// timeline stays in order); recorded with `at`, when the supervisor saw it.
    pub fn on_supervisor(&mut self, at: Instant, ev: SupervisorEvent) {
        match ev {
            SupervisorEvent::Started {
                name,
                pid,
                incarnation,
            } => {
                self.running.insert(name.clone(), pid);
                if incarnation == 1 {
                    self.now("supervisor", &format!("started {name} as pid {pid}"));
                } else {
                    *self.restarts.entry(name.clone()).or_default() += 1;
                    let n = incarnation - 1;
                    let text = format!("restarted {name} as pid {pid} (restart #{n})");
                    self.now("supervisor", &text);
                }
            }
            SupervisorEvent::Exited { name, pid, status } => {
                self.running.remove(&name);
                let text = format!("{name} pid {pid} ended: {}", describe(status));
                self.now("supervisor", &text);
                self.exits.push(Exit {
                    at,
                    name,
                    pid,
                    status,
                });
            }
            SupervisorEvent::SpawnFailed { name, error } => {
                self.say(
                    at,
                    "supervisor",
                    &format!("could not start {name}: {error}"),
                );
            }
        }
    }

    /// Takes in one FIMS message the demo's client received.
    pub fn on_message(&mut self, at: Instant, uri: &str, body: &[u8]) {
        if fims::uri::matches("/events", uri) {
            match Event::parse(body) {
                Some(e) => {
                    let text = format!("{:<6} {}", e.severity_label(), e.message);
                    self.say(at, "cops event", &text);
                    self.events.push((at, e));
                }
                None => {
                    let text = String::from_utf8_lossy(body);
                    self.say(at, "event", &format!("(not a COPS event) {text}"));
                }
            }
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let stats_prefix = format!("{}/stats/", self.our_uri);
        if let Some(name) = uri.strip_prefix(&stats_prefix) {
            if let Some(p) = ProcStats::parse(&v, Some(name)) {
                self.on_stats(at, p);
            }
        } else if uri == format!("{}/summary", self.our_uri) {
            self.on_summary(at, &v);
        }
    }

    fn on_stats(&mut self, at: Instant, p: ProcStats) {
        let changed = match self.printed.get(&p.name) {
            None => true,
            Some(old) => {
                old.state != p.state
                    || old.pid != p.pid
                    || old.missed_heartbeats != p.missed_heartbeats
                    || old.total_restarts != p.total_restarts
                    || old.loop_alarm != p.loop_alarm
            }
        };
        let routine = match &self.focus {
            None => true,
            Some(f) => *f == p.name,
        };
        if changed || routine {
            self.say(at, "cops stats", &format!("{:<20} {}", p.name, p.brief()));
            self.printed.insert(p.name.clone(), p.clone());
        }
        self.stats.insert(p.name.clone(), (at, p));
    }

    fn on_summary(&mut self, at: Instant, v: &serde_json::Value) {
        let status = v
            .get("status")
            .and_then(|s| s.as_str().or_else(|| s.get("value")?.as_str()))
            .map(str::to_owned);
        if status.is_some() && status != self.summary_status {
            let text = format!("site status: {}", status.as_deref().unwrap_or("?"));
            self.say(at, "cops", &text);
            self.summary_status = status;
        }
    }

    /// Whether COPS's stats show `name` alive with PID `pid`.
    pub fn alive_as(&self, name: &str, pid: u32) -> bool {
        self.stats
            .get(name)
            .is_some_and(|(_, p)| p.alive && p.pid == Some(u64::from(pid)))
    }

    /// The exit of `pid` of `name`, if seen.
    pub fn exit_of(&self, name: &str, pid: u32) -> Option<&Exit> {
        self.exits.iter().find(|e| e.name == name && e.pid == pid)
    }

    /// Events posted at or after `since` with at least `severity`.
    pub fn events_since(&self, since: Instant, severity: u64) -> impl Iterator<Item = &Event> {
        self.events
            .iter()
            .filter(move |(at, e)| *at >= since && e.severity >= severity)
            .map(|(_, e)| e)
    }
}
