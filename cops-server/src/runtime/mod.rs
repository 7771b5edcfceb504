//! The tokio shell around the [`Engine`]: the FIMS connection (with reconnect and
//! backoff), the kill layer, logging, `/events`, and systemd notification.
//!
//! One task owns everything: it sleeps until the engine's next timer or until
//! the socket is readable, feeds the engine, and drains its outputs. The caller
//! passes the shutdown future in (SIGTERM/SIGINT in the `cops` binary).
//!
//! Cost at scale (10,000 processes: 20,000 datagrams out and 10,000 in a second):
//! - timers are handled at most once per [`tick`], so the rounds go out in a few
//!   hundred `sendmmsg` batches a second (see [`batch`]);
//! - replies are drained with `recvmmsg`, each with its kernel arrival time
//!   (`SO_TIMESTAMPNS`), so a reply drained late is still judged by when it came;
//! - when a drain finds many datagrams, the loop polls the socket once per tick
//!   and the socket is taken out of tokio's epoll set: an edge-triggered
//!   registration would wake the thread for every arriving datagram.
//!
//! The socket belongs to a `fims::blocking::Client` (connect, handshake,
//! subscribe); all data I/O is non-blocking on its descriptor.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use fims::blocking::Client;
use fims::Method;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::{debug, error, info, warn};

use batch::{enable_timestamps, recv_batch, Received, RecvBufs, SendBatch};
pub mod batch;

use crate::config::Config;
use crate::engine::{Action, Engine, Event, Severity, Transmit};
use crate::kill::KillLayer;

/// How `cops` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The broker's socket.
    pub socket: PathBuf,
    /// Log what would be signalled, signal nothing.
    pub dry_run: bool,
    /// Our FIMS process name.
    pub process_name: String,
}

/// Timers are handled at most once per tick, so the rounds of a tick leave in
/// one batch and COPS wakes up at most ~100 times a second. The starts and
/// deadlines that could bring a verdict are not delayed (the engine's
/// `next_urgent`); other rounds are sent up to a tick late, which costs nothing
/// (replies carry their kernel arrival times). A tenth of the period, 1..=10 ms,
/// far below the half period after which a late deadline is not counted.
pub fn tick(period: Duration) -> Duration {
    (period / 10).clamp(Duration::from_millis(1), Duration::from_millis(10))
}
/// Most datagrams drained from the socket before timers get their turn.
const MAX_DRAIN: usize = 4096;
/// A drain that finds at least this many datagrams switches to polling per tick.
const POLL_MIN: usize = 4;
/// Longest COPS waits for room in its socket buffer before dropping a batch.
const SEND_WAIT_MS: i32 = 100;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Lets COPS hold one pidfd per monitored process: soft descriptor limit to the hard one.
pub fn raise_fd_limit() {
    if let Err(e) = fims::socket::raise_nofile_limit() {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
}

struct Shell {
    engine: Engine,
    kill: KillLayer,
    client: Option<Client>,
    /// Readable-only registration of a dup of the socket, while not polling.
    readable: Option<AsyncFd<OwnedFd>>,
    opts: Options,
    our_uri: String,
    backoff: Duration,
    next_connect: Instant,
    warned_down: bool,
    watchdog: Option<Duration>,
    next_ping: Instant,
    worst_lag: Duration,
    last_tick: Instant,
    tick: Duration,
    /// Many datagrams per tick: poll the socket once per tick.
    polling: bool,
    /// When the socket was last seen empty: nothing drained later arrived before it.
    last_empty: Instant,
    batch: SendBatch,
    rbufs: RecvBufs,
}

/// Runs COPS until `shutdown` completes.
pub async fn run(cfg: Config, opts: Options, shutdown: impl Future<Output = ()>) {
    let mut sh = Shell::new(cfg, opts);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tokio::pin!(shutdown);
    loop {
        sh.step();
        if sh.wait(&mut shutdown).await {
            break;
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    info!("stopping");
}

impl Shell {
    fn new(cfg: Config, opts: Options) -> Shell {
        let own = std::process::id();
        let now = Instant::now();
        let our_uri = cfg.our_uri.clone();
        let tick_len = tick(cfg.heartbeat);
        let mut usec = 0u64;
        let watchdog =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
        Shell {
            engine: Engine::new(cfg, now, SystemTime::now(), own),
            kill: KillLayer::new(own, opts.dry_run),
            client: None,
            readable: None,
            opts,
            our_uri,
            backoff: BACKOFF_MIN,
            next_connect: now,
            warned_down: false,
            watchdog,
            next_ping: now,
            worst_lag: Duration::ZERO,
            last_tick: now,
            tick: tick_len,
            polling: false,
            last_empty: now,
            batch: SendBatch::default(),
            rbufs: RecvBufs::default(),
        }
    }

    /// One turn of the loop: connect if due, take what is waiting in the
    /// socket (with arrival times) before the timers so that no reply is judged
    /// after its deadline, run the timers, act on the engine's outputs.
    fn step(&mut self) {
        if self.client.is_none() && Instant::now() >= self.next_connect {
            self.connect();
        }
        let (closed, n) = self.drain_socket();
        if self.polling {
            self.polling = n >= POLL_MIN;
        }
        if closed {
            self.disconnect("the broker closed the connection");
        }
        self.timers();
        self.drain();
        self.watchdog_ping();
    }

    /// Sleeps until the next wake (or the socket is readable, when not
    /// polling); returns true when `shutdown` completed.
    async fn wait(&mut self, shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
        let wake = self.next_wake();
        if self.polling || self.client.is_none() {
            self.readable = None;
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => return true,
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            return false;
        }
        if self.readable.is_none() {
            self.readable = self.client.as_ref().and_then(|c| register(c.as_raw_fd()));
        }
        let mut more = false;
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => return true,
            r = readable(&self.readable) => {
                if let Ok(mut guard) = r {
                    guard.clear_ready();
                }
                more = true;
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        if more {
            let (closed, n) = self.drain_socket();
            self.polling = n >= POLL_MIN;
            if closed {
                self.disconnect("the broker closed the connection");
            }
        }
        false
    }
}

/// Registers a duplicate of `fd` with tokio for readability only.
fn register(fd: RawFd) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: dup of a descriptor we hold open; we own the new one.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return None;
    }
    // SAFETY: dup is a fresh descriptor owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(dup) };
    // SAFETY: the AsyncFd owns the duplicate, keeping it open and unchanged
    // until it is dropped (which deregisters it).
    unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }.ok()
}

async fn readable(
    r: &Option<AsyncFd<OwnedFd>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, OwnedFd>> {
    match r {
        Some(r) => r.readable().await,
        None => std::future::pending().await,
    }
}

/// Waits up to `ms` for room to send on `fd`.
fn wait_writable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

impl Shell {
    fn connect(&mut self) {
        let attempt = || {
            let mut c = Client::connect_to(&self.opts.socket, &self.opts.process_name)?;
            c.subscribe(&[&self.our_uri])?;
            // Messages queued while subscribing: nothing of ours can be among them
            // before the engine sent anything, so they are dropped.
            while c.has_pending() {
                let _ = c.recv(Some(Duration::ZERO));
            }
            Ok::<_, fims::Error>(c)
        };
        match attempt() {
            Ok(c) => {
                if let Err(e) = enable_timestamps(c.as_raw_fd()) {
                    debug!(error = %e, "no kernel receive timestamps");
                }
                debug!(socket = %self.opts.socket.display(), uri = %self.our_uri, "connected");
                self.client = Some(c);
                self.backoff = BACKOFF_MIN;
                self.warned_down = false;
                self.last_empty = Instant::now();
                self.engine.set_connected(Instant::now(), true);
            }
            Err(e) => {
                if !self.warned_down {
                    warn!(socket = %self.opts.socket.display(), error = %e, "cannot reach the FIMS broker; retrying with backoff");
                    self.warned_down = true;
                }
                self.next_connect = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    fn disconnect(&mut self, why: &str) {
        self.readable = None;
        self.polling = false;
        if self.client.take().is_some() {
            debug!(reason = why, "disconnected");
            self.engine.set_connected(Instant::now(), false);
            self.next_connect = Instant::now() + BACKOFF_MIN;
            self.backoff = BACKOFF_MIN;
        }
    }

    /// When the engine's timers may next run: when due, but not within a tick of the last run.
    fn timer_wake(&self) -> Instant {
        let due = self
            .engine
            .next_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let coalesced = due.max(self.last_tick + self.tick);
        // Wakeups that could bring a verdict are not delayed.
        match self.engine.next_urgent() {
            Some(u) => coalesced.min(u.max(self.last_tick)),
            None => coalesced,
        }
    }

    /// Runs the engine's timers when their (coalesced) time has come.
    fn timers(&mut self) {
        let wake = self.timer_wake();
        let now = Instant::now();
        if now >= wake {
            self.worst_lag = self.worst_lag.max(now - wake);
            self.engine.handle_timeout(now);
            self.last_tick = now;
        }
    }

    /// Hands the datagrams waiting in the socket to the engine, each with its
    /// kernel arrival time (clamped between the last time the socket was seen
    /// empty and now). Returns whether the connection turned out closed, and
    /// how many datagrams were taken.
    fn drain_socket(&mut self) -> (bool, usize) {
        let Some(fd) = self.client.as_ref().map(AsRawFd::as_raw_fd) else {
            return (false, 0);
        };
        let mut total = 0;
        let mut closed = false;
        while total < MAX_DRAIN {
            let (now, wall) = (Instant::now(), SystemTime::now());
            let floor = self.last_empty.min(now);
            let engine = &mut self.engine;
            let r = recv_batch(fd, &mut self.rbufs, |dg, stamp| {
                let age = stamp.and_then(|st| wall.duration_since(st).ok());
                let at = age
                    .and_then(|a| now.checked_sub(a))
                    .unwrap_or(now)
                    .clamp(floor, now);
                match fims::Message::decode(dg) {
                    Ok(msg) => engine.handle_message(at, &msg),
                    Err(e) => debug!(error = %e, "undecodable datagram ignored"),
                }
            });
            match r {
                Ok(Received::Datagrams(0)) => {
                    self.last_empty = now;
                    break;
                }
                Ok(Received::Datagrams(n)) => total += n,
                Ok(Received::Closed) => {
                    closed = true;
                    break;
                }
                Err(e) => {
                    debug!(error = %e, "recvmmsg failed");
                    break;
                }
            }
        }
        (closed, total)
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.timer_wake();
        if self.polling {
            wake = wake.min(self.last_empty + self.tick);
        }
        if self.client.is_none() {
            wake = wake.min(self.next_connect);
        }
        if self.watchdog.is_some() {
            wake = wake.min(self.next_ping);
        }
        wake
    }

    /// WATCHDOG=1 every WatchdogSec/2, only while our own cycle runs on time.
    fn watchdog_ping(&mut self) {
        let Some(every) = self.watchdog else {
            return;
        };
        let now = Instant::now();
        if now < self.next_ping {
            return;
        }
        let limit = self.engine.config().heartbeat / 2;
        if self.worst_lag <= limit {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        } else {
            warn!(
                lag_ms = self.worst_lag.as_millis() as u64,
                "own loop lagged: watchdog not petted"
            );
        }
        self.worst_lag = Duration::ZERO;
        self.next_ping = now + every;
    }

    /// Sends the engine's messages, performs its actions, logs and posts its events,
    /// until it has nothing more to say.
    fn drain(&mut self) {
        loop {
            let mut busy = false;
            while let Some(t) = self.engine.poll_transmit() {
                busy = true;
                self.queue(&t);
            }
            while let Some(a) = self.engine.poll_action() {
                busy = true;
                self.act(a);
            }
            while let Some(ev) = self.engine.poll_event() {
                busy = true;
                log_event(&ev);
                if ev.post {
                    let t = Transmit {
                        method: Method::Post,
                        uri: "/events".into(),
                        replyto: None,
                        body: ev.body(),
                    };
                    self.queue(&t);
                }
            }
            if !busy {
                break;
            }
        }
        self.flush();
    }

    /// Encodes a message into the send batch.
    fn queue(&mut self, t: &Transmit) {
        let Some(c) = &self.client else {
            return;
        };
        // The broker's number limits the whole datagram; keep room for the five
        // strings at their longest (the username is stamped by the broker).
        let max = (c.max_len() as usize).saturating_sub(fims::MAX_OVERHEAD);
        let too_large;
        let body: &[u8] = if t.body.len() > max {
            // A GET answer too large for the broker: say so on the replyto instead.
            too_large = format!(
                "\"Error: answer of {} bytes is over the broker's limit of {max}; ask {}/stats/<name>\"",
                t.body.len(),
                self.our_uri
            );
            too_large.as_bytes()
        } else {
            &t.body
        };
        let msg = fims::Message {
            method: t.method.as_str(),
            uri: &t.uri,
            replyto: t.replyto.as_deref().unwrap_or(""),
            process_name: &self.opts.process_name,
            username: "",
            body,
        };
        if let Err(e) = self.batch.push(&msg) {
            warn!(uri = %t.uri, error = %e, "message not sent");
        }
    }

    /// Sends the batch with `sendmmsg`, waiting (briefly) for room when the
    /// socket buffer is full; never blocks on a stuck broker for long.
    fn flush(&mut self) {
        let Some(fd) = self.client.as_ref().map(AsRawFd::as_raw_fd) else {
            self.batch.clear();
            return;
        };
        let mut from = 0;
        while from < self.batch.len() {
            match self.batch.send_from(fd, from) {
                Ok(n) => from += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !wait_writable(fd, SEND_WAIT_MS) {
                        warn!(
                            dropped = self.batch.len() - from,
                            "the broker takes no messages: batch dropped"
                        );
                        break;
                    }
                }
                Err(e) => {
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::NotConnected
                    ) {
                        self.disconnect("send failed");
                        break;
                    }
                    warn!(error = %e, "send failed; message dropped");
                    from += 1;
                }
            }
        }
        self.batch.clear();
    }

    fn act(&mut self, a: Action) {
        let now = Instant::now();
        match a {
            Action::Pin { process, pid } => {
                let outcome = self.kill.pin(process, pid);
                self.engine.pin_result(now, process, pid, outcome);
            }
            Action::Unpin { process, pid } => self.kill.unpin(process, pid),
            Action::Signal {
                process,
                pid,
                signal,
            } => {
                let exe = self.engine.config().processes[process].expected_exe.clone();
                let out = self.kill.signal(process, pid, signal, exe.as_deref());
                self.engine.signal_result(Instant::now(), process, pid, out);
            }
            Action::CheckExit { process, pid } => {
                let r = self.kill.check_exit(process, pid);
                self.engine.exit_result(now, process, pid, r);
            }
        }
    }
}

fn log_event(ev: &Event) {
    let process = ev.process.as_deref().unwrap_or("-");
    let pid = ev.pid.map(i64::from).unwrap_or(-1);
    let kind = format!("{:?}", ev.kind);
    match ev.severity {
        Severity::Info => info!(process, pid, kind, "{}", ev.message),
        Severity::Status => info!(process, pid, kind, "{}", ev.message),
        Severity::Alarm => warn!(process, pid, kind, "{}", ev.message),
        Severity::Fault => error!(process, pid, kind, "{}", ev.message),
    }
}
