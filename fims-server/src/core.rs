//! The broker's logic without I/O (sans-IO): connections, the handshake state
//! machine and its deadline, limits, closing. `subscribe.rs` and `route.rs`
//! add the rest of [`Broker`]'s methods.
//!
//! The driver (the epoll loop in `server.rs`, or [`crate::sim`]) reads
//! datagrams and hands them to [`Broker::datagram`]; the broker sends through
//! each connection's [`Link`]. Time comes in as an argument, so deadlines are
//! exact in tests. After each call the driver collects the connections whose
//! writable interest changed ([`Broker::take_interest`]) and the links of the
//! closed ones ([`Broker::take_closed`]).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use fims::codec::{Handshake, LAYOUT_VERSION};

use crate::conn::{Conn, Link, State};
use crate::index::{ConnId, SubIndex};
use crate::out::OutBatch;
use crate::queue::QueueLimit;
use crate::stats::{DropKind, RateLimiter, Stats};
use crate::Config;

/// Bytes of bookkeeping a queued datagram costs beyond its length, counted
/// against the memory budget (the shared copy's header, the queue slot, the
/// per-sender share).
pub(crate) const ENTRY_OVERHEAD: usize = 64;

/// What one queued datagram of `len` bytes costs against the budget.
pub(crate) fn cost(len: usize) -> usize {
    len + ENTRY_OVERHEAD
}

/// The limits a [`Broker`] enforces, from [`Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_len: u32,
    pub(crate) queue: QueueLimit,
    pub(crate) max_queued: usize,
    pub(crate) handshake_timeout: Option<Duration>,
    pub(crate) max_subs: usize,
    pub(crate) max_per_uid: usize,
}

impl Limits {
    /// The limits of `cfg`; the per-connection byte bound never exceeds the
    /// broker-wide budget.
    pub(crate) fn of(cfg: &Config) -> Limits {
        Limits {
            max_len: cfg.max_len,
            queue: QueueLimit {
                datagrams: cfg.queue_datagrams.max(1),
                bytes: cfg.queue_bytes.min(cfg.max_queued_bytes),
            },
            max_queued: cfg.max_queued_bytes,
            handshake_timeout: (!cfg.handshake_timeout.is_zero()).then_some(cfg.handshake_timeout),
            max_subs: cfg.max_subs_per_conn,
            max_per_uid: cfg.max_conns_per_uid,
        }
    }
}

/// The broker's state; see the module doc.
#[derive(Debug)]
pub(crate) struct Broker<L> {
    pub(crate) lim: Limits,
    pub(crate) conns: Vec<Option<Conn<L>>>,
    free: Vec<ConnId>,
    pub(crate) index: SubIndex,
    /// Datagrams routed this turn, sent by [`flush`](Self::flush) (`out.rs`).
    pub(crate) out: OutBatch,
    /// The collapsed uri of the message being routed, when it had empty segments.
    pub(crate) ubuf: String,
    /// Generation of the message being routed (at-most-once, no echo).
    pub(crate) gen: u64,
    pub(crate) stats: Stats,
    limiter: RateLimiter,
    serial: u64,
    /// Handshake deadlines in accept order (the timeout is fixed, so in time order too).
    deadlines: VecDeque<(Instant, ConnId, u64)>,
    uids: HashMap<u32, usize>,
    /// Connections with a non-empty queue (the candidates for shedding).
    pub(crate) backlog: Vec<ConnId>,
    to_close: Vec<ConnId>,
    closed: Vec<L>,
    interest: Vec<ConnId>,
}

impl<L: Link> Broker<L> {
    /// An empty broker with the limits of `cfg`.
    pub(crate) fn new(cfg: &Config) -> Broker<L> {
        Broker {
            lim: Limits::of(cfg),
            conns: Vec::new(),
            free: Vec::new(),
            index: SubIndex::default(),
            out: OutBatch::default(),
            ubuf: String::with_capacity(256),
            gen: 0,
            stats: Stats::default(),
            limiter: RateLimiter::new(Duration::from_secs(1)),
            serial: 0,
            deadlines: VecDeque::new(),
            uids: HashMap::new(),
            backlog: Vec::new(),
            to_close: Vec::new(),
            closed: Vec::new(),
            interest: Vec::new(),
        }
    }

    /// Takes a new connection of Unix user `uid` (`user` its name): sends our
    /// handshake and starts its deadline. Gives the link back when the uid is
    /// over its limit or the peer left already (the driver closes it).
    pub(crate) fn open(
        &mut self,
        mut link: L,
        uid: u32,
        user: Rc<str>,
        now: Instant,
    ) -> Result<ConnId, L> {
        self.stats.accepted += 1;
        let held = self.uids.get(&uid).copied().unwrap_or(0);
        if self.lim.max_per_uid > 0 && held >= self.lim.max_per_uid {
            self.stats.uid_refused += 1;
            let detail = format_args!("uid {uid} ({user}) holds {held} connections, the limit");
            self.warn(DropKind::UidLimit, self.stats.uid_refused, &detail);
            return Err(link);
        }
        let hs = Handshake {
            version: LAYOUT_VERSION,
            max_len: self.lim.max_len,
        }
        .encode();
        if let Err(e) = link.send(&[&hs]) {
            tracing::debug!(error = %e, "client left before the handshake");
            return Err(link);
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.serial += 1;
        self.conns[id] = Some(Conn::new(link, self.serial, uid, user));
        *self.uids.entry(uid).or_default() += 1;
        self.stats.connections += 1;
        if let Some(t) = self.lim.handshake_timeout {
            self.deadlines.push_back((now + t, id, self.serial));
        }
        Ok(id)
    }

    /// The connection in slot `id`, if open.
    pub(crate) fn conn(&self, id: ConnId) -> Option<&Conn<L>> {
        self.conns.get(id).and_then(Option::as_ref)
    }

    /// The connection in slot `id`, if open.
    pub(crate) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn<L>> {
        self.conns.get_mut(id).and_then(Option::as_mut)
    }

    /// Handles one datagram received on `id`: `buf[..n]`, or, when `n` is larger
    /// than `buf`, a datagram of `n` bytes that did not fit.
    pub(crate) fn datagram(&mut self, id: ConnId, buf: &[u8], n: usize) {
        let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        if conn.closing {
            return;
        }
        match conn.state {
            State::AwaitHandshake => {
                let hs = buf.get(..n).and_then(|b| Handshake::decode(b).ok());
                match hs {
                    Some(hs) if hs.version == LAYOUT_VERSION => conn.state = State::AwaitName,
                    _ => self.bad_handshake(id, n, "handshake is not 8 bytes of version 1"),
                }
            }
            State::AwaitName => match buf.get(..n).map(std::str::from_utf8) {
                Some(Ok(name)) if (1..=255).contains(&n) => {
                    conn.name = name.into();
                    conn.state = State::Ready;
                    self.stats.handshakes += 1;
                    tracing::debug!(name, user = %conn.user, "client connected");
                }
                _ => self.bad_handshake(id, n, "process name must be 1..=255 bytes of UTF-8"),
            },
            State::Ready => match buf.get(..n) {
                Some(dg) => self.on_message(id, dg),
                None => {
                    self.stats.oversize += 1;
                    let c = self.stats.oversize;
                    self.warn(DropKind::Oversize, c, &format_args!("{n} bytes"));
                }
            },
        }
        self.close_marked();
    }

    fn bad_handshake(&mut self, id: ConnId, n: usize, why: &str) {
        self.stats.bad_handshakes += 1;
        let c = self.stats.bad_handshakes;
        let detail = format_args!("{why} ({n} bytes); closing that connection");
        self.warn(DropKind::BadHandshake, c, &detail);
        self.mark_close(id);
    }

    /// The peer of `id` hung up (or its socket failed): close it.
    pub(crate) fn hangup(&mut self, id: ConnId) {
        self.mark_close(id);
        self.close_marked();
    }

    /// Closes every connection whose handshake deadline passed at `now`; returns
    /// the next deadline.
    pub(crate) fn expire(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&(at, id, serial)) = self.deadlines.front() {
            if at > now {
                return Some(at);
            }
            self.deadlines.pop_front();
            let late = self
                .conn(id)
                .is_some_and(|c| c.serial == serial && c.state != State::Ready && !c.closing);
            if late {
                self.stats.handshake_timeouts += 1;
                let c = self.stats.handshake_timeouts;
                let detail = "no handshake and name within the deadline; closing that connection";
                self.warn(DropKind::HandshakeTimeout, c, &detail);
                self.mark_close(id);
            }
        }
        self.close_marked();
        None
    }

    /// The earliest pending handshake deadline (some may belong to connections
    /// that finished their handshake since: [`expire`](Self::expire) skips those).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|d| d.0)
    }

    /// Marks `id` for closing at the next [`close_marked`](Self::close_marked).
    pub(crate) fn mark_close(&mut self, id: ConnId) {
        if let Some(c) = self.conn_mut(id) {
            if !c.closing {
                c.closing = true;
                self.to_close.push(id);
            }
        }
    }

    /// Closes the marked connections: forgets their subscriptions and queue,
    /// hands their links to the driver.
    pub(crate) fn close_marked(&mut self) {
        while let Some(id) = self.to_close.pop() {
            let Some(conn) = self.conns.get_mut(id).and_then(Option::take) else {
                continue;
            };
            for key in &conn.subs {
                self.index.remove(id, key);
            }
            if !self.out.is_empty() {
                self.out.forget(id);
            }
            self.stats.subscriptions -= conn.subs.len() as u64;
            let queued: usize = conn.queue.lengths().map(cost).sum();
            self.stats.queued_bytes -= queued as u64;
            if let Some(pos) = conn.backlog_pos {
                self.backlog_remove(pos);
            }
            if let Some(n) = self.uids.get_mut(&conn.uid) {
                *n -= 1;
                if *n == 0 {
                    self.uids.remove(&conn.uid);
                }
            }
            self.stats.connections -= 1;
            if conn.overflow > 0 || conn.shed > 0 {
                tracing::info!(name = %conn.name, overflow = conn.overflow, shed = conn.shed,
                    "slow receiver closed");
            }
            tracing::debug!(name = %conn.name, "connection closed");
            self.closed.push(conn.link);
            self.free.push(id);
        }
    }

    /// Adds `id` to the backlog (its queue just became non-empty).
    pub(crate) fn backlog_add(&mut self, id: ConnId) {
        let pos = self.backlog.len();
        if let Some(c) = self.conn_mut(id) {
            if c.backlog_pos.is_none() {
                c.backlog_pos = Some(pos);
                self.backlog.push(id);
            }
        }
    }

    /// Removes the backlog entry at `pos` (its queue just became empty).
    pub(crate) fn backlog_remove(&mut self, pos: usize) {
        if pos >= self.backlog.len() {
            return;
        }
        let gone = self.backlog.swap_remove(pos);
        if let Some(c) = self.conn_mut(gone) {
            c.backlog_pos = None;
        }
        if let Some(&moved) = self.backlog.get(pos) {
            if let Some(c) = self.conn_mut(moved) {
                c.backlog_pos = Some(pos);
            }
        }
    }

    /// Records that `id` wants (or no longer wants) writable events.
    pub(crate) fn set_want_writable(&mut self, id: ConnId, want: bool) {
        if let Some(c) = self.conn_mut(id) {
            if c.want_writable != want {
                c.want_writable = want;
                self.interest.push(id);
            }
        }
    }

    /// The connections whose writable interest changed since the last call.
    pub(crate) fn take_interest(&mut self, out: &mut Vec<ConnId>) {
        out.append(&mut self.interest);
    }

    /// The links of the connections closed since the last call.
    pub(crate) fn take_closed(&mut self) -> std::vec::Drain<'_, L> {
        self.closed.drain(..)
    }

    /// Logs a warning of `kind` unless one was logged less than a second ago.
    pub(crate) fn warn(&mut self, kind: DropKind, total: u64, detail: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.limiter.allow(kind, Instant::now()) {
            tracing::warn!(kind = ?kind, total, suppressed, detail = %detail, "{}", kind.what());
        }
    }

    /// The display name of `id` (for logs).
    pub(crate) fn name_of(&self, id: ConnId) -> &str {
        self.conn(id).map(|c| &*c.name).unwrap_or("")
    }
}
