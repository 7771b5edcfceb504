//! The tokio shell around the [`Engine`]: the FIMS connection (with reconnect and
//! backoff), the kill layer, logging, `/events`, and systemd notification.
//!
//! One task owns everything: it sleeps until the engine's next timer or the next
//! message, feeds the engine with `Instant::now()`, and drains its outputs. The
//! caller passes the shutdown future in (SIGTERM/SIGINT in the `cops` binary).
//!
//! Cost at scale: timers are handled at most once per [`TICK`] (so the rounds
//! of 10,000 processes go out in a few hundred batches a second, not 10,000
//! wakeups), the messages of a tick leave in `sendmmsg` batches, and the replies
//! waiting in the socket are drained with `recvmmsg` (see [`crate::batch`]).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use fims::tokio::Client;
use fims::Method;
use tracing::{debug, error, info, warn};

use crate::batch::{recv_batch, Received, RecvBufs, SendBatch};
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

/// Timers are handled at most once per tick: deadlines and round starts are
/// acted on up to this late (well inside the 50 ms detection slack).
pub const TICK: Duration = Duration::from_millis(4);
/// Most datagrams drained from the socket before timers get their turn.
const MAX_DRAIN: usize = 4096;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Lets COPS hold one pidfd per monitored process: soft descriptor limit to the hard one.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

struct Shell {
    engine: Engine,
    kill: KillLayer,
    client: Option<Client>,
    opts: Options,
    our_uri: String,
    backoff: Duration,
    next_connect: Instant,
    warned_down: bool,
    watchdog: Option<Duration>,
    next_ping: Instant,
    worst_lag: Duration,
    last_tick: Instant,
    batch: SendBatch,
    rbufs: RecvBufs,
}

/// Runs COPS until `shutdown` completes.
pub async fn run(cfg: Config, opts: Options, shutdown: impl Future<Output = ()>) {
    let own = std::process::id();
    let now = Instant::now();
    let our_uri = cfg.our_uri.clone();
    let mut usec = 0u64;
    let watchdog =
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
    let mut sh = Shell {
        engine: Engine::new(cfg, now, SystemTime::now(), own),
        kill: KillLayer::new(own, opts.dry_run),
        client: None,
        opts,
        our_uri,
        backoff: BACKOFF_MIN,
        next_connect: now,
        warned_down: false,
        watchdog,
        next_ping: now,
        worst_lag: Duration::ZERO,
        last_tick: now,
        batch: SendBatch::default(),
        rbufs: RecvBufs::default(),
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tokio::pin!(shutdown);
    loop {
        if sh.client.is_none() && Instant::now() >= sh.next_connect {
            sh.connect().await;
        }
        sh.timers();
        sh.drain().await;
        sh.watchdog_ping();
        let wake = sh.next_wake();
        let mut lost = false;
        let mut more = false;
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = recv(&mut sh.client) => match r {
                Ok(msg) => {
                    sh.engine.handle_message(Instant::now(), &msg);
                    more = true;
                }
                Err(e) if e.is_disconnect() => lost = true,
                Err(e) => debug!(error = %e, "undecodable datagram ignored"),
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        if more {
            lost = sh.drain_socket();
        }
        if lost {
            sh.disconnect("the broker closed the connection");
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    info!("stopping");
}

async fn recv(c: &mut Option<Client>) -> fims::Result<fims::Message<'_>> {
    match c {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

impl Shell {
    async fn connect(&mut self) {
        let attempt = async {
            let mut c = Client::connect_to(&self.opts.socket, &self.opts.process_name).await?;
            c.subscribe(&[&self.our_uri]).await?;
            Ok::<_, fims::Error>(c)
        };
        match attempt.await {
            Ok(c) => {
                info!(socket = %self.opts.socket.display(), uri = %self.our_uri, "connected to the FIMS broker");
                self.client = Some(c);
                self.backoff = BACKOFF_MIN;
                self.warned_down = false;
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
        if self.client.take().is_some() {
            warn!(reason = why, "lost the FIMS broker");
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
        due.max(self.last_tick + TICK)
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

    /// Hands the datagrams already waiting in the socket to the engine; true
    /// when the connection turned out closed.
    fn drain_socket(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        let Some(fd) = self.client.as_ref().map(AsRawFd::as_raw_fd) else {
            return false;
        };
        let mut total = 0;
        while total < MAX_DRAIN {
            let now = Instant::now();
            let engine = &mut self.engine;
            let r = recv_batch(fd, &mut self.rbufs, |dg| match fims::Message::decode(dg) {
                Ok(msg) => engine.handle_message(now, &msg),
                Err(e) => debug!(error = %e, "undecodable datagram ignored"),
            });
            match r {
                Ok(Received::Datagrams(0)) => break,
                Ok(Received::Datagrams(n)) => total += n,
                Ok(Received::Closed) => return true,
                Err(e) => {
                    debug!(error = %e, "recvmmsg failed");
                    break;
                }
            }
        }
        false
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.timer_wake();
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
    async fn drain(&mut self) {
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
        self.flush().await;
    }

    /// Encodes a message into the send batch.
    fn queue(&mut self, t: &Transmit) {
        let Some(c) = &self.client else {
            return;
        };
        let max = c.max_data_len() as usize;
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

    /// Sends the batch: `sendmmsg` while the socket takes it, an awaited send
    /// when its buffer is full.
    async fn flush(&mut self) {
        use std::os::fd::AsRawFd;
        let mut from = 0;
        while from < self.batch.len() {
            let Some(c) = self.client.as_mut() else {
                break;
            };
            match self.batch.send_from(c.as_raw_fd(), from) {
                Ok(n) => from += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Full: wait for room by sending the next one the awaited way.
                    let r = match fims::Message::decode(self.batch.get(from)) {
                        Ok(msg) => c.send_message(&msg).await,
                        Err(e) => Err(e.into()),
                    };
                    from += 1;
                    if let Err(e) = r {
                        if e.is_disconnect() {
                            self.disconnect("send failed");
                            break;
                        }
                        warn!(error = %e, "send failed");
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
                let r = self.kill.pin(process, pid);
                self.engine.pin_result(now, process, pid, r);
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
