//! A blocking FIMS client: std and libc only, no threads, no runtime.
//!
//! Every wait is a `poll(2)` with a deadline; [`Client::as_raw_fd`] lets hosts
//! with their own poll/epoll loop wait on the socket themselves.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::codec::{Handshake, Message, Method, OwnedMessage, Subscription};
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
    /// Connects to the broker at [`socket_path()`](crate::socket_path) as `name`.
    pub fn connect(name: &str) -> Result<Client> {
        Client::connect_to(crate::socket_path(), name)
    }

    /// Connects to the broker at `path` as `name` (1..=255 bytes).
    pub fn connect_to(path: impl AsRef<Path>, name: &str) -> Result<Client> {
        proto::check_name(name)?;
        let path = path.as_ref().to_path_buf();
        let (fd, max_len) = handshake(&path, name)?;
        Ok(Client {
            fd,
            path,
            name: name.to_owned(),
            max_len,
            rbuf: Vec::with_capacity(proto::recv_capacity(max_len)),
            wbuf: Vec::new(),
            subs: Vec::new(),
            pending: VecDeque::new(),
            current: OwnedMessage::default(),
            replies: proto::ReplyUris::default(),
            rcvtimeo: None,
        })
    }

    /// Drops the connection and connects again to the same path under the same
    /// name, restoring every subscription. Messages not yet received are lost.
    pub fn reconnect(&mut self) -> Result<()> {
        let (fd, max) = handshake(&self.path, &self.name)?;
        self.fd = fd;
        self.rcvtimeo = None;
        self.max_len = max;
        self.rbuf = Vec::with_capacity(proto::recv_capacity(max));
        let subs = std::mem::take(&mut self.subs);
        self.subscribe_with(&subs)
    }

    /// The body limit the broker announced.
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

    /// Subscriptions made so far (restored by [`reconnect`](Self::reconnect)).
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subs
    }

    /// Subscribes to every method on each URI (segment prefix).
    pub fn subscribe(&mut self, uris: &[&str]) -> Result<()> {
        let subs: Vec<_> = uris.iter().map(|u| Subscription::all(*u)).collect();
        self.subscribe_with(&subs)
    }

    /// Subscribes, with a pub-only flag per URI, and waits for the broker's answer.
    pub fn subscribe_with(&mut self, subs: &[Subscription]) -> Result<()> {
        for (dg, chunk) in proto::encode_subs(&self.name, subs)?
            .iter()
            .zip(subs.chunks(crate::codec::MAX_SUBS_PER_DATAGRAM))
        {
            sys::send(self.fd.as_fd(), dg)?;
            self.wait_sub_answer()?;
            self.subs.extend_from_slice(chunk);
        }
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

/// Connects and runs the client side of the handshake.
fn handshake(path: &Path, name: &str) -> Result<(OwnedFd, u32)> {
    let fd = sys::connect(path, false).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            Error::BrokerNotRunning {
                path: path.to_path_buf(),
                source,
            }
        }
        _ => Error::Io(source),
    })?;
    let mut buf = Vec::with_capacity(64);
    let deadline = sys::deadline(Some(proto::BROKER_ANSWER_TIMEOUT));
    if !sys::wait_readable(fd.as_fd(), deadline)? {
        return Err(Error::Timeout(
            proto::BROKER_ANSWER_TIMEOUT.as_millis() as u64
        ));
    }
    if !sys::recv(fd.as_fd(), &mut buf)? {
        return Err(Error::Closed);
    }
    let hs = proto::answer_handshake(&buf)?;
    sys::set_buffers(fd.as_fd(), proto::recv_capacity(hs.max_len));
    let ours = Handshake {
        version: crate::codec::LAYOUT_VERSION,
        max_len: hs.max_len,
    };
    sys::send(fd.as_fd(), &ours.encode())?;
    sys::send(fd.as_fd(), name.as_bytes())?;
    Ok((fd, hs.max_len))
}
