//! The COPS engine: the heartbeat cycle, verdicts, kill decisions and stats of
//! `docs/protocol/cops.md`, with no I/O and no clock reads.
//!
//! Every input takes `now: Instant`; the caller (the runtime, or a test with a fake
//! clock) owns time and the socket. Method kinds, in the order a driver calls them:
//! - inputs: [`Engine::handle_message`], [`Engine::handle_timeout`],
//!   [`Engine::set_connected`], and the answers to actions
//!   ([`Engine::pin_result`], [`Engine::signal_result`], [`Engine::exit_result`]);
//! - outputs, drained after every input: [`Engine::poll_transmit`] (messages to
//!   send), [`Engine::poll_action`] (PIDs to pin, signals to deliver, exits to
//!   check), [`Engine::poll_event`] (events to log and `post /events`);
//! - [`Engine::next_timeout`]: when to call `handle_timeout` next.
//!
//! Round starts follow a fixed grid, deadlines a FIFO, the rare timers (kill
//! checks, briefings) a small heap; replies find their process through a hash
//! map of reply URIs. Nothing scans all processes per tick, so 10,000 processes
//! cost a few microseconds per message.
//!
//! Files: this one (cycle and replies), `verdict.rs` (hung, kills, escalation),
//! `reply.rs` (reply parsing), `serve.rs` (stats, GETs, briefings), `events.rs`.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fims::{Message, Method};

use crate::config::{Config, ProcessConfig, Signal};

mod events;
mod reply;
mod serve;
mod verdict;

use reply::{parse_reply, BuildFnv};

pub use events::{Event, EventKind, Severity};

/// A message for the runtime to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Method.
    pub method: Method,
    /// Target URI.
    pub uri: Arc<str>,
    /// Reply URI, if any.
    pub replyto: Option<Arc<str>>,
    /// Body (JSON text).
    pub body: Vec<u8>,
}

/// Something the runtime must do with the OS; each has an answer method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Check and pin the identity of a PID first seen in a reply (answer: [`Engine::pin_result`]).
    Pin {
        /// Process index (config order).
        process: usize,
        /// The PID the reply carried.
        pid: u32,
    },
    /// Forget a pinned identity that is no longer needed.
    Unpin {
        /// Process index.
        process: usize,
        /// The PID.
        pid: u32,
    },
    /// Deliver `signal` to the pinned identity of `pid`, gathering evidence first
    /// (answer: [`Engine::signal_result`]).
    Signal {
        /// Process index.
        process: usize,
        /// The pinned PID.
        pid: u32,
        /// The signal.
        signal: Signal,
    },
    /// Check whether the pinned identity of `pid` exited (answer: [`Engine::exit_result`]).
    CheckExit {
        /// Process index.
        process: usize,
        /// The pinned PID.
        pid: u32,
    },
}

/// What delivering a signal came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalOutcome {
    /// Delivered; `evidence` is what /proc said just before.
    Delivered {
        /// Thread states and wait channels.
        evidence: String,
    },
    /// `--dry-run`: logged, not delivered.
    DryRun {
        /// Thread states and wait channels.
        evidence: String,
    },
    /// Not delivered: the identity changed or vanished, the executable did not
    /// match, or the kernel refused.
    Refused {
        /// Why.
        reason: String,
    },
}

/// The state of a monitored process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Never answered (or not heartbeated).
    Unknown,
    /// Answering.
    Alive,
    /// Declared hung.
    Hung,
}

impl State {
    /// The spelling in stats.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Alive => "alive",
            State::Hung => "hung",
        }
    }
}

/// The rare timers (kill checks, briefings). Round starts and deadlines, the
/// frequent ones, need no heap: starts follow a fixed grid ([`Schedule`]) and
/// deadlines come due in the order the rounds started (a FIFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    KillCheck,
    Briefing,
}

/// Round starts: the monitored processes in offset order on a grid of `period`.
#[derive(Debug)]
struct Schedule {
    order: Vec<u32>,
    cursor: usize,
    cycle: Instant,
    period: Duration,
    /// When the process under the cursor starts its round.
    next_at: Option<Instant>,
}

impl Schedule {
    fn new(order: Vec<u32>, now: Instant, period: Duration) -> Schedule {
        let next_at = (!order.is_empty()).then_some(now);
        Schedule {
            order,
            cursor: 0,
            cycle: now,
            period,
            next_at,
        }
    }

    /// When the process under the cursor starts its round.
    fn next(&self) -> Option<Instant> {
        self.next_at
    }

    /// The first start of the process at position `pos` after `after`.
    fn start_of(&self, pos: usize, after: Instant) -> Instant {
        let n = self.order.len() as u32;
        let mut t = self.cycle + self.period * pos as u32 / n;
        if pos < self.cursor {
            t += self.period;
        }
        while t <= after {
            t += self.period;
        }
        t
    }

    fn advance(&mut self) {
        self.cursor += 1;
        if self.cursor == self.order.len() {
            self.cursor = 0;
            self.cycle += self.period;
        }
        let n = self.order.len() as u32;
        self.next_at = (n > 0).then(|| self.cycle + self.period * self.cursor as u32 / n);
    }
}

type Timer = Reverse<(Instant, Kind, u32, u64)>;

#[derive(Debug, Clone, Copy)]
struct Round {
    seq: u64,
    sent: Instant,
    deadline: Instant,
    epoch: u64,
    alive_at_start: bool,
    answered: bool,
}

#[derive(Debug, Clone)]
struct PendingReply {
    round: u64,
    pid: u32,
    received: Instant,
    versions: [Option<String>; 3],
    versions_hash: u64,
}

#[derive(Debug, Clone, Copy)]
struct Kill {
    pid: u32,
    signal: Signal,
    sent: Instant,
    seq: u64,
}

/// Per-process statistics (docs/protocol/cops.md "What COPS serves").
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    last_rt: Option<Duration>,
    max_rt: Duration,
    sum_rt: Duration,
    n_rt: u64,
    total_restarts: u64,
    cops_restarts: u64,
    last_alive: Option<Instant>,
    versions: [String; 3],
    /// Hash of the version fields of the last reply (to skip comparing strings).
    versions_hash: u64,
}

#[derive(Debug)]
struct Proc {
    cfg: ProcessConfig,
    reply_uri: Arc<str>,
    stats_uri: Arc<str>,
    hb_uri: Arc<str>,
    get_uri: Arc<str>,
    state: State,
    h: u64,
    round: Option<Round>,
    seq: u64,
    misses: u32,
    /// A round start came while the last round was still open.
    deferred: bool,
    miss_base: Instant,
    pid: Option<u32>,
    incarnation: u64,
    pending: Option<PendingReply>,
    stats: Stats,
    killed_incarnation: Option<u64>,
    kill: Option<Kill>,
    kills: VecDeque<Instant>,
    quarantined: bool,
    complained: bool,
    rejected_pid: Option<i64>,
}

/// The sliding window of the last period's deadlines, for stall detection.
#[derive(Debug, Default)]
struct Window {
    entries: VecDeque<(Instant, u32, bool)>,
    misses: usize,
    stalled_since: Option<Instant>,
}

/// The COPS engine (see the module documentation for the calling order).
#[derive(Debug)]
pub struct Engine {
    cfg: Arc<Config>,
    procs: Vec<Proc>,
    by_reply: HashMap<Arc<str>, u32, BuildFnv>,
    timers: BinaryHeap<Timer>,
    schedule: Schedule,
    /// Position of each process in the schedule (u32::MAX: not heartbeated).
    positions: Vec<u32>,
    deadlines: VecDeque<(Instant, u32, u64)>,
    /// Starts and deadlines that could bring a verdict: the runtime wakes for
    /// these exactly instead of at its next coalesced tick (stale entries only
    /// cost a wakeup).
    urgent: BinaryHeap<Reverse<Instant>>,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    window: Window,
    own_pid: u32,
    started: Instant,
    wall_at_start: SystemTime,
    connected: bool,
    epoch: u64,
    briefing_cursor: usize,
    briefing_round: Instant,
    summary_uri: Arc<str>,
}

impl Engine {
    /// A new engine at `now`; `wall` is the wall-clock time at `now` (for
    /// `last_confirmed_alive`), `own_pid` COPS's own PID (never accepted from a
    /// reply). Starts disconnected: call [`set_connected`](Self::set_connected).
    pub fn new(cfg: Config, now: Instant, wall: SystemTime, own_pid: u32) -> Engine {
        let cfg = Arc::new(cfg);
        // Spread the rounds over the period so they do not burst at one instant.
        let order: Vec<u32> = (0..cfg.processes.len() as u32)
            .filter(|&i| cfg.processes[i as usize].required)
            .collect();
        let mut e = Engine {
            procs: Vec::with_capacity(cfg.processes.len()),
            by_reply: HashMap::with_capacity_and_hasher(cfg.processes.len(), BuildFnv),
            timers: BinaryHeap::new(),
            deadlines: VecDeque::with_capacity(order.len()),
            positions: {
                let mut pos = vec![u32::MAX; cfg.processes.len()];
                for (k, &i) in order.iter().enumerate() {
                    pos[i as usize] = k as u32;
                }
                pos
            },
            urgent: BinaryHeap::new(),
            schedule: Schedule::new(order, now, cfg.heartbeat),
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            window: Window::default(),
            own_pid,
            started: now,
            wall_at_start: wall,
            connected: false,
            epoch: 0,
            briefing_cursor: 0,
            briefing_round: now,
            summary_uri: format!("{}/summary", cfg.our_uri).into(),
            cfg: cfg.clone(),
        };
        for (i, p) in cfg.processes.iter().enumerate() {
            let reply_uri: Arc<str> = format!("{}/heartbeat/{}", cfg.our_uri, p.name).into();
            e.by_reply.insert(reply_uri.clone(), i as u32);
            e.procs.push(Proc {
                cfg: p.clone(),
                reply_uri,
                stats_uri: format!("{}/stats/{}", cfg.our_uri, p.name).into(),
                hb_uri: format!("{}/cops/cops_heartbeat", p.uri).into(),
                get_uri: format!("{}/cops", p.uri).into(),
                state: State::Unknown,
                h: 1,
                round: None,
                seq: 0,
                misses: 0,
                deferred: false,
                miss_base: now,
                pid: None,
                incarnation: 0,
                pending: None,
                stats: Stats::default(),
                killed_incarnation: None,
                kill: None,
                kills: VecDeque::new(),
                quarantined: false,
                complained: false,
                rejected_pid: None,
            });
        }
        e.timers
            .push(Reverse((now + cfg.briefing, Kind::Briefing, 0, 0)));
        e.briefing_round = now + cfg.briefing;
        e
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The state of process `i` (config order).
    pub fn state(&self, i: usize) -> Option<State> {
        self.procs.get(i).map(|p| p.state)
    }

    /// Index of the process called `name`.
    pub fn process_index(&self, name: &str) -> Option<usize> {
        self.procs.iter().position(|p| p.cfg.name == name)
    }

    /// Whether a bus stall is in progress.
    pub fn stalled(&self) -> bool {
        self.window.stalled_since.is_some()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    pub fn next_timeout(&self) -> Option<Instant> {
        let heap = self.timers.peek().map(|Reverse((t, ..))| *t);
        let deadline = self.deadlines.front().map(|d| d.0);
        [heap, deadline, self.schedule.next()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The earliest start or deadline that could bring a verdict. A driver that
    /// coalesces its timer wakeups should still wake exactly at this instant.
    pub fn next_urgent(&self) -> Option<Instant> {
        self.urgent.peek().map(|Reverse(t)| *t)
    }

    /// Whether a miss at the deadline `deadline` of process `i` (with its
    /// misses so far) would make it hung.
    fn at_risk(&self, i: usize, deadline: Instant) -> bool {
        let p = &self.procs[i];
        p.state != State::Hung
            && match p.cfg.hang_time_allowance {
                Some(allow) => deadline.saturating_duration_since(p.miss_base) >= allow,
                None => p.misses + 1 >= self.cfg.error_allowance,
            }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next OS action to perform.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event to log (and to post when [`Event::post`] is set).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The bus connection went up or down. Deadlines that fall while it is down,
    /// or of rounds sent before a reconnect, are not misses.
    pub fn set_connected(&mut self, now: Instant, up: bool) {
        if up == self.connected {
            return;
        }
        self.connected = up;
        self.epoch += 1;
        if !up {
            self.transmits.clear();
        }
        let (sev, msg) = if up {
            (Severity::Status, "connected to the FIMS broker".to_string())
        } else {
            (
                Severity::Alarm,
                "lost the FIMS broker: heartbeats paused, no misses counted until it is back"
                    .into(),
            )
        };
        self.event(now, sev, EventKind::Bus, None, msg, up);
    }

    /// Handles every timer due at `now`.
    /// At one instant, deadlines come before round starts, then the rare timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.urgent.peek().is_some_and(|Reverse(t)| *t <= now) {
            self.urgent.pop();
        }
        loop {
            let deadline = self.deadlines.front().map(|d| d.0).filter(|&t| t <= now);
            let start = self.schedule.next().filter(|&t| t <= now);
            let heap = self
                .timers
                .peek()
                .map(|Reverse((t, ..))| *t)
                .filter(|&t| t <= now);
            match (deadline, start, heap) {
                (Some(d), s, h) if s.is_none_or(|s| d <= s) && h.is_none_or(|h| d <= h) => {
                    let Some((t, i, seq)) = self.deadlines.pop_front() else {
                        break;
                    };
                    self.on_deadline(now, t, i as usize, seq);
                }
                (_, Some(s), h) if h.is_none_or(|h| s <= h) => {
                    let i = self.schedule.order[self.schedule.cursor] as usize;
                    self.schedule.advance();
                    self.on_start(now, s, i);
                }
                (_, _, Some(_)) => {
                    let Some(Reverse((_, kind, idx, seq))) = self.timers.pop() else {
                        break;
                    };
                    match kind {
                        Kind::KillCheck => self.on_kill_check(idx as usize, seq),
                        Kind::Briefing => self.on_briefing(now),
                    }
                }
                _ => break,
            }
        }
    }

    /// Handles a received message: heartbeat replies on `ourUri/heartbeat/N`,
    /// requests on `ourUri`; anything else is ignored.
    pub fn handle_message(&mut self, now: Instant, msg: &Message<'_>) {
        if msg.method() == Some(Method::Set) {
            if let Some(&i) = self.by_reply.get(msg.uri) {
                self.on_reply(now, i as usize, msg.body);
                return;
            }
        }
        if fims::uri::matches(&self.cfg.our_uri, msg.uri) {
            self.serve(now, msg);
        }
    }

    fn on_start(&mut self, now: Instant, t: Instant, i: usize) {
        // A start a whole period late is superseded by the next cycle's.
        if !self.connected || t + self.cfg.heartbeat <= now {
            return;
        }
        if self.procs[i].round.is_some() {
            // The last round was sent late and is still open: this one follows
            // right after its deadline instead of being lost.
            self.procs[i].deferred = true;
            return;
        }
        self.start_round(now, i);
    }

    fn start_round(&mut self, now: Instant, i: usize) {
        let deadline = self.cfg.reply_deadline;
        if self.at_risk(i, now + deadline) {
            self.urgent.push(Reverse(now + deadline));
        }
        let p = &mut self.procs[i];
        p.deferred = false;
        p.seq += 1;
        p.round = Some(Round {
            seq: p.seq,
            sent: now,
            deadline: now + deadline,
            epoch: self.epoch,
            alive_at_start: p.state == State::Alive,
            answered: false,
        });
        p.pending = None;
        self.deadlines.push_back((now + deadline, i as u32, p.seq));
        self.transmits.push_back(Transmit {
            method: Method::Set,
            uri: p.hb_uri.clone(),
            replyto: None,
            body: p.h.to_string().into_bytes(),
        });
        self.transmits.push_back(Transmit {
            method: Method::Get,
            uri: p.get_uri.clone(),
            replyto: Some(p.reply_uri.clone()),
            body: Vec::new(),
        });
    }

    fn on_reply(&mut self, now: Instant, i: usize, body: &[u8]) {
        let reply = match parse_reply(body) {
            Ok(r) => r,
            Err(why) => return self.complain(now, i, why),
        };
        let pid_check = self.check_pid(reply.pid);
        let p = &mut self.procs[i];
        let Some(round) = p.round.filter(|r| !r.answered && p.pending.is_none()) else {
            return; // no round open, or already answered: a duplicate or a straggler
        };
        if now > round.deadline {
            return; // late: the deadline makes it a miss
        }
        if reply.heartbeat != p.h {
            let why = format!("stale heartbeat {} (expected {})", reply.heartbeat, p.h);
            return self.complain(now, i, why);
        }
        let pid = match pid_check {
            Ok(pid) => pid,
            Err(why) => return self.reject_pid(now, i, reply.pid, why),
        };
        let versions_hash = reply::versions_hash(&reply.versions);
        let pending = PendingReply {
            round: round.seq,
            pid,
            received: now,
            // Allocate (and touch the stored strings) only when the versions changed.
            versions: if versions_hash == p.stats.versions_hash {
                [None, None, None]
            } else {
                reply.versions.map(|v| v.map(Cow::into_owned))
            },
            versions_hash,
        };
        if p.pid == Some(pid) {
            self.succeed(now, i, pending);
        } else {
            // A PID not seen before: the runtime checks it exists and pins it first.
            p.pending = Some(pending);
            self.actions.push_back(Action::Pin { process: i, pid });
        }
    }

    /// The runtime's answer to [`Action::Pin`]: `Err` when the PID does not exist
    /// (or cannot be pinned); the reply is then not a success.
    pub fn pin_result(
        &mut self,
        now: Instant,
        process: usize,
        pid: u32,
        result: Result<(), String>,
    ) {
        let Some(p) = self.procs.get_mut(process) else {
            return;
        };
        let Some(pending) = p.pending.take().filter(|r| r.pid == pid) else {
            return;
        };
        match result {
            Ok(()) => self.succeed(now, process, pending),
            Err(why) => self.reject_pid(now, process, i64::from(pid), why),
        }
    }

    fn check_pid(&self, pid: i64) -> Result<u32, String> {
        if pid <= 1 {
            return Err("PIDs <= 1 are never accepted".into());
        }
        let pid = u32::try_from(pid)
            .ok()
            .filter(|&p| p <= i32::MAX as u32)
            .ok_or("PID out of range")?;
        if pid == self.own_pid {
            return Err("that is COPS's own PID".into());
        }
        Ok(pid)
    }

    fn succeed(&mut self, now: Instant, i: usize, r: PendingReply) {
        let p = &mut self.procs[i];
        let Some(round) = p.round.as_mut().filter(|x| x.seq == r.round) else {
            return;
        };
        round.answered = true;
        let rt = r.received.saturating_duration_since(round.sent);
        p.h += 1;
        p.misses = 0;
        p.miss_base = r.received;
        p.complained = false;
        p.rejected_pid = None;
        let s = &mut p.stats;
        s.last_rt = Some(rt);
        s.max_rt = s.max_rt.max(rt);
        s.sum_rt += rt;
        s.n_rt += 1;
        s.last_alive = Some(r.received);
        for (slot, v) in s.versions.iter_mut().zip(r.versions) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        s.versions_hash = r.versions_hash;
        let mut restarted = None;
        if p.pid != Some(r.pid) {
            if let Some(old) = p.pid {
                s.total_restarts += 1;
                if p.killed_incarnation == Some(p.incarnation) {
                    s.cops_restarts += 1;
                }
                if p.kill.is_none_or(|k| k.pid != old) {
                    self.actions.push_back(Action::Unpin {
                        process: i,
                        pid: old,
                    });
                }
                restarted = Some(old);
            }
            p.incarnation += 1;
            p.pid = Some(r.pid);
        }
        let before = p.state;
        p.state = State::Alive;
        if restarted.is_none() && before == State::Alive {
            return; // the common case: nothing to report
        }
        let (name, total) = (p.cfg.name.clone(), p.stats.total_restarts);
        let ms = rt.as_secs_f64() * 1000.0;
        if let Some(old) = restarted {
            let msg = format!(
                "{name} restarted: pid {old} -> {} (restart #{total})",
                r.pid
            );
            self.event(
                now,
                Severity::Status,
                EventKind::Restarted,
                Some(i),
                msg,
                true,
            );
        }
        match before {
            State::Unknown => {
                let msg = format!("{name} (pid {}) alive, answered in {ms:.1} ms", r.pid);
                self.event(now, Severity::Info, EventKind::Alive, Some(i), msg, false);
            }
            State::Hung => {
                let msg = format!(
                    "{name} (pid {}) alive again after being hung, answered in {ms:.1} ms",
                    r.pid
                );
                self.event(
                    now,
                    Severity::Status,
                    EventKind::Resurrected,
                    Some(i),
                    msg,
                    true,
                );
            }
            State::Alive => {}
        }
    }

    fn complain(&mut self, now: Instant, i: usize, why: String) {
        let p = &mut self.procs[i];
        if std::mem::replace(&mut p.complained, true) {
            return;
        }
        let msg = format!("{}: bad heartbeat reply: {why}", p.cfg.name);
        self.event(
            now,
            Severity::Status,
            EventKind::BadReply,
            Some(i),
            msg,
            false,
        );
    }

    fn reject_pid(&mut self, now: Instant, i: usize, pid: i64, why: String) {
        let p = &mut self.procs[i];
        if p.rejected_pid.replace(pid) == Some(pid) {
            return;
        }
        let msg = format!("{}: reply with pid {pid} not accepted: {why}", p.cfg.name);
        self.event(
            now,
            Severity::Alarm,
            EventKind::PidRejected,
            Some(i),
            msg,
            true,
        );
    }

    fn on_deadline(&mut self, now: Instant, t: Instant, i: usize, seq: u64) {
        if self.procs[i].round.is_none_or(|r| r.seq != seq) {
            return;
        }
        self.judge(now, t, i);
        if std::mem::take(&mut self.procs[i].deferred) && self.connected {
            self.start_round(now, i);
        }
    }

    /// Closes the open round of process `i` at its deadline `t`.
    fn judge(&mut self, now: Instant, t: Instant, i: usize) {
        let Some(round) = self.procs[i].round else {
            return;
        };
        self.procs[i].round = None;
        self.procs[i].pending = None;
        if now.saturating_duration_since(t) > self.cfg.heartbeat / 2 {
            // COPS itself was late: not the process's fault.
            let name = &self.procs[i].cfg.name;
            let late = now.saturating_duration_since(t).as_millis();
            let msg = format!(
                "{name}: deadline checked {late} ms late (COPS lagged): not counted as a miss"
            );
            self.event(
                now,
                Severity::Status,
                EventKind::OwnLag,
                Some(i),
                msg,
                false,
            );
            return;
        }
        if !self.connected || round.epoch != self.epoch {
            return; // the bus was down during the round
        }
        let missed = !round.answered;
        if round.alive_at_start {
            self.window_push(now, i, missed);
        }
        if !missed {
            return;
        }
        let p = &mut self.procs[i];
        if self.window.stalled_since.is_some() {
            // No verdicts in a stall; the stalled time does not count either.
            p.miss_base = now;
            return;
        }
        p.misses = p.misses.saturating_add(1);
        let due = match p.cfg.hang_time_allowance {
            Some(allow) => now.saturating_duration_since(p.miss_base) >= allow,
            None => p.misses >= self.cfg.error_allowance,
        };
        if p.state == State::Hung {
            // Already hung: kill now if it was not possible before (quarantine over, ...).
            let _ = self.maybe_kill(now, i);
        } else if due {
            self.declare_hung(now, i);
        } else if let Some(&pos) = self.positions.get(i).filter(|&&p| p != u32::MAX) {
            // The start of the round that would bring the verdict is urgent.
            let (period, deadline) = (self.cfg.heartbeat, self.cfg.reply_deadline);
            let p = &self.procs[i];
            let mut start = self.schedule.start_of(pos as usize, t);
            match p.cfg.hang_time_allowance {
                None => start += period * (self.cfg.error_allowance - p.misses - 1),
                Some(allow) => {
                    while (start + deadline).saturating_duration_since(p.miss_base) < allow {
                        start += period;
                    }
                }
            }
            if start > now {
                self.urgent.push(Reverse(start));
            }
        }
    }

    fn window_push(&mut self, now: Instant, i: usize, missed: bool) {
        let period = self.cfg.heartbeat;
        let w = &mut self.window;
        while let Some(&(t, _, m)) = w.entries.front() {
            if t + period > now {
                break;
            }
            w.entries.pop_front();
            w.misses -= usize::from(m);
        }
        let misses = w.misses + usize::from(missed);
        let total = w.entries.len() + 1;
        let stall = misses >= 3 && misses * 2 > total;
        match (w.stalled_since.is_some(), stall) {
            (false, true) => {
                w.stalled_since = Some(now);
                // Forgive the misses of this window counted before the stall was seen.
                let forgiven: Vec<u32> = w.entries.iter().filter(|e| e.2).map(|e| e.1).collect();
                for j in forgiven {
                    let p = &mut self.procs[j as usize];
                    p.misses = p.misses.saturating_sub(1);
                    p.miss_base = p.miss_base.max(now);
                }
                let msg = format!(
                    "bus or host stall: {misses} of {total} processes alive at the start of their round missed it; no verdicts until it passes"
                );
                self.event(now, Severity::Alarm, EventKind::Stall, None, msg, true);
            }
            (true, false) => {
                let since = self.window.stalled_since.take().unwrap_or(now);
                let ms = now.saturating_duration_since(since).as_millis();
                let msg = format!("bus or host stall over after {ms} ms");
                self.event(now, Severity::Status, EventKind::StallOver, None, msg, true);
            }
            _ => {}
        }
        let w = &mut self.window;
        w.entries.push_back((now, i as u32, missed));
        w.misses += usize::from(missed);
    }

    /// Sets the PID of the last event (signals and exits concern a given PID,
    /// not necessarily the process's current one).
    fn event_pid(&mut self, pid: u32) {
        if let Some(e) = self.events.back_mut() {
            e.pid = Some(pid);
        }
    }

    fn event(
        &mut self,
        now: Instant,
        severity: Severity,
        kind: EventKind,
        i: Option<usize>,
        message: String,
        post: bool,
    ) {
        let (process, pid) = match i.and_then(|i| self.procs.get(i)) {
            Some(p) => (Some(p.cfg.name.clone()), p.pid),
            None => (None, None),
        };
        self.events.push_back(Event {
            at: now,
            severity,
            kind,
            process,
            pid,
            message,
            post,
        });
    }

    /// Wall-clock time of an instant, from the pair given at construction.
    fn wall(&self, t: Instant) -> SystemTime {
        self.wall_at_start + t.saturating_duration_since(self.started)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod scale_tests;
