//! A fake work loop for the engine tests: it ticks on its own schedule and
//! answers each beat's figures as the responder's meter does (iterations
//! since the previous answer, the longest, the p99 of the last minute).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An iteration that never ends within a test.
pub(crate) const STUCK: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub(crate) struct FakeLoop {
    /// (from, length): iterations that start at or after `from` last `length`.
    phases: Vec<(Instant, Duration)>,
    /// The length of the iterations of a restarted process.
    normal: Duration,
    /// When the running iteration started.
    last_tick: Instant,
    /// Iterations since the previous answer, and the longest of them.
    count: u64,
    max: Duration,
    /// (end, length) of the iterations of the last minute.
    minute: VecDeque<(Instant, Duration)>,
}

impl FakeLoop {
    /// A loop ticking every `iteration` from `start` on.
    pub fn new(start: Instant, iteration: Duration) -> FakeLoop {
        FakeLoop {
            phases: vec![(start, iteration)],
            normal: iteration,
            last_tick: start,
            count: 0,
            max: Duration::ZERO,
            minute: VecDeque::new(),
        }
    }

    /// Iterations that start at or after `at` last `iteration`.
    pub fn from(&mut self, at: Instant, iteration: Duration) {
        self.phases.push((at, iteration));
    }

    /// The process was restarted at `at`: a fresh loop at the normal pace.
    pub fn restart(&mut self, at: Instant) {
        *self = FakeLoop::new(at, self.normal);
    }

    fn length_at(&self, start: Instant) -> Duration {
        self.phases
            .iter()
            .rev()
            .find(|(from, _)| *from <= start)
            .map_or(self.normal, |p| p.1)
    }

    /// Ticks up to `to`.
    fn advance(&mut self, to: Instant) {
        loop {
            let len = self.length_at(self.last_tick);
            let Some(end) = self.last_tick.checked_add(len).filter(|&e| e <= to) else {
                break;
            };
            self.last_tick = end;
            self.count += 1;
            self.max = self.max.max(len);
            self.minute.push_back((end, len));
        }
        while self
            .minute
            .front()
            .is_some_and(|(t, _)| to.saturating_duration_since(*t) > Duration::from_secs(60))
        {
            self.minute.pop_front();
        }
    }

    /// Someone answered at `at` (the process's answer to anyone starts a beat).
    pub fn take_beat(&mut self, at: Instant) -> (u64, Duration) {
        self.advance(at);
        let beat = (self.count, self.max);
        self.count = 0;
        self.max = Duration::ZERO;
        beat
    }

    /// The `"loop":{..}` member of an answer written at `at` (starts a beat).
    pub fn answer(&mut self, at: Instant) -> String {
        let (count, max) = self.take_beat(at);
        let mut all: Vec<Duration> = self.minute.iter().map(|m| m.1).collect();
        all.sort();
        let p99 = match all.len() {
            0 => Duration::ZERO,
            n => all[(n * 99).div_ceil(100) - 1],
        };
        format!(
            r#""loop":{{"count":{count},"max_us":{},"p99_us":{}}}"#,
            max.as_micros(),
            p99.as_micros()
        )
    }
}
