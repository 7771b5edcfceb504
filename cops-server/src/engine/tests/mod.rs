//! The engine on a fake clock: fake responders answer transmits after a delay,
//! a fake broker carries messages (and can pause or drop them), a fake OS
//! answers identity checks and signals like a kernel would. No sleeps, no sockets.

use super::*;
use crate::identity::{PidRefusal, PinRequest, Pinned, Unchecked};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

mod cycle;
pub(crate) mod fake_loop;
mod ops;
mod safety;

use fake_loop::FakeLoop;

pub(crate) const OWN_PID: u32 = 999_999;
/// The uid of every fake process unless `FakeOs::owners` says otherwise.
pub(crate) const SITE_UID: u32 = 1000;

/// How a fake process answers `get U/cops`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mode {
    /// Answers correctly after `delay`.
    Answer(Duration),
    /// Never answers.
    Silent,
    /// Answers with H - 1.
    Stale,
    /// Answers with this body.
    Body(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Fake {
    pub mode: Mode,
    pub pid: u32,
    pub stored: u64,
    pub hang_at: Option<Instant>,
    /// After a delivered signal: a new PID after this delay (the service manager).
    pub restart_after: Option<Duration>,
    /// Signals do not end it (state D).
    pub unkillable: bool,
    pub dead: bool,
    /// Its work loop, when it ticks: answers then carry `"loop":{..}`.
    pub ticks: Option<FakeLoop>,
    /// Runnable but starved of CPU in this interval: it neither takes sets nor
    /// answers, and the kill layer holds signals ([`SignalOutcome::Starved`]).
    pub starved: Option<(Instant, Instant)>,
}

impl Fake {
    /// Whether it is starved of CPU at `at`.
    fn starved_at(&self, at: Instant) -> bool {
        self.starved.is_some_and(|(a, b)| at >= a && at < b)
    }
}

impl Fake {
    pub fn answering(pid: u32, delay_ms: u64) -> Fake {
        Fake {
            mode: Mode::Answer(Duration::from_millis(delay_ms)),
            pid,
            stored: 0,
            hang_at: None,
            restart_after: Some(Duration::from_millis(1)),
            unkillable: false,
            dead: false,
            ticks: None,
            starved: None,
        }
    }
}

/// What the fake kernel says about PIDs.
#[derive(Debug, Default)]
pub(crate) struct FakeOs {
    /// PIDs alive that are no monitored process (a forger, a `sleep`, ...).
    pub others: HashSet<u32>,
    /// PIDs refused with this reason.
    pub refuse: HashMap<u32, PidRefusal>,
    /// Owners other than [`SITE_UID`].
    pub owners: HashMap<u32, u32>,
    /// Checks reported as not made for every pin.
    pub unchecked: Vec<Unchecked>,
    /// The monitored processes' current PIDs and whether they live (mirrors the fakes).
    pub live: HashMap<u32, bool>,
    /// Every pin request (process, pid).
    pub pins: Vec<(usize, u32)>,
    /// PIDs whose process started in the same clock tick as the round that
    /// pins them, or later (not confirmed at the pin).
    pub young: HashSet<u32>,
}

impl FakeOs {
    fn exists(&self, pid: u32) -> bool {
        self.others.contains(&pid) || self.live.get(&pid).copied().unwrap_or(false)
    }

    fn uid(&self, pid: u32) -> u32 {
        self.owners.get(&pid).copied().unwrap_or(SITE_UID)
    }

    fn user(name: &str) -> Option<u32> {
        match name {
            "site" => Some(SITE_UID),
            "root" => Some(0),
            "nobody" => Some(65534),
            n => n.parse().ok(),
        }
    }
}

impl Verifier for FakeOs {
    fn pin(&mut self, req: &PinRequest<'_>) -> PinOutcome {
        self.pins.push((req.process, req.pid));
        if let Some(r) = self.refuse.get(&req.pid) {
            return PinOutcome::Refused(r.clone());
        }
        if !self.exists(req.pid) {
            return PinOutcome::Refused(PidRefusal::NoSuchProcess);
        }
        let uid = self.uid(req.pid);
        if !req.sender.is_empty() && !self.sent_by_owner(req.sender, (uid, uid)) {
            return PinOutcome::Refused(PidRefusal::NotTheSender {
                uids: (uid, uid),
                sender: req.sender.into(),
            });
        }
        PinOutcome::Pinned(Pinned {
            uids: (uid, uid),
            unchecked: self.unchecked.clone(),
            started_before_round: !self.young.contains(&req.pid),
        })
    }

    fn alive(&mut self, _process: usize, pid: u32) -> bool {
        self.exists(pid)
    }

    fn unpin(&mut self, _process: usize, _pid: u32) {}

    fn sent_by_owner(&mut self, username: &str, uids: (u32, u32)) -> bool {
        FakeOs::user(username).is_some_and(|u| u == 0 || u == uids.0 || u == uids.1)
    }
}

/// Something on its way through the fake broker.
#[derive(Debug, Clone)]
enum Flight {
    /// A reply (process, body, username).
    Reply(usize, Vec<u8>, String),
    /// A probe body.
    Probe(Vec<u8>),
}

pub(crate) struct Harness {
    pub e: Engine,
    pub os: FakeOs,
    pub t0: Instant,
    pub now: Instant,
    pub fakes: Vec<Fake>,
    /// (arrival, seq) -> what arrives.
    inflight: BTreeMap<(Instant, u64), Flight>,
    /// (at, process): restarts in flight.
    restarts: BTreeMap<(Instant, u64), usize>,
    seq: u64,
    by_get: HashMap<String, usize>,
    by_hb: HashMap<String, usize>,
    pub events: Vec<Event>,
    pub signals: Vec<(Instant, usize, u32, Signal)>,
    /// Every [`Action::Watch`]: (when, process, pid).
    pub watches: Vec<(Instant, usize, u32)>,
    pub sent: Vec<Transmit>,
    pub keep_sent: bool,
    pub dry_run: bool,
    next_pid: u32,
    /// Timers handled only on this grid (like the runtime's coalescing tick).
    pub tick: Option<Duration>,
    /// The broker holds everything sent in `.0..b` until `.1` (SIGSTOP).
    pub pause: Option<(Instant, Instant)>,
    /// The broker drops this many of the next probes (and everything sent
    /// to COPS in between, while `drop_replies` is set).
    pub drop_probes: u32,
    /// The broker drops the replies to COPS.
    pub drop_replies: bool,
}

pub(crate) fn config(n: usize, top: &str, per: &str) -> Config {
    let procs: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"name":"p{i}","uri":"/p{i}","killOnHang":true{per}}}"#))
        .collect();
    let text = format!(
        r#"{{"controllerName":"test"{top},"processList":[{}]}}"#,
        procs.join(",")
    );
    crate::config::parse("test.json", &text, "testhost").expect("test config")
}

impl Harness {
    pub fn new(cfg: Config, fakes: Vec<Fake>) -> Harness {
        let t0 = Instant::now();
        let mut by_get = HashMap::new();
        let mut by_hb = HashMap::new();
        for (i, p) in cfg.processes.iter().enumerate() {
            by_get.insert(format!("{}/cops", p.uri), i);
            by_hb.insert(format!("{}/cops/cops_heartbeat", p.uri), i);
        }
        let mut e = Engine::new(cfg, t0, SystemTime::UNIX_EPOCH, OWN_PID);
        e.set_connected(t0, true);
        let mut h = Harness {
            e,
            os: FakeOs::default(),
            t0,
            now: t0,
            fakes,
            inflight: BTreeMap::new(),
            restarts: BTreeMap::new(),
            seq: 0,
            by_get,
            by_hb,
            events: Vec::new(),
            signals: Vec::new(),
            watches: Vec::new(),
            sent: Vec::new(),
            keep_sent: false,
            dry_run: false,
            next_pid: 100_000,
            tick: None,
            pause: None,
            drop_probes: 0,
            drop_replies: false,
        };
        h.sync_os();
        h.pump();
        h
    }

    pub fn ms(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// The fake OS learns which monitored PIDs live (only the current PID of
    /// each fake, and only while it is not dead).
    pub fn sync_os(&mut self) {
        self.os.live.clear();
        for f in &self.fakes {
            self.os.live.insert(f.pid, !f.dead);
        }
    }

    /// When something the broker takes at `at` comes out (paused: at the end).
    fn route(&self, at: Instant) -> Instant {
        match self.pause {
            Some((a, b)) if at >= a && at < b => b,
            _ => at,
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let timer = self.e.next_timeout().map(|t| match self.tick {
            Some(tick) => {
                let k = (t - self.t0).as_nanos().div_ceil(tick.as_nanos());
                let coalesced = self.t0 + tick * k as u32;
                self.e.next_urgent().map_or(coalesced, |u| coalesced.min(u))
            }
            None => t,
        });
        let flight = self.inflight.keys().next().map(|k| k.0);
        let restart = self.restarts.keys().next().map(|k| k.0);
        [timer, flight, restart].into_iter().flatten().min()
    }

    /// Runs the world until `end` (inclusive).
    pub fn run_until(&mut self, end: Instant) {
        self.sync_os();
        while let Some(t) = self.next_time().filter(|&t| t <= end) {
            self.now = t;
            if self.restarts.keys().next().is_some_and(|k| k.0 == t) {
                let (_, i) = self.restarts.pop_first().expect("peeked");
                self.next_pid += 1;
                let f = &mut self.fakes[i];
                f.pid = self.next_pid;
                f.dead = false;
                f.hang_at = None;
                if let Some(l) = &mut f.ticks {
                    l.restart(t);
                }
                self.sync_os();
            } else if self.inflight.keys().next().is_some_and(|k| k.0 == t) {
                let (_, flight) = self.inflight.pop_first().expect("peeked");
                self.arrive(t, flight);
            } else {
                self.e.handle_timeout(t);
            }
            self.pump();
        }
        self.now = end;
    }

    fn arrive(&mut self, t: Instant, flight: Flight) {
        match flight {
            Flight::Reply(i, body, username) => {
                let uri = self.e.procs[i].reply_uri.clone();
                let msg = Message {
                    method: "set",
                    uri: &uri,
                    body: &body,
                    username: &username,
                    ..Message::default()
                };
                self.e.handle_message(t, Via::Heartbeat, &msg, &mut self.os);
            }
            Flight::Probe(body) => {
                let uri = self.e.probe_uri().to_owned();
                let msg = Message {
                    method: "set",
                    uri: &uri,
                    body: &body,
                    ..Message::default()
                };
                self.e.handle_message(t, Via::Heartbeat, &msg, &mut self.os);
            }
        }
    }

    pub fn run_ms(&mut self, ms: u64) {
        let end = self.ms(ms);
        self.run_until(end)
    }

    /// A reply to process `i`'s reply URI arriving at `at` (a forger's, say).
    pub fn inject_reply(&mut self, at: Instant, i: usize, body: String, username: &str) {
        self.seq += 1;
        self.inflight.insert(
            (at, self.seq),
            Flight::Reply(i, body.into_bytes(), username.into()),
        );
    }

    /// Drains the engine's outputs and plays the world's part.
    pub fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(t) = self.e.poll_transmit() {
                busy = true;
                self.deliver(&t);
                if self.keep_sent {
                    self.sent.push(t);
                }
            }
            while let Some(a) = self.e.poll_action() {
                busy = true;
                self.act(a);
            }
            while let Some(ev) = self.e.poll_event() {
                self.events.push(ev);
            }
            if !busy {
                break;
            }
        }
    }

    fn deliver(&mut self, t: &Transmit) {
        let at = self.route(self.now);
        match t.via {
            Via::Probe => {
                if self.drop_probes > 0 {
                    self.drop_probes -= 1;
                    return;
                }
                self.seq += 1;
                self.inflight
                    .insert((at, self.seq), Flight::Probe(t.body.to_vec()));
            }
            Via::Heartbeat => self.reach_process(t, at),
            Via::Serve => {}
        }
    }

    /// A heartbeat transmit reaches its process at `at`, which may answer.
    fn reach_process(&mut self, t: &Transmit, at: Instant) {
        if t.method == Method::Set {
            if let Some(&i) = self.by_hb.get(&*t.uri) {
                let f = &mut self.fakes[i];
                if !f.dead && f.hang_at.is_none_or(|h| at < h) && !f.starved_at(at) {
                    f.stored = std::str::from_utf8(&t.body).unwrap().parse().unwrap();
                }
            }
            return;
        }
        let Some(&i) = self.by_get.get(&*t.uri) else {
            return;
        };
        let f = &self.fakes[i];
        if f.dead || f.hang_at.is_some_and(|h| at >= h) || f.starved_at(at) || self.drop_replies {
            return;
        }
        let (delay, body) = match &f.mode {
            Mode::Silent => return,
            Mode::Answer(d) => {
                let (d, mut body) = (*d, reply_body(f.stored, i64::from(f.pid)));
                if let Some(l) = &mut self.fakes[i].ticks {
                    body.pop();
                    body.push(',');
                    body.push_str(&l.answer(at + d));
                    body.push('}');
                }
                (d, body)
            }
            Mode::Stale => (
                Duration::from_millis(1),
                reply_body(f.stored - 1, i64::from(f.pid)),
            ),
            Mode::Body(b) => (Duration::from_millis(1), b.clone()),
        };
        let arrival = self.route(at + delay);
        self.seq += 1;
        self.inflight.insert(
            (arrival, self.seq),
            Flight::Reply(i, body.into_bytes(), String::new()),
        );
    }

    fn act(&mut self, a: Action) {
        let now = self.now;
        match a {
            Action::Unpin { .. } => {}
            Action::Watch { process, pid } => self.watches.push((now, process, pid)),
            Action::Signal {
                process,
                pid,
                signal,
            } => {
                self.signals.push((now, process, pid, signal));
                let f = &mut self.fakes[process];
                if f.pid == pid && f.starved_at(now) {
                    let out = SignalOutcome::Starved(crate::identity::CpuUse {
                        waited: Duration::from_millis(280),
                        ran: Duration::from_millis(1),
                        over: Duration::from_millis(300),
                    });
                    return self.e.signal_result(now, process, pid, out);
                }
                let evidence = format!("tid {pid} S futex_wait_queue");
                if self.dry_run {
                    let out = SignalOutcome::DryRun { evidence };
                    return self.e.signal_result(now, process, pid, out);
                }
                if f.pid == pid && !f.unkillable && (signal.is_kill() || !f.dead) {
                    f.dead = true;
                    if let Some(d) = f.restart_after {
                        self.seq += 1;
                        self.restarts.insert((now + d, self.seq), process);
                    }
                }
                self.sync_os();
                let out = SignalOutcome::Delivered {
                    evidence,
                    unchecked: Vec::new(),
                };
                self.e.signal_result(now, process, pid, out);
            }
            Action::CheckExit { process, pid } => {
                let f = &self.fakes[process];
                let r = if f.pid != pid || f.dead {
                    ExitCheck::Exited
                } else {
                    ExitCheck::StillAlive {
                        evidence: format!("tid {pid} D io_schedule"),
                    }
                };
                self.e.exit_result(now, process, pid, r);
            }
        }
    }

    pub fn kinds(&self, kind: EventKind) -> Vec<&Event> {
        self.events.iter().filter(|e| e.kind == kind).collect()
    }

    pub fn stat(&self, i: usize, field: &str) -> Value {
        self.e.stats(i, self.now)[field].clone()
    }

    pub fn summary(&self) -> Value {
        self.e.summary(self.now)
    }

    /// Signals sent to process `i`.
    pub fn signals_of(&self, i: usize) -> Vec<u32> {
        self.signals
            .iter()
            .filter(|s| s.1 == i)
            .map(|s| s.2)
            .collect()
    }
}

pub(crate) fn reply_body(h: u64, pid: i64) -> String {
    format!(
        r#"{{"cops_heartbeat":{h},"pid":{pid},"version_tag":"1.4.0","version_commit":"a1b2c3d","version_build":"372"}}"#
    )
}

/// 100 ms period, 90 ms deadline, allowance 3, one process per fake.
pub(crate) fn quick(fakes: Vec<Fake>, per: &str) -> Harness {
    let cfg = config(
        fakes.len(),
        r#","heartbeatFreq":100,"heartbeatErrorAllowance":3"#,
        per,
    );
    Harness::new(cfg, fakes)
}
