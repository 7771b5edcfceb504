//! `perf-report`: every headline figure of the project, each beside its floor,
//! measured in one run on this machine.
//!
//! ```text
//! cargo run --release -p cops-benches --bin perf-report -- [--quick] [--json] [--processes N]
//! ```
//! See docs/PERFORMANCE.md for what each figure means and how it is measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use cops_benches::floor::FanoutFloor;
use cops_benches::report::{self, Figure};
use cops_benches::{bins, load, msgs, rtt, throughput, Result};

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

/// Measures the headline figures (round trip, throughput, broker CPU under
/// load, responder, COPS at scale).
#[derive(Debug, Parser)]
#[command(name = "perf-report", version)]
struct Args {
    /// Short run (about 30 s): fewer samples, 1,000 processes, 3 s of load.
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
    /// Length of the steady-load window in ms (default 10,000; 3,000 with --quick).
    #[arg(long)]
    load_ms: Option<u64>,
    /// Batch interval of the steady-load publisher in us (20 messages per
    /// batch at 20,000 msg/s with the default 1,000).
    #[arg(long, default_value_t = 1000)]
    load_tick_us: u64,
    /// Also measure the broker's CPU at 5,000 / 20,000 / 80,000 msg/s (one
    /// load window each; included in --scaling).
    #[arg(long)]
    load_scaling: bool,
    /// Also measure how costs grow: broker RSS with 100/1,000/10,000 idle
    /// connections, COPS at 100/1,000/10,000 processes and the broker's CPU at
    /// 5k/20k/80k msg/s (prints more lines).
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
    /// Measure only these parts (comma-separated: rtt, throughput, load,
    /// responder, cops); the others' figures are absent (null in JSON).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Internal: run a peer role (echo, responder, sink) for the broker measurements.
    #[arg(long, hide = true)]
    peer: Option<String>,
    /// Internal: broker socket of the peer role.
    #[arg(long, hide = true)]
    socket: Option<PathBuf>,
    /// Internal: which sink this peer is (several answer one publisher).
    #[arg(long, hide = true)]
    peer_id: Option<u32>,
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
    fn load_plan(&self, rate: f64) -> load::Plan {
        let ms = self
            .load_ms
            .unwrap_or(if self.quick { 3_000 } else { 10_000 });
        load::Plan {
            rate,
            duration: Duration::from_millis(ms.max(1)),
            tick: Duration::from_micros(self.load_tick_us.max(1)),
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Some(role) = &args.peer {
        let socket = args.socket.clone().unwrap_or_else(fims::socket_path);
        let run = if role == "cops-floor" {
            cops_benches::copsfloor::serve(
                &socket,
                args.processes(),
                args.connections,
                Duration::from_millis(args.period_ms.max(1)),
                cops_benches::peer::ready,
            )
        } else {
            cops_benches::peer::run(role, &socket, args.peer_id)
        };
        if let Err(e) = run {
            eprintln!("perf-report peer {role}: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(bad) = args.only.iter().find(|o| report::section_keys(o).is_none()) {
        let names: Vec<&str> = report::SECTIONS.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "perf-report: --only {bad:?}: no such part (one of {})",
            names.join(", ")
        );
        std::process::exit(2);
    }
    let figs = run(&args);
    if args.json {
        println!("{}", report::to_json(&figs.headline));
    } else {
        // Parts left out by --only are not worth a line each in the table.
        let shown: Vec<Figure> = figs
            .headline
            .into_iter()
            .filter(|f| f.value.as_ref().err().map(String::as_str) != Some(SKIPPED))
            .collect();
        print!("{}", report::to_table(&shown));
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
    out.notes.push(format!(
        "load average {} at the start",
        report::load_average()
    ));
    log(
        args,
        "locating (building if needed) fims_server, cops and cops-sim",
    );
    let build = !args.no_build;
    let exes = Exes {
        broker: bins::sibling("fims-server", "fims_server", build),
        me: std::env::current_exe().map_err(cops_benches::Error::from),
        cops: bins::sibling("cops-server", "cops", build)
            .and_then(|c| Ok((c, bins::sibling("cops-server", "cops-sim", build)?))),
    };
    type Part = fn(&Args, &Exes, &mut Figures);
    let parts: [(&str, &str, Part); 5] = [
        (
            "rtt",
            "round trips (floor and broker, interleaved)",
            rtt_figures,
        ),
        (
            "throughput",
            "throughput (floor, relay floor and broker, interleaved)",
            throughput_figures,
        ),
        ("load", "broker CPU under a steady paced load", load_figures),
        (
            "responder",
            "responder handle, C ABI and loop tick",
            |a, _, o| responder_figures(a, o),
        ),
        ("cops", "cops at scale", cops_figures),
    ];
    for (name, what, part) in parts {
        if args.only.is_empty() || args.only.iter().any(|o| o == name) {
            log(args, what);
            part(args, &exes, &mut out);
        } else {
            skip(name, &mut out);
        }
    }
    if args.scaling {
        log(args, "scaling (100 / 1,000 / 10,000)");
        out.notes.extend(scaling(args, &exes));
    }
    log(args, "done");
    out.notes.push(format!(
        "measured in {:.1} s on {}",
        started.elapsed().as_secs_f64(),
        report::machine()
    ));
    out
}

/// Why a figure of a part left out by `--only` is absent.
const SKIPPED: &str = "not measured (--only)";

/// The figures of a part left out by `--only`, absent with the reason.
fn skip(name: &str, out: &mut Figures) {
    for &key in report::section_keys(name).unwrap_or(&[]) {
        out.headline
            .push(fig(key, "", "", Err(cops_benches::err!("{SKIPPED}"))));
    }
}

/// The binaries a report runs, or why each is missing.
struct Exes {
    broker: Result<PathBuf>,
    /// This executable (the peer roles).
    me: Result<PathBuf>,
    /// `cops` and `cops-sim`.
    cops: Result<(PathBuf, PathBuf)>,
}

impl Exes {
    fn broker_and_me(&self) -> Result<(&PathBuf, &PathBuf)> {
        let broker = self.broker.as_ref().map_err(clone_err)?;
        let me = self.me.as_ref().map_err(clone_err)?;
        Ok((broker, me))
    }
}

fn clone_err(e: &cops_benches::Error) -> cops_benches::Error {
    cops_benches::err!("{e}")
}

/// The same error for every figure of a failed measurement.
fn each_err<T, const N: usize>(e: &cops_benches::Error) -> [Result<T>; N] {
    std::array::from_fn(|_| Err(clone_err(e)))
}

fn rtt_figures(args: &Args, exes: &Exes, out: &mut Figures) {
    let pin = !args.no_pin;
    let measure = |pin| {
        exes.broker_and_me()
            .and_then(|(b, me)| rtt::measure(b, me, args.rtt_samples(), pin))
    };
    let [floor, broker, fp99, bp99] = match measure(pin) {
        Ok(r) => {
            out.notes.push(format!(
                "rtt ({}): through the broker to a fixed-answer echo peer {:.2} us median, \
                 so the responder adds {:+.1}%",
                if pin {
                    "all processes on one CPU"
                } else {
                    "unpinned"
                },
                r.echo_us,
                r.responder_share_pct
            ));
            [
                Ok(r.floor_us),
                Ok(r.broker_us),
                Ok(r.floor_p99),
                Ok(r.broker_p99),
            ]
        }
        Err(e) => each_err(&e),
    };
    if pin {
        out.notes.push(match measure(false) {
            Ok(r) => format!(
                "rtt unpinned (scheduler's placement, cross-CPU wakeups): floor {:.1} us \
                 (p99 {:.1}), broker {:.1} us (p99 {:.1}), ratio {:.2}",
                r.floor_us,
                r.floor_p99,
                r.broker_us,
                r.broker_p99,
                r.broker_us / r.floor_us.max(1e-9)
            ),
            Err(e) => format!("rtt unpinned: not measured ({e})"),
        });
    }
    let f_floor = fig("rtt_floor_us", "us", "(floor, 4 hops)", floor);
    let f_broker = fig("rtt_broker_us", "us", "", broker);
    let f_ratio = fig("rtt_ratio", "x", "<= 1.5", ratio(&f_broker, &f_floor));
    let f_fp99 = fig("rtt_floor_p99_us", "us", "(floor p99)", fp99);
    let f_bp99 = fig("rtt_broker_p99_us", "us", "(no worse than before)", bp99);
    out.headline
        .extend([f_floor, f_broker, f_ratio, f_fp99, f_bp99]);
}

fn throughput_figures(args: &Args, exes: &Exes, out: &mut Figures) {
    let t = exes
        .broker_and_me()
        .and_then(|(b, me)| throughput::measure(b, me, args.tp_messages()));
    let [floor, relay, broker] = match t {
        Ok(t) => {
            out.notes.push(format!(
                "throughput: {} of {} messages published through the broker were not \
                 delivered (dropped by its bounded queue); messages of {} bytes; \
                 broker / 1-hop floor {:.2}, relay floor / 1-hop floor {:.2}",
                t.lost,
                t.sent,
                msgs::status_pub().len(),
                t.broker / t.floor.max(1e-9),
                t.relay / t.floor.max(1e-9),
            ));
            [Ok(t.floor), Ok(t.relay), Ok(t.broker)]
        }
        Err(e) => each_err(&e),
    };
    let f_tf = fig("throughput_floor_mps", "msg/s", "(floor, 1 hop)", floor);
    let f_tb = fig("throughput_broker_mps", "msg/s", "", broker);
    let f_tr = fig("throughput_ratio", "x", ">= 0.5", ratio(&f_tb, &f_tf));
    let f_rf = fig(
        "throughput_relay_floor_mps",
        "msg/s",
        "(floor, 2 hops via a relay)",
        relay,
    );
    let f_rr = fig("throughput_relay_ratio", "x", ">= 1.0", ratio(&f_tb, &f_rf));
    out.headline.extend([f_tf, f_tb, f_tr, f_rf, f_rr]);
}

/// The headline 20,000 msg/s windows (the broker, the relay floor, the
/// batched relay) and, with --load-scaling or --scaling, the same at 5k and 80k.
fn load_figures(args: &Args, exes: &Exes, out: &mut Figures) {
    let rates: &[f64] = if args.load_scaling || args.scaling {
        &[5_000.0, 20_000.0, 80_000.0]
    } else {
        &[20_000.0]
    };
    let measured = exes
        .broker_and_me()
        .and_then(|(b, me)| load_rows(args, b, me, rates));
    let [pct, us, floor] = match measured {
        Ok(rows) => {
            for [w, f, fb] in &rows {
                out.notes.extend([w.note(), f.note(), fb.note()]);
                out.notes.push(format!(
                    "at {:.0}k msg/s: fims_server / relay floor CPU {:.2}x, / batched relay {:.2}x",
                    w.plan.rate / 1000.0,
                    w.broker_pct() / f.broker_pct().max(1e-9),
                    w.broker_pct() / fb.broker_pct().max(1e-9)
                ));
            }
            if rows.len() > 1 {
                for i in 0..3 {
                    let one: Vec<load::Window> = rows.iter().map(|r| r[i]).collect();
                    out.notes.push(load::scaling_line(&one));
                }
            }
            let [w, f, _] = rows
                .iter()
                .find(|r| r[0].plan.rate == 20_000.0)
                .copied()
                .unwrap_or(rows[0]);
            [Ok(w.broker_pct()), Ok(w.us_per_msg()), Ok(f.broker_pct())]
        }
        Err(e) => each_err(&e),
    };
    out.headline.extend([
        fig("broker_cpu_pct_20k", "%", "<= 4 (of one core)", pct),
        fig("broker_us_per_msg", "us", "(CPU per published msg)", us),
        fig(
            "relay_cpu_pct_20k",
            "%",
            "(floor: bare fan-out relay)",
            floor,
        ),
    ]);
}

/// For each rate: a window through the broker, the relay floor and the
/// batched relay, each after its warm-up of a fifth of its length (0.2-1 s).
fn load_rows(
    args: &Args,
    broker: &Path,
    me: &Path,
    rates: &[f64],
) -> Result<Vec<[load::Window; 3]>> {
    let msg = msgs::load_pub();
    // The floors fork first: their children must not inherit the broker's sockets.
    let mut relay = FanoutFloor::start()?;
    let mut batched = FanoutFloor::start_batched()?;
    let mut broker = load::SteadyLoad::start(broker, me)?;
    let mut rows = Vec::new();
    for &rate in rates {
        let plan = args.load_plan(rate);
        let warmup = (plan.duration / 5).clamp(Duration::from_millis(200), Duration::from_secs(1));
        rows.push([
            load::run(&mut broker, &msg, plan, warmup)?,
            load::run(&mut relay, &msg, plan, warmup)?,
            load::run(&mut batched, &msg, plan, warmup)?,
        ]);
    }
    Ok(rows)
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
        let rtt = out.headline.iter().find(|f| f.key == "rtt_broker_us");
        if let Some(Ok(rtt)) = rtt.map(|f| &f.value) {
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

fn run_cops(
    plan: &cops_benches::cops::Plan,
    exes: &Exes,
) -> Result<cops_benches::cops::CopsFigures> {
    let broker = exes.broker.as_ref().map_err(clone_err)?;
    let (cops, sim) = exes
        .cops
        .as_ref()
        .map_err(|e| cops_benches::err!("no cops/cops-sim binary: {e}"))?;
    cops_benches::cops::measure(plan, cops_benches::cops::Exes { broker, cops, sim })
}

/// `cops_cpu_pct`, `supervision_cpu_pct`, `cops_rss_mb`, `false_kills`,
/// `max_detect_ms`: one run of `cops` over `cops-sim`; then
/// `cops_floor_cpu_pct` and `cops_cpu_ratio`: the same datagrams sent by a
/// bare program (the floor) over the same window length.
fn cops_figures(args: &Args, exes: &Exes, out: &mut Figures) {
    let plan = cops_plan(args, args.processes(), args.window());
    let run = run_cops(&plan, exes);
    let floor = run_floor(&plan, exes);
    let [cpu, sup, rss, fk, det] = match &run {
        Ok(c) => {
            out.notes.push(c.note.clone());
            [
                Ok(c.cpu_pct),
                Ok(c.supervision_cpu_pct()),
                Ok(c.rss_mb),
                Ok(c.false_kills as f64),
                c.max_detect_ms.clone(),
            ]
        }
        Err(e) => each_err(e),
    };
    let (fl, ratio) = match (&run, &floor) {
        (_, Err(e)) => (Err(clone_err(e)), Err(clone_err(e))),
        (Err(e), Ok(f)) => (Ok(f.cpu_pct), Err(clone_err(e))),
        (Ok(c), Ok(f)) if f.cpu_pct > 0.0 => (
            Ok(f.cpu_pct),
            Ok(c.sched_pct.unwrap_or(c.cpu_pct) / f.cpu_pct),
        ),
        (Ok(_), Ok(f)) => (
            Ok(f.cpu_pct),
            Err(cops_benches::err!("the floor used no measurable CPU")),
        ),
    };
    if let Ok(f) = &floor {
        out.notes.push(f.note.clone());
    }
    out.headline.extend([
        fig("cops_cpu_pct", "%", "<= 2.5 (of one core)", cpu),
        fig("supervision_cpu_pct", "%", "<= 6 (cops + broker)", sup),
        fig("cops_floor_cpu_pct", "%", "(the datagrams alone)", fl),
        fig("cops_cpu_ratio", "x", "(cops / floor, schedstat)", ratio),
        fig("cops_rss_mb", "MB", "<= 30", rss),
        fig("false_kills", "", "0", fk),
        fig("max_detect_ms", "ms", "<= 5*period+deadline+50", det),
    ]);
}

/// The floor of `cops_cpu_pct` for `plan` (see `copsfloor`).
fn run_floor(
    plan: &cops_benches::cops::Plan,
    exes: &Exes,
) -> Result<cops_benches::copsfloor::FloorFigures> {
    let (broker, me) = exes.broker_and_me()?;
    let (_, sim) = exes
        .cops
        .as_ref()
        .map_err(|e| cops_benches::err!("no cops-sim binary: {e}"))?;
    cops_benches::copsfloor::measure(plan, broker, sim, me)
}

fn scaling(args: &Args, exes: &Exes) -> Vec<String> {
    let mut notes = Vec::new();
    let (exe, me) = match exes.broker_and_me() {
        Ok(x) => x,
        Err(e) => return vec![format!("scaling: not measured ({e})")],
    };
    for n in [100usize, 1_000, 10_000] {
        match cops_benches::scale::broker_idle(exe, me, n) {
            Ok(s) => notes.push(s),
            Err(e) => notes.push(format!("broker with {n} idle connections: {e}")),
        }
    }
    for n in [100usize, 1_000, 10_000] {
        let plan = cops_plan(args, n, args.window());
        match run_cops(&plan, exes) {
            Ok(c) => notes.push(c.note),
            Err(e) => notes.push(format!("cops at {n}: not measured ({e})")),
        }
    }
    notes
}
