//! The state COPS keeps per monitored process.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cycle::Round;
use super::loops::LoopWatch;
use super::ops::{KillReason, Ops};
use super::reply::Rejects;
use super::State;
use crate::config::{ProcessConfig, Signal};
use crate::identity::Unchecked;

/// A signal in flight: escalation and exit checks follow it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kill {
    pub(super) pid: u32,
    pub(super) signal: Signal,
    pub(super) sent: Instant,
    pub(super) seq: u64,
    /// Why it is sent (stats `last_kill`, metric `cops_kills_total`).
    pub(super) reason: KillReason,
}

/// Per-process statistics (docs/protocol/cops.md "What COPS serves").
#[derive(Debug, Clone, Default)]
pub(super) struct Stats {
    pub(super) last_rt: Option<Duration>,
    pub(super) max_rt: Duration,
    pub(super) sum_rt: Duration,
    pub(super) n_rt: u64,
    pub(super) total_restarts: u64,
    pub(super) cops_restarts: u64,
    pub(super) last_alive: Option<Instant>,
    pub(super) versions: [String; 3],
    /// Hash of the version fields of the last reply (to skip comparing strings).
    pub(super) versions_hash: u64,
}

impl Stats {
    /// Records a good reply: response time, when, and the versions it carried
    /// (`None` fields: unchanged since the last reply).
    pub(super) fn record(
        &mut self,
        rt: Duration,
        at: Instant,
        versions: [Option<String>; 3],
        versions_hash: u64,
    ) {
        self.last_rt = Some(rt);
        self.max_rt = self.max_rt.max(rt);
        self.sum_rt += rt;
        self.n_rt += 1;
        self.last_alive = Some(at);
        for (slot, v) in self.versions.iter_mut().zip(versions) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        self.versions_hash = versions_hash;
    }
}

#[derive(Debug)]
pub(super) struct Proc {
    /// Its configuration (name, URI, kill settings).
    pub(super) cfg: ProcessConfig,
    /// `ourUri/heartbeat/<name>`: replies arrive here (the `by_reply` key).
    pub(super) reply_uri: Arc<str>,
    /// `ourUri/stats/<name>`: where its stats are published.
    pub(super) stats_uri: Arc<str>,
    /// `<uri>/cops/cops_heartbeat`: step 1 of a round sets the counter here.
    pub(super) hb_uri: Arc<str>,
    /// `<uri>/cops`: step 2 of a round asks here.
    pub(super) get_uri: Arc<str>,
    /// What COPS believes about it (stats, verdict events).
    pub(super) state: State,
    /// The counter H of the current round; advances only on a success.
    pub(super) h: u64,
    /// The open round, if any (one at a time per process).
    pub(super) round: Option<Round>,
    /// Sequence number for rounds and kill checks, so stale timers are ignored.
    pub(super) seq: u64,
    /// Consecutive misses (reset by a success; void rounds leave it alone).
    pub(super) misses: u32,
    /// A round start came while the last round was still open.
    pub(super) deferred: bool,
    /// Start of the silence `hangTimeAllowanceMS` is measured from (moved
    /// past void rounds: time the bus or COPS stalled does not count).
    pub(super) miss_base: Instant,
    /// When the last good reply came: the verdict says how long ago, truly.
    pub(super) last_good: Option<Instant>,
    /// The verified PID of the current incarnation (pinned by the kill layer);
    /// kept in the stats even when a signal to it is refused.
    pub(super) pid: Option<u32>,
    /// Real and effective uid of `pid` when pinned: replies naming `pid` must
    /// come from that user.
    pub(super) uids: (u32, u32),
    /// Identity checks that could not be made when `pid` was pinned.
    pub(super) unchecked: Vec<Unchecked>,
    /// `pid` is known to be the process that answered: it started before the
    /// round that pinned it was sent, or it answered a later round. Only then
    /// is it a kill target (a reply whose sender exited and whose PID went to
    /// another process before COPS read it names a process that never
    /// answers, so it is never confirmed).
    pub(super) confirmed: bool,
    /// The round in which `pid` was pinned.
    pub(super) pinned_in: u64,
    /// Counts PID changes: one kill per incarnation.
    pub(super) incarnation: u64,
    /// Response times, restarts, versions (served and published).
    pub(super) stats: Stats,
    /// The incarnation COPS last signalled (never twice the same one).
    pub(super) killed_incarnation: Option<u64>,
    /// The signal in flight: escalation and exit checks follow it.
    pub(super) kill: Option<Kill>,
    /// Times of recent kills, for `maxKills` in `killWindowMS`.
    pub(super) kills: VecDeque<Instant>,
    /// The kill budget is spent: alarms only (one fault event when it starts).
    pub(super) quarantined: bool,
    /// Waiting in the site kill budget's queue.
    pub(super) waiting_site: bool,
    /// Rejected replies by kind, and the rate limit of their log lines.
    pub(super) rejects: Rejects,
    /// The last refused PID, so a repeated bad PID raises one alarm, not many.
    pub(super) rejected_pid: Option<i64>,
    /// The pinned PID a conflict alarm was raised for (one alarm per conflict).
    pub(super) conflict: Option<u32>,
    /// The work loop's beats, figures and alarm.
    pub(super) loops: LoopWatch,
    /// What operators see: RTT percentiles, kills, restarts, the decision
    /// log, a maintenance inhibit (`ops`).
    pub(super) ops: Ops,
}

impl Proc {
    /// A process as configured, not heard from yet; `our_uri` names its URIs.
    pub(super) fn new(p: &ProcessConfig, our_uri: &str, now: Instant) -> Proc {
        Proc {
            cfg: p.clone(),
            reply_uri: format!("{our_uri}/heartbeat/{}", p.name).into(),
            stats_uri: format!("{our_uri}/stats/{}", p.name).into(),
            hb_uri: format!("{}/cops/cops_heartbeat", p.uri).into(),
            get_uri: format!("{}/cops", p.uri).into(),
            state: State::Unknown,
            h: 1,
            round: None,
            seq: 0,
            misses: 0,
            deferred: false,
            miss_base: now,
            last_good: None,
            pid: None,
            uids: (u32::MAX, u32::MAX),
            unchecked: Vec::new(),
            confirmed: false,
            pinned_in: 0,
            incarnation: 0,
            stats: Stats::default(),
            killed_incarnation: None,
            kill: None,
            kills: VecDeque::new(),
            quarantined: false,
            waiting_site: false,
            rejects: Rejects::default(),
            rejected_pid: None,
            conflict: None,
            loops: LoopWatch::default(),
            ops: Ops::default(),
        }
    }
}
