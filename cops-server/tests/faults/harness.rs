//! The site under test: a broker, `cops` with a generated config, N monitored
//! `test_responder`s each under its own restart supervisor, decoys, and an
//! observer; then the counting of what happened (see `outcome.rs`).

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use testkit::ChildGuard;

use crate::faults::observe::{Events, StatsClient};
use crate::faults::outcome::{host_only_lag, Outcome, Stalls};
pub use crate::faults::parts::{
    as_nobody, bins, can_run_as_nobody, describe, is_root, Bus, Decoy, Timing, OBSERVE, SLACK,
};
use crate::faults::supervise::Supervised;

/// What a site is made of.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Monitored processes `p0..p{n-1}` on `/p0..`, each under a supervisor.
    pub n: usize,
    /// COPS's timing.
    pub timing: Timing,
    /// Extra top-level config keys.
    pub top: Map<String, Value>,
    /// Extra keys for every monitored process.
    pub per_process: Map<String, Value>,
    /// Configured processes the suite runs itself (name, uri): no supervisor.
    pub unsupervised: Vec<(String, String)>,
    /// Socket open to every user.
    pub open_socket: bool,
}

impl Spec {
    /// `n` supervised processes at `timing`, nothing else.
    pub fn new(n: usize, timing: Timing) -> Spec {
        Spec {
            n,
            timing,
            top: Map::new(),
            per_process: Map::new(),
            unsupervised: Vec::new(),
            open_socket: false,
        }
    }

    /// The COPS config of this spec.
    pub fn config(&self) -> Value {
        let names = (0..self.n).map(|i| (format!("p{i}"), format!("/p{i}")));
        let list: Vec<Value> = names
            .chain(self.unsupervised.iter().cloned())
            .map(|(name, uri)| {
                let mut p = json!({"name": name, "uri": uri, "killOnHang": true});
                if let Some(m) = p.as_object_mut() {
                    m.extend(self.per_process.clone());
                }
                p
            })
            .collect();
        let t = self.timing;
        let mut top = json!({
            "heartbeatFreq": t.period.as_millis() as u64,
            "replyToGetDeadline": t.deadline.as_millis() as u64,
            "heartbeatErrorAllowance": t.allowance,
            "briefingFrequencyMS": 1000,
            "controllerName": "faults",
            "processList": list,
        });
        if let Some(m) = top.as_object_mut() {
            m.extend(self.top.clone());
        }
        top
    }
}

/// A real hang the suite injected.
#[derive(Debug, Clone, Copy)]
pub struct Hang {
    /// Which monitored process.
    pub proc: usize,
    /// The PID that hung.
    pub pid: u32,
    /// When (taken just before the SIGSTOP).
    pub at: Instant,
    /// By when it must be dead (bound, multiplier, slack).
    pub bound: Duration,
}

/// One running site.
pub struct Site {
    /// Case name.
    pub case: String,
    /// COPS's timing.
    pub timing: Timing,
    /// When the site started.
    pub started: Instant,
    /// The broker.
    pub bus: Bus,
    /// The observer's event log.
    pub events: Events,
    /// The observer's stats client.
    pub stats: StatsClient,
    /// The monitored processes.
    pub procs: Vec<Supervised>,
    /// Their names.
    pub names: Vec<String>,
    /// Processes that must never be signalled.
    pub decoys: Vec<Decoy>,
    /// `cops`.
    pub cops: ChildGuard,
    /// Real hangs injected so far.
    pub hangs: Vec<Hang>,
    /// Failures found along the way.
    pub problems: Vec<String>,
    /// Wrong kills found along the way (decoys retired early).
    pub wrong: Vec<String>,
    /// Late kills a case found by its own rule (the kill budget's ranks).
    pub late: Vec<String>,
    /// Notes for the report.
    pub notes: Vec<String>,
}

/// Starts a site, or says why it could not (as a failed outcome).
pub fn start(case: &str, spec: &Spec) -> Result<Site, Box<Outcome>> {
    let bus = Bus::start(spec.open_socket);
    let events = Events::start(bus.socket());
    let stats = StatsClient::new(bus.socket());
    let procs: Vec<Supervised> = (0..spec.n)
        .map(|i| {
            let (exe, sock) = (bins().responder.clone(), bus.socket().to_owned());
            Supervised::start(move || {
                let mut c = Command::new(&exe);
                c.arg("--socket")
                    .arg(&sock)
                    .args(["--uri", &format!("/p{i}")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                c
            })
        })
        .collect();
    let mut decoys = vec![Decoy::spawn(
        "sleep (same user)",
        Command::new("sleep").arg("100000"),
    )];
    if can_run_as_nobody() {
        decoys.push(Decoy::spawn(
            "sleep (nobody)",
            as_nobody(Path::new("sleep")).arg("100000"),
        ));
    }
    let config = bus.dir().join("cops.json");
    std::fs::write(&config, spec.config().to_string()).expect("write the config");
    let log = std::fs::File::create(bus.dir().join("cops.log")).expect("cops log");
    let cops = ChildGuard::spawn(
        Command::new(&bins().cops)
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(bus.socket())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    );
    let mut site = Site {
        case: case.into(),
        timing: spec.timing,
        started: Instant::now(),
        bus,
        events,
        stats,
        names: (0..spec.n).map(|i| format!("p{i}")).collect(),
        procs,
        decoys,
        cops,
        hangs: Vec::new(),
        problems: Vec::new(),
        wrong: Vec::new(),
        late: Vec::new(),
        notes: Vec::new(),
    };
    match site.wait_ready(Duration::from_secs(20)) {
        Ok(()) => Ok(site),
        Err(why) => Err(Box::new(Outcome::broken(case, spec.timing.name, why))),
    }
}

impl Site {
    /// The last lines of COPS's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.bus.dir().join("cops.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The last lines of the broker's log.
    pub fn broker_log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.bus.dir().join("broker.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `Err` (with its log) if COPS is no longer running.
    pub fn cops_running(&mut self) -> Result<(), String> {
        match self.cops.0.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(format!(
                "cops exited ({}); its log ends:\n{}",
                describe(st.signal(), st.code()),
                self.log_tail(15)
            )),
            Err(e) => Err(format!("cops: {e}")),
        }
    }

    /// Checks and ends the decoys whose label starts with `prefix` (a flood, a
    /// forger): one that died of a signal was wrongly killed.
    pub fn retire(&mut self, prefix: &str) {
        let (gone, keep): (Vec<Decoy>, Vec<Decoy>) = std::mem::take(&mut self.decoys)
            .into_iter()
            .partition(|d| d.label.starts_with(prefix));
        self.decoys = keep;
        for mut d in gone {
            if let Err(e) = d.check() {
                self.file_decoy_end(e);
            }
        }
    }

    fn file_decoy_end(&mut self, e: String) {
        if e.contains("signal") {
            self.wrong.push(e);
        } else {
            self.problems.push(e);
        }
    }

    /// Waits until COPS reports every monitored process alive with the PID its
    /// supervisor runs now.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        let mut last = String::from("no answer to get /cops/stats");
        loop {
            self.cops_running()?;
            if let Some(map) = self.stats.all() {
                let mut ok = true;
                let mut seen = Vec::new();
                for (i, name) in self.names.iter().enumerate() {
                    let v = map.get(name).cloned().unwrap_or(Value::Null);
                    let pid = self.procs[i].pid();
                    // A PID is a kill target only once confirmed (docs/cops.md);
                    // a COPS without the field confirms at the pin.
                    let confirmed = v.get("pid_confirmed").is_none_or(|c| c == true);
                    let good =
                        v["state"] == "alive" && pid != 0 && v["pid"] == json!(pid) && confirmed;
                    ok &= good;
                    seen.push(format!(
                        "{name}: {} pid {} (runs {pid})",
                        v["state"], v["pid"]
                    ));
                }
                if ok {
                    return Ok(());
                }
                last = seen.join(", ");
            }
            if Instant::now() > end {
                return Err(format!(
                    "not every process alive with its current PID within {timeout:?}: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// As [`wait_ready`](Self::wait_ready) (up to 3 s + 3 bounds: a restart
    /// takes a few periods), recording a failure as a problem.
    pub fn expect_ready(&mut self, what: &str) -> bool {
        let timeout = Duration::from_secs(3) + self.timing.bound() * 3;
        match self.wait_ready(timeout) {
            Ok(()) => true,
            Err(e) => {
                self.problems.push(format!("{what}: {e}"));
                false
            }
        }
    }

    /// Sleeps `n` COPS periods.
    pub fn periods(&self, n: u32) {
        std::thread::sleep(self.timing.period * n);
    }

    /// Hangs (SIGSTOP) the given processes at once; each must be killed within
    /// `mult x bound + SLACK`.
    pub fn hang(&mut self, which: &[usize], mult: u32) -> Vec<Hang> {
        let bound = self.timing.bound() * mult + SLACK;
        let bounds: Vec<Duration> = which.iter().map(|_| bound).collect();
        self.hang_with(which, &bounds)
    }

    /// Hangs the given processes at once, each with its own deadline.
    pub fn hang_with(&mut self, which: &[usize], bounds: &[Duration]) -> Vec<Hang> {
        let mut out = Vec::new();
        for (&i, &bound) in which.iter().zip(bounds) {
            let at = Instant::now();
            match self.procs[i].signal(libc::SIGSTOP) {
                Some(pid) => out.push(Hang {
                    proc: i,
                    pid,
                    at,
                    bound,
                }),
                None => self.problems.push(format!(
                    "{}: not running when it was to hang",
                    self.names[i]
                )),
            }
        }
        self.hangs.extend(out.iter().copied());
        out
    }

    /// Waits until every hang in `hangs` has died, at most past the largest
    /// bound plus [`OBSERVE`]; whether all died.
    pub fn wait_kills(&self, hangs: &[Hang]) -> bool {
        let Some(last) = hangs.iter().map(|h| h.at + h.bound).max() else {
            return true;
        };
        let wait = (last + OBSERVE).saturating_duration_since(Instant::now());
        testkit::wait_for(wait, || {
            hangs
                .iter()
                .all(|h| self.procs[h.proc].deaths().iter().any(|d| d.pid == h.pid))
        })
    }

    /// Stops everything and counts what happened.
    pub fn finish(mut self, rule: Stalls, stalls_injected: usize) -> Outcome {
        // SIGCONT is harmless to a running COPS and ends a stop a failed case left.
        self.cops.signal(libc::SIGCONT);
        self.bus.signal(libc::SIGCONT);
        let since = self.started;
        let counts = |ev: &Events| {
            (
                ev.count(since, |e| e.is_stall()),
                ev.count(since, |e| e.is_stall_over()),
            )
        };
        // A stall alarm's "over" event may still be on its way.
        let wait = self.timing.stall_over_wait();
        testkit::wait_for(wait, || {
            let (a, o) = counts(&self.events);
            o >= a
        });
        let mut out = Outcome {
            case: self.case.clone(),
            timing: self.timing.name.into(),
            hangs: self.hangs.len(),
            problems: std::mem::take(&mut self.problems),
            wrong_kills: std::mem::take(&mut self.wrong),
            late_kills: std::mem::take(&mut self.late),
            notes: std::mem::take(&mut self.notes),
            ..Outcome::default()
        };
        if let Err(e) = self.cops_running() {
            out.problems.push(e);
        }
        for d in &mut self.decoys {
            match d.check() {
                Ok(()) => {}
                Err(e) if e.contains("signal") => out.wrong_kills.push(e),
                Err(e) => out.problems.push(e),
            }
        }
        self.cops.signal(libc::SIGTERM);
        if self.cops.wait_timeout(Duration::from_secs(5)).is_none() {
            out.notes
                .push("cops did not stop within 5 s of SIGTERM".into());
        }
        let stops: Vec<Instant> = self.procs.iter_mut().map(Supervised::stop).collect();
        self.classify(&mut out, &stops);
        let (alarms, overs) = counts(&self.events);
        out.set_stalls(rule, stalls_injected, alarms, overs);
        out.verdicts = self.events.count(since, |e| e.is_verdict());
        for e in self.events.all() {
            if e.at >= since && e.is_stall_over() {
                if let Some(lag) = host_only_lag(&e.message) {
                    out.host_stalls += 1;
                    out.host_lag_ms = out.host_lag_ms.max(lag);
                }
            }
        }
        out.secs = self.started.elapsed().as_secs_f64();
        if !out.passed() {
            out.notes
                .push(format!("cops log tail:\n{}", self.log_tail(25)));
            out.notes
                .push(format!("broker log tail:\n{}", self.broker_log_tail(10)));
            let evs: Vec<String> = self
                .events
                .all()
                .iter()
                .map(|e| {
                    let t = e.at.saturating_duration_since(since).as_secs_f64();
                    format!("  +{t:.3}s sev {} {}", e.severity, e.message)
                })
                .collect();
            out.notes.push(format!("events:\n{}", evs.join("\n")));
        }
        out
    }

    /// Sorts every death of a monitored process: a kill of a real hang (timed
    /// against its bound), a false kill, or a problem (an exit by itself).
    fn classify(&self, out: &mut Outcome, stops: &[Instant]) {
        let hangs: HashMap<u32, &Hang> = self.hangs.iter().map(|h| (h.pid, h)).collect();
        let mut killed = Vec::new();
        for (i, sup) in self.procs.iter().enumerate() {
            let name = &self.names[i];
            for d in sup.deaths().iter().filter(|d| d.at < stops[i]) {
                let when = d.at.saturating_duration_since(self.started).as_secs_f64();
                let what = format!("{name} pid {}", d.pid);
                match (hangs.get(&d.pid), d.signal) {
                    (Some(h), Some(_)) => {
                        killed.push(d.pid);
                        out.kill(&what, d.at - h.at, h.bound);
                    }
                    (Some(_), None) => out.problems.push(format!(
                        "{what}: hung, yet ended by itself ({})",
                        describe(d.signal, d.code)
                    )),
                    (None, Some(_)) => out.false_kills.push(format!(
                        "{what} (healthy) ended by {} at +{when:.2}s",
                        describe(d.signal, d.code)
                    )),
                    (None, None) => out.problems.push(format!(
                        "{what} ended by itself ({}) at +{when:.2}s",
                        describe(d.signal, d.code)
                    )),
                }
            }
        }
        for h in &self.hangs {
            if !killed.contains(&h.pid) {
                out.missed_kills.push(format!(
                    "{} pid {} hung at +{:.2}s, never killed",
                    self.names[h.proc],
                    h.pid,
                    h.at.saturating_duration_since(self.started).as_secs_f64()
                ));
            }
        }
    }
}
