//! The blocking driver: the responder's own FIMS connection, polled from the
//! host's main loop.

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fims::blocking::{Client, Connecting, Progress};
use fims::{Message, Method, Subscription};

use crate::pet::PetHandle;
use crate::responder::{Outcome, Responder};

/// Most messages one [`Driver::poll`] handles before it returns, so a flood
/// cannot hold the host's loop.
pub const MAX_PER_POLL: usize = 256;

/// First pause between reconnect attempts; it doubles up to [`RECONNECT_MAX`].
pub const RECONNECT_MIN: Duration = Duration::from_millis(50);
/// Longest pause between reconnect attempts.
pub const RECONNECT_MAX: Duration = Duration::from_millis(500);
/// Longest one connection attempt may take (connect, handshakes, subscription
/// and its answer) before it is abandoned and retried after the pause.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// While an attempt is under way, how soon a host with its own poll loop
/// should call [`Driver::poll`] again ([`Driver::reconnect_at`]).
const CONNECTING_STEP: Duration = Duration::from_millis(10);

/// One message the responder took, as shown to a [`Driver::poll_with`] observer.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The message's method.
    pub method: &'a str,
    /// The message's URI.
    pub uri: &'a str,
    /// Where the answer goes; empty for none.
    pub replyto: &'a str,
    /// [`Outcome::Reply`]: `reply` is sent to `replyto`. [`Outcome::Handled`]:
    /// nothing sent (no replyto, or the liveness gate is closed).
    pub outcome: Outcome,
    /// The answer body (empty unless `outcome` is [`Outcome::Reply`]).
    pub reply: &'a [u8],
}

/// A [`Responder`] with a FIMS connection of its own, subscribed to
/// `<uri>/cops`. Call [`poll`](Self::poll) from the host's work loop.
///
/// When the broker goes away, the next `poll` reports the error once and
/// later polls reconnect (first at once, then with a pause doubling from
/// 50 ms to 500 ms), sleeping between attempts within their timeout. A
/// failed attempt is not an error: `poll` returns `Ok(0)` at its deadline and
/// [`last_error`](Self::last_error) says why. An attempt (connect, the
/// handshakes, the subscription and its answer) advances step by step without
/// blocking ([`fims::blocking::Connecting`]), across as many polls as it needs,
/// each within its own timeout: a broker that accepts but never answers costs
/// no poll more than its timeout, and the attempt is abandoned after
/// [`CONNECT_TIMEOUT`]. What can still block is sending an answer while the
/// broker's receive queue is full.
#[derive(Debug)]
pub struct Driver {
    responder: Responder,
    path: PathBuf,
    client: Option<Client>,
    /// An attempt under way while `client` is `None`.
    connecting: Option<Connecting>,
    connects: u64,
    next_attempt: Instant,
    backoff: Duration,
    last_error: Option<fims::Error>,
    dropped: u64,
    reply: Vec<u8>,
    replyto: String,
}

impl Driver {
    /// A driver for the broker at `socket` that connects on the first
    /// [`poll`](Self::poll) (a process may start before its broker).
    pub fn new(responder: Responder, socket: impl Into<PathBuf>) -> Driver {
        Driver {
            responder,
            path: socket.into(),
            client: None,
            connecting: None,
            connects: 0,
            next_attempt: Instant::now(),
            backoff: RECONNECT_MIN,
            last_error: None,
            dropped: 0,
            reply: Vec::with_capacity(256),
            replyto: String::with_capacity(64),
        }
    }

    /// A driver connected and subscribed now (blocking up to
    /// [`CONNECT_TIMEOUT`]): fails when no broker runs.
    pub fn connect(responder: Responder, socket: impl Into<PathBuf>) -> fims::Result<Driver> {
        let mut d = Driver::new(responder, socket);
        d.open()?;
        Ok(d)
    }

    /// The responder.
    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    /// The responder, to configure it.
    pub fn responder_mut(&mut self) -> &mut Responder {
        &mut self.responder
    }

    /// The broker's socket path.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Pets the liveness gate now (see [`Responder::pet`]).
    pub fn pet(&mut self) {
        self.responder.pet(Instant::now());
    }

    /// One iteration of the work loop ended now (see [`Responder::loop_tick`]).
    pub fn tick(&mut self) {
        self.responder.loop_tick(Instant::now());
    }

    /// A handle for pets and ticks from another thread. Only needed when
    /// `poll` does not run on the work thread.
    pub fn pet_handle(&mut self) -> PetHandle {
        self.responder.pet_handle()
    }

    /// Gives the responder back, closing the connection.
    pub fn into_responder(self) -> Responder {
        self.responder
    }

    /// Whether the driver holds a connection now.
    pub fn is_connected(&self) -> bool {
        self.client.is_some()
    }

    /// The socket to wait on in the host's own poll/epoll loop (readable:
    /// call `poll(Duration::ZERO)`); `None` while disconnected. The fd
    /// changes on every reconnect: re-register it when
    /// [`connects`](Self::connects) changes.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.client.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// How many times the driver connected (1 after the first connect).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// While disconnected: when the next reconnect attempt is due, or, while
    /// one is under way, when to advance it again (hosts with their own loop
    /// call `poll` by then). `None` while connected.
    pub fn reconnect_at(&self) -> Option<Instant> {
        match (&self.client, &self.connecting) {
            (Some(_), _) => None,
            (None, Some(_)) => Some(Instant::now() + CONNECTING_STEP),
            (None, None) => Some(self.next_attempt),
        }
    }

    /// Answers dropped because FIMS could not carry them (a replyto that is not
    /// a URI, an answer over the broker's body limit).
    pub fn dropped_answers(&self) -> u64 {
        self.dropped
    }

    /// The last connection error (cleared by a successful connect).
    pub fn last_error(&self) -> Option<&fims::Error> {
        self.last_error.as_ref()
    }

    /// Waits up to `timeout` for the first message, then answers every message
    /// already waiting (at most [`MAX_PER_POLL`]). Returns how many were the
    /// responder's. `Err` when the connection broke (once; the following polls
    /// reconnect).
    pub fn poll(&mut self, timeout: Duration) -> fims::Result<usize> {
        self.poll_with(timeout, |_| {})
    }

    /// [`poll`](Self::poll), calling `observe` for each message the responder
    /// took (before its answer is sent), e.g. to log it.
    pub fn poll_with(
        &mut self,
        timeout: Duration,
        mut observe: impl FnMut(&Event<'_>),
    ) -> fims::Result<usize> {
        let deadline = Instant::now().checked_add(timeout);
        if self.client.is_none() && !self.wait_and_reconnect(deadline) {
            return Ok(0);
        }
        let mut handled = 0;
        let mut wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        while handled < MAX_PER_POLL {
            match self.step(wait, &mut observe) {
                Ok(Some(mine)) => handled += usize::from(mine),
                Ok(None) => break,
                Err(e) => return Err(self.fail(e)),
            }
            wait = Some(Duration::ZERO);
        }
        Ok(handled)
    }

    /// Receives and handles one message: `Ok(None)` when none came in `wait`.
    fn step(
        &mut self,
        wait: Option<Duration>,
        observe: &mut impl FnMut(&Event<'_>),
    ) -> fims::Result<Option<bool>> {
        let Some(client) = self.client.as_mut() else {
            return Ok(None);
        };
        let msg = match client.recv(wait) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            // A datagram that does not decode: skip it, the connection is fine.
            Err(fims::Error::Decode(_)) => return Ok(Some(false)),
            Err(e) => return Err(e),
        };
        let outcome = self
            .responder
            .handle_message(Instant::now(), &msg, &mut self.reply);
        if outcome.is_mine() {
            observe(&event(&msg, outcome, &self.reply));
        }
        if outcome == Outcome::Reply {
            self.replyto.clear();
            self.replyto.push_str(msg.replyto);
            match client.send(Method::Set, &self.replyto, None, &self.reply) {
                Ok(()) => {}
                Err(e) if e.is_disconnect() || matches!(e, fims::Error::Io(_)) => return Err(e),
                // A replyto FIMS cannot carry (bad input from the bus): drop that answer.
                Err(_) => self.dropped += 1,
            }
        }
        Ok(Some(outcome.is_mine()))
    }

    /// Drops a broken connection (scheduling a reconnect) and passes `e` on.
    fn fail(&mut self, e: fims::Error) -> fims::Error {
        if e.is_disconnect() || matches!(e, fims::Error::Io(_)) {
            self.client = None;
            self.backoff = RECONNECT_MIN;
            self.next_attempt = Instant::now();
        }
        e
    }

    /// Reconnects, attempting whenever one is due before `deadline`, sleeping
    /// in between and advancing an attempt under way without blocking past
    /// `deadline`. Returns whether the driver is connected; when not, the
    /// deadline has passed.
    fn wait_and_reconnect(&mut self, deadline: Option<Instant>) -> bool {
        loop {
            let Some(attempt) = self.connecting.take() else {
                let now = Instant::now();
                if let Some(d) = deadline.filter(|d| *d < self.next_attempt) {
                    std::thread::sleep(d.saturating_duration_since(now));
                    return false;
                }
                std::thread::sleep(self.next_attempt.saturating_duration_since(now));
                match self.start_attempt() {
                    Ok(c) => self.connecting = Some(c),
                    Err(e) => self.attempt_failed(e),
                }
                continue;
            };
            match attempt.advance() {
                Ok(Progress::Ready(client)) => {
                    self.connected(client);
                    return true;
                }
                Ok(Progress::Pending(next)) => {
                    let until = deadline.map_or(next.deadline(), |d| d.min(next.deadline()));
                    match next.wait_until(until) {
                        Ok(_) => self.connecting = Some(next),
                        Err(e) => self.attempt_failed(e),
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        // Not done within this poll: the next poll goes on.
                        return false;
                    }
                }
                // Refused, closed, or past CONNECT_TIMEOUT: pause, then a new attempt.
                Err(e) => self.attempt_failed(e),
            }
        }
    }

    /// A new attempt: connect and subscribe to `<uri>/cops`, step by step.
    fn start_attempt(&self) -> fims::Result<Connecting> {
        Connecting::start(&self.path, self.responder.process_name(), CONNECT_TIMEOUT)?
            .with_subscriptions(&[Subscription::all(self.responder.cops_uri())])
    }

    fn attempt_failed(&mut self, e: fims::Error) {
        self.connecting = None;
        self.last_error = Some(e);
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
    }

    fn connected(&mut self, client: Client) {
        self.client = Some(client);
        self.connecting = None;
        self.connects += 1;
        self.backoff = RECONNECT_MIN;
        self.last_error = None;
    }

    /// Connects and subscribes to `<uri>/cops` now, blocking up to
    /// [`CONNECT_TIMEOUT`].
    fn open(&mut self) -> fims::Result<()> {
        let client = self.start_attempt()?.finish()?;
        self.connected(client);
        Ok(())
    }

    /// One attempt now, waiting for it up to [`CONNECT_TIMEOUT`] (the C ABI's
    /// `cops_responder_connect`). Whether it connected; when not,
    /// [`last_error`](Self::last_error) says why and polls retry as usual.
    pub(crate) fn connect_now(&mut self) -> bool {
        self.connecting = None;
        match self.open() {
            Ok(()) => true,
            Err(e) => {
                self.attempt_failed(e);
                false
            }
        }
    }
}

fn event<'a>(msg: &Message<'a>, outcome: Outcome, reply: &'a [u8]) -> Event<'a> {
    Event {
        method: msg.method,
        uri: msg.uri,
        replyto: msg.replyto,
        outcome,
        reply,
    }
}
