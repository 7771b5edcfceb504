//! `perf-report`: every headline figure of the project, each beside its floor,
//! measured in one run on this machine.
//!
//! ```text
//! cargo run --release -p cops-benches --bin perf-report -- [--quick] [--json] [--processes N]
//! ```
//! See docs/PERFORMANCE.md for what each figure means and how it is measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use cops_benches::report::{self, Figure};
use cops_benches::{bins, bus, floor, msgs, stats, sys, Result};

/// Counts heap allocations, to check that a warm responder allocates nothing.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Measures the headline figures (round trip, throughput, responder, COPS at scale).
#[derive(Debug, Parser)]
#[command(name = "perf-report", version)]
struct Args {
    /// Short run (<= 60 s): fewer samples, 1,000 processes.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object (numbers; null for a figure that could not be measured).
    #[arg(long)]
    json: bool,
    /// Simulated processes supervised by `cops` (default 10,000; 1,000 with --quick).
    #[arg(long)]
    processes: Option<usize>,
    /// Length of the COPS measurement window in ms (default 30,000; 12,000 with --quick).
    #[arg(long)]
    window_ms: Option<u64>,
    /// Round trips per RTT figure (default 20,000; 5,000 with --quick).
    #[arg(long)]
    rtt_samples: Option<usize>,
    /// Messages per throughput burst (default 200,000; 50,000 with --quick).
    #[arg(long)]
    tp_messages: Option<u64>,
    /// Also measure how costs grow: broker RSS with 100/1,000/10,000 idle
    /// connections and COPS at 100/1,000/10,000 processes (prints a second table).
    #[arg(long)]
    scaling: bool,
    /// Use fims_server, cops and cops-sim as they are next to this binary
    /// (never run cargo; they must exist).
    #[arg(long)]
    no_build: bool,
    /// Measure the headline round trips without pinning the processes to one CPU.
    #[arg(long)]
    no_pin: bool,
    /// Heartbeat period of the COPS run in ms (default 1,000).
    #[arg(long, default_value_t = 1000)]
    period_ms: u64,
    /// FIMS connections the simulated processes share (default 4).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Internal: run a peer role (echo, responder, sink) for the broker measurements.
    #[arg(long, hide = true)]
    peer: Option<String>,
    /// Internal: broker socket of the peer role.
    #[arg(long, hide = true)]
    socket: Option<PathBuf>,
}

impl Args {
    fn rtt_samples(&self) -> usize {
        self.rtt_samples
            .unwrap_or(if self.quick { 5_000 } else { 20_000 })
            .max(10)
    }
    fn tp_messages(&self) -> u64 {
        self.tp_messages
            .unwrap_or(if self.quick { 50_000 } else { 200_000 })
            .max(10)
    }
    fn processes(&self) -> usize {
        self.processes
            .unwrap_or(if self.quick { 1_000 } else { 10_000 })
            .max(1)
    }
    fn window(&self) -> Duration {
        Duration::from_millis(
            self.window_ms
                .unwrap_or(if self.quick { 12_000 } else { 30_000 }),
        )
    }
}

fn main() {
    let args = Args::parse();
    if let Some(role) = &args.peer {
        let socket = args.socket.clone().unwrap_or_else(fims::socket_path);
        if let Err(e) = cops_benches::peer::run(role, &socket) {
            eprintln!("perf-report peer {role}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let figs = run(&args);
    if args.json {
        println!("{}", report::to_json(&figs.headline));
    } else {
        print!("{}", report::to_table(&figs.headline));
        for n in &figs.notes {
            println!("  {n}");
        }
    }
}

#[derive(Default)]
struct Figures {
    headline: Vec<Figure>,
    notes: Vec<String>,
}

fn fig(key: &'static str, unit: &'static str, target: &'static str, v: Result<f64>) -> Figure {
    Figure {
        key,
        unit,
        target,
        value: v.map_err(|e| e.to_string()),
    }
}

fn ratio(a: &Figure, b: &Figure) -> Result<f64> {
    match (&a.value, &b.value) {
        (Ok(x), Ok(y)) if *y > 0.0 => Ok(x / y),
        _ => Err(cops_benches::err!("needs {} and {}", a.key, b.key)),
    }
}

fn log(args: &Args, what: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    if !args.json {
        eprintln!("perf-report [{t:5.1} s]: {what}");
    }
}

fn run(args: &Args) -> Figures {
    let mut out = Figures::default();
    let started = Instant::now();
    log(
        args,
        "locating (building if needed) fims_server, cops and cops-sim",
    );
    let broker_exe = bins::sibling("fims-server", "fims_server", !args.no_build);
    let self_exe = std::env::current_exe().map_err(cops_benches::Error::from);
    let build = !args.no_build;
    let cops_exe = bins::sibling("cops-server", "cops", build)
        .and_then(|c| Ok((c, bins::sibling("cops-server", "cops-sim", build)?)));

    log(args, "round trips (floor and broker, interleaved)");
    let rtt = measure_rtt(args, &broker_exe, &self_exe, !args.no_pin);
    let (floor_us, broker_us) = match rtt {
        Ok(r) => {
            out.notes.push(format!(
                "rtt ({}): p99 floor {:.1} us, broker {:.1} us; through the broker to a \
                 fixed-answer echo peer {:.2} us median, so the responder adds {:+.1}%",
                if args.no_pin {
                    "unpinned"
                } else {
                    "all processes on one CPU"
                },
                r.floor_p99,
                r.broker_p99,
                r.echo_us,
                r.responder_share_pct
            ));
            (Ok(r.floor_us), Ok(r.broker_us))
        }
        Err(e) => (Err(cops_benches::err!("{e}")), Err(e)),
    };
    if !args.no_pin {
        match measure_rtt(args, &broker_exe, &self_exe, false) {
            Ok(r) => out.notes.push(format!(
                "rtt unpinned (scheduler's placement, cross-CPU wakeups): floor {:.1} us, \
                 broker {:.1} us, ratio {:.2}",
                r.floor_us,
                r.broker_us,
                r.broker_us / r.floor_us.max(1e-9)
            )),
            Err(e) => out.notes.push(format!("rtt unpinned: not measured ({e})")),
        }
    }
    let f_floor = fig("rtt_floor_us", "us", "(floor, 4 hops)", floor_us);
    let f_broker = fig("rtt_broker_us", "us", "", broker_us);
    let f_ratio = fig("rtt_ratio", "x", "<= 1.5", ratio(&f_broker, &f_floor));
    out.headline.extend([f_floor, f_broker, f_ratio]);

    log(args, "throughput (floor and broker)");
    let (tf, tb) = match measure_throughput(args, &broker_exe, &self_exe) {
        Ok((f, b, lost, sent)) => {
            out.notes.push(format!(
                "throughput: {lost} of {sent} messages published through the broker were not \
                 delivered (dropped by its bounded queue); messages of {} bytes",
                msgs::status_pub().len()
            ));
            (Ok(f), Ok(b))
        }
        Err(e) => (Err(cops_benches::err!("{e}")), Err(e)),
    };
    let f_tf = fig("throughput_floor_mps", "msg/s", "(floor, 1 hop)", tf);
    let f_tb = fig("throughput_broker_mps", "msg/s", "", tb);
    let f_tr = fig("throughput_ratio", "x", ">= 0.5", ratio(&f_tb, &f_tf));
    out.headline.extend([f_tf, f_tb, f_tr]);

    log(args, "responder handle, C ABI and loop tick");
    responder_figures(args, &mut out);

    log(args, "cops at scale");
    let plan = cops_plan(args, args.processes(), args.window());
    let cops = run_cops(&plan, &broker_exe, &cops_exe);
    let (cpu, rss, fk, det) = match cops {
        Ok(c) => {
            out.notes.push(c.note.clone());
            (
                Ok(c.cpu_pct),
                Ok(c.rss_mb),
                Ok(c.false_kills as f64),
                c.max_detect_ms,
            )
        }
        Err(e) => {
            let why = e.to_string();
            let e2 = || Err(cops_benches::err!("{why}"));
            (e2(), e2(), e2(), e2())
        }
    };
    out.headline.extend([
        fig("cops_cpu_pct", "%", "<= 5 (of one core)", cpu),
        fig("cops_rss_mb", "MB", "<= 30", rss),
        fig("false_kills", "", "0", fk),
        fig("max_detect_ms", "ms", "<= 5*period+deadline+50", det),
    ]);
    if args.scaling {
        log(args, "scaling (100 / 1,000 / 10,000)");
        out.notes
            .extend(scaling(args, &broker_exe, &cops_exe, &self_exe));
    }
    log(args, "done");
    out.notes.push(format!(
        "measured in {:.1} s on {}",
        started.elapsed().as_secs_f64(),
        machine()
    ));
    out
}

struct Rtt {
    floor_us: f64,
    broker_us: f64,
    floor_p99: f64,
    broker_p99: f64,
    echo_us: f64,
    responder_share_pct: f64,
}

/// Round trips with every process of the measurement on one CPU (the
/// headline: no cross-CPU wakeups, see docs/PERFORMANCE.md), or unpinned.
fn measure_rtt(
    args: &Args,
    broker_exe: &Result<PathBuf>,
    self_exe: &Result<PathBuf>,
    pin: bool,
) -> Result<Rtt> {
    let broker_exe = broker_exe.as_ref().map_err(clone_err)?;
    let self_exe = self_exe.as_ref().map_err(clone_err)?;
    let _pinned = if pin {
        Some(sys::Pinned::first_cpu()?)
    } else {
        None
    };
    let n = args.rtt_samples();
    // Floor first: forked children must not inherit the broker's sockets.
    let mut fl = floor::RttFloor::start(&msgs::heartbeat_get(), &msgs::heartbeat_answer())?;
    let broker = bus::BrokerProc::start(broker_exe)?;
    let mut real = bus::BusRtt::start(&broker, self_exe, "responder")?;
    let mut echo = bus::BusRtt::start(&broker, self_exe, "echo")?;
    // Warm up, then interleave blocks so drift hits all three alike.
    fl.samples(500)?;
    real.samples(500)?;
    echo.samples(500)?;
    let rounds = 10;
    let per = n.div_ceil(rounds);
    let (mut f, mut b, mut e) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        f.extend(fl.samples(per)?);
        b.extend(real.samples(per)?);
        e.extend(echo.samples(per)?);
    }
    let floor_us = stats::us(stats::median(&mut f));
    let broker_us = stats::us(stats::median(&mut b));
    let echo_us = stats::us(stats::median(&mut e));
    Ok(Rtt {
        floor_us,
        broker_us,
        floor_p99: stats::us(stats::percentile(&mut f, 99.0)),
        broker_p99: stats::us(stats::percentile(&mut b, 99.0)),
        echo_us,
        responder_share_pct: 100.0 * (broker_us - echo_us) / echo_us.max(1e-9),
    })
}

fn clone_err(e: &cops_benches::Error) -> cops_benches::Error {
    cops_benches::err!("{e}")
}

fn measure_throughput(
    args: &Args,
    broker_exe: &Result<PathBuf>,
    self_exe: &Result<PathBuf>,
) -> Result<(f64, f64, u64, u64)> {
    let broker_exe = broker_exe.as_ref().map_err(clone_err)?;
    let self_exe = self_exe.as_ref().map_err(clone_err)?;
    let n = args.tp_messages();
    let msg = msgs::status_pub();
    let mut fl = floor::ThroughputFloor::start()?;
    let broker = bus::BrokerProc::start(broker_exe)?;
    let mut bt = bus::BusThroughput::start(&broker, self_exe)?;
    fl.burst(&msg, n / 10)?;
    bt.burst(&msg, n / 10)?;
    let (mut f, mut b, mut lost) = (Vec::new(), Vec::new(), 0u64);
    for _ in 0..5 {
        f.push(fl.burst(&msg, n)?.mps());
        let burst = bt.burst(&msg, n)?;
        lost += n.saturating_sub(burst.delivered);
        b.push(burst.mps());
    }
    Ok((median_f(&mut f), median_f(&mut b), lost, 5 * n))
}

/// Median of `v` (sorting it); 0 for no values.
fn median_f(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `handle_ns`, `cabi_overhead_ns`, `tick_ns`, `tick_c_ns` and their notes.
fn responder_figures(args: &Args, out: &mut Figures) {
    let batches = if args.quick { 20 } else { 100 };
    let allocs = || ALLOCS.load(Ordering::Relaxed);
    let m = cops_benches::responder::measure_handle(batches, &allocs);
    if let Ok(m) = &m {
        out.notes.push(format!(
            "responder: {} heap allocations in the timed handle() calls, {} in the ticks \
             (target: 0 once warm); the answer carries the loop object",
            m.rust.allocs,
            m.tick.allocs + m.c_tick.allocs
        ));
        out.notes.push(format!(
            "C ABI cops_responder_handle: {:.1} ns vs Rust {:.1} ns in alternating batches: \
             {:+.1} ns per call ({:.2}x), {} allocations; goal <= 10 ns; figures under load \
             need a quiet re-run",
            m.c.ns,
            m.rust.ns,
            m.overhead_ns,
            m.c.ns / m.rust.ns.max(1e-9),
            m.c.allocs
        ));
        out.notes.push(format!(
            "loop tick: core {:.1} ns (time given), C cops_responder_tick {:.1} ns, of which \
             its clock read (Instant::now) {:.1} ns",
            m.tick.ns, m.c_tick.ns, m.clock.ns
        ));
        if let Ok(rtt) = &out.headline[1].value {
            out.notes.push(format!(
                "responder handle is {:.2}% of the broker heartbeat round trip (target < 2%)",
                100.0 * m.rust.ns / 1000.0 / rtt.max(1e-9)
            ));
        }
    }
    let pick = |f: fn(&cops_benches::responder::HandleFigures) -> f64| {
        m.as_ref().map(f).map_err(|e| cops_benches::err!("{e}"))
    };
    out.headline.extend([
        fig(
            "handle_ns",
            "ns",
            "<= 1000, no allocation",
            pick(|m| m.rust.ns),
        ),
        fig(
            "cabi_overhead_ns",
            "ns",
            "<= 10 (C - Rust)",
            pick(|m| m.overhead_ns),
        ),
        fig("tick_ns", "ns", "< 20, no allocation", pick(|m| m.tick.ns)),
        fig(
            "tick_c_ns",
            "ns",
            "(tick_ns + a clock read)",
            pick(|m| m.c_tick.ns),
        ),
    ]);
}

fn cops_plan(args: &Args, processes: usize, window: Duration) -> cops_benches::cops::Plan {
    cops_benches::cops::Plan {
        processes,
        window,
        period_ms: args.period_ms.max(10),
        connections: args.connections.max(1),
        verbose: !args.json,
    }
}

/// `cops` and `cops-sim`.
type CopsExes = Result<(PathBuf, PathBuf)>;

fn run_cops(
    plan: &cops_benches::cops::Plan,
    broker_exe: &Result<PathBuf>,
    cops_exe: &CopsExes,
) -> Result<cops_benches::cops::CopsFigures> {
    let broker = broker_exe.as_ref().map_err(clone_err)?;
    let (cops, sim) = cops_exe
        .as_ref()
        .map_err(|e| cops_benches::err!("no cops/cops-sim binary: {e}"))?;
    cops_benches::cops::measure(plan, cops_benches::cops::Exes { broker, cops, sim })
}

fn scaling(
    args: &Args,
    broker_exe: &Result<PathBuf>,
    cops_exe: &CopsExes,
    self_exe: &Result<PathBuf>,
) -> Vec<String> {
    let mut notes = Vec::new();
    let (exe, me) = match (broker_exe, self_exe) {
        (Ok(e), Ok(m)) => (e, m),
        (Err(e), _) | (_, Err(e)) => return vec![format!("scaling: not measured ({e})")],
    };
    for n in [100usize, 1_000, 10_000] {
        match cops_benches::scale::broker_idle(exe, me, n) {
            Ok(s) => notes.push(s),
            Err(e) => notes.push(format!("broker with {n} idle connections: {e}")),
        }
    }
    for n in [100usize, 1_000, 10_000] {
        let plan = cops_plan(args, n, args.window());
        match run_cops(&plan, broker_exe, cops_exe) {
            Ok(c) => notes.push(c.note),
            Err(e) => notes.push(format!("cops at {n}: not measured ({e})")),
        }
    }
    notes
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    format!("{cores} cores, {cpu}, Linux {kernel}, load average {load} at the end")
}
