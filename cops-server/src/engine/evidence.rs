//! Evidence that the bus and COPS itself were sound during a round, so that a
//! missed deadline is blamed on the process only when nothing else can explain
//! it (docs/cops.md, "Stalls").
//!
//! COPS sends itself a probe through the broker, from its probe connection to
//! its heartbeat connection (so it works on a broker that never echoes to the
//! sender): at every instant deadlines are judged, and every quarter period
//! besides. Probes travel the same queue in the broker as the replies, in
//! order, so:
//! - a probe that takes longer than the bound (half the reply deadline), or
//!   never comes, shows the broker paused or the queue to COPS backed up:
//!   the interval from its sending to its arrival is *disturbed*;
//! - a probe that arrives after a later one was seen was dropped (the broker
//!   sheds messages for COPS): the interval from its sending to the later
//!   one's arrival is disturbed;
//! - COPS's own loop running late by more than the reply deadline (the runtime
//!   reports it, and a deadline handled late shows it) is disturbed as well.
//!   Shorter lags are harmless: replies carry the kernel's arrival times, and
//!   a backlog COPS leaves in the broker shows in the probe.
//!
//! A round without a good reply waits for the probe sent at its deadline; it is
//! a miss only if that probe comes back in time and no disturbance overlaps the
//! round. Otherwise it is void: no miss, for every process alike, however many
//! are monitored. A stall episode starts with the first disturbance (one alarm)
//! and ends (one "over" event) after a whole hang window (`allowance x period`,
//! at least a second) without any, so a bus that stutters for a while is one
//! stall, not many.
//! Rounds that do not overlap a disturbance count meanwhile.

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fims::Method;

use super::serve::iso8601;
use super::{Engine, EventKind, Kind, Severity, Transmit, Via};
use crate::config::Config;

/// Disturbances older than this many periods are forgotten.
const KEEP_PERIODS: u32 = 4;

/// A time the bus or COPS was not sound: `end` is `None` while it lasts.
#[derive(Debug, Clone, Copy)]
struct Disturbance {
    start: Instant,
    end: Option<Instant>,
}

/// A stall episode: from the first disturbance to a full period without one.
#[derive(Debug, Clone, Copy)]
struct Episode {
    since: Instant,
    voided: u64,
    /// Disturbances by cause: late or overdue probes, lost probes, COPS lag;
    /// and the worst probe latency and lag seen.
    late: u32,
    lost: u32,
    lag: u32,
    worst_probe: Duration,
    worst_lag: Duration,
}

/// What caused a disturbance.
#[derive(Debug, Clone, Copy)]
enum Cause {
    /// A probe took this long (or had not come back after it).
    Late(Duration),
    /// A probe was dropped.
    Lost,
    /// COPS ran this late.
    Lag(Duration),
}

/// The probe, the disturbances it and the lag reports found, and stall episodes.
#[derive(Debug)]
pub(super) struct Evidence {
    /// `ourUri/probe/<COPS's pid>`.
    uri: Arc<str>,
    /// `ourUri/probe`.
    prefix: Arc<str>,
    /// A random number of this COPS run: probes not carrying it are not ours.
    nonce: u64,
    /// Sequence number of the next probe.
    next_seq: u64,
    /// Probes sent and not yet seen: (seq, when sent).
    in_flight: VecDeque<(u64, Instant)>,
    /// A probe slower than this disturbs: half the reply deadline.
    bound: Duration,
    /// A COPS lag longer than this disturbs: the reply deadline.
    lag_bound: Duration,
    /// Between periodic probes.
    interval: Duration,
    /// The period (disturbance memory).
    period: Duration,
    /// Calm needed before "stall over": `heartbeatErrorAllowance x period`,
    /// and at least a second (a flood makes a bus stutter for a while).
    calm: Duration,
    /// Recent disturbances, oldest first.
    disturbances: VecDeque<Disturbance>,
    /// The stall in progress, if any.
    episode: Option<Episode>,
    /// Stall episodes so far (summary `stalls`).
    stalls: u64,
    /// Rounds void so far (summary `void_rounds`).
    void_rounds: u64,
    /// Time spent in stall episodes that are over (`cops_stall_seconds_total`).
    stall_time: Duration,
    /// When COPS started, for "never answered since COPS started at ...".
    started_wall: SystemTime,
}

impl Evidence {
    pub(super) fn new(cfg: &Config, own_pid: u32, _now: Instant, wall: SystemTime) -> Evidence {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(own_pid);
        Evidence {
            uri: format!("{}/probe/{own_pid}", cfg.our_uri).into(),
            prefix: format!("{}/probe", cfg.our_uri).into(),
            nonce: h.finish() >> 11, // exact as a JSON number in any reader
            next_seq: 1,
            in_flight: VecDeque::new(),
            bound: (cfg.reply_deadline / 2).max(Duration::from_millis(1)),
            lag_bound: cfg.reply_deadline,
            interval: (cfg.heartbeat / 4).max(Duration::from_millis(5)),
            period: cfg.heartbeat,
            calm: cfg.kill_window().max(Duration::from_secs(1)),
            disturbances: VecDeque::new(),
            episode: None,
            stalls: 0,
            void_rounds: 0,
            stall_time: Duration::ZERO,
            started_wall: wall,
        }
    }

    /// Between periodic probes.
    pub(super) fn interval(&self) -> Duration {
        self.interval
    }

    pub(super) fn uri(&self) -> &str {
        &self.uri
    }

    pub(super) fn probe_prefix(&self) -> &str {
        &self.prefix
    }

    /// The lag past which COPS counts as stalled: the reply deadline.
    pub(super) fn lag_bound(&self) -> Duration {
        self.lag_bound
    }

    /// The sequence number the next probe will carry.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub(super) fn stalled(&self) -> bool {
        self.episode.is_some()
    }

    pub(super) fn stalls(&self) -> u64 {
        self.stalls
    }

    pub(super) fn void_rounds(&self) -> u64 {
        self.void_rounds
    }

    /// Time spent stalled so far, the episode in progress included.
    pub(super) fn stall_time(&self, now: Instant) -> Duration {
        let open = self
            .episode
            .map(|e| now.saturating_duration_since(e.since))
            .unwrap_or_default();
        self.stall_time + open
    }

    /// When the stall in progress began.
    pub(super) fn stalled_since(&self) -> Option<Instant> {
        self.episode.map(|e| e.since)
    }

    pub(super) fn count_void(&mut self) {
        self.void_rounds += 1;
        if let Some(e) = &mut self.episode {
            e.voided += 1;
        }
    }

    /// `2026-11-26T13:28:41.123Z`: when COPS started.
    pub(super) fn started_at(&self) -> String {
        iso8601(self.started_wall)
    }

    /// Whether a disturbance overlaps `from..=to`.
    pub(super) fn disturbed(&self, from: Instant, to: Instant) -> bool {
        self.disturbances
            .iter()
            .any(|d| d.start <= to && d.end.is_none_or(|e| e >= from))
    }

    /// The bus went away: probes in flight will never come.
    pub(super) fn disconnected(&mut self) {
        self.in_flight.clear();
        self.close_open(None);
    }

    /// Records a disturbance; returns whether it starts a stall episode.
    fn disturb(&mut self, start: Instant, end: Option<Instant>, cause: Cause) -> bool {
        self.disturbances.push_back(Disturbance { start, end });
        let new = self.episode.is_none();
        let ep = self.episode.get_or_insert(Episode {
            since: start,
            voided: 0,
            late: 0,
            lost: 0,
            lag: 0,
            worst_probe: Duration::ZERO,
            worst_lag: Duration::ZERO,
        });
        match cause {
            Cause::Late(d) => {
                ep.late += 1;
                ep.worst_probe = ep.worst_probe.max(d);
            }
            Cause::Lost => ep.lost += 1,
            Cause::Lag(d) => {
                ep.lag += 1;
                ep.worst_lag = ep.worst_lag.max(d);
            }
        }
        self.stalls += u64::from(new);
        new
    }

    /// Ends the open disturbance (if any) at `at` (`None`: drop it).
    fn close_open(&mut self, at: Option<Instant>) {
        if let Some(d) = self.disturbances.iter_mut().find(|d| d.end.is_none()) {
            match at {
                Some(t) => d.end = Some(t),
                None => d.end = Some(d.start),
            }
        }
    }

    fn forget_old(&mut self, now: Instant) {
        let keep = self.period * KEEP_PERIODS + self.bound + self.calm;
        while self
            .disturbances
            .front()
            .is_some_and(|d| d.end.is_some_and(|e| e + keep < now))
        {
            self.disturbances.pop_front();
        }
    }
}

impl Engine {
    /// Sends a probe (on the probe connection, to the heartbeat connection).
    pub(super) fn send_probe(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        let ev = &mut self.evidence;
        let seq = ev.next_seq;
        ev.next_seq += 1;
        ev.in_flight.push_back((seq, now));
        let body = format!(r#"{{"seq":{seq},"nonce":{}}}"#, ev.nonce).into_bytes();
        self.transmits.push_back(Transmit {
            via: Via::Probe,
            method: Method::Set,
            uri: ev.uri.clone(),
            replyto: None,
            body: body.into(),
        });
        let timeout = now + ev.bound;
        self.timers
            .push(Reverse((timeout, Kind::ProbeTimeout, 0, seq)));
    }

    /// The periodic probe timer; returns true (a probe is due now).
    pub(super) fn on_probe_timer(&mut self, now: Instant) -> bool {
        let next = now + self.evidence.interval;
        self.timers.push(Reverse((next, Kind::Probe, 0, 0)));
        self.connected
    }

    /// A probe arrived at `now` (its kernel receive time).
    pub(super) fn on_probe(&mut self, now: Instant, body: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Probe {
            seq: u64,
            nonce: u64,
        }
        let Ok(p) = serde_json::from_slice::<Probe>(body) else {
            return;
        };
        if p.nonce != self.evidence.nonce {
            return; // not ours (another COPS's, or forged)
        }
        let mut sent_at = None;
        let mut lost = 0usize;
        while let Some(&(seq, sent)) = self.evidence.in_flight.front() {
            if seq > p.seq {
                break;
            }
            self.evidence.in_flight.pop_front();
            if seq == p.seq {
                sent_at = Some(sent);
            } else {
                // Overtaken: dropped on the way (the broker shed it for COPS).
                lost += 1;
                if self.evidence.disturb(sent, Some(now), Cause::Lost) {
                    self.stall_alarm(
                        sent,
                        format!("a probe through the broker was lost (probe {seq}: the broker dropped messages for COPS)"),
                    );
                }
            }
        }
        let Some(sent) = sent_at else {
            return; // seen already, or from before a reconnect
        };
        let latency = now.saturating_duration_since(sent);
        let sound = latency <= self.evidence.bound && lost == 0;
        if latency > self.evidence.bound {
            self.evidence.close_open(Some(now));
            if self.evidence.disturb(sent, Some(now), Cause::Late(latency)) {
                self.stall_alarm(
                    sent,
                    format!(
                        "a probe through the broker took {} ms (bound {} ms)",
                        latency.as_millis(),
                        self.evidence.bound.as_millis()
                    ),
                );
            }
        } else {
            self.evidence.close_open(Some(now));
        }
        self.resolve_awaiting(now, p.seq, sent, sound);
        self.check_calm(now);
    }

    /// Probe `seq` is overdue: the bus is stalled from its sending on (until
    /// a probe comes back in time); the rounds waiting for it are void.
    pub(super) fn on_probe_timeout(&mut self, now: Instant, seq: u64) {
        let Some(&(_, sent)) = self.evidence.in_flight.iter().find(|(s, _)| *s == seq) else {
            return; // it came
        };
        let open = self.evidence.disturbances.iter().any(|d| d.end.is_none());
        let cause = Cause::Late(self.evidence.bound);
        if !open && self.evidence.disturb(sent, None, cause) {
            self.stall_alarm(
                sent,
                format!(
                    "a probe through the broker did not come back within {} ms",
                    self.evidence.bound.as_millis()
                ),
            );
        }
        self.resolve_awaiting(now, seq, sent, false);
    }

    /// COPS ran late from `from` to `to`.
    pub(super) fn note_lag(&mut self, from: Instant, to: Instant) {
        let late = to.saturating_duration_since(from);
        if late <= self.evidence.lag_bound {
            return;
        }
        if self.evidence.disturb(from, Some(to), Cause::Lag(late)) {
            self.stall_alarm(
                from,
                format!("COPS itself ran {} ms late", late.as_millis()),
            );
        }
    }

    fn stall_alarm(&mut self, at: Instant, cause: String) {
        let msg = format!(
            "bus or host stall: {cause}; rounds that overlap it are void (not misses) until it passes"
        );
        self.event(at, Severity::Alarm, EventKind::Stall, None, msg, true);
    }

    /// Ends the stall episode after a hang window without a disturbance.
    pub(super) fn check_calm(&mut self, now: Instant) {
        self.evidence.forget_old(now);
        let Some(ep) = self.evidence.episode else {
            return;
        };
        let ev = &self.evidence;
        let last_end = ev.disturbances.iter().map(|d| d.end).try_fold(
            ep.since,
            |acc, e| e.map(|e| acc.max(e)), // None: one is still open
        );
        let Some(last_end) = last_end else {
            return;
        };
        if now < last_end + ev.calm {
            return;
        }
        self.evidence.episode = None;
        let took = last_end.saturating_duration_since(ep.since);
        self.evidence.stall_time += took;
        let ms = took.as_millis();
        let msg = format!(
            "bus or host stall over after {ms} ms ({} rounds void; {} late probes (worst {} ms), {} lost, {} COPS lags (worst {} ms))",
            ep.voided,
            ep.late,
            ep.worst_probe.as_millis(),
            ep.lost,
            ep.lag,
            ep.worst_lag.as_millis()
        );
        self.event(now, Severity::Status, EventKind::StallOver, None, msg, true);
    }
}
