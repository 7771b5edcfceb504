//! What COPS keeps for its operators (docs/cops.md, "Operating COPS"), all in
//! fixed or bounded memory per process:
//! - [`RttWindow`]: response times of the last minute, for p50/p99 (a
//!   log-scale histogram per 15 s slice, four slices);
//! - [`RttHistogram`]: response times since COPS started, in the fixed
//!   buckets of the `cops_heartbeat_rtt_seconds` histogram;
//! - [`EventLog`]: the last [`LOG_LEN`] events (the decision log `cops why` reads);
//! - [`Ops`]: those plus misses, kills by signal and reason, the last kill and
//!   restart, and a maintenance inhibit.
//!
//! Nothing here reads a clock: every method takes the instants it needs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::events::{EventKind, Severity};
use crate::config::Signal;

/// Events kept per process (and for the site) for `cops why`.
pub const LOG_LEN: usize = 64;

/// Length of one slice of the RTT window.
pub const RTT_SLICE: Duration = Duration::from_secs(15);
/// Slices in the RTT window: the window covers the current slice and the three
/// before it (45 to 60 s).
const RTT_SLICES: usize = 4;
/// Buckets per octave of the RTT window (a bucket is at most 19% wide).
const SUB: u32 = 4;
/// Octaves of the RTT window above [`MIN_US`]: 16 us to 1.05 s; longer
/// replies share the overflow bucket, bounded by the slice's maximum.
const OCTAVES: u32 = 16;
/// Buckets of the RTT window, the last being the overflow.
const BUCKETS: usize = (SUB * OCTAVES) as usize + 1;
/// Lower bound of the first bucket, in microseconds (smaller values count there).
const MIN_US: u64 = 16;

/// Upper bounds (seconds) of the `cops_heartbeat_rtt_seconds` buckets (+Inf added).
pub const RTT_BOUNDS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Index of the slice `at` falls in, counted from `started`.
pub(super) fn rtt_slice(started: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(started).as_secs() / RTT_SLICE.as_secs()
}

/// Which bucket of the RTT window holds `us` microseconds.
fn bucket(us: u64) -> usize {
    if us < MIN_US {
        return 0;
    }
    let log = 63 - us.leading_zeros(); // >= 4
    let octave = log - 4;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let sub = ((us >> (log - 2)) & 3) as u32;
    (octave * SUB + sub) as usize
}

/// Lower bound of bucket `b`, in microseconds.
fn lower(b: usize) -> f64 {
    let (octave, sub) = (b as u32 / SUB, b as u32 % SUB);
    (MIN_US as f64) * 2f64.powi(octave as i32) * (1.0 + f64::from(sub) / f64::from(SUB))
}

/// One slice of the window.
#[derive(Debug, Clone)]
struct Slice {
    /// Slice number + 1 (0: never used).
    epoch: u64,
    counts: [u16; BUCKETS],
    /// Longest reply of the slice, microseconds (bounds the overflow bucket).
    max_us: u32,
}

/// Response times of the last minute in fixed memory (about 540 bytes).
#[derive(Debug, Clone)]
pub(super) struct RttWindow {
    slices: [Slice; RTT_SLICES],
}

impl Default for RttWindow {
    fn default() -> RttWindow {
        let empty = Slice {
            epoch: 0,
            counts: [0; BUCKETS],
            max_us: 0,
        };
        RttWindow {
            slices: std::array::from_fn(|_| empty.clone()),
        }
    }
}

impl RttWindow {
    /// Records a response time in slice `slice` (see [`rtt_slice`]).
    pub(super) fn record(&mut self, slice: u64, rt: Duration) {
        let s = &mut self.slices[(slice % RTT_SLICES as u64) as usize];
        if s.epoch != slice + 1 {
            s.epoch = slice + 1;
            s.counts = [0; BUCKETS];
            s.max_us = 0;
        }
        let us = u64::try_from(rt.as_micros()).unwrap_or(u64::MAX);
        let b = bucket(us);
        s.counts[b] = s.counts[b].saturating_add(1);
        s.max_us = s.max_us.max(u32::try_from(us).unwrap_or(u32::MAX));
    }

    /// The slices that belong to the window ending in slice `now`.
    fn live(&self, now: u64) -> impl Iterator<Item = &Slice> {
        // Epochs are slice numbers + 1, so 0 (never used) is never live.
        let oldest = (now + 1).saturating_sub(RTT_SLICES as u64 - 1).max(1);
        self.slices
            .iter()
            .filter(move |s| s.epoch >= oldest && s.epoch <= now + 1)
    }

    /// Replies in the window ending in slice `now`.
    pub(super) fn count(&self, now: u64) -> u64 {
        self.live(now)
            .flat_map(|s| s.counts.iter())
            .map(|&c| u64::from(c))
            .sum()
    }

    /// The `q` quantile (0..=1) of the window ending in slice `now`, in
    /// microseconds, interpolated within its bucket; `None` without replies.
    pub(super) fn quantile(&self, now: u64, q: f64) -> Option<f64> {
        let mut counts = [0u64; BUCKETS];
        let mut max_us = 0u32;
        for s in self.live(now) {
            for (c, &n) in counts.iter_mut().zip(&s.counts) {
                *c += u64::from(n);
            }
            max_us = max_us.max(s.max_us);
        }
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
        let mut below = 0u64;
        for (b, &c) in counts.iter().enumerate() {
            if c == 0 || ((below + c) as f64) < rank {
                below += c;
                continue;
            }
            let lo = lower(b);
            let hi = if b + 1 < BUCKETS {
                lower(b + 1)
            } else {
                f64::from(max_us).max(lo)
            };
            let frac = (rank - below as f64) / c as f64;
            return Some((lo + (hi - lo) * frac).min(f64::from(max_us)));
        }
        Some(f64::from(max_us))
    }
}

/// Response times since COPS started, in the buckets of [`RTT_BOUNDS`].
#[derive(Debug, Clone, Default)]
pub struct RttHistogram {
    /// Replies per bucket (not cumulative); the last is +Inf.
    pub counts: [u64; RTT_BOUNDS.len() + 1],
    /// Sum of all response times, seconds.
    pub sum: f64,
}

impl RttHistogram {
    fn record(&mut self, rt: Duration) {
        let s = rt.as_secs_f64();
        let b = RTT_BOUNDS
            .iter()
            .position(|&le| s <= le)
            .unwrap_or(RTT_BOUNDS.len());
        self.counts[b] += 1;
        self.sum += s;
    }

    /// Replies recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// One entry of a decision log.
#[derive(Debug, Clone)]
pub(super) struct LogEntry {
    pub(super) at: Instant,
    pub(super) kind: EventKind,
    pub(super) severity: Severity,
    /// The PID it concerns, if any.
    pub(super) pid: Option<u32>,
    /// The event's text (as logged and posted).
    pub(super) message: Box<str>,
    /// The numbers that decided it, as a JSON object's text, where there are any.
    pub(super) data: Option<Box<str>>,
}

/// The last [`LOG_LEN`] events, oldest first (allocated as events come).
#[derive(Debug, Clone, Default)]
pub(super) struct EventLog {
    entries: VecDeque<LogEntry>,
}

impl EventLog {
    pub(super) fn push(&mut self, e: LogEntry) {
        if self.entries.len() == LOG_LEN {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
    }

    /// The newest entry.
    pub(super) fn last_mut(&mut self) -> Option<&mut LogEntry> {
        self.entries.back_mut()
    }

    /// Oldest first.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = &LogEntry> {
        self.entries.iter()
    }

    pub(super) fn is_full(&self) -> bool {
        self.entries.len() == LOG_LEN
    }

    pub(super) fn oldest(&self) -> Option<Instant> {
        self.entries.front().map(|e| e.at)
    }
}

/// Why a signal was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// The process was declared hung.
    Hung,
    /// A signal other than SIGKILL did not end it in time.
    Escalation,
    /// Its work loop failed `loopToleranceBeats` beats in a row under
    /// `loopAction: "kill"` (deadline supervision).
    Loop,
}

impl KillReason {
    /// The spelling in stats and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            KillReason::Hung => "hung",
            KillReason::Escalation => "escalation",
            KillReason::Loop => "loop",
        }
    }
}

/// Why a kill COPS had decided on was not made (`cops_kills_suppressed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// A maintenance inhibit is in force.
    Inhibited = 0,
    /// The process's kill budget is spent.
    Quarantined = 1,
    /// Deferred by the site kill budget.
    SiteBudget = 2,
    /// The kill layer refused (the identity changed, exe mismatch, no permission).
    Refused = 3,
    /// `--dry-run`.
    DryRun = 4,
    /// The process was runnable but starved of CPU since its first miss.
    Starved = 5,
}

impl Suppressed {
    /// Every reason, in index order.
    pub const ALL: [Suppressed; 6] = [
        Suppressed::Inhibited,
        Suppressed::Quarantined,
        Suppressed::SiteBudget,
        Suppressed::Refused,
        Suppressed::DryRun,
        Suppressed::Starved,
    ];

    /// The spelling in stats and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Suppressed::Inhibited => "inhibited",
            Suppressed::Quarantined => "quarantined",
            Suppressed::SiteBudget => "site_budget",
            Suppressed::Refused => "refused",
            Suppressed::DryRun => "dry_run",
            Suppressed::Starved => "starved",
        }
    }
}

/// The last signal delivered to a process.
#[derive(Debug, Clone, Copy)]
pub(super) struct LastKill {
    pub(super) signal: Signal,
    pub(super) reason: KillReason,
    pub(super) pid: u32,
    pub(super) at: Instant,
}

/// A maintenance inhibit: COPS keeps heartbeating and reporting the process
/// but never signals it, until `until` or a resume.
#[derive(Debug, Clone)]
pub(super) struct Inhibit {
    pub(super) since: Instant,
    pub(super) until: Instant,
    pub(super) reason: Box<str>,
    /// The user the broker stamped on the request.
    pub(super) by: Box<str>,
    /// Matches the expiry timer to this inhibit.
    pub(super) seq: u64,
}

/// Per-process operator state.
#[derive(Debug, Clone, Default)]
pub(super) struct Ops {
    pub(super) rtt: RttWindow,
    pub(super) hist: RttHistogram,
    /// Real misses since COPS started (void rounds are not misses).
    pub(super) misses: u64,
    /// Signals delivered, by signal and reason.
    pub(super) kills: Vec<(Signal, KillReason, u64)>,
    pub(super) last_kill: Option<LastKill>,
    /// When the last restart (a new PID) was seen.
    pub(super) last_restart: Option<Instant>,
    pub(super) inhibit: Option<Inhibit>,
    pub(super) log: EventLog,
}

impl Ops {
    /// A good reply's response time, in slice `slice` of the window.
    pub(super) fn record_rtt(&mut self, slice: u64, rt: Duration) {
        self.rtt.record(slice, rt);
        self.hist.record(rt);
    }

    /// A signal was delivered.
    pub(super) fn killed(&mut self, signal: Signal, reason: KillReason, pid: u32, at: Instant) {
        match self
            .kills
            .iter_mut()
            .find(|(s, r, _)| *s == signal && *r == reason)
        {
            Some(k) => k.2 += 1,
            None => self.kills.push((signal, reason, 1)),
        }
        self.last_kill = Some(LastKill {
            signal,
            reason,
            pid,
            at,
        });
    }

    /// Signals delivered in all.
    pub(super) fn kills_total(&self) -> u64 {
        self.kills.iter().map(|k| k.2).sum()
    }

    /// The inhibit in force at `now`, if any.
    pub(super) fn inhibited(&self, now: Instant) -> Option<&Inhibit> {
        self.inhibit.as_ref().filter(|i| now < i.until)
    }
}

/// The worst lag of COPS's loop over the last 10 to 20 s, in fixed memory.
#[derive(Debug, Clone, Default)]
pub(super) struct LagWindow {
    /// (10 s slot number + 1, worst lag in it).
    slots: [(u64, Duration); 2],
}

/// Length of a [`LagWindow`] slot.
const LAG_SLOT: Duration = Duration::from_secs(10);

impl LagWindow {
    fn slot(started: Instant, at: Instant) -> u64 {
        at.saturating_duration_since(started).as_secs() / LAG_SLOT.as_secs() + 1
    }

    pub(super) fn note(&mut self, started: Instant, at: Instant, lag: Duration) {
        let n = Self::slot(started, at);
        let s = &mut self.slots[(n % 2) as usize];
        if s.0 != n {
            *s = (n, Duration::ZERO);
        }
        s.1 = s.1.max(lag);
    }

    pub(super) fn worst(&self, started: Instant, now: Instant) -> Duration {
        let n = Self::slot(started, now);
        self.slots
            .iter()
            .filter(|s| s.0 == n || s.0 + 1 == n)
            .map(|s| s.1)
            .max()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_the_range() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(16), 0);
        assert_eq!(bucket(19), 0);
        assert_eq!(bucket(20), 1);
        assert_eq!(bucket(32), 4);
        assert_eq!(bucket(1 << 20), BUCKETS - 1);
        let mut last = 0;
        for us in 0..2_000_000u64 {
            let b = bucket(us);
            assert!(b >= last);
            assert!(b == 0 || lower(b) <= us as f64, "{us} in {b}");
            if b + 1 < BUCKETS {
                assert!((us as f64) < lower(b + 1), "{us} in {b}");
            }
            last = b;
        }
    }

    #[test]
    fn quantiles_within_a_bucket_width() {
        let mut w = RttWindow::default();
        // 1..=1000 ms evenly: p50 ~ 500 ms, p99 ~ 990 ms.
        for ms in 1..=1000u64 {
            w.record(0, Duration::from_millis(ms));
        }
        let p50 = w.quantile(0, 0.5).unwrap() / 1000.0;
        let p99 = w.quantile(0, 0.99).unwrap() / 1000.0;
        assert!((p50 - 500.0).abs() < 500.0 * 0.2, "{p50}");
        assert!((p99 - 990.0).abs() < 990.0 * 0.2, "{p99}");
        assert_eq!(w.quantile(0, 1.0).unwrap(), 1_000_000.0);
        assert_eq!(w.count(0), 1000);
    }

    #[test]
    fn overflow_is_bounded_by_the_slowest_reply() {
        let mut w = RttWindow::default();
        w.record(0, Duration::from_secs(3));
        w.record(0, Duration::from_secs(5));
        let p99 = w.quantile(0, 0.99).unwrap();
        assert!(p99 <= 5_000_000.0 && p99 > 1_000_000.0, "{p99}");
    }

    #[test]
    fn the_window_rolls_over_a_minute() {
        let mut w = RttWindow::default();
        w.record(0, Duration::from_millis(1));
        w.record(2, Duration::from_millis(4));
        assert_eq!(w.count(3), 2);
        // Slice 0 leaves the window when slice 4 starts.
        assert_eq!(w.count(4), 1);
        let p = w.quantile(4, 0.5).unwrap();
        assert!((3500.0..=4000.0).contains(&p), "{p}");
        assert_eq!(w.count(6), 0);
        assert_eq!(w.quantile(6, 0.5), None);
        // A new slice in the same ring position replaces the old one.
        w.record(4, Duration::from_millis(2));
        assert_eq!(w.count(4), 2);
    }

    #[test]
    fn histogram_counts_by_bound() {
        let mut h = RttHistogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_micros(100));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(2));
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[5], 1);
        assert_eq!(h.counts[RTT_BOUNDS.len()], 1);
        assert_eq!(h.count(), 4);
        assert!((h.sum - 2.00315).abs() < 1e-9);
    }

    #[test]
    fn log_keeps_the_last_entries() {
        let t0 = Instant::now();
        let mut log = EventLog::default();
        for k in 0..100u64 {
            log.push(LogEntry {
                at: t0 + Duration::from_millis(k),
                kind: EventKind::BadReply,
                severity: Severity::Status,
                pid: None,
                message: format!("{k}").into(),
                data: None,
            });
        }
        assert!(log.is_full());
        let msgs: Vec<&str> = log.iter().map(|e| &*e.message).collect();
        assert_eq!(msgs.len(), LOG_LEN);
        assert_eq!(msgs[0], "36");
        assert_eq!(msgs[LOG_LEN - 1], "99");
    }

    #[test]
    fn lag_window_keeps_ten_to_twenty_seconds() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut l = LagWindow::default();
        l.note(t0, at(1), Duration::from_millis(300));
        l.note(t0, at(12), Duration::from_millis(20));
        assert_eq!(l.worst(t0, at(15)), Duration::from_millis(300));
        assert_eq!(l.worst(t0, at(21)), Duration::from_millis(20));
        assert_eq!(l.worst(t0, at(35)), Duration::ZERO);
    }
}
