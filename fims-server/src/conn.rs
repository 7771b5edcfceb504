//! One client connection: handshake state, identity, subscriptions, counters
//! and the outbound queue; and [`Link`], how the broker core sends to a peer.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use crate::queue::OutQueue;
use crate::sys::{self, SEND_CHUNK};

/// How the broker core sends datagrams to a connection's peer: a socket in
/// `fims_server`, a recording fake in the sans-IO harness ([`crate::sim`]).
pub(crate) trait Link {
    /// Sends `parts` as one datagram without blocking: `WouldBlock` when the
    /// peer's socket is full.
    fn send(&mut self, parts: &[&[u8]]) -> io::Result<()>;

    /// Sends each of `dgs` as its own datagram, in order, without blocking.
    /// Returns how many went out (a prefix; fewer than all when the socket
    /// filled up or one failed), or the error of the first one.
    fn send_many(&mut self, dgs: &[&[u8]]) -> io::Result<usize>;
}

impl Link for OwnedFd {
    fn send(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        sys::send_parts(self.as_fd(), parts)
    }

    fn send_many(&mut self, dgs: &[&[u8]]) -> io::Result<usize> {
        sys::send_many(self.as_fd(), dgs)
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

/// What queuing a delivery did (`route.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Queued (the caller must ask for writable events when `first` is true).
    Queued { first: bool },
    /// The receiver's queue was full: dropped for this receiver.
    Overflow,
    /// The broker's memory budget was full: dropped for this receiver.
    Shed,
    /// The receiver is gone.
    Gone,
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

    /// Sends queued datagrams (up to [`SEND_CHUNK`] per `send_many`) until
    /// the socket is full or the queue empty. Returns what left the queue, or
    /// `Err` when the peer is gone.
    pub(crate) fn flush(&mut self) -> Result<Flushed, ()> {
        let mut out = Flushed::default();
        while !self.queue.is_empty() {
            let mut chunk: [&[u8]; SEND_CHUNK] = [&[]; SEND_CHUNK];
            let n = self.queue.fill_front(&mut chunk);
            let sent = match self.link.send_many(&chunk[..n]) {
                Ok(0) => break,
                Ok(sent) => sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if fims::is_disconnect(&e) => return Err(()),
                // That datagram failed: dropped.
                Err(_) => {
                    out.failed += 1;
                    1
                }
            };
            for _ in 0..sent {
                if let Some(len) = self.queue.pop_front() {
                    out.datagrams += 1;
                    out.bytes += len;
                }
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
