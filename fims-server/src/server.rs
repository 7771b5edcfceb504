//! The broker's event loop: accept (surviving descriptor exhaustion), read,
//! and hand every datagram to the sans-IO core (`core.rs`).
//!
//! Single-threaded, edge-triggered epoll (mio). One shared ring of receive
//! buffers, filled with `recvmmsg` (up to 64 datagrams per call); each
//! connection is read once per turn, at most [`READ_BUDGET`] datagrams
//! while others have something to read too ([`ALONE_BUDGET`] when it is the
//! only one), so a flooding client cannot starve the rest. What the turn
//! routed goes out at its end, per receiver with one `sendmmsg` (`out.rs`).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::core::Broker;
use crate::index::ConnId;
use crate::listener::{listen, ServeError};
use crate::metrics::Published;
use crate::stats::Stats;
use crate::sys::RecvRing;
use crate::{sys, Config};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Datagrams read from one connection per loop turn before the others get
/// theirs, when several connections have something to read (a connection
/// still readable after that is read again next turn).
const READ_BUDGET: usize = 32;
/// The same when only one connection has something to read: nobody waits, so
/// it is read in bigger batches (fewer wakeups for a lone fast sender).
const ALONE_BUDGET: usize = 128;
/// How often `accept` is retried while descriptors are exhausted (it is also
/// retried as soon as any connection closes).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Stops a running [`Server`] (or asks it to log its counters) from another thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    report: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Asks the server to stop; [`Server::run`] returns soon after.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // A failed wake means the loop is gone already.
        let _ = self.waker.wake();
    }

    /// Asks the server to log its counters and current holdings once
    /// (`fims_server` does this on SIGUSR1).
    pub fn log_stats(&self) {
        self.report.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// Where accepting stands while descriptors are exhausted.
#[derive(Debug, Default)]
struct Stall {
    since: Option<Instant>,
    retry_at: Option<Instant>,
}

/// The broker. Create with [`Server::bind`], then [`Server::run`] on the same thread.
#[derive(Debug)]
pub struct Server {
    cfg: Config,
    poll: Poll,
    listener: OwnedFd,
    socket_id: (u64, u64),
    core: Broker<OwnedFd>,
    /// Receive buffers: one slot per datagram of a `recvmmsg`.
    ring: RecvRing,
    /// Connections still readable after their share of a turn (read first
    /// next turn), and the list of the turn before (kept to reuse its memory).
    again: Vec<ConnId>,
    again_now: Vec<ConnId>,
    /// Loop turn number, and the turn each connection slot was last read in:
    /// a connection is read at most once (READ_BUDGET datagrams) per turn.
    turn: u64,
    read_in: Vec<u64>,
    /// Datagrams each connection may be read this turn.
    budget: usize,
    interest: Vec<ConnId>,
    stall: Stall,
    users: HashMap<u32, Rc<str>>,
    stop: Arc<AtomicBool>,
    report: Arc<AtomicBool>,
    waker: Arc<Waker>,
    /// Where the counters are published for `--metrics-listen` (once per loop turn).
    published: Option<Arc<Published>>,
}

impl Server {
    /// Binds the socket (replacing a stale file, refusing when a live broker
    /// answers) and sets its mode.
    pub fn bind(cfg: Config) -> Result<Server, ServeError> {
        if let Err(e) = fims::socket::raise_nofile_limit() {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
        let listener = listen(&cfg.socket, cfg.mode)?;
        let path = cfg.socket.clone();
        let meta = std::fs::symlink_metadata(&path).map_err(|source| ServeError::Bind {
            path: path.clone(),
            source,
        })?;
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        if cfg.queue_bytes > cfg.max_queued_bytes {
            tracing::warn!(
                queue_bytes = cfg.queue_bytes,
                max_queued_bytes = cfg.max_queued_bytes,
                "the per-connection queue bound is over the broker-wide budget; using the budget"
            );
        }
        // The handshake number limits the whole datagram, as in the existing
        // broker: a slot holds the largest, a longer one is cut (and dropped).
        let ring = RecvRing::new(cfg.max_len as usize);
        tracing::info!(socket = %path.display(), mode = format_args!("{:o}", cfg.mode),
            max_len = cfg.max_len, max_queued_bytes = cfg.max_queued_bytes,
            handshake_timeout_ms = cfg.handshake_timeout.as_millis() as u64,
            max_subs_per_conn = cfg.max_subs_per_conn,
            max_conns_per_uid = cfg.max_conns_per_uid, "fims_server listening");
        Ok(Server {
            core: Broker::new(&cfg),
            cfg,
            poll,
            listener,
            socket_id: (meta.dev(), meta.ino()),
            ring,
            again: Vec::new(),
            again_now: Vec::new(),
            turn: 0,
            read_in: Vec::new(),
            budget: READ_BUDGET,
            interest: Vec::new(),
            stall: Stall::default(),
            users: HashMap::new(),
            stop: Arc::new(AtomicBool::new(false)),
            report: Arc::new(AtomicBool::new(false)),
            waker,
            published: None,
        })
    }

    /// From now on, publishes the counters at the end of every loop turn
    /// (relaxed atomic stores; the loop never waits for a reader).
    pub fn publish_stats(&mut self) -> Arc<Published> {
        let p = Arc::clone(self.published.get_or_insert_with(Arc::default));
        p.store(&self.core.stats);
        p
    }

    /// A handle that stops [`run`](Self::run) from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: Arc::clone(&self.stop),
            report: Arc::clone(&self.report),
            waker: Arc::clone(&self.waker),
        }
    }

    /// What the broker counted so far.
    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.cfg.socket
    }

    /// Runs until the shutdown handle fires, then closes every connection,
    /// removes the socket file (if it is still ours) and returns the counters.
    pub fn run(mut self) -> Result<Stats, ServeError> {
        let result = self.event_loop();
        self.remove_socket_file();
        let s = self.core.stats;
        log_stats(&s, "fims_server stopped");
        result.map(|()| s)
    }

    fn event_loop(&mut self) -> Result<(), ServeError> {
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::SeqCst) {
            if self.report.swap(false, Ordering::SeqCst) {
                log_stats(&self.core.stats, "fims_server counters");
            }
            self.turn += 1;
            let mut again = std::mem::take(&mut self.again_now);
            again.clear();
            std::mem::swap(&mut again, &mut self.again);
            let timeout = if again.is_empty() {
                self.timeout()
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    self.again = again;
                    continue;
                }
                return Err(e.into());
            }
            self.budget = if contended(&events, &again) {
                READ_BUDGET
            } else {
                ALONE_BUDGET
            };
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(id) => {
                        if ev.is_writable() {
                            self.core.writable(id);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(id);
                        }
                    }
                }
                self.sync();
            }
            for &id in &again {
                self.read(id);
                self.sync();
            }
            self.again_now = again;
            self.core.flush();
            self.sync();
            self.timers();
            if let Some(p) = &self.published {
                p.store(&self.core.stats);
            }
        }
        Ok(())
    }

    /// How long the next poll may wait: until the next handshake deadline or
    /// accept retry, forever when there is none.
    fn timeout(&self) -> Option<Duration> {
        let next = match (self.core.next_deadline(), self.stall.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        // Rounded up, so the loop does not wake a hair early and spin.
        let left = next.saturating_duration_since(Instant::now());
        Some(left + Duration::from_millis(1))
    }

    /// Closes connections past their handshake deadline and retries a stalled
    /// accept when due. Reads the clock only while one of those is pending.
    fn timers(&mut self) {
        if self.core.next_deadline().is_none() && self.stall.retry_at.is_none() {
            return;
        }
        let now = Instant::now();
        self.core.expire(now);
        self.sync();
        if self.stall.retry_at.is_some_and(|t| t <= now) {
            self.accept_all();
            self.sync();
        }
    }

    /// Applies what the core changed: writable interest, closed connections.
    fn sync(&mut self) {
        self.core.take_interest(&mut self.interest);
        for id in self.interest.drain(..) {
            let Some(conn) = self.core.conn(id) else {
                continue;
            };
            let interest = if conn.want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let fd = conn.link.as_raw_fd();
            let r = self
                .poll
                .registry()
                .reregister(&mut SourceFd(&fd), Token(id), interest);
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot change a connection's events; closing it");
                self.core.hangup(id);
            }
        }
        let mut freed = false;
        for fd in self.core.take_closed() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
            drop(fd);
            freed = true;
        }
        if freed && self.stall.since.is_some() {
            // Descriptors just came back: take the waiting clients now.
            self.accept_all();
            self.sync();
        }
    }

    fn remove_socket_file(&self) {
        let path = &self.cfg.socket;
        match std::fs::symlink_metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == self.socket_id => {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(socket = %path.display(), error = %e, "cannot remove socket file");
                }
            }
            _ => tracing::info!(socket = %path.display(), "socket file is not ours any more; left"),
        }
    }

    /// Accepts every waiting connection. The listener stays registered
    /// whatever happens; when `accept` fails for want of descriptors (or
    /// kernel memory) the clients wait in the backlog and accepting is retried
    /// every [`ACCEPT_RETRY`] and whenever a connection closes. One episode
    /// (logged once) lasts until the backlog is empty again.
    fn accept_all(&mut self) {
        loop {
            match sys::accept(self.listener.as_fd()) {
                Ok(fd) => self.add_conn(fd),
                // The backlog is empty: an exhaustion episode, if any, is over.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return self.end_stall(),
                // The client gave up while in the backlog: next one.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO)) => {}
                Err(e) => return self.start_stall(e),
            }
        }
    }

    fn start_stall(&mut self, e: io::Error) {
        let now = Instant::now();
        if self.stall.since.is_none() {
            self.stall.since = Some(now);
            self.core.stats.accept_stalls += 1;
            tracing::error!(error = %e, open = self.core.stats.connections,
                episode = self.core.stats.accept_stalls,
                "cannot accept connections; new clients wait in the backlog, retried every 100 ms and whenever a connection closes");
        }
        self.stall.retry_at = Some(now + ACCEPT_RETRY);
    }

    fn end_stall(&mut self) {
        if let Some(since) = self.stall.since.take() {
            tracing::warn!(
                stalled_ms = since.elapsed().as_millis() as u64,
                "accepting connections again"
            );
        }
        self.stall.retry_at = None;
    }

    fn user_of(&mut self, uid: u32) -> Rc<str> {
        if let Some(name) = self.users.get(&uid) {
            return Rc::clone(name);
        }
        match sys::user_name(uid) {
            Ok(name) => {
                let name: Rc<str> = name.unwrap_or_else(|| uid.to_string()).into();
                self.users.insert(uid, Rc::clone(&name));
                name
            }
            // Not remembered: the lookup may work next time (it needs a descriptor).
            Err(e) => {
                tracing::warn!(uid, error = %e, "cannot look up the user name; using the uid");
                uid.to_string().into()
            }
        }
    }

    fn add_conn(&mut self, fd: OwnedFd) {
        fims::socket::set_buffers(fd.as_fd(), self.cfg.max_len as usize);
        let (uid, user) = match sys::peer_uid(fd.as_fd()) {
            Ok(uid) => (uid, self.user_of(uid)),
            Err(e) => {
                tracing::warn!(error = %e, "SO_PEERCRED failed; username left as ?");
                (u32::MAX, "?".into())
            }
        };
        let raw = fd.as_raw_fd();
        let Ok(id) = self.core.open(fd, uid, user, Instant::now()) else {
            return;
        };
        let r = self
            .poll
            .registry()
            .register(&mut SourceFd(&raw), Token(id), Interest::READABLE);
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot register a connection; closing it");
            self.core.hangup(id);
        }
    }

    fn read(&mut self, id: ConnId) {
        if self.read_in.len() <= id {
            self.read_in.resize(id + 1, 0);
        }
        if std::mem::replace(&mut self.read_in[id], self.turn) == self.turn {
            // Had its share this turn; if it is still readable it is in `again`.
            return;
        }
        let mut left = self.budget;
        while left > 0 {
            let Server { core, ring, .. } = self;
            let Some(conn) = core.conn(id).filter(|c| !c.closing) else {
                return;
            };
            let fd = conn.link.as_fd();
            let asked = left.min(ring.slots());
            let (got, more) = match ring.recv(fd, asked) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "recv failed; closing");
                    return core.hangup(id);
                }
            };
            for i in 0..got {
                let (slot, n) = ring.get(i);
                let open = core.conn(id).filter(|c| !c.closing);
                match open {
                    // Closed by one of this batch (a bad handshake): the rest
                    // is dropped with the connection.
                    None => break,
                    Some(c) if n == 0 && sys::peer_hung_up(c.link.as_fd()) => {
                        core.hangup(id);
                        break;
                    }
                    Some(_) => core.datagram(id, slot, n),
                }
            }
            ring.trim();
            if !more || got == 0 {
                // Drained: the next datagram raises a new edge.
                return;
            }
            left = left.saturating_sub(got);
        }
        self.again.push(id);
    }
}

/// Whether more than one connection has something to read this turn.
fn contended(events: &Events, again: &[ConnId]) -> bool {
    let readable = events
        .iter()
        .filter(|e| e.is_readable() || e.is_read_closed() || e.is_error())
        .filter_map(|e| match e.token() {
            LISTENER | WAKER => None,
            Token(id) => Some(id),
        });
    let mut first = None;
    for id in readable.chain(again.iter().copied()) {
        match first {
            None => first = Some(id),
            Some(f) if f != id => return true,
            Some(_) => {}
        }
    }
    false
}

/// Logs every counter and holding of `s` in one line.
fn log_stats(s: &Stats, what: &str) {
    tracing::info!(
        accepted = s.accepted,
        handshakes = s.handshakes,
        connections = s.connections,
        subscriptions = s.subscriptions,
        queued_bytes = s.queued_bytes,
        peak_queued_bytes = s.peak_queued_bytes,
        sub_refused = s.sub_refused,
        too_many_subs = s.too_many_subs,
        routed = s.routed,
        unrouted = s.unrouted,
        delivered = s.delivered,
        overflow = s.overflow,
        shed = s.shed,
        malformed = s.malformed,
        unknown_method = s.unknown_method,
        oversize = s.oversize,
        bad_handshakes = s.bad_handshakes,
        handshake_timeouts = s.handshake_timeouts,
        uid_refused = s.uid_refused,
        accept_stalls = s.accept_stalls,
        send_errors = s.send_errors,
        "{what}"
    );
}
