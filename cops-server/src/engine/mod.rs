//! The COPS engine: the heartbeat cycle, verdicts, kill decisions and stats of
//! `docs/protocol/cops.md`, with no I/O and no clock reads.
//!
//! Every input takes `now: Instant`; the caller (the runtime, or a test with a fake
//! clock) owns time and the sockets. Method kinds, in the order a driver calls them:
//! - inputs: [`Engine::handle_message`] (with the [`Verifier`] that checks and
//!   pins a reply's PID while the reply is read), [`Engine::handle_timeout`],
//!   [`Engine::set_connected`], [`Engine::lagged`], and the answers to actions
//!   ([`Engine::signal_result`], [`Engine::exit_result`]);
//! - outputs, drained after every input: [`Engine::poll_transmit`] (messages to
//!   send, each on the connection its [`Via`] names), [`Engine::poll_action`]
//!   (signals to deliver, exits to check, identities to forget),
//!   [`Engine::poll_event`] (events to log and `post /events`);
//! - [`Engine::next_timeout`]: when to call `handle_timeout` next.
//!
//! Round starts follow a fixed grid, deadlines a FIFO, the rare timers (kill
//! checks, probes, briefings) a small heap; replies find their process through
//! a hash map of reply URIs. Nothing scans all processes per tick, so 10,000
//! processes cost a few microseconds per message.
//!
//! Children: `cycle` (round starts, deadlines, misses), `evidence` (the probe
//! through the broker, COPS's own lag, void rounds and stalls), `reply`
//! (parsing and judging replies, identities), `verdict` (hung, kills, the kill
//! budgets, escalation), `loops` (the work loop's beats: deadline and alive
//! supervision), `serve` (stats, GETs, briefings), `events` (what is
//! logged and posted), `ops` (what operators see: RTT percentiles, kill and
//! restart history, the decision log), `control` (maintenance inhibit),
//! `status` (`get ourUri/status`, `get ourUri/events/<name>`, the metrics
//! snapshot).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use fims::{Message, Method};

use crate::config::{Config, ProcessConfig, Signal};

mod body;
mod control;
mod cycle;
mod events;
mod evidence;
mod loops;
mod ops;
mod parse;
mod process;
mod reply;
mod serve;
mod signals;
mod status;
mod verdict;

use cycle::{Awaiting, Schedule};
use evidence::Evidence;
use process::{Kill, Proc};
use reply::BuildFnv;
use serve::Tokens;
use verdict::SiteBudget;

pub use crate::identity::{ExitCheck, PinOutcome, SignalOutcome, Verifier};
pub use body::Body;
pub use events::{Event, EventKind, Severity};
pub use loops::{LoopCounts, LoopMetrics};
pub use ops::{KillReason, RttHistogram, Suppressed, LOG_LEN, RTT_BOUNDS};
pub use status::{MetricsSnapshot, ProcessMetrics, STATUS_PAGE};

/// Which of COPS's connections a message belongs to (docs/cops.md, "Connections").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Heartbeats out; replies and probes in (subscribed to `ourUri/heartbeat`
    /// and the probe URI only, so floods elsewhere under `ourUri` never reach it).
    Heartbeat,
    /// Probes out; nothing in.
    Probe,
    /// Everything else: `get ourUri/...` in, answers, stats and events out.
    Serve,
}

/// A message for the runtime to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The connection to send it on.
    pub via: Via,
    /// Method.
    pub method: Method,
    /// Target URI.
    pub uri: Arc<str>,
    /// Reply URI, if any.
    pub replyto: Option<Arc<str>>,
    /// Body (JSON text; inline when small).
    pub body: Body,
}

/// Something the runtime must do with the OS; each has an answer method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
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
    /// Note the scheduler times of the pinned identity of `pid` (its first
    /// missed heartbeat of a series): a later [`Action::Signal`] is held when
    /// the process was starved of CPU since (no answer).
    Watch {
        /// Process index.
        process: usize,
        /// The pinned PID.
        pid: u32,
    },
    /// Check whether the pinned identity of `pid` exited (answer: [`Engine::exit_result`]).
    CheckExit {
        /// Process index.
        process: usize,
        /// The pinned PID.
        pid: u32,
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

/// The rare timers. Round starts and deadlines, the frequent ones, need no
/// heap: starts follow a fixed grid ([`Schedule`]) and deadlines come due in
/// the order the rounds started (a FIFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Did a signalled process exit (escalation, fault)?
    KillCheck,
    /// A probe did not come back in time.
    ProbeTimeout,
    /// Time for a periodic probe.
    Probe,
    /// The site kill budget may have room for a deferred kill.
    SiteBudget,
    /// Publish the next part of the summary and stats.
    Briefing,
    /// A maintenance inhibit may have run out.
    InhibitEnd,
}

/// (when, what, process index or probe seq, sequence number).
type Timer = Reverse<(Instant, Kind, u32, u64)>;

/// The COPS engine (see the module documentation for the calling order).
#[derive(Debug)]
pub struct Engine {
    /// The configuration in force.
    cfg: Arc<Config>,
    /// Every configured process, in config order (indices are process ids).
    procs: Vec<Proc>,
    /// Reply URI to process index: one hash lookup per reply.
    by_reply: HashMap<Arc<str>, u32, BuildFnv>,
    /// Pinned PID to process index: a PID is pinned for one process only.
    pinned_by: HashMap<u32, u32>,
    /// The rare timers (kill checks, probes, briefings).
    timers: BinaryHeap<Timer>,
    /// Round starts on a fixed grid.
    schedule: Schedule,
    /// Position of each process in the schedule (u32::MAX: not heartbeated).
    positions: Vec<u32>,
    /// Open rounds' deadlines (instant, process, round seq), in start order.
    deadlines: VecDeque<(Instant, u32, u64)>,
    /// Rounds that missed their deadline, waiting for the probe that says
    /// whether the bus was sound (a miss) or not (void).
    awaiting: VecDeque<Awaiting>,
    /// Starts and deadlines that could bring a verdict: the runtime wakes for
    /// these exactly instead of at its next coalesced tick (stale entries only
    /// cost a wakeup).
    urgent: BinaryHeap<Reverse<Instant>>,
    /// Outputs waiting for the driver.
    transmits: VecDeque<Transmit>,
    /// OS actions waiting for the driver.
    actions: VecDeque<Action>,
    /// Events waiting for the driver.
    events: VecDeque<Event>,
    /// Probes, lag and the disturbances that void rounds; stall episodes.
    evidence: Evidence,
    /// The site-wide kill budget (`maxKillsPerWindow`) and its queue.
    site: SiteBudget,
    /// The rate limit on serving `get ourUri/...`.
    serve_tokens: Tokens,
    /// COPS's own PID: never accepted from a reply.
    own_pid: u32,
    /// When the engine was created (uptime; wall-clock conversion).
    started: Instant,
    /// Wall-clock time at `started`.
    wall_at_start: SystemTime,
    /// Whether the driver has its bus connections.
    connected: bool,
    /// Bumped on every connect/disconnect: rounds of an older epoch are void.
    epoch: u64,
    /// Next process of the briefing being published.
    briefing_cursor: usize,
    /// When the current briefing started.
    briefing_round: Instant,
    /// `ourUri/summary`.
    summary_uri: Arc<str>,
    /// `ourUri/heartbeat`: nothing under it is served.
    heartbeat_prefix: Arc<str>,
    /// Events concerning no single process (stalls, the bus), for `cops why`.
    site_log: ops::EventLog,
    /// Kills decided but not made, by [`Suppressed`] reason.
    suppressed: [u64; Suppressed::ALL.len()],
    /// The worst recent lag of the driver's loop (`cops_loop_lag_seconds`).
    lag: ops::LagWindow,
    /// The users (as the broker stamps them) whose control requests are taken.
    control_users: Vec<String>,
    /// Numbers inhibits, so a stale expiry timer is ignored.
    inhibit_seq: u64,
    /// The process of the last event (whose log entry `event_pid` completes).
    last_event_proc: Option<usize>,
    /// The briefing's text buffer, kept between parts.
    scratch: String,
}

impl Engine {
    /// A new engine at `now`; `wall` is the wall-clock time at `now` (for
    /// `last_confirmed_alive`), `own_pid` COPS's own PID (never accepted from a
    /// reply; it also names COPS's probe URI). Starts disconnected: call
    /// [`set_connected`](Self::set_connected).
    pub fn new(cfg: Config, now: Instant, wall: SystemTime, own_pid: u32) -> Engine {
        let cfg = Arc::new(cfg);
        // Spread the rounds over the period so they do not burst at one instant.
        let order: Vec<u32> = (0..cfg.processes.len() as u32)
            .filter(|&i| cfg.processes[i as usize].required)
            .collect();
        let mut positions = vec![u32::MAX; cfg.processes.len()];
        for (k, &i) in order.iter().enumerate() {
            positions[i as usize] = k as u32;
        }
        let mut e = Engine {
            procs: Vec::with_capacity(cfg.processes.len()),
            by_reply: HashMap::with_capacity_and_hasher(cfg.processes.len(), BuildFnv),
            pinned_by: HashMap::new(),
            timers: BinaryHeap::new(),
            deadlines: VecDeque::with_capacity(order.len()),
            awaiting: VecDeque::new(),
            positions,
            urgent: BinaryHeap::new(),
            schedule: Schedule::new(order, now, cfg.heartbeat),
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            evidence: Evidence::new(&cfg, own_pid, now, wall),
            site: SiteBudget::default(),
            serve_tokens: Tokens::new(now),
            own_pid,
            started: now,
            wall_at_start: wall,
            connected: false,
            epoch: 0,
            briefing_cursor: 0,
            briefing_round: now + cfg.briefing,
            summary_uri: format!("{}/summary", cfg.our_uri).into(),
            heartbeat_prefix: format!("{}/heartbeat", cfg.our_uri).into(),
            site_log: ops::EventLog::default(),
            suppressed: [0; Suppressed::ALL.len()],
            lag: ops::LagWindow::default(),
            control_users: cfg
                .control_users
                .clone()
                .unwrap_or_else(|| vec!["root".into()]),
            inhibit_seq: 0,
            last_event_proc: None,
            scratch: String::with_capacity(1024),
            cfg: cfg.clone(),
        };
        for p in &cfg.processes {
            e.add_process(p, now);
        }
        e.timers
            .push(Reverse((now + cfg.briefing, Kind::Briefing, 0, 0)));
        let probe = now + e.evidence.interval();
        e.timers.push(Reverse((probe, Kind::Probe, 0, 0)));
        e
    }

    fn add_process(&mut self, p: &ProcessConfig, now: Instant) {
        let proc = Proc::new(p, &self.cfg.our_uri, now);
        self.by_reply
            .insert(proc.reply_uri.clone(), self.procs.len() as u32);
        self.procs.push(proc);
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

    /// Whether a bus or host stall is in progress.
    pub fn stalled(&self) -> bool {
        self.evidence.stalled()
    }

    /// The URI COPS's probes travel on (`ourUri/probe/<COPS's pid>`): the
    /// heartbeat connection subscribes to it.
    pub fn probe_uri(&self) -> &str {
        self.evidence.uri()
    }

    /// The complete subscription set of each connection that receives (one
    /// `sub` each, resent whole on every reconnect).
    pub fn subscriptions(&self, via: Via) -> Vec<String> {
        match via {
            Via::Heartbeat => vec![
                self.heartbeat_prefix.to_string(),
                self.evidence.uri().to_owned(),
            ],
            Via::Serve => vec![self.cfg.our_uri.clone()],
            Via::Probe => Vec::new(),
        }
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

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next OS action to perform.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event to log (and to post when [`Event::post`] is set).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The bus connections went up or down. Rounds sent before a reconnect,
    /// or judged while it is down, are void: not misses.
    pub fn set_connected(&mut self, now: Instant, up: bool) {
        if up == self.connected {
            return;
        }
        self.connected = up;
        self.epoch += 1;
        if !up {
            self.transmits.clear();
            self.evidence.disconnected();
            self.void_awaiting(now);
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

    /// COPS itself ran late: its loop meant to wake at `from` and woke at
    /// `to`. Past the lag bound (the reply deadline), rounds overlapping
    /// `from..to` are void and a stall episode starts.
    pub fn lagged(&mut self, from: Instant, to: Instant) {
        let started = self.started;
        self.lag
            .note(started, to, to.saturating_duration_since(from));
        self.note_lag(from, to);
    }

    /// Handles every timer due at `now`.
    /// At one instant, deadlines come before round starts, then the rare timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.urgent.peek().is_some_and(|Reverse(t)| *t <= now) {
            self.urgent.pop();
        }
        let mut probe = false;
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
                    probe |= self.on_deadline(now, t, i as usize, seq);
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
                        Kind::ProbeTimeout => self.on_probe_timeout(now, seq),
                        Kind::Probe => probe |= self.on_probe_timer(now),
                        Kind::SiteBudget => self.on_site_budget(now),
                        Kind::Briefing => self.on_briefing(now),
                        Kind::InhibitEnd => self.on_inhibit_end(now, idx as usize, seq),
                    }
                }
                _ => break,
            }
        }
        if probe {
            // One probe covers every deadline handled at this instant.
            self.send_probe(now);
        }
        self.check_calm(now);
    }

    /// Handles a message received on connection `via`: replies and probes on
    /// the heartbeat connection, requests on `ourUri` on the serving one;
    /// anything else is ignored. A reply's PID is checked and pinned through
    /// `verifier` right here, before the next message is looked at.
    pub fn handle_message(
        &mut self,
        now: Instant,
        via: Via,
        msg: &Message<'_>,
        verifier: &mut dyn Verifier,
    ) {
        match via {
            Via::Heartbeat => {
                if msg.method() != Some(Method::Set) {
                    return;
                }
                if let Some(&i) = self.by_reply.get(msg.uri) {
                    self.on_reply(now, i as usize, msg, verifier);
                } else if msg.uri == self.evidence.uri() {
                    self.on_probe(now, msg.body);
                }
            }
            Via::Serve => {
                // Ours by the broker's rule (empty segments do not count), so
                // `get /cops//summary` is answered as `get /cops/summary`.
                let ours = fims::uri::routes(&self.cfg.our_uri, msg.uri);
                // Copies of replies and probes (the serving connection's
                // subscription covers them too) are the heartbeat connection's.
                let heartbeat = fims::uri::routes(&self.heartbeat_prefix, msg.uri)
                    || fims::uri::routes(self.evidence.probe_prefix(), msg.uri);
                if ours && !heartbeat {
                    self.serve(now, msg);
                }
            }
            Via::Probe => {}
        }
    }

    /// Sets the PID of the last event (signals and exits concern a given PID,
    /// not necessarily the process's current one).
    fn event_pid(&mut self, pid: u32) {
        if let Some(e) = self.events.back_mut() {
            e.pid = Some(pid);
            let log = match self.last_event_proc.and_then(|i| self.procs.get_mut(i)) {
                Some(p) => &mut p.ops.log,
                None => &mut self.site_log,
            };
            if let Some(l) = log.last_mut() {
                l.pid = Some(pid);
            }
        }
    }

    /// Adds the numbers that decided the last event of process `i` (a JSON
    /// object's text) to its decision log entry.
    fn event_data(&mut self, i: usize, data: String) {
        if let Some(l) = self.procs[i].ops.log.last_mut() {
            l.data = Some(data.into());
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
        // Every event also goes to the decision log of its process (or the site's).
        let entry = ops::LogEntry {
            at: now,
            kind,
            severity,
            pid,
            message: message.as_str().into(),
            data: None,
        };
        match i.and_then(|i| self.procs.get_mut(i)) {
            Some(p) => p.ops.log.push(entry),
            None => self.site_log.push(entry),
        }
        self.last_event_proc = i;
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
