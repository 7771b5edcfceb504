//! `cops` supervising N simulated processes: CPU, RSS, false kills, detection.
//!
//! One run: a `fims_server`; `cops-sim` (N simulated responders over a few
//! connections; the 1% that will hang report the PIDs of real `sleep` children,
//! all others the PID of one decoy `sleep`); and `cops` with the configuration
//! `cops-sim --write-config` writes. Once every process is alive (checked with
//! `get /cops/summary`), the sim's hang instant starts the window: CPU time and
//! RSS of `cops` come from `/proc` over it, and so do the CPU of the broker
//! (which carries every heartbeat: with `cops`, what supervision costs the
//! site) and of `cops-sim` (the stand-in for N responders, in the notes only). `cops` really kills the hung
//! processes' sleepers; the sim times each from the hang to its death (its
//! "hang to signal", plus delivery) and counts false kills (the decoy or a
//! sleeper dying before the hang). `/events` is watched for stall alarms and
//! hung verdicts of processes that did not hang.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fims::blocking::Client;
use fims::Method;

use crate::bus::{stop_child, BrokerProc};
use crate::procstat::{self, CpuMark};
use crate::{err, Result};

/// Misses before "hung" in the generated configuration (the COPS default).
pub const ALLOWANCE: u64 = 5;

/// Percent of the processes made to hang.
pub const HANG_PERCENT: f64 = 1.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Simulated processes.
    pub processes: usize,
    /// Measurement window (starts at the hang, once every process is alive).
    pub window: Duration,
    /// Heartbeat period (ms); the deadline is COPS's default, 90% of it.
    pub period_ms: u64,
    /// FIMS connections the simulated processes share.
    pub connections: usize,
    /// Progress lines on stderr.
    pub verbose: bool,
}

impl Plan {
    /// The detection target: allowance x period + deadline + 50 ms.
    pub fn detect_bound_ms(&self) -> f64 {
        (ALLOWANCE * self.period_ms + self.period_ms * 9 / 10 + 50) as f64
    }

    /// When the sim makes its processes hang, after its start: time for
    /// `cops` to start and hear from everyone first (the sim starts one
    /// child per process first: 0.5 ms each leaves room on a loaded machine,
    /// where 0.2 ms was not always enough at 10,000).
    pub fn hang_at(&self) -> Duration {
        Duration::from_millis(3_000 + 2 * self.period_ms + self.processes as u64 / 2)
    }

    /// How long the sim runs: the hang, the window, and room for every
    /// detection (twice the bound plus a second) after the hang.
    fn sim_duration(&self) -> Duration {
        let detect = Duration::from_millis(self.detect_bound_ms() as u64 * 2 + 1_000);
        self.hang_at() + self.window.max(detect)
    }
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct CopsFigures {
    /// Percent of one core over the window.
    pub cpu_pct: f64,
    /// The same from the scheduler's nanosecond count (`schedstat`), when
    /// the kernel has it: the figure `cops_cpu_ratio` divides.
    pub sched_pct: Option<f64>,
    /// Wakeups (voluntary context switches, all threads) per second.
    pub wakeups_per_s: Option<f64>,
    /// The broker's CPU over the same window, percent of one core.
    pub broker_cpu_pct: f64,
    /// Resident MB (MiB) at the end of the window.
    pub rss_mb: f64,
    /// Processes killed that never hung (as `cops-sim` counts them).
    pub false_kills: u64,
    /// Longest hang-to-death time over the hung processes.
    pub max_detect_ms: Result<f64>,
    /// One line for the report's notes.
    pub note: String,
}

impl CopsFigures {
    /// `cops` plus the broker over the window: what supervision costs the site
    /// (the responders' own share is not in it).
    pub fn supervision_cpu_pct(&self) -> f64 {
        self.cpu_pct + self.broker_cpu_pct
    }
}

/// The binaries a run needs.
#[derive(Debug, Clone, Copy)]
pub struct Exes<'a> {
    /// `fims_server`.
    pub broker: &'a Path,
    /// `cops`.
    pub cops: &'a Path,
    /// `cops-sim`.
    pub sim: &'a Path,
}

/// Runs the plan.
pub fn measure(plan: &Plan, exes: Exes<'_>) -> Result<CopsFigures> {
    let n = plan.processes.max(1);
    let t0 = Instant::now();
    let step = |what: &str| {
        if plan.verbose {
            eprintln!(
                "perf-report: cops at {n} [+{:.1} s]: {what}",
                t0.elapsed().as_secs_f64()
            );
        }
    };
    let broker = BrokerProc::start(exes.broker)?;
    let config = broker.dir().join("cops.json");
    let sizes = sim_sizes(plan, n);
    write_config(exes.sim, &sizes, &config)?;
    let mut events = Client::connect_to(broker.socket(), "perf_events")?;
    events.subscribe(&["/events"])?;
    let sim_start = Instant::now();
    let mut simp = SimProc::start(exes.sim, &sizes, plan, broker.socket())?;
    let log = broker.dir().join("cops.log");
    let mut cops = CopsProc::start(exes.cops, &config, broker.socket(), &log)?;
    step("waiting until every process is alive");
    let hang = sim_start + plan.hang_at();
    wait_all_alive(&mut events, &mut cops, n, hang)?;
    std::thread::sleep(hang.saturating_duration_since(Instant::now()));
    step("hang; measuring");
    // cops, the broker, the sim: the same window for all three.
    let pids = [cops.pid(), broker.pid(), simp.0.id()];
    let marks = pids.map(CpuMark::now);
    let mut tally = Tally::default();
    collect(&mut events, &mut tally, Instant::now() + plan.window)?;
    let own = match &marks[0] {
        Ok(m) => Some(m.since(pids[0])?),
        Err(_) => None,
    };
    let cpu = pcts(marks, pids)?;
    let rss_kib = procstat::rss_kib(cops.pid())?;
    let hwm_kib = procstat::hwm_kib(cops.pid()).unwrap_or(rss_kib);
    step("window over; waiting for the sim's report");
    let sim_end = sim_start + plan.sim_duration() + Duration::from_secs(10);
    collect(
        &mut events,
        &mut tally,
        sim_end.min(Instant::now() + Duration::from_millis(1)),
    )?;
    let report = simp.report(sim_end)?;
    cops.check_running()?;
    step("done");
    Ok(summarize(
        plan,
        &Window {
            cpu,
            sched_pct: own.and_then(|u| u.sched_pct()),
            wakeups_per_s: own.and_then(|u| Some(u.wakeups? as f64 / u.wall_s.max(1e-9))),
            rss_kib,
            hwm_kib,
            tally,
        },
        &report,
    ))
}

/// The sizes `cops-sim` takes both to write the config and to run.
fn sim_sizes(plan: &Plan, n: usize) -> Vec<String> {
    [
        ("--count", n.to_string()),
        ("--connections", plan.connections.to_string()),
        ("--period-ms", plan.period_ms.to_string()),
        ("--allowance", ALLOWANCE.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

/// `cops-sim <sizes> --write-config <config>`.
fn write_config(sim: &Path, sizes: &[String], config: &Path) -> Result<()> {
    let status = Command::new(sim)
        .args(sizes)
        .arg("--write-config")
        .arg(config)
        .status()
        .map_err(|e| err!("running cops-sim --write-config: {e}"))?;
    if !status.success() {
        return Err(err!("cops-sim --write-config failed ({status})"));
    }
    Ok(())
}

/// What the measurement window saw.
struct Window {
    /// Percent of one core: `cops`, the broker, `cops-sim`.
    cpu: [f64; 3],
    /// `cops`'s from `schedstat`.
    sched_pct: Option<f64>,
    /// `cops`'s wakeups per second.
    wakeups_per_s: Option<f64>,
    rss_kib: u64,
    hwm_kib: u64,
    tally: Tally,
}

/// The figures and the note, from the window and the sim's JSON report.
fn summarize(plan: &Plan, w: &Window, report: &serde_json::Value) -> CopsFigures {
    let n = plan.processes.max(1);
    let num = |k: &str| {
        report
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let (hung, killed, not_killed) = (num("hung"), num("killed"), num("not_killed"));
    let false_kills = num("false_kills");
    let max = report
        .pointer("/latency_ms/max")
        .and_then(serde_json::Value::as_f64);
    let max_detect_ms = match max {
        Some(m) if not_killed == 0 && killed > 0 => Ok(m),
        _ => Err(err!(
            "{not_killed} of {hung} hung processes were not killed within {:.1} s",
            (plan.sim_duration() - plan.hang_at()).as_secs_f64()
        )),
    };
    let hung_names: HashSet<String> = (0..n)
        .filter(|i| i % (100.0 / HANG_PERCENT).round().max(1.0) as usize == 0)
        .map(|i| format!("sim{i}"))
        .collect();
    let false_hung = w.tally.hung.difference(&hung_names).count();
    let [cpu_pct, broker_cpu_pct, sim_cpu_pct] = w.cpu;
    let note = format!(
        "cops: {n} processes over {} connections, period {} ms, window {:.1} s: \
         CPU {cpu_pct:.2}% of one core ({} wakeups/s; + broker {broker_cpu_pct:.2}% = supervision {:.2}%; \
         cops-sim {sim_cpu_pct:.2}%), RSS {:.1} MB (peak {:.1} MB); {killed} of {hung} hung \
         killed, hang-to-death max {} ms (bound {:.0} ms), {false_kills} false kills, \
         {false_hung} hung verdicts for processes that answered, {} stall alarms",
        plan.connections,
        plan.period_ms,
        plan.window.as_secs_f64(),
        w.wakeups_per_s.map_or("-".into(), |x| format!("{x:.0}")),
        cpu_pct + broker_cpu_pct,
        w.rss_kib as f64 / 1024.0,
        w.hwm_kib as f64 / 1024.0,
        max.map_or("-".into(), |m| format!("{m:.0}")),
        plan.detect_bound_ms(),
        w.tally.stalls,
    );
    CopsFigures {
        cpu_pct,
        sched_pct: w.sched_pct,
        wakeups_per_s: w.wakeups_per_s,
        broker_cpu_pct,
        rss_mb: w.rss_kib as f64 / 1024.0,
        false_kills,
        max_detect_ms,
        note,
    }
}

/// Percent of one core each of `pids` used since its mark (same order).
fn pcts(marks: [Result<CpuMark>; 3], pids: [u32; 3]) -> Result<[f64; 3]> {
    let mut out = [0.0; 3];
    for (i, (m, pid)) in marks.into_iter().zip(pids).enumerate() {
        out[i] = m?.pct_since(pid)?;
    }
    Ok(out)
}

/// The running `cops-sim`, killed on drop.
struct SimProc(Child);

impl SimProc {
    /// Starts `cops-sim <sizes>` on `socket` with the plan's hang and duration.
    fn start(sim: &Path, sizes: &[String], plan: &Plan, socket: &Path) -> Result<SimProc> {
        let child = Command::new(sim)
            .args(sizes)
            .arg("--socket")
            .arg(socket)
            .args(["--hang-percent", &HANG_PERCENT.to_string()])
            .args(["--hang-at-ms", &plan.hang_at().as_millis().to_string()])
            .args([
                "--duration-ms",
                &plan.sim_duration().as_millis().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| err!("starting cops-sim: {e}"))?;
        Ok(SimProc(child))
    }

    /// Waits (until `deadline`) for the sim to finish and parses its JSON report.
    fn report(&mut self, deadline: Instant) -> Result<serde_json::Value> {
        loop {
            match self.0.try_wait()? {
                Some(status) => {
                    let mut out = String::new();
                    if let Some(mut o) = self.0.stdout.take() {
                        o.read_to_string(&mut out)?;
                    }
                    if !status.success() {
                        return Err(err!("cops-sim failed ({status})"));
                    }
                    let line = out.lines().last().unwrap_or("");
                    return serde_json::from_str(line)
                        .map_err(|e| err!("cops-sim report {line:?}: {e}"));
                }
                None if Instant::now() > deadline => {
                    return Err(err!("cops-sim did not finish in time"));
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for SimProc {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

/// `cops` as a child, stopped on drop.
struct CopsProc {
    child: Child,
    log: std::path::PathBuf,
}

impl CopsProc {
    fn start(exe: &Path, config: &Path, socket: &Path, log: &Path) -> Result<CopsProc> {
        let file = std::fs::File::create(log)?;
        let child = Command::new(exe)
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(socket)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| err!("starting {}: {e}", exe.display()))?;
        Ok(CopsProc {
            child,
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                Err(err!("cops exited ({status}): {tail}"))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for CopsProc {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

fn wait_all_alive(events: &mut Client, cops: &mut CopsProc, n: usize, end: Instant) -> Result<()> {
    let start = Instant::now();
    let mut last = String::from("no summary yet");
    while Instant::now() < end {
        cops.check_running()?;
        if let Ok(ans) = events.request(
            Method::Get,
            "/cops/summary",
            b"",
            Duration::from_millis(500),
        ) {
            let v: serde_json::Value = serde_json::from_slice(&ans.body).unwrap_or_default();
            if v.get("alive").and_then(|a| a.as_u64()) == Some(n as u64) {
                return Ok(());
            }
            last = ans.body_text();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(err!(
        "not every process was alive before the hang, {:.1} s after the start (last summary: {last})",
        start.elapsed().as_secs_f64()
    ))
}

#[derive(Default)]
struct Tally {
    /// Names declared hung.
    hung: HashSet<String>,
    stalls: usize,
}

/// Reads `/events` until `end`.
fn collect(events: &mut Client, tally: &mut Tally, end: Instant) -> Result<()> {
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        let Some(m) = events.recv(Some(left))? else {
            break;
        };
        if m.uri != "/events" {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(m.body).unwrap_or_default();
        let Some(msg) = v.get("message").and_then(|s| s.as_str()) else {
            continue;
        };
        classify(msg, tally);
    }
    Ok(())
}

/// Sorts one event message into the tally.
fn classify(msg: &str, tally: &mut Tally) {
    if msg.starts_with("bus or host stall:") {
        tally.stalls += 1;
        return;
    }
    if let Some((name, rest)) = msg.split_once(" (") {
        if rest.contains(") hung (") {
            tally.hung.insert(name.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_kills_and_adds_the_broker() {
        let plan = Plan {
            processes: 200,
            window: Duration::from_secs(12),
            period_ms: 1000,
            connections: 4,
            verbose: false,
        };
        let mut tally = Tally::default();
        tally.hung.insert("sim100".into());
        tally.hung.insert("sim7".into()); // did not hang: a false verdict
        let w = Window {
            cpu: [2.0, 1.5, 3.0],
            sched_pct: Some(2.1),
            wakeups_per_s: Some(101.0),
            rss_kib: 2048,
            hwm_kib: 4096,
            tally,
        };
        let report = serde_json::json!({"hung": 2, "killed": 2, "not_killed": 0,
            "false_kills": 0, "latency_ms": {"max": 5800.5}});
        let f = summarize(&plan, &w, &report);
        assert_eq!(f.supervision_cpu_pct(), 3.5);
        assert_eq!(f.rss_mb, 2.0);
        assert_eq!(f.max_detect_ms.unwrap(), 5800.5);
        assert!(f.note.contains("= supervision 3.50%"), "{}", f.note);
        assert!(f
            .note
            .contains("1 hung verdicts for processes that answered"));
        let missed = serde_json::json!({"hung": 2, "killed": 1, "not_killed": 1});
        assert!(summarize(&plan, &w, &missed).max_detect_ms.is_err());
        assert_eq!(
            sim_sizes(&plan, 200)[..4],
            ["--count", "200", "--connections", "4"]
        );
    }

    #[test]
    fn classifies_events() {
        let mut t = Tally::default();
        classify("sim5 (pid 42) hung (alive -> hung): 5 heartbeats missed, 5900 ms since the last good reply; killing with SIGKILL", &mut t);
        classify("sim5 (pid 42) sent SIGKILL; threads: ...", &mut t);
        classify("bus or host stall: 3 of 4 processes ...", &mut t);
        assert!(t.hung.contains("sim5"));
        assert_eq!(t.hung.len(), 1);
        assert_eq!(t.stalls, 1);
    }

    #[test]
    fn sim_runs_past_every_detection() {
        let p = Plan {
            processes: 50,
            window: Duration::from_millis(1500),
            period_ms: 200,
            connections: 4,
            verbose: false,
        };
        assert_eq!(p.detect_bound_ms(), 1230.0);
        assert!(p.sim_duration() >= p.hang_at() + Duration::from_millis(2 * 1230));
    }
}
