//! A blocking FIMS client: std and libc only, no threads, no runtime.
//!
//! Every wait is a `poll(2)` or a receive timeout with a deadline;
//! [`Client::as_raw_fd`] lets hosts with their own poll/epoll loop wait on the
//! socket themselves, and [`Connecting`] sets a connection up step by step for
//! hosts that must never block at all.
//!
//! # Subscriptions
//! A `sub` replaces the connection's whole subscription set on the existing
//! broker (and on ours). So the client keeps its complete set and every change
//! sends the whole set in one `sub`: [`subscribe`](Client::subscribe) adds to
//! it, [`set_subscriptions`](Client::set_subscriptions) replaces it, the reply
//! URI of [`request`](Client::request) joins it, and
//! [`reconnect`](Client::reconnect) sends it again. One `sub` carries at most
//! 255 URIs: a larger set is refused with [`Error::TooManySubscriptions`]
//! before anything is sent, and the set stays as it was.

mod connecting;

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use connecting::{Connecting, Progress, Wait};

use crate::codec::{Message, Method, OwnedMessage, Subscription};
use crate::error::{Error, Result};
use crate::{proto, sys};

/// A connection to the FIMS broker.
#[derive(Debug)]
pub struct Client {
    fd: OwnedFd,
    path: PathBuf,
    name: String,
    max_len: u32,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// The complete subscription set the broker confirmed last (sent whole on
    /// every change and every reconnect).
    subs: Vec<Subscription>,
    /// Messages that arrived while waiting for a subscribe answer or a reply.
    pending: VecDeque<OwnedMessage>,
    /// Holds the pending message handed out by the last `recv`.
    current: OwnedMessage,
    replies: proto::ReplyUris,
    /// The `SO_RCVTIMEO` last set (`None`: not set since connect).
    rcvtimeo: Option<Option<Duration>>,
}

impl Client {
    /// Connects to the broker at [`socket_path()`](crate::socket_path) as `name`
    /// (at most 5 s for the connect and the handshake).
    pub fn connect(name: &str) -> Result<Client> {
        Client::connect_to(crate::socket_path(), name)
    }

    /// Connects to the broker at `path` as `name` (1..=255 bytes), within 5 s
    /// for the connect and the handshake ([`Error::Timeout`] after that).
    pub fn connect_to(path: impl AsRef<Path>, name: &str) -> Result<Client> {
        Client::connect_timeout(path, name, proto::BROKER_ANSWER_TIMEOUT)
    }

    /// Connects to the broker at `path` as `name` and runs the handshake,
    /// never blocking past `timeout` (a broker that accepts but never answers,
    /// or whose listen backlog is full, gives [`Error::Timeout`] at the deadline).
    pub fn connect_timeout(
        path: impl AsRef<Path>,
        name: &str,
        timeout: Duration,
    ) -> Result<Client> {
        Connecting::start(path, name, timeout)?.finish()
    }

    /// Builds a connected client (the end of [`Connecting`]); `rbuf` is reused
    /// when it holds a whole datagram.
    fn from_parts(
        fd: OwnedFd,
        path: PathBuf,
        name: String,
        max_len: u32,
        subs: Vec<Subscription>,
        pending: VecDeque<OwnedMessage>,
        mut rbuf: Vec<u8>,
    ) -> Client {
        let need = proto::recv_capacity(max_len);
        if rbuf.capacity() < need {
            rbuf = Vec::with_capacity(need);
        }
        Client {
            fd,
            path,
            name,
            max_len,
            rbuf,
            wbuf: Vec::new(),
            subs,
            pending,
            current: OwnedMessage::default(),
            replies: proto::ReplyUris::default(),
            rcvtimeo: None,
        }
    }

    /// Drops the connection and connects again to the same path under the same
    /// name, sending the complete subscription set in one `sub` (at most 5 s in
    /// all). Messages not yet received are lost. On failure the client keeps
    /// its set for the next attempt.
    pub fn reconnect(&mut self) -> Result<()> {
        self.reconnect_timeout(proto::BROKER_ANSWER_TIMEOUT)
    }

    /// [`reconnect`](Self::reconnect) within `timeout` for the connect, the
    /// handshake and the subscription answer together.
    pub fn reconnect_timeout(&mut self, timeout: Duration) -> Result<()> {
        let mut c = Connecting::start(&self.path, &self.name, timeout)?;
        if !self.subs.is_empty() {
            c = c.with_subscriptions(&self.subs)?;
        }
        let fresh = c.finish()?;
        self.fd = fresh.fd;
        self.max_len = fresh.max_len;
        self.rbuf = fresh.rbuf;
        self.pending = fresh.pending;
        self.rcvtimeo = None;
        Ok(())
    }

    /// Takes the client apart and hands its connected socket over whole, with
    /// the messages it had already received and not handed out (they arrived
    /// while it waited for a subscribe answer or a reply). For hosts that do
    /// their own I/O on the socket from here on ([`crate::batch`], an event
    /// loop): the socket then has one owner. It is in blocking mode; the
    /// [`batch`](crate::batch) calls never block whatever the mode.
    pub fn into_parts(self) -> Parts {
        Parts {
            fd: self.fd,
            name: self.name,
            max_len: self.max_len,
            subscriptions: self.subs,
            pending: self.pending,
        }
    }

    /// The datagram limit the broker announced (whole datagram).
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// This client's process name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The socket path this client connects to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The complete subscription set (what the broker confirmed last; sent
    /// again by [`reconnect`](Self::reconnect)).
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subs
    }

    /// Adds each URI (every method, segment prefix) to the subscription set
    /// and sends the complete set in one `sub`. An empty list changes nothing.
    pub fn subscribe(&mut self, uris: &[&str]) -> Result<()> {
        let subs: Vec<_> = uris.iter().map(|u| Subscription::all(*u)).collect();
        self.subscribe_with(&subs)
    }

    /// Adds subscriptions, with a pub-only flag per URI, to the set, sends the
    /// complete set in one `sub` and waits for the broker's answer. A URI
    /// already in the set stays pub-only only if the new one is pub-only too.
    /// An empty list changes nothing (and sends nothing).
    pub fn subscribe_with(&mut self, subs: &[Subscription]) -> Result<()> {
        if subs.is_empty() {
            return Ok(());
        }
        self.send_set(proto::merged(&self.subs, subs))
    }

    /// Replaces the whole subscription set with `subs` (1..=255 URIs; the way
    /// to drop URIs or to make one pub-only) and sends it in one `sub`.
    pub fn set_subscriptions(&mut self, subs: &[Subscription]) -> Result<()> {
        self.send_set(proto::merged(&[], subs))
    }

    /// Sends `set` as the complete set; it becomes the client's set once the
    /// broker said `SUCCESS` (on any failure the old set stays).
    fn send_set(&mut self, set: Vec<Subscription>) -> Result<()> {
        let dg = proto::encode_sub(&self.name, &set)?;
        sys::send(self.fd.as_fd(), &dg)?;
        self.wait_sub_answer()?;
        self.subs = set;
        Ok(())
    }

    fn wait_sub_answer(&mut self) -> Result<()> {
        let deadline = sys::deadline(Some(proto::BROKER_ANSWER_TIMEOUT));
        loop {
            if !sys::wait_readable(self.fd.as_fd(), deadline)? {
                return Err(Error::Timeout(
                    proto::BROKER_ANSWER_TIMEOUT.as_millis() as u64
                ));
            }
            if !sys::recv(self.fd.as_fd(), &mut self.rbuf)? {
                return Err(Error::Closed);
            }
            let msg = Message::decode(&self.rbuf)?;
            match proto::sub_answer(&msg) {
                Some(answer) => return answer,
                None => self.pending.push_back(msg.to_owned()),
            }
        }
    }

    /// Sends one data message as this process.
    pub fn send(
        &mut self,
        method: Method,
        uri: &str,
        replyto: Option<&str>,
        body: &[u8],
    ) -> Result<()> {
        proto::encode_data(
            &mut self.wbuf,
            &self.name,
            self.max_len,
            method,
            uri,
            replyto,
            body,
        )?;
        sys::send(self.fd.as_fd(), &self.wbuf).map_err(Into::into)
    }

    /// Sends a message exactly as given (an empty process name is filled by the broker).
    pub fn send_message(&mut self, msg: &Message<'_>) -> Result<()> {
        proto::encode_checked(&mut self.wbuf, msg, self.max_len)?;
        sys::send(self.fd.as_fd(), &self.wbuf).map_err(Into::into)
    }

    /// Sends an already encoded datagram as it is (for relays and benchmarks).
    pub fn send_raw(&mut self, datagram: &[u8]) -> Result<()> {
        sys::send(self.fd.as_fd(), datagram).map_err(Into::into)
    }

    /// Receives the next message, waiting up to `timeout` (`None`: forever,
    /// zero: only what is already there). `Ok(None)` on timeout.
    ///
    /// A datagram that does not decode gives [`Error::Decode`]; the connection
    /// stays usable. [`Error::Closed`] means the broker went away.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Message<'_>>> {
        if let Some(m) = self.pending.pop_front() {
            self.current = m;
            return Ok(Some(self.current.as_message()));
        }
        if !self.recv_datagram(timeout)? {
            return Ok(None);
        }
        Ok(Some(Message::decode(&self.rbuf)?))
    }

    /// Receives the next raw datagram into the internal buffer and returns it
    /// undecoded; `Ok(None)` on timeout. Pending decoded messages come first.
    pub fn recv_raw(&mut self, timeout: Option<Duration>) -> Result<Option<&[u8]>> {
        if let Some(m) = self.pending.pop_front() {
            self.rbuf.clear();
            m.as_message().encode(&mut self.rbuf)?;
            return Ok(Some(&self.rbuf));
        }
        Ok(self.recv_datagram(timeout)?.then_some(&self.rbuf[..]))
    }

    /// One blocking `recv` bounded by `SO_RCVTIMEO` (set only when the timeout
    /// changes): a single syscall per message on the hot path, not poll + recv.
    fn recv_datagram(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = sys::deadline(timeout);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let flags = if left == Some(Duration::ZERO) {
                libc::MSG_DONTWAIT
            } else {
                if self.rcvtimeo != Some(left) {
                    sys::set_recv_timeout(self.fd.as_fd(), left)?;
                    self.rcvtimeo = Some(left);
                }
                0
            };
            match sys::recv_flags(self.fd.as_fd(), &mut self.rbuf, flags) {
                Ok(true) => return Ok(true),
                Ok(false) => return Err(Error::Closed),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // The timeout ran out (or, rarely, ended a hair early: go again).
                    if deadline.is_some_and(|d| Instant::now() < d) {
                        continue;
                    }
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether a message is already waiting (pending or readable now).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends a request on a fresh reply URI of this client and waits up to
    /// `timeout` for the answer. Other messages that arrive meanwhile are kept
    /// for [`recv`](Self::recv).
    pub fn request(
        &mut self,
        method: Method,
        uri: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<OwnedMessage> {
        let (prefix, fresh) = self.replies.prefix();
        if fresh {
            self.subscribe(&[&prefix])?;
            self.replies.subscribed(prefix.clone());
        }
        let replyto = self.replies.next(&prefix);
        self.request_on(method, uri, &replyto, body, timeout)
    }

    /// Sends a request whose answer should go to `replyto` (subscribing to it
    /// first unless a subscription covers it) and waits up to `timeout` for it.
    pub fn request_on(
        &mut self,
        method: Method,
        uri: &str,
        replyto: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<OwnedMessage> {
        if !proto::covered(&self.subs, replyto) {
            self.subscribe(&[replyto])?;
        }
        self.send(method, uri, Some(replyto), body)?;
        let deadline = sys::deadline(Some(timeout));
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.recv_datagram(left)? {
                return Err(Error::Timeout(timeout.as_millis() as u64));
            }
            let msg = Message::decode(&self.rbuf)?;
            if msg.uri == replyto {
                return Ok(msg.to_owned());
            }
            self.pending.push_back(msg.to_owned());
        }
    }
}

/// A [`Client`] taken apart by [`Client::into_parts`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Parts {
    /// The connected socket.
    pub fd: OwnedFd,
    /// The process name the connection was made under.
    pub name: String,
    /// The datagram limit the broker announced (whole datagram).
    pub max_len: u32,
    /// The complete subscription set the broker confirmed.
    pub subscriptions: Vec<Subscription>,
    /// Messages received and not handed out yet, oldest first.
    pub pending: VecDeque<OwnedMessage>,
}

impl AsRawFd for Client {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
