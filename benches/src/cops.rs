//! `cops` supervising N simulated processes: CPU, RSS, false kills, detection.
//!
//! One run: a `fims_server`, the `sim` peer (N simulated responders over a few
//! connections, all reporting the sim's own PID), and `cops --dry-run` with a
//! matching configuration. Once every process is alive, CPU time and RSS of
//! `cops` are read from `/proc` over the window; at its start 1% of the
//! processes stop answering. The "signal" is `cops`'s dry-run signal event on
//! `/events` (the point where a real run calls `kill(2)`, after the same
//! identity checks), so nothing is ever signalled.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fims::blocking::Client;
use fims::Method;

use crate::bus::{stop_child, BrokerProc, Peer};
use crate::procstat::{self, CpuMark};
use crate::{err, sim, Result};

/// Misses before "hung" in the generated configuration (the COPS default).
pub const ALLOWANCE: u64 = 5;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Simulated processes.
    pub processes: usize,
    /// Measurement window (starts once every process is alive).
    pub window: Duration,
    /// Heartbeat period (ms); the deadline is 90% of it.
    pub period_ms: u64,
    /// FIMS connections the simulated processes share.
    pub connections: usize,
    /// Progress lines on stderr.
    pub verbose: bool,
}

impl Plan {
    /// The detection target: allowance x period + deadline + 50 ms.
    pub fn detect_bound_ms(&self) -> f64 {
        (ALLOWANCE * self.period_ms + self.deadline_ms() + 50) as f64
    }

    fn deadline_ms(&self) -> u64 {
        (self.period_ms * 9 / 10).max(1)
    }
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct CopsFigures {
    /// Percent of one core over the window.
    pub cpu_pct: f64,
    /// Resident MB (MiB) at the end of the window.
    pub rss_mb: f64,
    /// Signals (dry run) to processes that kept answering.
    pub false_kills: u64,
    /// Longest hang-to-signal time over the hung processes.
    pub max_detect_ms: Result<f64>,
    /// One line for the report's notes.
    pub note: String,
}

/// The binaries a run needs.
#[derive(Debug, Clone, Copy)]
pub struct Exes<'a> {
    /// `fims_server`.
    pub broker: &'a Path,
    /// `cops`.
    pub cops: &'a Path,
    /// `perf-report` (for `--peer sim`).
    pub peer: &'a Path,
}

/// Runs the plan.
pub fn measure(plan: &Plan, exes: Exes<'_>) -> Result<CopsFigures> {
    let n = plan.processes.max(1);
    let broker = BrokerProc::start(exes.broker)?;
    let extra = [
        "--sim-processes".to_string(),
        n.to_string(),
        "--sim-connections".to_string(),
        plan.connections.to_string(),
    ];
    let mut simp = Peer::spawn_with(exes.peer, "sim", broker.socket(), &extra, true)?;
    let mut events = Client::connect_to(broker.socket(), "perf_events")?;
    events.subscribe(&["/events"])?;
    let config = broker.dir().join("cops.json");
    std::fs::write(&config, config_json(plan, n))?;
    let log = broker.dir().join("cops.log");
    let mut cops = CopsProc::start(exes.cops, &config, broker.socket(), &log)?;
    let t0 = Instant::now();
    let step = |what: &str| {
        if plan.verbose {
            eprintln!(
                "perf-report: cops at {n} [+{:.1} s]: {what}",
                t0.elapsed().as_secs_f64()
            );
        }
    };
    step("waiting until every process is alive");
    let warm = Duration::from_millis(plan.period_ms * 3) + Duration::from_secs(5 + n as u64 / 1000);
    wait_all_alive(&mut events, &mut cops, n, warm)?;
    step("measuring");
    let hung: Vec<usize> = hang_set(n);
    let names: HashSet<String> = hung.iter().map(|&i| sim::name(i)).collect();
    let mark = CpuMark::now(cops.pid())?;
    let mut cmd = String::from("hang");
    for i in &hung {
        cmd.push_str(&format!(" {i}"));
    }
    cmd.push('\n');
    let stdin = simp.stdin().ok_or_else(|| err!("sim has no stdin"))?;
    stdin.write_all(cmd.as_bytes())?;
    stdin.flush()?;
    let t_hang = Instant::now();
    let mut tally = Tally::default();
    let window_end = t_hang + plan.window;
    collect(&mut events, &mut tally, t_hang, window_end)?;
    let cpu_pct = mark.pct_since(cops.pid())?;
    let rss_kib = procstat::rss_kib(cops.pid())?;
    let hwm_kib = procstat::hwm_kib(cops.pid()).unwrap_or(rss_kib);
    // Give late detections their chance past the window (they count against the target).
    let grace_end = t_hang + Duration::from_millis(plan.detect_bound_ms() as u64 * 3 + 2000);
    if names.iter().any(|nm| !tally.signalled.contains_key(nm)) && grace_end > Instant::now() {
        collect_until(&mut events, &mut tally, t_hang, grace_end, |t| {
            names.iter().all(|nm| t.signalled.contains_key(nm))
        })?;
    }
    step("collected");
    cops.check_running()?;
    let false_kills = tally
        .signalled
        .keys()
        .filter(|k| !names.contains(*k))
        .count() as u64;
    let false_hung = tally.hung.iter().filter(|k| !names.contains(*k)).count();
    let missing = names
        .iter()
        .filter(|nm| !tally.signalled.contains_key(*nm))
        .count();
    let max_detect = names
        .iter()
        .filter_map(|nm| tally.signalled.get(nm))
        .map(|d| d.as_secs_f64() * 1000.0)
        .fold(0.0f64, f64::max);
    let max_detect_ms = if missing > 0 {
        Err(err!(
            "{missing} of {} hung processes were never signalled",
            names.len()
        ))
    } else {
        Ok(max_detect)
    };
    let note = format!(
        "cops: {n} processes over {} connections, period {} ms, window {:.1} s: \
         CPU {cpu_pct:.2}% of one core, RSS {:.1} MB (peak {:.1} MB); {} hung, \
         max hang-to-signal {max_detect:.0} ms (bound {:.0} ms), {false_kills} false kills, \
         {false_hung} false hung verdicts, {} stall alarms",
        plan.connections,
        plan.period_ms,
        plan.window.as_secs_f64(),
        rss_kib as f64 / 1024.0,
        hwm_kib as f64 / 1024.0,
        names.len(),
        plan.detect_bound_ms(),
        tally.stalls,
    );
    Ok(CopsFigures {
        cpu_pct,
        rss_mb: rss_kib as f64 / 1024.0,
        false_kills,
        max_detect_ms,
        note,
    })
}

/// 1% of `n` (at least one), evenly spread.
pub fn hang_set(n: usize) -> Vec<usize> {
    let count = (n / 100).max(1);
    let stride = n / count;
    (0..count).map(|j| j * stride + stride / 2).collect()
}

fn config_json(plan: &Plan, n: usize) -> String {
    let list: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "name": sim::name(i),
                "uri": sim::base_uri(i),
                "killOnHang": true,
            })
        })
        .collect();
    serde_json::json!({
        "ourUri": "/cops",
        "controllerName": "perf-report",
        "heartbeatFreq": plan.period_ms,
        "replyToGetDeadline": plan.deadline_ms(),
        "heartbeatErrorAllowance": ALLOWANCE,
        "processList": list,
    })
    .to_string()
}

/// `cops --dry-run` as a child, stopped on drop.
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
            .arg("--dry-run")
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

fn wait_all_alive(
    events: &mut Client,
    cops: &mut CopsProc,
    n: usize,
    timeout: Duration,
) -> Result<()> {
    let end = Instant::now() + timeout;
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
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(err!(
        "not every process became alive within {timeout:?} (last summary: {last})"
    ))
}

#[derive(Default)]
struct Tally {
    /// Name -> hang-to-signal time (first signal event).
    signalled: HashMap<String, Duration>,
    /// Names declared hung.
    hung: HashSet<String>,
    stalls: usize,
}

fn collect(events: &mut Client, tally: &mut Tally, t_hang: Instant, end: Instant) -> Result<()> {
    collect_until(events, tally, t_hang, end, |_| false)
}

fn collect_until(
    events: &mut Client,
    tally: &mut Tally,
    t_hang: Instant,
    end: Instant,
    done: impl Fn(&Tally) -> bool,
) -> Result<()> {
    while Instant::now() < end && !done(tally) {
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
        classify(msg, tally, t_hang.elapsed());
    }
    Ok(())
}

/// Sorts one event message into the tally.
fn classify(msg: &str, tally: &mut Tally, since_hang: Duration) {
    if msg.starts_with("bus or host stall:") {
        tally.stalls += 1;
        return;
    }
    let Some((name, rest)) = msg.split_once(" (") else {
        return;
    };
    if rest.contains(") would be sent ") || rest.contains(") sent ") {
        tally.signalled.entry(name.to_owned()).or_insert(since_hang);
    } else if rest.contains(") hung (") {
        tally.hung.insert(name.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hang_set_is_one_percent() {
        assert_eq!(hang_set(50), vec![25]);
        assert_eq!(hang_set(1000).len(), 10);
        assert!(hang_set(10_000).iter().all(|&i| i < 10_000));
    }

    #[test]
    fn classifies_events() {
        let mut t = Tally::default();
        let d = Duration::from_millis(7);
        classify("p5 (pid 42) hung (alive -> hung): 5 heartbeats missed, 5900 ms since the last good reply; killing with SIGKILL", &mut t, d);
        classify(
            "p5 (pid 42) would be sent SIGKILL (dry run); threads: ...",
            &mut t,
            d,
        );
        classify("p6 (pid 42) sent SIGKILL; threads: ...", &mut t, d);
        classify("bus or host stall: 3 of 4 processes ...", &mut t, d);
        assert!(t.hung.contains("p5"));
        assert_eq!(t.signalled.len(), 2);
        assert_eq!(t.stalls, 1);
    }
}
