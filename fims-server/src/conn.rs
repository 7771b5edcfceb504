//! One client connection: handshake state, identity, subscriptions, counters
//! and the outbound queue; and [`Link`], how the broker core sends to a peer.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use crate::queue::OutQueue;
use crate::sys;

/// How the broker core sends one datagram to a connection's peer: a socket in
/// `fims_server`, a recording fake in the sans-IO harness ([`crate::sim`]).
pub(crate) trait Link {
    /// Sends `parts` as one datagram without blocking: `WouldBlock` when the
    /// peer's socket is full.
    fn send(&mut self, parts: &[&[u8]]) -> io::Result<()>;
}

impl Link for OwnedFd {
    fn send(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        sys::send_parts(self.as_fd(), parts)
    }
}

/// Where a connection is in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Our handshake went out; waiting for the client's 8 bytes.
    AwaitHandshake,
    /// Waiting for the process name datagram.
    AwaitName,
    /// Exchanging messages.
    Ready,
}

/// What one delivery attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Sent to the socket now.
    Sent,
    /// The socket was full: queued (the caller must ask for writable events
    /// when `first` is true).
    Queued { first: bool },
    /// The receiver's queue was full: dropped for this receiver.
    Overflow,
    /// The broker's memory budget was full: dropped for this receiver.
    Shed,
    /// The peer is gone: close the connection.
    Gone,
    /// Another send error: dropped.
    Failed(i32),
}

/// Whether a send error means the peer has gone.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ECONNREFUSED)
    )
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn<L> {
    pub(crate) link: L,
    /// Unique over the broker's life (slots are reused; deadlines name the serial).
    pub(crate) serial: u64,
    /// Unix user id of the peer (`SO_PEERCRED`).
    pub(crate) uid: u32,
    pub(crate) state: State,
    /// Handshake name (empty until the name datagram arrived).
    pub(crate) name: Box<str>,
    /// Unix user name of the peer, resolved at accept.
    pub(crate) user: Rc<str>,
    /// Collapsed keys this connection holds in the subscription index.
    pub(crate) subs: Vec<Box<str>>,
    pub(crate) queue: OutQueue,
    /// Position in the broker's list of connections with a non-empty queue.
    pub(crate) backlog_pos: Option<usize>,
    /// Whether writable events are wanted (only while the queue is non-empty).
    pub(crate) want_writable: bool,
    /// Generation of the last message routed to (or from) this connection.
    pub(crate) stamp: u64,
    /// Marked for closing; skipped by routing until it is closed.
    pub(crate) closing: bool,
    /// Deliveries to this receiver dropped because its queue was full.
    pub(crate) overflow: u64,
    /// Deliveries to this receiver dropped to keep the broker's memory budget.
    pub(crate) shed: u64,
}

impl<L: Link> Conn<L> {
    pub(crate) fn new(link: L, serial: u64, uid: u32, user: Rc<str>) -> Conn<L> {
        Conn {
            link,
            serial,
            uid,
            state: State::AwaitHandshake,
            name: "".into(),
            user,
            subs: Vec::new(),
            queue: OutQueue::default(),
            backlog_pos: None,
            want_writable: false,
            stamp: 0,
            closing: false,
            overflow: 0,
            shed: 0,
        }
    }

    /// Sends `parts` now when nothing is queued before it. `Ok(false)` when
    /// it has to be queued (socket full, or a queue already waits).
    pub(crate) fn try_send(&mut self, parts: &[&[u8]]) -> Result<bool, Delivery> {
        if !self.queue.is_empty() {
            return Ok(false);
        }
        match self.link.send(parts) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if is_gone(&e) => Err(Delivery::Gone),
            Err(e) => Err(Delivery::Failed(e.raw_os_error().unwrap_or(0))),
        }
    }

    /// Sends queued datagrams until the socket is full or the queue empty.
    /// Returns what left the queue, or `Err` when the peer is gone.
    pub(crate) fn flush(&mut self) -> Result<Flushed, ()> {
        let mut out = Flushed::default();
        while let Some(front) = self.queue.front() {
            match self.link.send(&[front]) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_gone(&e) => return Err(()),
                Err(_) => out.failed += 1,
            }
            if let Some(len) = self.queue.pop_front() {
                out.datagrams += 1;
                out.bytes += len;
            }
        }
        Ok(out)
    }
}

/// What a [`Conn::flush`] took off the queue.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flushed {
    /// Datagrams that left the queue (sent or failed).
    pub(crate) datagrams: usize,
    /// Their bytes.
    pub(crate) bytes: usize,
    /// Of those, how many failed with a send error (dropped).
    pub(crate) failed: u64,
}
