//! Counters of the broker and the rate limiter of its warnings.

use std::time::{Duration, Instant};

use fims::Method;

/// The methods [`Stats::by_method`] counts, in its order.
pub const METHODS: [Method; 6] = [
    Method::Set,
    Method::Get,
    Method::Pub,
    Method::Post,
    Method::Del,
    Method::Sub,
];

/// The index of `m` in [`METHODS`].
pub(crate) fn method_index(m: Method) -> usize {
    match m {
        Method::Set => 0,
        Method::Get => 1,
        Method::Pub => 2,
        Method::Post => 3,
        Method::Del => 4,
        Method::Sub => 5,
    }
}

/// What the broker counted since it started, and how much it holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections that completed the handshake.
    pub handshakes: u64,
    /// Connections closed because of a bad handshake.
    pub bad_handshakes: u64,
    /// Connections closed because they had not finished the handshake and
    /// name within the handshake deadline.
    pub handshake_timeouts: u64,
    /// Connections closed at accept because their uid had reached the
    /// connections-per-uid limit.
    pub uid_refused: u64,
    /// Times `accept` ran out of descriptors (or kernel memory) and the broker
    /// waited for some to free up (one per episode, not per failed call).
    pub accept_stalls: u64,
    /// Datagrams dropped because they were not well formed (or had a bad uri).
    pub malformed: u64,
    /// Datagrams dropped because of an unknown method.
    pub unknown_method: u64,
    /// Datagrams dropped because they were larger than max_len allows.
    pub oversize: u64,
    /// `sub` datagrams refused (answered `FAILURE: ...`), all reasons.
    pub sub_refused: u64,
    /// Of those, refused for holding more URIs than the per-connection limit.
    pub too_many_subs: u64,
    /// Data messages routed.
    pub routed: u64,
    /// Of those, messages no connection subscribed to (read, then forgotten).
    pub unrouted: u64,
    /// Datagrams handed to receivers (sent or queued).
    pub delivered: u64,
    /// Deliveries dropped because a receiver's outbound queue was full.
    pub overflow: u64,
    /// Deliveries dropped to keep the queued bytes of all receivers within the
    /// broker-wide budget (taken from the largest queues first).
    pub shed: u64,
    /// Deliveries dropped because the send failed (other than a full socket).
    pub send_errors: u64,
    /// Open connections now (handshaken or not).
    pub connections: u64,
    /// Subscriptions held by all connections now.
    pub subscriptions: u64,
    /// Bytes queued for slow receivers now, as counted against the budget
    /// (each receiver's copy, plus 64 bytes of bookkeeping per datagram).
    pub queued_bytes: u64,
    /// The most `queued_bytes` ever reached.
    pub peak_queued_bytes: u64,
    /// Well-formed messages received from handshaken connections, by
    /// method, in [`METHODS`] order (`sub` included; counted before the
    /// size check, so oversize ones too).
    pub by_method: [u64; 6],
}

/// How many numbers [`Stats::fields`] has.
pub const FIELDS: usize = 27;

impl Stats {
    /// Every field, in declaration order (`by_method` last), to publish
    /// them through atomics ([`crate::metrics::Published`]).
    pub fn fields(&self) -> [u64; FIELDS] {
        let m = self.by_method;
        [
            self.accepted,
            self.handshakes,
            self.bad_handshakes,
            self.handshake_timeouts,
            self.uid_refused,
            self.accept_stalls,
            self.malformed,
            self.unknown_method,
            self.oversize,
            self.sub_refused,
            self.too_many_subs,
            self.routed,
            self.unrouted,
            self.delivered,
            self.overflow,
            self.shed,
            self.send_errors,
            self.connections,
            self.subscriptions,
            self.queued_bytes,
            self.peak_queued_bytes,
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5],
        ]
    }

    /// The inverse of [`fields`](Self::fields).
    pub fn from_fields(f: [u64; FIELDS]) -> Stats {
        Stats {
            accepted: f[0],
            handshakes: f[1],
            bad_handshakes: f[2],
            handshake_timeouts: f[3],
            uid_refused: f[4],
            accept_stalls: f[5],
            malformed: f[6],
            unknown_method: f[7],
            oversize: f[8],
            sub_refused: f[9],
            too_many_subs: f[10],
            routed: f[11],
            unrouted: f[12],
            delivered: f[13],
            overflow: f[14],
            shed: f[15],
            send_errors: f[16],
            connections: f[17],
            subscriptions: f[18],
            queued_bytes: f[19],
            peak_queued_bytes: f[20],
            by_method: [f[21], f[22], f[23], f[24], f[25], f[26]],
        }
    }
}

/// The kinds of event that are logged at most once per interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropKind {
    Malformed = 0,
    UnknownMethod = 1,
    Oversize = 2,
    Overflow = 3,
    SendError = 4,
    BadHandshake = 5,
    Shed = 6,
    HandshakeTimeout = 7,
    UidLimit = 8,
    TooManySubs = 9,
}

impl DropKind {
    pub(crate) const COUNT: usize = 10;

    /// What happened, for the log line.
    pub(crate) fn what(self) -> &'static str {
        match self {
            DropKind::BadHandshake | DropKind::HandshakeTimeout => "connection closed",
            DropKind::UidLimit => "connection refused",
            DropKind::TooManySubs => "subscribe refused",
            _ => "datagram dropped",
        }
    }
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
    fn fields_round_trip() {
        let f: [u64; FIELDS] = std::array::from_fn(|i| i as u64 * 3 + 1);
        let s = Stats::from_fields(f);
        assert_eq!(s.fields(), f);
        assert_eq!(s.by_method, [64, 67, 70, 73, 76, 79]);
        assert_eq!(s.peak_queued_bytes, 61);
    }

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
