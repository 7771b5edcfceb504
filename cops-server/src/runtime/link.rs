//! COPS's three connections to the broker (docs/cops.md, "Connections"):
//! - *heartbeat*: sends the rounds; subscribed to `ourUri/heartbeat` and the
//!   probe URI only, so it receives replies and probes and nothing a client
//!   can flood elsewhere under `ourUri`; read first, every turn of the loop;
//! - *probe*: sends the probes (the broker never echoes to the sender, so they
//!   must come from another connection); subscribed to nothing;
//! - *serve*: subscribed to `ourUri`; answers `get ourUri/...` (rate-limited),
//!   publishes the stats and posts the events; read last, a bounded amount per
//!   turn.
//!
//! Each sends its complete subscription set in one `sub` on every connect.
//! The three live and die together: when one is lost, all are dropped and
//! connected again (the engine voids the rounds in between).
//!
//! Each connection is set up by `fims::blocking::Connecting` (connect,
//! handshake, subscribe, under one deadline) on the runtime's blocking pool,
//! so the loop goes on meanwhile; COPS then takes the socket whole
//! (`Client::into_parts`) and does its data I/O as non-blocking batches
//! (`fims::batch`). The socket has one owner, [`Conn`]; tokio's registration
//! borrows it only while the loop sleeps on it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use fims::batch::{enable_timestamps, Received, RecvBatch, SendBatch};
use fims::blocking::Connecting;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::{debug, warn};

use crate::engine::{Transmit, Via};

/// Longest a connect and its handshake may take (the loop goes on meanwhile;
/// COPS has no bus until it is done anyway).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest COPS waits for room in a socket buffer before dropping a batch
/// (heartbeat and probe connections only).
const SEND_WAIT_MS: i32 = 100;
/// Datagrams the serving connection keeps for later when the broker takes no
/// more; past this the oldest are dropped.
const SERVE_BACKLOG: usize = 4096;

/// The socket's descriptor as tokio's registration sees it: the registration
/// does not own it ([`Conn`] does).
pub(super) struct Borrowed(RawFd);

impl AsRawFd for Borrowed {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// One connection.
pub(super) struct Conn {
    pub(super) via: Via,
    /// Readable-only registration of the socket, while not polling. Declared
    /// before `fd` so that it is dropped (deregistered) while `fd` is open.
    pub(super) readable: Option<AsyncFd<Borrowed>>,
    /// The socket; its one owner.
    fd: OwnedFd,
    /// The broker's datagram limit (whole datagram).
    max_len: u32,
    batch: SendBatch,
    /// When the socket was last seen empty: nothing drained later arrived before it.
    last_empty: Instant,
}

/// What one drain of a connection found.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Drained {
    /// Datagrams taken.
    pub(super) n: usize,
    /// The broker closed the connection.
    pub(super) closed: bool,
}

impl Conn {
    /// Connects as `name` and sends its complete subscription set `subs` in
    /// one `sub` (none when empty). Blocks up to [`CONNECT_TIMEOUT`]: the
    /// runtime calls it on its blocking pool, never on the loop's thread.
    pub(super) fn dial(
        socket: &Path,
        name: &str,
        via: Via,
        subs: &[String],
    ) -> Result<Conn, fims::Error> {
        let mut c = Connecting::start(socket, name, CONNECT_TIMEOUT)?;
        if !subs.is_empty() {
            let set: Vec<fims::Subscription> = subs
                .iter()
                .map(|u| fims::Subscription::all(u.as_str()))
                .collect();
            c = c.with_subscriptions(&set)?;
        }
        let parts = c.finish()?.into_parts();
        // Messages that came while subscribing: nothing of ours can be among
        // them before the engine sent anything, so they are dropped.
        drop(parts.pending);
        if via != Via::Probe {
            if let Err(e) = enable_timestamps(parts.fd.as_fd()) {
                debug!(error = %e, "no kernel receive timestamps");
            }
        }
        Ok(Conn {
            via,
            readable: None,
            fd: parts.fd,
            max_len: parts.max_len,
            batch: SendBatch::default(),
            last_empty: Instant::now(),
        })
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Registers the socket with tokio for readability (when not polling).
    pub(super) fn register(&mut self) {
        if self.readable.is_none() {
            let raw = Borrowed(self.fd.as_raw_fd());
            // SAFETY: `self.fd` stays open and unchanged while the
            // registration lives: it is dropped before `fd` (field order,
            // and `readable = None` before any replacement of the Conn).
            self.readable =
                unsafe { AsyncFd::register_with_interest(raw, Interest::READABLE) }.ok();
        }
    }

    /// Hands up to `max` waiting datagrams to `f`, each with its kernel
    /// arrival time (clamped between the last time the socket was seen empty
    /// and now); with a `budget`, stops (between small batches) once it is
    /// spent, leaving the rest in the socket.
    pub(super) fn drain(
        &mut self,
        bufs: &mut RecvBatch,
        max: usize,
        budget: Option<Duration>,
        mut f: impl FnMut(Instant, &fims::Message<'_>),
    ) -> Drained {
        let fd = self.fd.as_fd();
        let mut out = Drained::default();
        let began = Instant::now();
        // Small batches when time counts, so the budget is kept closely.
        let batch = if budget.is_some() { 64 } else { 256 };
        while out.n < max && budget.is_none_or(|b| began.elapsed() < b) {
            let (now, wall) = (Instant::now(), SystemTime::now());
            let floor = self.last_empty.min(now);
            let asked = batch.min(max - out.n);
            let r = bufs.recv(fd, asked, |dg, stamp| {
                let age = stamp.and_then(|st| wall.duration_since(st).ok());
                let at = age
                    .and_then(|a| now.checked_sub(a))
                    .unwrap_or(now)
                    .clamp(floor, now);
                match fims::Message::decode(dg) {
                    Ok(msg) => f(at, &msg),
                    Err(e) => debug!(error = %e, "undecodable datagram ignored"),
                }
            });
            match r {
                Ok(Received::Datagrams(0)) => {
                    self.last_empty = now;
                    break;
                }
                Ok(Received::Datagrams(n)) => {
                    out.n += n;
                    if n < asked {
                        // A short batch emptied the socket: no second call
                        // just to hear EAGAIN.
                        self.last_empty = now;
                        break;
                    }
                }
                Ok(Received::Closed) => {
                    out.closed = true;
                    break;
                }
                Err(e) => {
                    debug!(error = %e, "recvmmsg failed");
                    break;
                }
            }
        }
        out
    }

    /// Encodes a message into the send batch (`name`: our process name).
    pub(super) fn queue(&mut self, t: &Transmit, name: &str, our_uri: &str) {
        // The broker's number limits the whole datagram; keep room for the five
        // strings at their longest (the username is stamped by the broker).
        let max = (self.max_len as usize).saturating_sub(fims::MAX_OVERHEAD);
        let too_large;
        let body: &[u8] = if t.body.len() > max {
            // A GET answer too large for the broker: say so on the replyto instead.
            too_large = format!(
                "\"Error: answer of {} bytes is over the broker's limit of {max}; ask {our_uri}/stats/<name>\"",
                t.body.len(),
            );
            too_large.as_bytes()
        } else {
            &t.body
        };
        let msg = fims::Message {
            method: t.method.as_str(),
            uri: &t.uri,
            replyto: t.replyto.as_deref().unwrap_or(""),
            process_name: name,
            username: "",
            body,
        };
        if let Err(e) = self.batch.push(&msg) {
            warn!(uri = %t.uri, error = %e, "message not sent");
        }
    }

    /// Sends the batch with `sendmmsg`. When the socket buffer is full, the
    /// heartbeat and probe connections wait (briefly) for room, never long on
    /// a stuck broker; the serving connection never waits (a flood of
    /// requests must not slow the cycle): what does not fit is sent on a later
    /// turn. Returns false when the connection is gone.
    pub(super) fn flush(&mut self) -> bool {
        let fd = self.fd.as_fd();
        let mut from = 0;
        let mut up = true;
        while from < self.batch.len() {
            match self.batch.send_from(fd, from) {
                Ok(n) => from += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.via == Via::Serve {
                        self.batch.consume(from);
                        let over = self.batch.len().saturating_sub(SERVE_BACKLOG);
                        if over > 0 {
                            warn!(dropped = over, "the broker takes no messages from the serving connection: oldest dropped");
                            self.batch.consume(over);
                        }
                        return true;
                    }
                    if !wait_writable(fd, SEND_WAIT_MS) {
                        warn!(
                            via = ?self.via,
                            dropped = self.batch.len() - from,
                            "the broker takes no messages: batch dropped"
                        );
                        break;
                    }
                }
                Err(e) => {
                    if fims::is_disconnect(&e) {
                        up = false;
                        break;
                    }
                    warn!(error = %e, "send failed; message dropped");
                    from += 1;
                }
            }
        }
        self.batch.clear();
        up
    }
}

/// Waits until `r` is readable (forever when there is no registration).
pub(super) async fn readable(r: &Option<AsyncFd<Borrowed>>) {
    match r {
        Some(r) => {
            if let Ok(mut guard) = r.readable().await {
                guard.clear_ready();
            }
        }
        None => std::future::pending().await,
    }
}

/// Waits up to `ms` for room to send on `fd`.
fn wait_writable(fd: BorrowedFd<'_>, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}
