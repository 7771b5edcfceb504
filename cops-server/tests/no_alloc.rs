//! The heartbeat cycle of 10,000 processes allocates nothing once warm: round
//! starts, the two transmits of each round encoded as the runtime encodes them
//! (`fims::batch::SendBatch`), the replies decoded and judged, the
//! deadlines. Driven on a fake clock through the engine's public API, as the
//! runtime drives it (timers once per 10 ms tick, the replies of a tick
//! delivered at the next), with a counting global allocator that counts per
//! thread (other test threads do not disturb the count).
//!
//! What still allocates in steady state is not per heartbeat and is counted
//! apart: the probe (one per probe interval) and the briefings (the summary
//! and the per-process stats published in parts).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};
use testkit::alloc::allocs;

use cops_server::engine::{Engine, State, Transmit, Via};
use cops_server::identity::{PinOutcome, PinRequest, Pinned, Verifier};
use fims::batch::SendBatch;
use fims::{Message, Method};

#[global_allocator]
static GLOBAL: testkit::alloc::Counting = testkit::alloc::Counting;

const N: usize = 10_000;
const TICK: Duration = Duration::from_millis(10);
const PID0: u32 = 100_000;

/// Believes every PID (the kill layer's work is not the cycle's).
struct Trusting;

impl Verifier for Trusting {
    fn pin(&mut self, _req: &PinRequest<'_>) -> PinOutcome {
        PinOutcome::Pinned(Pinned {
            uids: (1000, 1000),
            unchecked: Vec::new(),
            started_before_round: true,
        })
    }
    fn alive(&mut self, _process: usize, _pid: u32) -> bool {
        true
    }
    fn unpin(&mut self, _process: usize, _pid: u32) {}
    fn sent_by_owner(&mut self, _username: &str, _uids: (u32, u32)) -> bool {
        true
    }
}

/// The runtime's side on a fake clock, with every buffer kept between ticks.
struct Driver {
    e: Engine,
    now: Instant,
    /// `<uri>/cops/cops_heartbeat` and `<uri>/cops` to process index.
    set_uri: HashMap<String, usize>,
    get_uri: HashMap<String, usize>,
    /// The counter each process stored (step 1).
    stored: Vec<u64>,
    /// Processes asked this tick (step 2), with their reply URIs' process: answered next tick.
    asked: Vec<usize>,
    answering: Vec<usize>,
    reply_uri: Vec<String>,
    out: SendBatch,
    body: String,
    dgram: Vec<u8>,
    /// Datagrams sent that are no heartbeat (probes, briefings, events).
    other: usize,
    /// Heartbeat rounds sent (step 2 counted).
    rounds: usize,
}

impl Driver {
    /// 10,000 processes, 1 s period, stats published every `briefing_ms`.
    fn new(briefing_ms: u64) -> Driver {
        let procs: Vec<String> = (0..N)
            .map(|i| {
                format!(
                    r#"{{"name":"p{i}","uri":"/site/c{}/p{i}","killOnHang":true}}"#,
                    i % 4
                )
            })
            .collect();
        let text = format!(
            r#"{{"controllerName":"alloc","heartbeatFreq":1000,"briefingFrequencyMS":{briefing_ms},"processList":[{}]}}"#,
            procs.join(",")
        );
        let cfg = cops_server::config::parse("alloc.json", &text, "testhost").expect("config");
        let mut set_uri = HashMap::new();
        let mut get_uri = HashMap::new();
        for (i, p) in cfg.processes.iter().enumerate() {
            set_uri.insert(format!("{}/cops/cops_heartbeat", p.uri), i);
            get_uri.insert(format!("{}/cops", p.uri), i);
        }
        let reply_uri = cfg
            .processes
            .iter()
            .map(|p| format!("{}/heartbeat/{}", cfg.our_uri, p.name))
            .collect();
        let now = Instant::now();
        let mut e = Engine::new(cfg, now, SystemTime::now(), 1);
        e.set_connected(now, true);
        Driver {
            e,
            now,
            set_uri,
            get_uri,
            stored: vec![0; N],
            asked: Vec::with_capacity(N),
            answering: Vec::with_capacity(N),
            reply_uri,
            out: SendBatch::default(),
            body: String::with_capacity(256),
            dgram: Vec::with_capacity(512),
            other: 0,
            rounds: 0,
        }
    }

    /// One turn of the runtime's loop: last tick's replies, the timers, the outputs.
    fn tick(&mut self) {
        self.now += TICK;
        std::mem::swap(&mut self.asked, &mut self.answering);
        let mut answering = std::mem::take(&mut self.answering);
        for &i in &answering {
            self.answer(i);
        }
        answering.clear();
        self.answering = answering;
        self.e.handle_timeout(self.now);
        self.outputs();
    }

    /// Process `i` answers its `get` (as `cops-sim` does), through the codec.
    fn answer(&mut self, i: usize) {
        use std::fmt::Write;
        self.body.clear();
        let _ = write!(
            self.body,
            r#"{{"cops_heartbeat":{},"pid":{},"version_tag":"1.4.0","version_commit":"a1b2c3d","version_build":"372"}}"#,
            self.stored[i],
            PID0 + i as u32
        );
        let msg = Message {
            method: "set",
            uri: &self.reply_uri[i],
            replyto: "",
            process_name: "sim",
            username: "",
            body: self.body.as_bytes(),
        };
        self.dgram.clear();
        msg.encode(&mut self.dgram).expect("encodes");
        let msg = Message::decode(&self.dgram).expect("decodes");
        self.e
            .handle_message(self.now, Via::Heartbeat, &msg, &mut Trusting);
        self.outputs();
    }

    /// Drains the engine's outputs as the runtime does, encoding every message.
    fn outputs(&mut self) {
        while let Some(t) = self.e.poll_transmit() {
            self.send(&t);
        }
        while self.e.poll_action().is_some() {}
        while self.e.poll_event().is_some() {}
        self.out.clear();
    }

    fn send(&mut self, t: &Transmit) {
        let msg = Message {
            method: t.method.as_str(),
            uri: &t.uri,
            replyto: t.replyto.as_deref().unwrap_or(""),
            process_name: "cops",
            username: "",
            body: &t.body,
        };
        self.out.push(&msg).expect("encodes");
        match t.method {
            Method::Set if t.via == Via::Heartbeat => {
                if let Some(&i) = self.set_uri.get(&*t.uri) {
                    let h = std::str::from_utf8(&t.body).expect("UTF-8");
                    self.stored[i] = h.parse().expect("a counter");
                    return;
                }
            }
            Method::Get if t.via == Via::Heartbeat => {
                if let Some(&i) = self.get_uri.get(&*t.uri) {
                    self.asked.push(i);
                    self.rounds += 1;
                    return;
                }
            }
            _ => {}
        }
        self.other += 1;
    }

    fn alive(&self) -> usize {
        (0..N)
            .filter(|&i| self.e.state(i) == Some(State::Alive))
            .count()
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.tick();
        }
    }
}

/// Warms up (first answers, pins, events; buffers at their working size),
/// then runs 3 s; returns (allocations, rounds, other messages) of those 3 s.
///
/// `COPS_CYCLE_SECONDS=S` runs S simulated seconds instead of 3: run the
/// release test binary under `valgrind --tool=callgrind` with two values and
/// the difference of the instruction counts is the steady cycle's cost
/// (docs/PERFORMANCE.md, issue 17 point 3).
fn steady(d: &mut Driver) -> (usize, usize, usize) {
    let secs = std::env::var("COPS_CYCLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3u64)
        .max(1);
    d.run(Duration::from_secs(4));
    assert_eq!(d.alive(), N);
    let (rounds0, other0) = (d.rounds, d.other);
    let before = allocs();
    d.run(Duration::from_secs(secs));
    let used = allocs() - before;
    let (rounds, other) = (d.rounds - rounds0, d.other - other0);
    let secs = secs as usize;
    assert!(rounds >= secs * N - N / 100, "{rounds} rounds in {secs} s");
    assert_eq!(d.alive(), N);
    eprintln!(
        "{rounds} heartbeat rounds ({} datagrams out, {rounds} in) and {other} other messages: {used} allocations",
        2 * rounds
    );
    (used, rounds, other)
}

#[test]
fn warm_heartbeat_rounds_do_not_allocate() {
    // Stats once an hour: the 3 s see heartbeats and probes only.
    let mut d = Driver::new(3_600_000);
    let (used, rounds, probes) = steady(&mut d);
    assert!(
        probes <= rounds / 100,
        "{probes} probes (at most one per tick)"
    );
    // A probe's body is formatted (a couple of allocations); a round: none.
    assert!(
        used <= 3 * probes,
        "{used} allocations for {rounds} rounds and {probes} probes"
    );
}

#[test]
fn a_stats_publication_allocates_its_body_only() {
    // The default briefing: every process's stats every 5 s, in parts.
    let mut d = Driver::new(5_000);
    let (used, rounds, other) = steady(&mut d);
    assert!(other >= N / 2, "{other} stats published");
    // Each publication copies its text out of the shared buffer once; the
    // probes among the others take a couple more.
    assert!(
        used <= other + other / 10,
        "{used} allocations for {rounds} rounds and {other} other messages"
    );
}
