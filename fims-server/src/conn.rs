//! One client connection: handshake state, identity, subscriptions and the
//! bounded outbound queue.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use crate::sys;

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

/// What a delivery attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Sent to the socket now.
    Sent,
    /// The socket was full: queued (the caller must ask for writable events
    /// when `first` is true).
    Queued { first: bool },
    /// The queue was full: dropped for this receiver.
    Overflow,
    /// The peer is gone: close the connection.
    Gone,
    /// Another send error: dropped.
    Failed(i32),
}

/// Limits of a connection's outbound queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimit {
    pub(crate) datagrams: usize,
    pub(crate) bytes: usize,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) fd: OwnedFd,
    pub(crate) state: State,
    /// Handshake name (empty until the name datagram arrived).
    pub(crate) name: Box<str>,
    /// Unix user of the peer, resolved at accept.
    pub(crate) user: Rc<str>,
    /// Normalized keys this connection holds in the subscription index.
    pub(crate) subs: Vec<Box<str>>,
    queue: VecDeque<Rc<[u8]>>,
    queued_bytes: usize,
    /// Whether writable events are asked for (only while the queue is non-empty).
    pub(crate) want_writable: bool,
    /// Generation of the last message routed to (or from) this connection.
    pub(crate) stamp: u64,
    /// Marked for closing; skipped by routing until it is closed.
    pub(crate) closing: bool,
    /// Deliveries dropped because the queue was full.
    pub(crate) overflow: u64,
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ECONNREFUSED)
    )
}

impl Conn {
    pub(crate) fn new(fd: OwnedFd, user: Rc<str>) -> Conn {
        Conn {
            fd,
            state: State::AwaitHandshake,
            name: "".into(),
            user,
            subs: Vec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            want_writable: false,
            stamp: 0,
            closing: false,
            overflow: 0,
        }
    }

    /// Datagrams waiting in the outbound queue.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Sends `parts` as one datagram now if nothing is queued before it, else
    /// queues it (sharing `shared` with the other receivers of the same message).
    pub(crate) fn deliver(
        &mut self,
        parts: &[&[u8]],
        shared: &mut Option<Rc<[u8]>>,
        limit: QueueLimit,
    ) -> Delivery {
        if self.queue.is_empty() {
            match sys::send_parts(self.fd.as_fd(), parts) {
                Ok(()) => return Delivery::Sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if is_gone(&e) => return Delivery::Gone,
                Err(e) => return Delivery::Failed(e.raw_os_error().unwrap_or(0)),
            }
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.queue.len() >= limit.datagrams
            || (!self.queue.is_empty() && self.queued_bytes + len > limit.bytes)
        {
            self.overflow += 1;
            return Delivery::Overflow;
        }
        let dg = shared.get_or_insert_with(|| parts.concat().into());
        let first = self.queue.is_empty();
        self.queue.push_back(Rc::clone(dg));
        self.queued_bytes += len;
        Delivery::Queued { first }
    }

    /// Sends queued datagrams until the socket is full or the queue empty.
    /// Returns the number of datagrams dropped on send errors, or `Err` when
    /// the peer is gone.
    pub(crate) fn flush(&mut self) -> Result<u64, ()> {
        let mut failed = 0;
        while let Some(front) = self.queue.front() {
            match sys::send_parts(self.fd.as_fd(), &[front]) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(failed),
                Err(e) if is_gone(&e) => return Err(()),
                Err(_) => failed += 1,
            }
            self.queued_bytes -= front.len();
            self.queue.pop_front();
        }
        // Give back what a burst made the queue grow to (idle connections stay small).
        if self.queue.capacity() > 64 {
            self.queue.shrink_to(16);
        }
        Ok(failed)
    }
}
