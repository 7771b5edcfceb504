//! A connection in progress, advanced step by step without ever blocking:
//! connect, the broker's handshake, ours, the process name and (optionally)
//! the first subscription set and its answer.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Client;
use crate::codec::{Message, OwnedMessage, Subscription};
use crate::error::{Error, Result};
use crate::{proto, sys};

/// A connection to the broker being set up, for hosts that must never block
/// (a `poll(timeout = 0)` driver, an event loop).
///
/// [`advance`](Self::advance) does every step that can be done now and
/// returns at once: [`Progress::Ready`] with the connected [`Client`], or
/// [`Progress::Pending`] with the connection back and what it waits for
/// ([`wait`](Self::wait)). Once its deadline has passed, `advance` fails with
/// [`Error::Timeout`]. Dropping it closes the socket.
///
/// ```no_run
/// use fims::blocking::{Connecting, Progress};
/// use std::time::Duration;
/// # fn main() -> fims::Result<()> {
/// let mut c = Connecting::start("/tmp/FlexGen_FIMS_Server.socket", "me", Duration::from_secs(5))?
///     .with_subscriptions(&[fims::Subscription::all("/me")])?;
/// let client = loop {
///     match c.advance()? {
///         Progress::Ready(client) => break client,
///         // A host's loop would register c.wait() with its poll and go on with other work.
///         Progress::Pending(next) => c = next,
///     }
///     c.wait_until(c.deadline())?;
/// };
/// # drop(client); Ok(()) }
/// ```
#[derive(Debug)]
pub struct Connecting {
    path: PathBuf,
    name: String,
    timeout: Duration,
    deadline: Instant,
    subs: Vec<Subscription>,
    step: Step,
    /// Messages that arrived while waiting for the subscribe answer.
    pending: VecDeque<OwnedMessage>,
    /// Receive buffer, sized for a whole datagram once the broker's limit is
    /// known; handed on to the client (allocated once, not per `advance`).
    buf: Vec<u8>,
}

#[derive(Debug)]
enum Step {
    /// Not connected yet; try at `at` (the broker's backlog was full).
    Connect { at: Instant },
    /// Connected; the broker's 8-byte handshake has not come yet.
    BrokerHello { fd: OwnedFd },
    /// Our handshake, name and `sub` are being sent (`out` front first).
    Sending {
        fd: OwnedFd,
        max_len: u32,
        out: VecDeque<Vec<u8>>,
    },
    /// The `sub` is sent; its answer has not come yet.
    SubAnswer { fd: OwnedFd, max_len: u32 },
}

/// What [`Connecting::advance`] came to.
#[derive(Debug)]
pub enum Progress {
    /// Connected (and subscribed, when subscriptions were given).
    Ready(Client),
    /// Not yet: wait for [`Connecting::wait`], then advance again.
    Pending(Connecting),
}

/// What a pending connection waits for before the next
/// [`advance`](Connecting::advance) can make progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The socket becomes readable (`POLLIN`).
    Readable(RawFd),
    /// The socket becomes writable (`POLLOUT`).
    Writable(RawFd),
    /// Nothing to poll (the broker's listen backlog was full): advance again
    /// at this time.
    Until(Instant),
}

impl Wait {
    /// The descriptor to poll, if any (it changes until the connect succeeds).
    pub fn fd(&self) -> Option<RawFd> {
        match *self {
            Wait::Readable(fd) | Wait::Writable(fd) => Some(fd),
            Wait::Until(_) => None,
        }
    }

    /// The `poll(2)` events to ask for: `POLLIN`, `POLLOUT`, or 0 for none.
    pub fn poll_events(&self) -> i16 {
        match self {
            Wait::Readable(_) => libc::POLLIN,
            Wait::Writable(_) => libc::POLLOUT,
            Wait::Until(_) => 0,
        }
    }
}

impl Connecting {
    /// Starts connecting to the broker at `path` as `name` (1..=255 bytes); the
    /// whole setup must be done within `timeout`. Never blocks: a full listen
    /// backlog is retried by later [`advance`](Self::advance) calls.
    pub fn start(path: impl AsRef<Path>, name: &str, timeout: Duration) -> Result<Connecting> {
        proto::check_name(name)?;
        let now = Instant::now();
        let c = Connecting {
            path: path.as_ref().to_path_buf(),
            name: name.to_owned(),
            timeout,
            // A timeout too large for the clock means no deadline in practice.
            deadline: now
                .checked_add(timeout)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
            subs: Vec::new(),
            step: Step::Connect { at: now },
            pending: VecDeque::new(),
            buf: Vec::with_capacity(64),
        };
        // The first attempt now, so "no broker" is reported by `start` itself.
        let step = c.try_connect()?;
        Ok(Connecting { step, ..c })
    }

    /// Subscribes as part of the setup: the complete set is sent in one `sub`
    /// after the handshake, and the client is ready only once the broker has
    /// said `SUCCESS`. Fails at once (nothing sent) for a set that is empty,
    /// does not fit one `sub` (over 255 URIs) or holds an invalid URI.
    pub fn with_subscriptions(mut self, subs: &[Subscription]) -> Result<Connecting> {
        let set = proto::merged(&[], subs);
        proto::encode_sub(&self.name, &set)?;
        self.subs = set;
        Ok(self)
    }

    /// When the setup fails with [`Error::Timeout`] if not done.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The socket path this connection goes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the connection waits for now.
    pub fn wait(&self) -> Wait {
        match &self.step {
            Step::Connect { at } => Wait::Until(*at),
            Step::BrokerHello { fd } | Step::SubAnswer { fd, .. } => Wait::Readable(fd.as_raw_fd()),
            Step::Sending { fd, .. } => Wait::Writable(fd.as_raw_fd()),
        }
    }

    /// Does every step that can be done now, without blocking.
    pub fn advance(mut self) -> Result<Progress> {
        loop {
            // The placeholder is replaced before anyone can see it.
            let step = std::mem::replace(&mut self.step, Step::Connect { at: self.deadline });
            let flow = match step {
                Step::Connect { at } if Instant::now() < at => Flow::Blocked(Step::Connect { at }),
                Step::Connect { .. } => match self.try_connect()? {
                    step @ Step::Connect { .. } => Flow::Blocked(step),
                    step => Flow::Next(step),
                },
                Step::BrokerHello { fd } => self.on_hello(fd)?,
                Step::Sending { fd, max_len, out } => self.on_send(fd, max_len, out)?,
                Step::SubAnswer { fd, max_len } => self.on_sub_answer(fd, max_len)?,
            };
            match flow {
                Flow::Next(step) => self.step = step,
                Flow::Done(client) => return Ok(Progress::Ready(*client)),
                Flow::Blocked(step) => {
                    if Instant::now() >= self.deadline {
                        return Err(Error::Timeout(self.timeout.as_millis() as u64));
                    }
                    self.step = step;
                    return Ok(Progress::Pending(self));
                }
            }
        }
    }

    /// Blocks until what [`wait`](Self::wait) names happens or `until`
    /// passes, whichever is first (for callers that may block; event loops
    /// poll [`Wait::fd`] themselves). Returns whether the wait ended before `until`.
    pub fn wait_until(&self, until: Instant) -> Result<bool> {
        match &self.step {
            Step::Connect { at } => {
                std::thread::sleep(until.min(*at).saturating_duration_since(Instant::now()));
                Ok(*at <= until)
            }
            Step::BrokerHello { fd } | Step::SubAnswer { fd, .. } => {
                Ok(sys::wait_for(fd.as_fd(), libc::POLLIN, Some(until))?)
            }
            Step::Sending { fd, .. } => Ok(sys::wait_for(fd.as_fd(), libc::POLLOUT, Some(until))?),
        }
    }

    /// Drives the setup to the end, blocking (in `poll`) until it is done or
    /// the deadline passes; never past the deadline.
    pub fn finish(self) -> Result<Client> {
        let mut c = self;
        loop {
            match c.advance()? {
                Progress::Ready(client) => return Ok(client),
                Progress::Pending(next) => c = next,
            }
            c.wait_until(c.deadline)?;
        }
    }

    /// One nonblocking connect attempt: connected, or to be tried again a
    /// little later (the broker's backlog is full).
    fn try_connect(&self) -> Result<Step> {
        match sys::connect(&self.path) {
            Ok(Some(fd)) => Ok(Step::BrokerHello { fd }),
            Ok(None) => Ok(Step::Connect {
                at: Instant::now() + proto::CONNECT_RETRY,
            }),
            Err(e) => Err(proto::connect_error(&self.path, e)),
        }
    }

    /// Reads the broker's handshake if it is there and queues our answer.
    fn on_hello(&mut self, fd: OwnedFd) -> Result<Flow> {
        match sys::recv_flags(fd.as_fd(), &mut self.buf, libc::MSG_DONTWAIT) {
            Ok(true) => {}
            Ok(false) => return Err(Error::Closed),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(Flow::Blocked(Step::BrokerHello { fd }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                return Ok(Flow::Next(Step::BrokerHello { fd }))
            }
            Err(e) => return Err(e.into()),
        }
        let hs = proto::answer_handshake(&self.buf)?;
        self.buf = Vec::with_capacity(proto::recv_capacity(hs.max_len));
        sys::set_buffers(fd.as_fd(), proto::recv_capacity(hs.max_len));
        let mut out = VecDeque::with_capacity(3);
        out.push_back(proto::our_handshake(&hs).to_vec());
        out.push_back(self.name.as_bytes().to_vec());
        if !self.subs.is_empty() {
            out.push_back(proto::encode_sub(&self.name, &self.subs)?);
        }
        Ok(Flow::Next(Step::Sending {
            fd,
            max_len: hs.max_len,
            out,
        }))
    }

    /// Sends what is queued, as far as the socket takes it.
    fn on_send(&mut self, fd: OwnedFd, max_len: u32, mut out: VecDeque<Vec<u8>>) -> Result<Flow> {
        while let Some(dg) = out.front() {
            match sys::send(fd.as_fd(), dg) {
                Ok(()) => {
                    out.pop_front();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(Flow::Blocked(Step::Sending { fd, max_len, out }))
                }
                Err(e) => return Err(e.into()),
            }
        }
        if self.subs.is_empty() {
            return Ok(Flow::Done(Box::new(self.client(
                fd,
                max_len,
                Vec::new(),
            )?)));
        }
        Ok(Flow::Next(Step::SubAnswer { fd, max_len }))
    }

    /// Takes what has arrived until the broker's answer to the `sub`.
    fn on_sub_answer(&mut self, fd: OwnedFd, max_len: u32) -> Result<Flow> {
        loop {
            match sys::recv_flags(fd.as_fd(), &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(true) => {}
                Ok(false) => return Err(Error::Closed),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(Flow::Blocked(Step::SubAnswer { fd, max_len }))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            let msg = Message::decode(&self.buf)?;
            match proto::sub_answer(&msg) {
                Some(Ok(())) => {
                    let subs = std::mem::take(&mut self.subs);
                    return Ok(Flow::Done(Box::new(self.client(fd, max_len, subs)?)));
                }
                Some(Err(e)) => return Err(e),
                None => {
                    let owned = msg.to_owned();
                    self.pending.push_back(owned);
                }
            }
        }
    }

    /// The connected client: the socket goes back to blocking mode (the
    /// blocking client's sends wait for room, its receives use `SO_RCVTIMEO`).
    fn client(&mut self, fd: OwnedFd, max_len: u32, subs: Vec<Subscription>) -> Result<Client> {
        sys::set_nonblocking(fd.as_fd(), false)?;
        Ok(Client::from_parts(
            fd,
            std::mem::take(&mut self.path),
            std::mem::take(&mut self.name),
            max_len,
            subs,
            std::mem::take(&mut self.pending),
            std::mem::take(&mut self.buf),
        ))
    }
}

/// What one step of [`Connecting::advance`] came to.
enum Flow {
    /// Progress: take the next step now.
    Next(Step),
    /// Nothing more can be done now.
    Blocked(Step),
    /// Connected (boxed: a client is much larger than a step).
    Done(Box<Client>),
}

impl AsRawFd for Connecting {
    /// The socket, or -1 before the connect succeeded (see [`Connecting::wait`]).
    fn as_raw_fd(&self) -> RawFd {
        self.wait().fd().unwrap_or(-1)
    }
}
