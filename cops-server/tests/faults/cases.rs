//! The cases of issue 10 point 8 that hang processes or stall the bus, the
//! host or COPS. Each returns the counted outcome of one run; `forge.rs` and
//! `pidns.rs` hold the adversarial ones.

use std::process::Command;
use std::time::Duration;

use crate::faults::harness::{bins, Decoy, Site, Spec, Timing, SLACK};
use crate::faults::outcome::{Outcome, Stalls};

/// Starts a site or returns the outcome saying why it could not start.
macro_rules! site {
    ($case:expr, $spec:expr) => {
        match $crate::faults::harness::start(&$case, &$spec) {
            Ok(s) => s,
            Err(o) => return *o,
        }
    };
}
pub(crate) use site;

/// Hangs `which` (within `mult` bounds), waits for their kills and for the
/// restarted processes to be alive again.
fn hang_and_recover(site: &mut Site, which: &[usize], mult: u32) {
    let hangs = site.hang(which, mult);
    if site.wait_kills(&hangs) {
        site.expect_ready("after the kills");
    }
}

/// k of N processes hang at the same instant: each is killed within its
/// bound, nobody else is touched, and it is not mistaken for a stall.
pub fn hang_k_of_n(t: Timing, n: usize, k: usize) -> Outcome {
    let mut site = site!(format!("hang {k} of {n}"), Spec::new(n, t));
    let which: Vec<usize> = (0..k).collect();
    hang_and_recover(&mut site, &which, 1);
    // Quiet time: nothing else is killed once the hung ones are back.
    site.periods(t.allowance + 2);
    site.finish(Stalls::None, 0)
}

/// After a fault: every process alive again, the stall over, a quiet time with
/// no verdict, then a real hang is still killed within its bound.
fn after_fault(site: &mut Site) {
    if !site.expect_ready("after the fault") {
        return;
    }
    let since = site.started;
    testkit::wait_for(site.timing.stall_over_wait(), || {
        site.events.count(since, |e| e.is_stall_over())
            >= site.events.count(since, |e| e.is_stall())
    });
    site.periods(2 * site.timing.allowance);
    hang_and_recover(site, &[0], 1);
}

/// The broker stopped (SIGSTOP) for twice the hang window, then continued.
pub fn broker_stop(t: Timing, n: usize) -> Outcome {
    let mut site = site!(format!("broker SIGSTOP, N={n}"), Spec::new(n, t));
    site.bus.signal(libc::SIGSTOP);
    std::thread::sleep(t.bound() * 2);
    site.bus.signal(libc::SIGCONT);
    after_fault(&mut site);
    site.finish(Stalls::Exactly(1), 1)
}

/// The broker killed, down for twice the hang window, started again.
pub fn broker_restart(t: Timing, n: usize) -> Outcome {
    let mut site = site!(format!("broker restart, N={n}"), Spec::new(n, t));
    site.bus.kill();
    std::thread::sleep(t.bound() * 2);
    site.bus.restart();
    after_fault(&mut site);
    site.finish(Stalls::AtMost(1), 1)
}

/// COPS itself stopped (SIGSTOP) for twice the hang window, then continued.
pub fn cops_stop(t: Timing) -> Outcome {
    let mut site = site!("cops SIGSTOP, N=2", Spec::new(2, t));
    site.cops.signal(libc::SIGSTOP);
    std::thread::sleep(t.bound() * 2);
    site.cops.signal(libc::SIGCONT);
    after_fault(&mut site);
    site.finish(Stalls::AtMost(1), 1)
}

/// Busy loops, two per core (decoys themselves), for the whole case: no false
/// kill, and a real hang is still killed within its bound.
pub fn saturation(t: Timing) -> Outcome {
    let mut site = site!("all cores saturated, N=3", Spec::new(3, t));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    for i in 0..2 * cores {
        let mut cmd = Command::new(&bins().helper);
        cmd.arg("spin");
        site.decoys
            .push(Decoy::spawn(&format!("busy loop {i}"), &mut cmd));
    }
    site.notes
        .push(format!("{} busy loops on {cores} cores", 2 * cores));
    std::thread::sleep(t.bound() * 2);
    hang_and_recover(&mut site, &[0], 1);
    site.periods(t.allowance + 2);
    site.finish(Stalls::AtMost(1), 0)
}

/// One process starved of CPU for three hang windows: its threads under
/// `SCHED_IDLE` on the last core beside [`STARVERS`] busy loops (the scheduler
/// leaves it a fraction of a percent of that core: it misses its heartbeats).
/// COPS, the broker and the other process are moved to the other cores, so
/// only p0 is starved. It is declared hung but never killed (COPS holds the
/// signal: it had no CPU to answer with); once the busy loops end it answers
/// again, and a real hang of it is still killed within its bound.
pub fn starved(t: Timing) -> Outcome {
    const CASE: &str = "one process starved of CPU, N=2";
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return Outcome::skipped(CASE, t.name, "needs 2 cores (COPS and the broker keep one)");
    }
    let mut site = site!(CASE, Spec::new(2, t));
    let core = cores - 1;
    let others: Vec<usize> = (0..core).collect();
    let pid = site.procs[0].pid();
    let moves = [
        (pid, &[core][..], true),
        (site.cops.pid(), &others[..], false),
        (site.bus.pid().unwrap_or(0), &others[..], false),
        (site.procs[1].pid(), &others[..], false),
    ];
    for (p, on, idle) in moves {
        if let Err(e) = place(p, on, idle) {
            site.problems
                .push(format!("pid {p} could not be placed: {e}"));
            return site.finish(Stalls::AtMost(1), 0);
        }
    }
    for i in 0..STARVERS {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &core.to_string()])
            .arg(&bins().helper)
            .arg("spin");
        site.decoys
            .push(Decoy::spawn(&format!("starver {i}"), &mut cmd));
    }
    site.notes.push(format!(
        "p0 (pid {pid}) under SCHED_IDLE on core {core} beside {STARVERS} busy loops"
    ));
    let since = std::time::Instant::now();
    std::thread::sleep(t.bound() * 3);
    site.retire("starver");
    // The scheduler decides how often p0 still gets a slice: most runs bring
    // verdicts (and held signals), some do not; a kill would be a false one.
    let held = site
        .events
        .count(since, |e| e.message.contains("runnable but starved of CPU"));
    let verdicts = site
        .events
        .count(since, |e| e.is_verdict() && e.message.starts_with("p0 "));
    let note = format!("{verdicts} verdicts on p0 while starved, {held} signals held as starved");
    eprintln!("{CASE}: {note}");
    site.notes.push(note);
    site.expect_ready("after the starvation");
    hang_and_recover(&mut site, &[0], 1);
    site.periods(t.allowance + 2);
    site.finish(Stalls::AtMost(1), 0)
}

/// Busy loops beside the starved process.
const STARVERS: usize = 3;

/// Moves every thread of `pid` to the cores `on`, under `SCHED_IDLE` if `idle`.
fn place(pid: u32, on: &[usize], idle: bool) -> Result<(), String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
    for tid in tasks.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET within its
        // size; both calls only read the structs passed.
        let ok = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in on {
                libc::CPU_SET(c, &mut set);
            }
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
                && (!idle || libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) == 0)
        };
        if !ok {
            return Err(format!("tid {tid}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Flooders per flood case (four fill COPS's queue at the broker on 2 cores).
const FLOODERS: usize = 4;

/// How a flood hits `/cops`.
#[derive(Debug, Clone, Copy)]
pub enum Flood {
    /// `pub /cops/junk` with a 64-byte body.
    Pub,
    /// `get /cops` (the whole summary and stats) with a replyto nobody reads.
    Get,
}

/// [`FLOODERS`] flooders at full speed: no false kill, and a real hang during
/// the flood is killed within twice its bound.
pub fn flood(t: Timing, kind: Flood) -> Outcome {
    let name = match kind {
        Flood::Pub => "pub /cops/junk flood, N=2",
        Flood::Get => "get /cops flood, N=2",
    };
    let mut site = site!(name, Spec::new(2, t));
    for i in 0..FLOODERS {
        let mut cmd = Command::new(&bins().helper);
        cmd.arg("flood")
            .arg("--socket")
            .arg(site.bus.socket())
            .args(["--duration-ms", "600000"]);
        match kind {
            Flood::Pub => cmd.args([
                "--method",
                "pub",
                "--uri",
                "/cops/junk",
                "--body-bytes",
                "64",
            ]),
            Flood::Get => cmd.args([
                "--method",
                "get",
                "--uri",
                "/cops",
                "--replyto",
                "/faults_flood/sink",
            ]),
        };
        match Decoy::spawn_ready(&format!("flooder {i}"), &mut cmd, Duration::from_secs(10)) {
            Ok(d) => site.decoys.push(d),
            Err(e) => site.problems.push(e),
        }
    }
    // Healthy processes under the flood for three hang windows.
    std::thread::sleep(t.bound() * 3);
    let hangs = site.hang(&[0], 2);
    site.wait_kills(&hangs);
    std::thread::sleep(t.bound() * 2);
    site.retire("flooder");
    site.expect_ready("after the flood");
    site.periods(t.allowance + 2);
    site.finish(Stalls::AtMost(1), 0)
}

/// `maxKillsPerWindow: 1` with 3 processes hung at once: the kills come one
/// per window (`allowance x period`), in the order of the verdicts, the k-th
/// within `bound + (k-1) x window`.
pub fn kill_budget(t: Timing) -> Outcome {
    let mut spec = Spec::new(3, t);
    spec.top.insert("maxKillsPerWindow".into(), 1.into());
    let mut site = site!("maxKillsPerWindow=1, 3 of 3 hang", spec);
    let window = t.period * t.allowance;
    // Held to the last one's bound here; each rank's own bound is checked below.
    let last = t.bound() + window * 2 + SLACK;
    let hangs = site.hang_with(&[0, 1, 2], &[last; 3]);
    if site.wait_kills(&hangs) {
        let mut deaths: Vec<(std::time::Instant, usize)> = hangs
            .iter()
            .filter_map(|h| {
                let d = site.procs[h.proc].deaths();
                d.iter().find(|d| d.pid == h.pid).map(|d| (d.at, h.proc))
            })
            .collect();
        deaths.sort();
        let at0 = hangs[0].at;
        // Exit times are seen by the supervisors, a few ms apart from the signals.
        let tolerance = Duration::from_millis(50);
        for (rank, &(at, p)) in deaths.iter().enumerate() {
            let bound = t.bound() + window * rank as u32 + SLACK;
            if at - at0 > bound {
                site.late.push(format!(
                    "p{p}: kill #{} {:.0} ms after the hang, its bound {:.0} ms",
                    rank + 1,
                    (at - at0).as_secs_f64() * 1000.0,
                    bound.as_secs_f64() * 1000.0
                ));
            }
            if rank > 0 && at - deaths[rank - 1].0 + tolerance < window {
                site.problems.push(format!(
                    "p{p}: killed {:.0} ms after the previous kill, within one budget window ({} ms)",
                    (at - deaths[rank - 1].0).as_secs_f64() * 1000.0,
                    window.as_millis()
                ));
            }
        }
        check_verdict_order(&mut site, &deaths);
        site.expect_ready("after the kills");
    }
    site.periods(t.allowance + 2);
    site.finish(Stalls::None, 0)
}

/// The kills must follow the order of the verdicts (`<name> (pid P) hung (`).
fn check_verdict_order(site: &mut Site, deaths: &[(std::time::Instant, usize)]) {
    let since = site.started;
    let mut order: Vec<String> = Vec::new();
    for e in site.events.all() {
        if e.at < since || !e.is_verdict() {
            continue;
        }
        let name = e.message.split(' ').next().unwrap_or_default().to_owned();
        if !order.contains(&name) {
            order.push(name);
        }
    }
    let killed: Vec<String> = deaths.iter().map(|&(_, p)| format!("p{p}")).collect();
    if order != killed {
        site.problems.push(format!(
            "kills in the order {killed:?}, verdicts in the order {order:?}"
        ));
    }
}
