//! `cops-sim`: simulates N monitored processes over a few FIMS connections, to
//! measure `cops` at scale (CPU, memory, detection latency, false kills).
//!
//! Process `i` has the URI `<prefix>/c<k>/p<i>` with `k = i % connections`, so each
//! connection subscribes to one prefix. `--write-config FILE` writes the matching
//! COPS configuration and exits.
//!
//! Every simulated process is backed by a real, tiny child of its own (see
//! `holders`) that holds a connection to the broker, and reports its PID: COPS
//! believes a PID only if its process is on the bus, and pins each PID for one
//! process only. Processes picked to hang (every `100/hang-percent`-th) stop
//! answering at `--hang-at-ms`, so COPS's kill hits their child. The sim reaps
//! its children and prints a JSON report: hang-to-death latencies, and false
//! kills (a child of a process that never hung dying, or any child dying
//! before the hang).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod holders;
use holders::Holders;

use clap::Parser;
use fims::{blocking::Client, Method};

/// Simulated COPS responders.
#[derive(Debug, Parser)]
#[command(name = "cops-sim")]
struct Args {
    /// The broker's socket (default: $FIMS_SOCKET, else the default path).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Number of simulated processes.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// URI prefix of the simulated processes.
    #[arg(long, default_value = "/sim")]
    uri_prefix: String,
    /// FIMS connections to spread them over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Percent of processes that hang at --hang-at-ms (0: none).
    #[arg(long, default_value_t = 0.0)]
    hang_percent: f64,
    /// When they hang, ms after the start.
    #[arg(long, default_value_t = 10_000)]
    hang_at_ms: u64,
    /// Run this long, then print the report and exit (0: until killed).
    #[arg(long, default_value_t = 0)]
    duration_ms: u64,
    /// Write the matching COPS configuration to FILE and exit.
    #[arg(long)]
    write_config: Option<PathBuf>,
    /// heartbeatFreq of the written configuration.
    #[arg(long, default_value_t = 1000)]
    period_ms: u64,
    /// heartbeatErrorAllowance of the written configuration.
    #[arg(long, default_value_t = 5)]
    allowance: u32,
    /// Print the report as one JSON line to this file as well.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn uri(prefix: &str, connections: usize, i: usize) -> String {
    format!("{prefix}/c{}/p{i}", i % connections)
}

fn hangs(i: usize, pct: f64) -> bool {
    if pct <= 0.0 {
        return false;
    }
    let every = (100.0 / pct).round().max(1.0) as usize;
    i.is_multiple_of(every)
}

fn write_config(a: &Args, path: &PathBuf) -> std::io::Result<()> {
    let procs: Vec<serde_json::Value> = (0..a.count)
        .map(|i| {
            serde_json::json!({
                "name": format!("sim{i}"),
                "uri": uri(&a.uri_prefix, a.connections, i),
                "killOnHang": true,
            })
        })
        .collect();
    let cfg = serde_json::json!({
        "controllerName": "cops-sim",
        "heartbeatFreq": a.period_ms,
        "heartbeatErrorAllowance": a.allowance,
        "processList": procs,
    });
    std::fs::write(path, serde_json::to_string_pretty(&cfg)?)
}

struct Shared {
    prefix: String,
    connections: usize,
    pids: Vec<u32>,
    hang: Vec<bool>,
    hang_at: Instant,
    answered: AtomicU64,
    stop: AtomicBool,
}

/// One connection's loop: answers for processes `k, k+C, k+2C, ...`.
fn serve(socket: PathBuf, k: usize, sh: Arc<Shared>) {
    let sub = format!("{}/c{k}", sh.prefix);
    let head = format!("{sub}/p");
    let mut stored = vec![0u64; sh.pids.len() / sh.connections + 1];
    let mut out = String::with_capacity(160);
    'outer: while !sh.stop.load(Ordering::Relaxed) {
        let mut c = match Client::connect_to(&socket, &format!("cops_sim_{k}")) {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if c.subscribe(&[&sub]).is_err() {
            continue;
        }
        loop {
            if sh.stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            let msg = match c.recv(Some(Duration::from_millis(200))) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) if e.is_disconnect() => continue 'outer,
                Err(_) => continue,
            };
            let Some(rest) = msg.uri.strip_prefix(&head) else {
                continue;
            };
            let (num, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let Ok(i) = num.parse::<usize>() else {
                continue;
            };
            if i >= sh.pids.len() || (sh.hang[i] && Instant::now() >= sh.hang_at) {
                continue;
            }
            let slot = i / sh.connections;
            match (msg.method, tail) {
                ("set", "cops/cops_heartbeat") => {
                    if let Some(n) = msg.body_str().and_then(|b| b.trim().parse().ok()) {
                        stored[slot] = n;
                    }
                }
                ("get", "cops") if !msg.replyto.is_empty() => {
                    use std::fmt::Write;
                    out.clear();
                    let _ = write!(
                        out,
                        r#"{{"cops_heartbeat":{},"pid":{},"version_tag":"sim","version_commit":"0","version_build":"0"}}"#,
                        stored[slot], sh.pids[i]
                    );
                    let replyto = msg.replyto.to_owned();
                    if c.send(Method::Set, &replyto, None, out.as_bytes()).is_ok() {
                        sh.answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    if a.connections == 0 || a.count == 0 {
        eprintln!("cops-sim: --count and --connections must be > 0");
        return std::process::ExitCode::from(2);
    }
    if let Some(path) = &a.write_config {
        return match write_config(&a, path) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cops-sim: cannot write {}: {e}", path.display());
                std::process::ExitCode::from(1)
            }
        };
    }
    match run(&a) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cops-sim: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// What the reaper saw.
struct Deaths {
    /// (process index, time since the start) of each child that died.
    children: Vec<(usize, Duration)>,
    /// Hung processes whose child never died.
    not_killed: usize,
}

fn run(a: &Args) -> std::io::Result<()> {
    let socket = a.socket.clone().unwrap_or_else(fims::socket_path);
    let hang: Vec<bool> = (0..a.count).map(|i| hangs(i, a.hang_percent)).collect();
    // Before any thread: the holders copy nothing but the holder connection.
    let holders = Holders::spawn(&socket, a.count)?;
    let start = Instant::now();
    let sh = Arc::new(Shared {
        prefix: a.uri_prefix.clone(),
        connections: a.connections,
        pids: holders.pids.clone(),
        hang,
        hang_at: start + Duration::from_millis(a.hang_at_ms),
        answered: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let threads: Vec<_> = (0..a.connections)
        .map(|k| {
            let (s, sh) = (socket.clone(), sh.clone());
            std::thread::spawn(move || serve(s, k, sh))
        })
        .collect();
    let end = (a.duration_ms > 0).then(|| start + Duration::from_millis(a.duration_ms));
    let deaths = reap(start, end, &holders, &sh.hang);
    sh.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(holders);
    report(a, &sh, start, &deaths)
}

/// Records when each child dies, until `end` (or forever).
fn reap(start: Instant, end: Option<Instant>, holders: &Holders, hang: &[bool]) -> Deaths {
    let index: std::collections::HashMap<u32, usize> = holders
        .pids
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, i))
        .collect();
    let mut children = Vec::new();
    loop {
        let now = Instant::now();
        for pid in holders.reap() {
            if let Some(&i) = index.get(&pid) {
                children.push((i, now - start));
            }
        }
        if end.is_some_and(|e| now >= e) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed: std::collections::HashSet<usize> = children.iter().map(|d| d.0).collect();
    let not_killed = (0..hang.len())
        .filter(|&i| hang[i] && !killed.contains(&i))
        .count();
    Deaths {
        children,
        not_killed,
    }
}

/// Prints (and writes, with --report) the JSON report.
fn report(a: &Args, sh: &Shared, start: Instant, deaths: &Deaths) -> std::io::Result<()> {
    let hang_at = Duration::from_millis(a.hang_at_ms);
    let is_false = |&(i, at): &(usize, Duration)| !sh.hang[i] || at < hang_at;
    let false_kills = deaths.children.iter().filter(|d| is_false(d)).count();
    let mut lat: Vec<f64> = deaths
        .children
        .iter()
        .filter(|d| !is_false(d))
        .map(|d| (d.1 - hang_at).as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let report = serde_json::json!({
        "count": a.count,
        "connections": a.connections,
        "hung": sh.hang.iter().filter(|h| **h).count(),
        "killed": lat.len(),
        "not_killed": deaths.not_killed,
        "false_kills": false_kills,
        "latency_ms": {"min": pick(0.0), "p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)},
        "answered": sh.answered.load(Ordering::Relaxed),
        "elapsed_s": start.elapsed().as_secs_f64(),
    });
    println!("{report}");
    if let Some(p) = &a.report {
        std::fs::write(p, format!("{report}\n"))?;
    }
    Ok(())
}
