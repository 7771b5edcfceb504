//! The work loop's pulse and health, shared between the work thread (which
//! pets and ticks) and the thread that answers COPS (which reads).
//!
//! Everything is an atomic in one fixed allocation: a tick is a handful of
//! relaxed loads and stores, never a lock, never an allocation, so it may run
//! on the work thread while another thread handles messages. Times are kept as
//! signed nanoseconds from the meter's creation (`base`), so instants given by
//! the host from before the responder existed still order correctly.
//!
//! The rolling minute is a ring of eight slots of 2^33 ns (8.6 s), seven of
//! them live (the window is the last 51.5-60.1 s of ticks; powers of two make
//! the slot of a tick a shift and a mask), each a log-linear histogram of
//! iteration times in microseconds with 8 sub-buckets per power of two (a
//! bucket is at most 12.5 % wide), plus one running sum of the live slots so a
//! reader never has to add them up. Quantiles are the upper edge of their
//! bucket, capped at the exact maximum.
//!
//! One thread ticks (the work loop). A second thread ticking at the same time
//! cannot corrupt memory, only blur the figures.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// "Never happened" for the `last_*` instants.
pub(crate) const NEVER: i64 = i64::MIN;
/// log2 of the length of one histogram slot in ns (8.6 s).
const SLOT_SHIFT: u32 = 33;
/// Slots in the ring; all but one are live.
const SLOTS: usize = 8;
/// Values below this many microseconds have a bucket each.
const LINEAR: usize = 16;
/// log2 of the sub-buckets per power of two.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Highest power of two with buckets: longer iterations (over 71 minutes)
/// fall into the last bucket; the exact maximum is kept apart.
const MAX_EXP: u32 = 31;
/// Histogram buckets: 16 linear, then 8 per power of two from 2^4 to 2^31 us.
const BUCKETS: usize = LINEAR + (MAX_EXP as usize - 3) * SUB;

/// The bucket of an iteration of `us` microseconds.
fn bucket(us: u64) -> usize {
    if us < LINEAR as u64 {
        return us as usize;
    }
    let us = us.min((1u64 << (MAX_EXP + 1)) - 1);
    let e = 63 - us.leading_zeros(); // >= 4 here
    let sub = (us >> (e - SUB_BITS)) as usize & (SUB - 1);
    LINEAR + (e as usize - 4) * SUB + sub
}

/// The largest value (us) that falls into bucket `b`.
fn bucket_high(b: usize) -> u64 {
    if b < LINEAR {
        return b as u64;
    }
    let e = ((b - LINEAR) / SUB) as u32 + 4;
    let sub = ((b - LINEAR) % SUB) as u64;
    let width = 1u64 << (e - SUB_BITS);
    (SUB as u64 + sub) * width + width - 1
}

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// The loop figures of one responder (see [`Meter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopStats {
    /// Ticks since the responder was created (0: the host never ticks).
    pub ticks: u64,
    /// Iterations since the last heartbeat answer (`get <uri>/cops`).
    pub count: u64,
    /// The longest of those iterations, in microseconds (0 when none).
    pub max_us: u64,
    /// Iterations in the rolling minute (the last 50-60 s of ticks).
    pub minute_count: u64,
    /// Median iteration time over the rolling minute, in microseconds.
    pub p50_us: u64,
    /// 99th percentile over the rolling minute, in microseconds (the upper
    /// edge of its histogram bucket: at most 12.5 % above the true value,
    /// never above `minute_max_us`).
    pub p99_us: u64,
    /// The longest iteration in the rolling minute, in microseconds.
    pub minute_max_us: u64,
}

/// What one heartbeat answer took from the meter (kept to put it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Beat {
    /// Iterations since the previous answer.
    pub(crate) count: u64,
    /// The longest of them, us.
    pub(crate) max_us: u64,
    /// `answered` before this take.
    prev: u64,
}

/// Pets, ticks and the loop histogram; shared through an `Arc`.
pub(crate) struct Meter {
    base: Instant,
    /// Latest pet (ns from `base`), moved forward only.
    last_pet: AtomicI64,
    /// Latest tick (ns from `base`); written by the ticking thread only.
    last_tick: AtomicI64,
    /// Ticks ever; written by the ticking thread only.
    ticks: AtomicU64,
    /// Longest iteration (us) since the reader last took it.
    beat_max: AtomicU64,
    /// `ticks` when the reader last took the per-beat figures.
    answered: AtomicU64,
    /// The slot epoch (`ns / SLOT_NS`) the ticking thread writes into.
    epoch: AtomicI64,
    slot_max: [AtomicU64; SLOTS],
    slots: [[AtomicU64; BUCKETS]; SLOTS],
    /// The six slots added up, bucket by bucket, and their total.
    minute: [AtomicU64; BUCKETS],
    minute_total: AtomicU64,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("last_alive", &self.last_alive())
            .field("ticks", &self.ticks())
            .finish_non_exhaustive()
    }
}

impl Meter {
    /// A meter never petted nor ticked.
    pub(crate) fn new() -> Meter {
        Meter {
            base: Instant::now(),
            last_pet: AtomicI64::new(NEVER),
            last_tick: AtomicI64::new(NEVER),
            ticks: AtomicU64::new(0),
            beat_max: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            epoch: AtomicI64::new(NEVER),
            slot_max: zeros(),
            slots: std::array::from_fn(|_| zeros()),
            minute: zeros(),
            minute_total: AtomicU64::new(0),
        }
    }

    /// `t` as signed nanoseconds from `base` (saturating after 292 years).
    #[inline]
    fn offset(&self, t: Instant) -> i64 {
        match t.checked_duration_since(self.base) {
            Some(d) => nanos(d),
            None => nanos(self.base.duration_since(t))
                .saturating_neg()
                .max(NEVER + 1),
        }
    }

    fn instant(&self, offset: i64) -> Option<Instant> {
        let d = Duration::from_nanos(offset.unsigned_abs());
        match offset {
            NEVER => None,
            o if o >= 0 => self.base.checked_add(d),
            _ => self.base.checked_sub(d),
        }
    }

    /// The work loop was alive at `now`.
    pub(crate) fn pet(&self, now: Instant) {
        self.last_pet.fetch_max(self.offset(now), Relaxed);
    }

    /// The latest pet or tick, as an instant.
    pub(crate) fn last_alive(&self) -> Option<Instant> {
        let last = self
            .last_pet
            .load(Relaxed)
            .max(self.last_tick.load(Relaxed));
        self.instant(last)
    }

    /// Whether the latest pet or tick is at most `window` before `now`.
    pub(crate) fn alive_within(&self, now: Instant, window: Duration) -> bool {
        let last = self
            .last_pet
            .load(Relaxed)
            .max(self.last_tick.load(Relaxed));
        if last == NEVER {
            return false;
        }
        let age = self.offset(now).saturating_sub(last).max(0);
        u128::from(age.unsigned_abs()) <= window.as_nanos()
    }

    /// One iteration of the work loop ended at `now` (and the loop is alive).
    /// The first tick only starts the clock: its iteration has no known start.
    #[inline]
    pub(crate) fn tick(&self, now: Instant) {
        let at = self.offset(now);
        let last = self.last_tick.load(Relaxed);
        self.last_tick.store(at.max(last), Relaxed);
        if last != NEVER {
            let us = (at.saturating_sub(last).max(0) as u64) / 1000;
            self.record(at, us);
        }
        self.ticks.store(self.ticks.load(Relaxed) + 1, Relaxed);
    }

    /// Adds one iteration of `us` microseconds, ended at `at`.
    #[inline]
    fn record(&self, at: i64, us: u64) {
        if us > self.beat_max.load(Relaxed) {
            // An RMW only on a new maximum: the reader swaps this word.
            self.beat_max.fetch_max(us, Relaxed);
        }
        let cur = self.epoch.load(Relaxed);
        let epoch = at >> SLOT_SHIFT; // floor division, negative offsets too
        let epoch = if epoch > cur {
            self.rotate(cur, epoch);
            epoch
        } else {
            cur // the same slot, or an instant out of order: the current slot
        };
        let s = slot_of(epoch);
        let b = bucket(us);
        bump(&self.slots[s][b]);
        bump(&self.minute[b]);
        bump(&self.minute_total);
        if us > self.slot_max[s].load(Relaxed) {
            self.slot_max[s].store(us, Relaxed);
        }
    }

    /// Moves the writing slot from epoch `old` to `new`, emptying the slots
    /// it enters and the one after `new` (epoch `new - 7`): what is left are
    /// the seven live slots `new - 6 ..= new`.
    #[cold]
    fn rotate(&self, old: i64, new: i64) {
        let first = if old == NEVER {
            new
        } else {
            (old + 1).max(new - SLOTS as i64 + 1)
        };
        for e in (first..=new).chain([new + 1]) {
            let s = slot_of(e);
            let mut gone = 0;
            for (slot, sum) in self.slots[s].iter().zip(&self.minute) {
                let c = slot.load(Relaxed);
                if c != 0 {
                    slot.store(0, Relaxed);
                    sum.store(sum.load(Relaxed).saturating_sub(c), Relaxed);
                    gone += c;
                }
            }
            let total = self.minute_total.load(Relaxed);
            self.minute_total.store(total.saturating_sub(gone), Relaxed);
            self.slot_max[s].store(0, Relaxed);
        }
        self.epoch.store(new, Relaxed);
    }

    /// Ticks ever.
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks.load(Relaxed)
    }

    /// Takes the per-beat figures (count and longest iteration since the
    /// last take): the heartbeat answer does this.
    pub(crate) fn take_beat(&self) -> Beat {
        let ticks = self.ticks.load(Relaxed);
        let prev = self.answered.swap(ticks, Relaxed);
        Beat {
            count: ticks.saturating_sub(prev),
            max_us: self.beat_max.swap(0, Relaxed),
            prev,
        }
    }

    /// Puts back what [`take_beat`](Self::take_beat) took (an answer that was
    /// not delivered).
    pub(crate) fn restore_beat(&self, beat: &Beat) {
        self.answered.store(beat.prev, Relaxed);
        self.beat_max.fetch_max(beat.max_us, Relaxed);
    }

    /// All the figures, without taking the per-beat ones (`None` before the
    /// first tick).
    pub(crate) fn stats(&self) -> Option<LoopStats> {
        let ticks = self.ticks();
        (ticks > 0).then(|| LoopStats {
            ticks,
            count: ticks.saturating_sub(self.answered.load(Relaxed)),
            max_us: self.beat_max.load(Relaxed),
            minute_count: self.minute_count(),
            p50_us: self.p50(),
            p99_us: self.p99(),
            minute_max_us: self.minute_max(),
        })
    }

    /// The longest iteration in the rolling minute.
    pub(crate) fn minute_max(&self) -> u64 {
        self.slot_max
            .iter()
            .map(|m| m.load(Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// The 99th percentile over the rolling minute (0 without iterations).
    /// Walks down from the maximum's bucket: a few loads when the tail is short.
    pub(crate) fn p99(&self) -> u64 {
        let n = self.minute_total.load(Relaxed);
        if n == 0 {
            return 0;
        }
        let max = self.minute_max();
        // The k-th smallest, k = ceil(0.99 n): n - k = floor(n / 100) lie above it.
        let above = n / 100;
        let mut seen = 0;
        let mut b = bucket(max);
        loop {
            seen += self.minute[b].load(Relaxed);
            if seen > above || b == 0 {
                return bucket_high(b).min(max);
            }
            b -= 1;
        }
    }

    /// The median over the rolling minute (0 without iterations).
    pub(crate) fn p50(&self) -> u64 {
        let n = self.minute_total.load(Relaxed);
        if n == 0 {
            return 0;
        }
        let max = self.minute_max();
        let k = n.div_ceil(2);
        let mut seen = 0;
        for (b, c) in self.minute.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= k {
                return bucket_high(b).min(max);
            }
        }
        max
    }

    /// Iterations in the rolling minute.
    pub(crate) fn minute_count(&self) -> u64 {
        self.minute_total.load(Relaxed)
    }
}

/// `d` in nanoseconds, saturating (no 128-bit arithmetic on the tick's path).
#[inline]
fn nanos(d: Duration) -> i64 {
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    secs.saturating_mul(1_000_000_000)
        .saturating_add(i64::from(d.subsec_nanos()))
}

/// The ring slot of epoch `e`.
#[inline]
fn slot_of(e: i64) -> usize {
    (e as usize) & (SLOTS - 1)
}

/// `+1` by the one writer: a load and a store, no read-modify-write.
#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut prev = 0;
        for us in 0..100_000u64 {
            let b = bucket(us);
            assert!(b == prev || b == prev + 1, "{us}: {b} after {prev}");
            assert!(
                bucket_high(b) >= us,
                "{us} above its bucket's high {}",
                bucket_high(b)
            );
            if b > 0 {
                assert!(bucket_high(b - 1) < us, "{us} also fits bucket {}", b - 1);
            }
            // At most 12.5 % wide.
            assert!(
                bucket_high(b) - us <= us / 8 + 1,
                "{us}: high {}",
                bucket_high(b)
            );
            prev = b;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket((1 << 32) - 1), BUCKETS - 1);
        assert_eq!(bucket_high(BUCKETS - 1), (1 << 32) - 1);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_of_a_known_loop() {
        let m = Meter::new();
        let mut t = Instant::now();
        m.tick(t);
        // 990 iterations of 10 ms, 10 of 100 ms: p50 ~10 ms, p99 ~10 ms, max 100 ms.
        for i in 0..1000 {
            t += if i % 100 == 0 { ms(100) } else { ms(10) };
            m.tick(t);
        }
        assert_eq!(m.ticks(), 1001);
        assert_eq!(m.minute_count(), 1000);
        assert_eq!(m.minute_max(), 100_000);
        let p50 = m.p50();
        assert!((10_000..=11_250).contains(&p50), "{p50}");
        let p99 = m.p99();
        assert!((10_000..=11_250).contains(&p99), "{p99}");
        // 2 % slow: p99 is the slow one now.
        for _ in 0..20 {
            t += ms(100);
            m.tick(t);
        }
        let p99 = m.p99();
        assert!((100_000..=100_000).contains(&p99), "{p99}");
        let beat = m.take_beat();
        assert_eq!((beat.count, beat.max_us), (1021, 100_000));
        let again = m.take_beat();
        assert_eq!((again.count, again.max_us), (0, 0));
        // An answer that was not delivered gives its figures back.
        m.restore_beat(&again);
        m.restore_beat(&beat);
        let back = m.take_beat();
        assert_eq!((back.count, back.max_us), (1021, 100_000));
        let s = m.stats().expect("ticked");
        assert_eq!((s.ticks, s.count, s.max_us), (1021, 0, 0));
        assert_eq!(s.minute_count, 1020);
    }

    #[test]
    fn the_minute_rolls() {
        let m = Meter::new();
        let mut t = Instant::now();
        m.tick(t);
        t += ms(500);
        m.tick(t); // one 500 ms iteration
        for _ in 0..100 {
            t += ms(100);
            m.tick(t);
        }
        assert_eq!(m.minute_max(), 500_000);
        // 70 s of 1 s iterations: the 500 ms one has left the window.
        for _ in 0..70 {
            t += ms(1000);
            m.tick(t);
        }
        assert_eq!(m.minute_max(), 1_000_000);
        let n = m.minute_count();
        assert!((51..=61).contains(&n), "{n}");
        assert_eq!(m.p50(), 1_000_000);
        // A stall longer than the whole window empties it but for itself.
        t += Duration::from_secs(600);
        m.tick(t);
        assert_eq!(m.minute_count(), 1);
        assert_eq!(m.minute_max(), 600_000_000);
        assert_eq!(m.p99(), 600_000_000);
    }

    #[test]
    fn pets_ticks_and_the_gate() {
        let t0 = Instant::now();
        let m = Meter::new();
        let w = ms(100);
        assert!(!m.alive_within(t0, w));
        assert_eq!(m.last_alive(), None);
        // An instant from before the meter existed still counts.
        m.pet(t0);
        assert!(m.alive_within(t0 + w, w));
        assert!(!m.alive_within(t0 + w + ms(1), w));
        assert_eq!(m.last_alive(), Some(t0));
        // An older pet does not move it back; a tick moves it forward.
        m.pet(t0 - ms(5));
        assert_eq!(m.last_alive(), Some(t0));
        m.tick(t0 + ms(50));
        assert!(m.alive_within(t0 + ms(150), w));
        assert_eq!(m.ticks(), 1);
        assert_eq!(m.minute_count(), 0, "the first tick only starts the clock");
        // Time given out of order: no negative iteration, nothing moves back.
        m.tick(t0 + ms(10));
        assert_eq!(m.take_beat().max_us, 0);
        assert_eq!(m.last_alive(), Some(t0 + ms(50)));
    }
}
