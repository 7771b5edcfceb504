//! Counters of the broker and the rate limiter of its warnings.

use std::time::{Duration, Instant};

/// What the broker counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections that completed the handshake.
    pub handshakes: u64,
    /// Connections closed because of a bad handshake.
    pub bad_handshakes: u64,
    /// Datagrams dropped because they were not well formed (or had a bad uri).
    pub malformed: u64,
    /// Datagrams dropped because of an unknown method.
    pub unknown_method: u64,
    /// Datagrams dropped because they were larger than max_len allows.
    pub oversize: u64,
    /// `sub` datagrams refused (answered `FAILURE: ...`).
    pub sub_refused: u64,
    /// Data messages routed.
    pub routed: u64,
    /// Datagrams handed to receivers (sent or queued).
    pub delivered: u64,
    /// Deliveries dropped because a receiver's outbound queue was full.
    pub overflow: u64,
    /// Deliveries dropped because the send failed (other than a full socket).
    pub send_errors: u64,
}

/// The kinds of dropped datagram that are logged at most once per interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropKind {
    Malformed = 0,
    UnknownMethod = 1,
    Oversize = 2,
    Overflow = 3,
    SendError = 4,
    BadHandshake = 5,
    Accept = 6,
}

impl DropKind {
    pub(crate) const COUNT: usize = 7;
}

/// Allows one warning per kind per interval and counts the ones it held back.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    interval: Duration,
    last: [Option<Instant>; DropKind::COUNT],
    suppressed: [u64; DropKind::COUNT],
}

impl RateLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        RateLimiter {
            interval,
            last: [None; DropKind::COUNT],
            suppressed: [0; DropKind::COUNT],
        }
    }

    /// Whether a warning of `kind` may be logged at `now`. When it may, returns
    /// how many were held back since the last one.
    pub(crate) fn allow(&mut self, kind: DropKind, now: Instant) -> Option<u64> {
        let k = kind as usize;
        match self.last[k] {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.suppressed[k] += 1;
                None
            }
            _ => {
                self.last[k] = Some(now);
                Some(std::mem::take(&mut self.suppressed[k]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_per_kind() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(Duration::from_secs(1));
        assert_eq!(rl.allow(DropKind::Malformed, t0), Some(0));
        assert_eq!(
            rl.allow(DropKind::Malformed, t0 + Duration::from_millis(10)),
            None
        );
        assert_eq!(
            rl.allow(DropKind::Malformed, t0 + Duration::from_millis(999)),
            None
        );
        assert_eq!(rl.allow(DropKind::Oversize, t0), Some(0));
        assert_eq!(
            rl.allow(DropKind::Malformed, t0 + Duration::from_secs(1)),
            Some(2)
        );
        assert_eq!(
            rl.allow(DropKind::Malformed, t0 + Duration::from_secs(3)),
            Some(0)
        );
    }
}
