//! The tokio shell around the [`Engine`]: the FIMS connection (with reconnect and
//! backoff), the kill layer, logging, `/events`, and systemd notification.
//!
//! One task owns everything: it sleeps until the engine's next timer or the next
//! message, feeds the engine with `Instant::now()`, and drains its outputs. The
//! caller passes the shutdown future in (SIGTERM/SIGINT in the `cops` binary).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use fims::tokio::Client;
use fims::Method;
use tracing::{debug, error, info, warn};

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
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tokio::pin!(shutdown);
    loop {
        if sh.client.is_none() && Instant::now() >= sh.next_connect {
            sh.connect().await;
        }
        sh.drain().await;
        sh.watchdog_ping();
        let wake = sh.next_wake();
        let mut lost = false;
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = recv(&mut sh.client) => match r {
                Ok(msg) => sh.engine.handle_message(Instant::now(), &msg),
                Err(e) if e.is_disconnect() => lost = true,
                Err(e) => debug!(error = %e, "undecodable datagram ignored"),
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                sh.worst_lag = sh.worst_lag.max(now.saturating_duration_since(wake));
                sh.engine.handle_timeout(now);
            }
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

    fn next_wake(&self) -> Instant {
        let mut wake = self
            .engine
            .next_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
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
                self.send(t).await;
            }
            while let Some(a) = self.engine.poll_action() {
                busy = true;
                self.act(a);
            }
            while let Some(ev) = self.engine.poll_event() {
                busy = true;
                log_event(&ev);
                if ev.post {
                    let body = ev.body();
                    self.send_raw(Method::Post, "/events", None, &body).await;
                }
            }
            if !busy {
                break;
            }
        }
    }

    async fn send(&mut self, t: Transmit) {
        let r = self
            .send_raw(t.method, &t.uri, t.replyto.as_deref(), &t.body)
            .await;
        if let Some(fims::Error::BodyTooLarge { len, max }) = r {
            // A GET answer too large for the broker: say so on the replyto instead.
            let msg = format!(
                "\"Error: answer of {len} bytes is over the broker's limit of {max}; ask {}/stats/<name>\"",
                self.our_uri
            );
            self.send_raw(t.method, &t.uri, None, msg.as_bytes()).await;
        }
    }

    /// Sends one message; a lost connection is handled here, other errors returned.
    async fn send_raw(
        &mut self,
        m: Method,
        uri: &str,
        replyto: Option<&str>,
        body: &[u8],
    ) -> Option<fims::Error> {
        let c = self.client.as_mut()?;
        match c.send(m, uri, replyto, body).await {
            Ok(()) => None,
            Err(e) if e.is_disconnect() => {
                self.disconnect("send failed");
                None
            }
            Err(e) => {
                warn!(uri, error = %e, "send failed");
                Some(e)
            }
        }
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
