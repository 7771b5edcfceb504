//! The tokio shell around the [`Engine`]: the three FIMS connections (with
//! reconnect and backoff, [`link`]), the kill layer, logging, `/events`, and
//! systemd notification.
//!
//! One task owns everything. Each turn of its loop, in this order:
//! 1. the heartbeat connection is drained (replies and probes, each with its
//!    kernel arrival time; a reply's PID is checked and pinned by the kill
//!    layer while it is read);
//! 2. the engine's timers run (round starts, deadlines, probes);
//! 3. the engine's outputs go out (messages, signals, events);
//! 4. the serving connection is drained, a bounded number of datagrams (its
//!    requests are rate-limited by the engine): a flood there costs COPS a
//!    bounded amount of work per turn and never delays steps 1-3;
//! 5. it sleeps until the next timer or until a socket is readable, and tells
//!    the engine when it woke later than it meant to (COPS's own lag).
//!
//! Cost at scale (10,000 processes: 20,000 datagrams out and 10,000 in a second):
//! - timers are handled at most once per [`tick`], so the rounds go out in a few
//!   hundred `sendmmsg` batches a second (`fims::batch`);
//! - replies are drained with `recvmmsg`, each with its kernel arrival time
//!   (`SO_TIMESTAMPNS`), so a reply drained late is still judged by when it came;
//! - when a drain finds many datagrams, the loop polls the sockets once per tick
//!   and takes them out of tokio's epoll set: an edge-triggered registration
//!   would wake the thread for every arriving datagram.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use fims::Method;
use tracing::{debug, error, info, warn};

mod link;

use fims::batch::RecvBatch;
use link::{readable, Conn};

use crate::config::Config;
use crate::engine::{Action, Engine, Event, Severity, Transmit, Via};
use crate::kill::KillLayer;
use crate::metrics::{Scrapes, Waiting};

/// How `cops` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The broker's socket.
    pub socket: PathBuf,
    /// Log what would be signalled, signal nothing.
    pub dry_run: bool,
    /// Our FIMS process name.
    pub process_name: String,
    /// The users whose control requests are taken, as the broker stamps
    /// them (see [`crate::access::control_stamps`]).
    pub control_users: Vec<String>,
}

/// Timers are handled at most once per tick, so the rounds of a tick leave in
/// one batch and COPS wakes up at most ~100 times a second. The starts and
/// deadlines that could bring a verdict are not delayed (the engine's
/// `next_urgent`); other rounds are sent up to a tick late, which costs nothing
/// (replies carry their kernel arrival times). A tenth of the period, 1..=10 ms.
pub fn tick(period: Duration) -> Duration {
    (period / 10).clamp(Duration::from_millis(1), Duration::from_millis(10))
}
/// Most datagrams drained from the heartbeat connection before timers get their turn.
const MAX_DRAIN: usize = 4096;
/// Most datagrams drained from the serving connection per turn.
const MAX_SERVE_DRAIN: usize = 1024;
/// Most time spent on the serving connection per turn: a fifth of a tick
/// (0.2-2 ms), so a flood of requests takes at most a fifth of COPS's time.
fn serve_budget(tick: Duration) -> Duration {
    (tick / 5).clamp(Duration::from_micros(200), Duration::from_millis(2))
}
/// Receive slot size: heartbeat replies and requests to COPS are small; a
/// larger datagram is cut and skipped (it is nothing COPS acts on).
const SLOT: usize = 8192;
/// Most datagrams one `recvmmsg` takes.
const MAX_BATCH: usize = 256;
/// A drain that finds at least this many datagrams switches to polling per tick.
const POLL_MIN: usize = 4;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Lets COPS hold one pidfd per monitored process: soft descriptor limit to the hard one.
pub fn raise_fd_limit() {
    if let Err(e) = fims::socket::raise_nofile_limit() {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
}

/// The three connections, in the order they are read.
struct Link {
    heartbeat: Conn,
    probe: Conn,
    serve: Conn,
}

/// The three connections being set up (connect, handshake, subscribe) on the
/// runtime's blocking pool while the loop goes on (at most three times
/// `link::CONNECT_TIMEOUT`; a shutdown meanwhile waits for it).
type Dialing = tokio::task::JoinHandle<Result<Link, fims::Error>>;

struct Shell {
    engine: Engine,
    kill: KillLayer,
    link: Option<Link>,
    /// The connections being set up while there is no link.
    dialing: Option<Dialing>,
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
    /// Many datagrams per tick: poll the sockets once per tick.
    polling: bool,
    /// When the serving connection was last drained.
    last_poll: Instant,
    rbufs: RecvBatch,
    /// Scrapes of `--metrics-listen` waiting for a snapshot.
    scrapes: Option<Scrapes>,
}

/// Runs COPS until `shutdown` completes; `scrapes` is the loop's end of the
/// metrics exporter, when there is one.
pub async fn run(
    cfg: Config,
    opts: Options,
    scrapes: Option<Scrapes>,
    shutdown: impl Future<Output = ()>,
) {
    let mut sh = Shell::new(cfg, opts);
    sh.scrapes = scrapes;
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
        let mut engine = Engine::new(cfg, now, SystemTime::now(), own);
        engine.set_control_users(opts.control_users.clone());
        Shell {
            engine,
            kill: KillLayer::new(own, opts.dry_run),
            link: None,
            dialing: None,
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
            last_poll: now,
            rbufs: RecvBatch::with_timestamps(SLOT, MAX_BATCH),
            scrapes: None,
        }
    }

    /// One turn of the loop (see the module documentation).
    fn step(&mut self) {
        if self.link.is_none() && self.dialing.is_none() && Instant::now() >= self.next_connect {
            self.dialing = Some(self.dial());
        }
        let began = Instant::now();
        let n = self.drain_heartbeat();
        self.timers();
        self.drain();
        let m = self.drain_serve();
        self.drain();
        self.polling = n + m >= POLL_MIN;
        self.watchdog_ping();
        // A turn that took long is COPS's own stall (a flood it reads, a
        // descheduled thread, SIGSTOP): the engine voids what it overlaps.
        self.engine.lagged(began, Instant::now());
    }

    /// Sleeps until the next wake (or a socket is readable, when not
    /// polling); returns true when `shutdown` completed.
    async fn wait(&mut self, shutdown: &mut Pin<&mut impl Future<Output = ()>>) -> bool {
        let wake = self.next_wake();
        let polling = self.polling;
        if let Some(link) = &mut self.link {
            for c in [&mut link.heartbeat, &mut link.probe, &mut link.serve] {
                if polling {
                    c.readable = None;
                } else {
                    c.register();
                }
            }
        }
        let none = None;
        let (h, p, s) = match &self.link {
            Some(l) => (&l.heartbeat.readable, &l.probe.readable, &l.serve.readable),
            None => (&none, &none, &none),
        };
        let (mut scrape, mut dialed) = (None, None);
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => return true,
            _ = readable(h) => {}
            _ = readable(p) => {}
            _ = readable(s) => {}
            w = wanted(&mut self.scrapes) => scrape = Some(w),
            r = dialed_link(&mut self.dialing) => dialed = Some(r),
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        if let Some(w) = scrape {
            self.answer_scrapes(w);
        }
        if let Some(r) = dialed {
            self.dialing = None;
            self.dialed(r);
        }
        // Up later than meant (descheduled, stopped): COPS's own lag.
        let now = Instant::now();
        self.worst_lag = self.worst_lag.max(now.saturating_duration_since(wake));
        self.engine.lagged(wake, now);
        false
    }

    /// Answers every waiting scrape with one snapshot of the engine.
    fn answer_scrapes(&mut self, first: Waiting) {
        let mut waiting = vec![first];
        if let Some(s) = &mut self.scrapes {
            waiting.extend(s.waiting());
        }
        let snap = std::sync::Arc::new(self.engine.metrics_snapshot(Instant::now()));
        for w in waiting {
            // A scrape that gave up meanwhile: nothing to do.
            let _ = w.send(std::sync::Arc::clone(&snap));
        }
    }

    /// Starts setting up the three connections;
    /// [`dialed`](Self::dialed) takes the outcome.
    fn dial(&self) -> Dialing {
        let (socket, name) = (self.opts.socket.clone(), self.opts.process_name.clone());
        let subs =
            [Via::Heartbeat, Via::Probe, Via::Serve].map(|via| self.engine.subscriptions(via));
        tokio::task::spawn_blocking(move || {
            let open = |via, subs: &[String]| Conn::dial(&socket, &name, via, subs);
            Ok(Link {
                heartbeat: open(Via::Heartbeat, &subs[0])?,
                probe: open(Via::Probe, &subs[1])?,
                serve: open(Via::Serve, &subs[2])?,
            })
        })
    }

    fn dialed(&mut self, r: Result<Link, fims::Error>) {
        let socket = self.opts.socket.display();
        match r {
            Ok(link) => {
                debug!(socket = %socket, uri = %self.our_uri, "connected");
                self.kill.set_bus(link.heartbeat.fd().as_raw_fd());
                self.link = Some(link);
                self.backoff = BACKOFF_MIN;
                self.warned_down = false;
                self.engine.set_connected(Instant::now(), true);
            }
            Err(e) => {
                if !self.warned_down {
                    warn!(socket = %socket, error = %e, "cannot reach the FIMS broker; retrying with backoff");
                    self.warned_down = true;
                }
                self.next_connect = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    fn disconnect(&mut self, why: &str) {
        self.polling = false;
        if self.link.take().is_some() {
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

    /// Replies and probes first: each reply's PID is checked as it is read.
    fn drain_heartbeat(&mut self) -> usize {
        let Some(link) = &mut self.link else {
            return 0;
        };
        let (engine, kill) = (&mut self.engine, &mut self.kill);
        let d = link
            .heartbeat
            .drain(&mut self.rbufs, MAX_DRAIN, None, |at, msg| {
                engine.handle_message(at, Via::Heartbeat, msg, kill)
            });
        // The probe connection receives nothing; draining it notices a close.
        let p = link.probe.drain(&mut self.rbufs, 16, None, |_, _| {});
        if d.closed || p.closed {
            self.disconnect("the broker closed the connection");
        }
        d.n
    }

    /// Requests to `ourUri`, a bounded number and time per turn.
    fn drain_serve(&mut self) -> usize {
        let Some(link) = &mut self.link else {
            return 0;
        };
        self.last_poll = Instant::now();
        let budget = Some(serve_budget(self.tick));
        let (engine, kill) = (&mut self.engine, &mut self.kill);
        let d = link
            .serve
            .drain(&mut self.rbufs, MAX_SERVE_DRAIN, budget, |at, msg| {
                engine.handle_message(at, Via::Serve, msg, kill)
            });
        if d.closed {
            self.disconnect("the broker closed the connection");
        }
        d.n
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.timer_wake();
        if self.polling {
            wake = wake.min(self.last_poll + self.tick);
        }
        if self.link.is_none() && self.dialing.is_none() {
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
                        via: Via::Serve,
                        method: Method::Post,
                        uri: "/events".into(),
                        replyto: None,
                        body: ev.body().into(),
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

    fn queue(&mut self, t: &Transmit) {
        let Some(link) = &mut self.link else {
            return;
        };
        let conn = match t.via {
            Via::Heartbeat => &mut link.heartbeat,
            Via::Probe => &mut link.probe,
            Via::Serve => &mut link.serve,
        };
        conn.queue(t, &self.opts.process_name, &self.our_uri);
    }

    /// Sends what is queued, heartbeats and probes first.
    fn flush(&mut self) {
        let Some(link) = &mut self.link else {
            return;
        };
        let up = link.heartbeat.flush() & link.probe.flush() & link.serve.flush();
        if !up {
            self.disconnect("send failed");
        }
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Unpin { process, pid } => self.kill.forget(process, pid),
            Action::Signal {
                process,
                pid,
                signal,
            } => {
                let exe = self.engine.config().processes[process].expected_exe.clone();
                let out = self.kill.signal(process, pid, signal, exe.as_deref());
                self.engine.signal_result(Instant::now(), process, pid, out);
            }
            Action::Watch { process, pid } => self.kill.watch(process, pid),
            Action::CheckExit { process, pid } => {
                let r = self.kill.check_exit(process, pid);
                self.engine.exit_result(Instant::now(), process, pid, r);
            }
        }
    }
}

/// The connections being set up, once they are (never, when none are).
async fn dialed_link(dialing: &mut Option<Dialing>) -> Result<Link, fims::Error> {
    match dialing {
        Some(d) => d
            .await
            .unwrap_or_else(|e| Err(fims::Error::Io(std::io::Error::other(e)))),
        None => std::future::pending().await,
    }
}

/// The next scrape (never, without an exporter).
async fn wanted(scrapes: &mut Option<Scrapes>) -> Waiting {
    match scrapes {
        Some(s) => s.wanted().await,
        None => std::future::pending().await,
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
