//! Absolute-deadline pacing: a publisher that sends `rate` messages per second
//! for a fixed time, in batches, and says what it really achieved.
//!
//! Time is cut into ticks (1 ms by default). At the start of tick `k` the
//! publisher sends whatever brings its total up to what is due by the *end* of
//! that tick (`rate x (k + 1) x tick`, rounded), then sleeps until the absolute
//! start of tick `k + 1`. A late wakeup therefore never shifts the schedule: the
//! next batch is larger and the total stays on time (sleeping a fixed time per
//! message would add every wakeup's lateness, tens of microseconds on a busy
//! VM, to a 50 us period at 20,000 msg/s). A wakeup after the end still sends
//! what is due, so every schedule sends its whole total; a publisher that
//! fell behind (a blocked send) takes longer, and the achieved rate (sent /
//! elapsed) shows it.
//!
//! The loop takes its clock as a [`Clock`], so the schedule is tested exactly
//! on a fake one; [`MonoClock`] is CLOCK_MONOTONIC with `clock_nanosleep`.

use std::time::Duration;

use crate::Result;

/// A time source with absolute sleeps, in nanoseconds.
pub trait Clock {
    /// Now, in ns from an arbitrary origin.
    fn now_ns(&mut self) -> u64;
    /// Returns at (or after) `deadline_ns` on the same scale as [`now_ns`](Self::now_ns).
    fn sleep_until_ns(&mut self, deadline_ns: u64);
}

/// CLOCK_MONOTONIC and `clock_nanosleep(TIMER_ABSTIME)`.
#[derive(Debug, Default)]
pub struct MonoClock;

impl Clock for MonoClock {
    fn now_ns(&mut self) -> u64 {
        crate::sys::mono_ns()
    }
    fn sleep_until_ns(&mut self, deadline_ns: u64) {
        crate::sys::sleep_until_ns(deadline_ns);
    }
}

/// How many messages, how fast, in which batches.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Messages per second asked for.
    pub rate: f64,
    tick_ns: u64,
    ticks: u64,
}

impl Schedule {
    /// `rate` messages per second for `duration`, one batch per `tick` (both
    /// at least 1 us; the duration is cut to whole ticks, at least one).
    pub fn new(rate: f64, duration: Duration, tick: Duration) -> Schedule {
        let tick_ns = (tick.as_nanos() as u64).max(1_000);
        let ticks = ((duration.as_nanos() as u64) / tick_ns).max(1);
        Schedule {
            rate: rate.max(0.0),
            tick_ns,
            ticks,
        }
    }

    /// The planned length, whole ticks.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.ticks * self.tick_ns)
    }

    /// The batch interval.
    pub fn tick(&self) -> Duration {
        Duration::from_nanos(self.tick_ns)
    }

    /// Messages the whole schedule sends.
    pub fn total(&self) -> u64 {
        self.due_by_end_of(self.ticks - 1)
    }

    /// Messages due (cumulative) by the end of tick `k`.
    pub fn due_by_end_of(&self, k: u64) -> u64 {
        let k = k.min(self.ticks - 1);
        let ns = (k + 1) as f64 * self.tick_ns as f64;
        (self.rate * ns / 1e9).round() as u64
    }

    /// The typical batch size (messages per tick).
    pub fn batch(&self) -> f64 {
        self.rate * self.tick_ns as f64 / 1e9
    }
}

/// What a paced run did.
#[derive(Debug, Clone, Copy)]
pub struct Paced {
    /// Messages sent.
    pub sent: u64,
    /// From the first batch to the end of the schedule (or of the last send, if later).
    pub elapsed: Duration,
    /// Batches sent (wakeups that sent at least one message or found none due).
    pub batches: u64,
    /// Wakeups more than one tick after their deadline (the next batch caught up).
    pub late_batches: u64,
    /// The latest any wakeup was against its deadline.
    pub max_late: Duration,
}

impl Paced {
    /// Messages per second really sent.
    pub fn achieved_rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `schedule` on `clock`, calling `send(n)` to send `n` messages at once
/// (the caller sends them one by one, blocking). Stops at the first error.
pub fn run(
    schedule: &Schedule,
    clock: &mut impl Clock,
    mut send: impl FnMut(u64) -> Result<()>,
) -> Result<Paced> {
    let start = clock.now_ns();
    let (mut sent, mut batches, mut late_batches, mut max_late) = (0u64, 0u64, 0u64, 0u64);
    let mut deadline = 0u64;
    loop {
        let now = clock.now_ns().saturating_sub(start);
        let k = now / schedule.tick_ns;
        if k >= schedule.ticks && sent == schedule.total() {
            break;
        }
        let late = now.saturating_sub(deadline);
        max_late = max_late.max(late);
        if late > schedule.tick_ns {
            late_batches += 1;
        }
        let due = schedule.due_by_end_of(k);
        if due > sent {
            send(due - sent)?;
            sent = due;
        }
        batches += 1;
        if k >= schedule.ticks {
            // Woke after the end with messages still due: they went above.
            break;
        }
        deadline = (k + 1) * schedule.tick_ns;
        clock.sleep_until_ns(start + deadline);
    }
    let elapsed = clock.now_ns().saturating_sub(start);
    Ok(Paced {
        sent,
        elapsed: Duration::from_nanos(elapsed),
        batches,
        late_batches,
        max_late: Duration::from_nanos(max_late),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake clock: sleeps land exactly on the deadline plus `oversleep` (once,
    /// at the `late_at`-th sleep), and every send costs `send_cost_ns` per message.
    struct Fake {
        now: u64,
        sleeps: u64,
        late_at: u64,
        oversleep: u64,
    }

    impl Clock for Fake {
        fn now_ns(&mut self) -> u64 {
            self.now
        }
        fn sleep_until_ns(&mut self, deadline_ns: u64) {
            self.sleeps += 1;
            let extra = if self.sleeps == self.late_at {
                self.oversleep
            } else {
                0
            };
            self.now = self.now.max(deadline_ns) + extra;
        }
    }

    fn fake() -> Fake {
        Fake {
            now: 5_000_000_000,
            sleeps: 0,
            late_at: 0,
            oversleep: 0,
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn on_time_sends_exactly_the_rate_in_equal_batches() {
        let s = Schedule::new(20_000.0, Duration::from_secs(3), MS);
        let mut sizes = Vec::new();
        let p = run(&s, &mut fake(), |n| {
            sizes.push(n);
            Ok(())
        })
        .unwrap();
        assert_eq!(p.sent, 60_000);
        assert_eq!(s.total(), 60_000);
        assert_eq!(p.batches, 3_000);
        assert!(sizes.iter().all(|&n| n == 20), "batches of 20");
        assert_eq!(p.elapsed, Duration::from_secs(3));
        assert_eq!(p.achieved_rate(), 20_000.0);
        assert_eq!((p.late_batches, p.max_late), (0, Duration::ZERO));
    }

    #[test]
    fn a_late_wakeup_is_caught_up_by_the_next_batch() {
        let s = Schedule::new(20_000.0, Duration::from_secs(1), MS);
        let mut clock = fake();
        clock.late_at = 100;
        clock.oversleep = 3_500_000; // 3.5 ticks late once
        let mut sizes = Vec::new();
        let p = run(&s, &mut clock, |n| {
            sizes.push(n);
            Ok(())
        })
        .unwrap();
        assert_eq!(p.sent, 20_000, "the total is kept");
        assert_eq!(p.late_batches, 1);
        assert_eq!(p.max_late, Duration::from_micros(3_500));
        assert_eq!(sizes[100], 20 * 4, "the late batch covers the missed ticks");
        assert_eq!(p.elapsed, Duration::from_secs(1));
    }

    #[test]
    fn odd_rates_round_without_drift() {
        let s = Schedule::new(333.0, Duration::from_secs(2), MS);
        let p = run(&s, &mut fake(), |_| Ok(())).unwrap();
        assert_eq!(p.sent, 666);
        assert!((s.batch() - 0.333).abs() < 1e-9);
    }

    #[test]
    fn a_publisher_that_cannot_keep_up_reports_the_lower_rate() {
        // Every message blocks 100 us: at most 10,000 msg/s whatever is asked.
        struct Shared<'a>(&'a std::cell::Cell<u64>);
        impl Clock for Shared<'_> {
            fn now_ns(&mut self) -> u64 {
                self.0.get()
            }
            fn sleep_until_ns(&mut self, d: u64) {
                self.0.set(self.0.get().max(d));
            }
        }
        let s = Schedule::new(20_000.0, Duration::from_secs(1), MS);
        let now = std::cell::Cell::new(0u64);
        let p = run(&s, &mut Shared(&now), |n| {
            now.set(now.get() + n * 100_000);
            Ok(())
        })
        .unwrap();
        assert_eq!(p.sent, 20_000, "the backlog goes out at the end");
        assert!(p.elapsed >= Duration::from_secs(2), "{:?}", p.elapsed);
        let r = p.achieved_rate();
        assert!((9_000.0..=10_100.0).contains(&r), "achieved {r}");
        assert!(p.late_batches > 0);
    }

    #[test]
    fn a_wakeup_after_the_end_sends_what_is_still_due() {
        let s = Schedule::new(20_000.0, Duration::from_millis(100), MS);
        let mut clock = fake();
        clock.late_at = 99; // the sleep before the last tick overshoots the end
        clock.oversleep = 5_000_000;
        let p = run(&s, &mut clock, |_| Ok(())).unwrap();
        assert_eq!(p.sent, 2_000);
        assert_eq!(p.elapsed, Duration::from_millis(104));
        assert_eq!(p.late_batches, 1);
    }

    #[test]
    fn a_send_error_stops_the_run() {
        let s = Schedule::new(1000.0, Duration::from_secs(1), MS);
        let r = run(&s, &mut fake(), |_| Err(crate::err!("gone")));
        assert!(r.is_err());
    }

    #[test]
    fn tiny_durations_are_one_tick() {
        let s = Schedule::new(1000.0, Duration::ZERO, MS);
        assert_eq!(s.duration(), MS);
        assert_eq!(s.total(), 1);
    }
}
