//! The scenario of `cops-demo`: a broker, COPS and two supervised demo
//! processes in a temp directory; one is hung and one crashed, and the timeline
//! shows COPS's alarm, the kill, the restart and the heartbeats coming back.
//! Then (child `loops`) the work loop of each slows down while it keeps
//! answering: an alarm for one, a kill for the other.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use fims::{blocking::Client, Method, Subscription};

use crate::bins::{self, BinError, Bins, Build};
use crate::children::{describe, Guarded, Supervisor, SupervisorEvent};
use crate::interrupt;
use crate::stats::{self, ProcStats};
use crate::world::{out, World};

mod loops;

/// The configuration the demo runs COPS with (`examples/configs/demo.json`).
pub const DEMO_CONFIG: &str = include_str!("../configs/demo.json");

/// The site controller stand-in (hung in the demo).
pub const CONTROLLER: (&str, &str) = ("hybridos_controller", "/site");
/// The modbus client stand-in (crashed in the demo).
pub const MODBUS: (&str, &str) = ("modbus_client", "/components/modbus_test_client");

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct Options {
    /// Shorter pauses between the acts (for tests).
    pub fast: bool,
    /// After the scenario, keep everything running until Ctrl-C.
    pub keep_running: bool,
    /// Children's logs on the terminal instead of log files.
    pub verbose: bool,
    /// When to build missing binaries.
    pub build: Build,
    /// A COPS config to use instead of the built-in `demo.json`.
    pub config: Option<PathBuf>,
    /// The demo processes' work period, ms.
    pub work_ms: u64,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The binaries could not be found or built.
    #[error(transparent)]
    Bins(#[from] BinError),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The demo's FIMS connection failed.
    #[error("{what}: {source}")]
    Fims {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: fims::Error,
    },
    /// Something expected did not happen in time.
    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: f64,
    },
    /// Something happened that should not have.
    #[error("{0}")]
    Unexpected(String),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

fn fims_err(what: impl Into<String>) -> impl FnOnce(fims::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Fims { what, source }
}

/// Where the children's output goes.
#[derive(Debug, Clone)]
struct Logs {
    dir: PathBuf,
    verbose: bool,
}

impl Logs {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn stdio(&self, name: &str) -> Result<Stdio, DemoError> {
        if self.verbose {
            return Ok(Stdio::inherit());
        }
        let path = self.path(name);
        let f: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        Ok(Stdio::from(f))
    }

    /// Spawns `cmd` as `name` with its output in `name`'s log.
    fn spawn(&self, name: &str, cmd: &mut Command) -> Result<Guarded, DemoError> {
        cmd.stdin(Stdio::null())
            .stdout(self.stdio(name)?)
            .stderr(self.stdio(name)?);
        Guarded::spawn(cmd).map_err(io_err(format!("starting {name}")))
    }

    /// Prints the last lines of every log (after a failure).
    fn print_tails(&self, names: &[&str]) {
        if self.verbose {
            return;
        }
        for name in names {
            let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            eprintln!("--- last {} lines of {name}'s log ---", tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

/// Runs the whole demo; `Ok` when every act happened as it should.
pub fn run(opts: &Options) -> Result<(), DemoError> {
    interrupt::install().map_err(io_err("installing the Ctrl-C handler"))?;
    let bins = bins::locate(opts.build)?;
    let tmp = tempfile::Builder::new()
        .prefix("cops-demo.")
        .tempdir()
        .map_err(io_err("creating the temp dir"))?;
    let logs = Logs {
        dir: tmp.path().to_path_buf(),
        verbose: opts.verbose,
    };
    let result = Demo::setup(opts, &bins, tmp.path(), &logs).and_then(|mut d| d.play(opts));
    if let Err(e) = &result {
        if !matches!(e, DemoError::Interrupted) {
            eprintln!("cops-demo FAILED: {e}");
            logs.print_tails(&["fims_server", "cops", CONTROLLER.0, MODBUS.0]);
        }
    }
    result
}

/// The running demo. Fields drop in order: supervised processes, COPS, broker.
struct Demo {
    world: World,
    client: Client,
    rx: Receiver<(Instant, SupervisorEvent)>,
    supervisors: Vec<Supervisor>,
    cops: Guarded,
    broker: Guarded,
    socket: PathBuf,
    bins: Bins,
    our_uri: String,
    /// The configuration COPS runs with.
    cfg: serde_json::Value,
    /// The demo processes' normal iteration, ms.
    work_ms: u64,
}

impl Demo {
    fn setup(opts: &Options, bins: &Bins, dir: &Path, logs: &Logs) -> Result<Demo, DemoError> {
        let start = Instant::now();
        let socket = dir.join("fims.sock");
        let (config, cfg) = load_config(opts, dir)?;
        let our_uri = cfg["ourUri"].as_str().unwrap_or("/cops").to_owned();
        let world = World::new(start, &our_uri);
        world.now("demo", &format!("working in {}", dir.display()));

        let broker = logs.spawn(
            "fims_server",
            Command::new(bins.path("fims_server"))
                .arg("--socket")
                .arg(&socket),
        )?;
        let mut client = connect(&socket, Duration::from_secs(10))?;
        let text = format!("fims_server pid {} on {}", broker.pid(), socket.display());
        world.now("demo", &text);
        client
            .subscribe_with(&[
                Subscription::all("/events"),
                Subscription::pub_only(our_uri.clone()),
            ])
            .map_err(fims_err("subscribing to /events"))?;

        let cops = logs.spawn(
            "cops",
            Command::new(bins.path("cops"))
                .arg("--config")
                .arg(&config)
                .arg("--socket")
                .arg(&socket),
        )?;
        let text = format!(
            "cops pid {} with {}",
            cops.pid(),
            describe_config(opts, &cfg)
        );
        world.now("demo", &text);

        let (tx, rx) = channel();
        let mut supervisors = Vec::new();
        for (name, uri) in [CONTROLLER, MODBUS] {
            let exe = bins.path("demo_process");
            let (sock, work) = (socket.clone(), opts.work_ms.to_string());
            let logs = logs.clone();
            let make = move || {
                let mut c = Command::new(&exe);
                c.args(["--name", name, "--uri", uri, "--work-ms", &work])
                    .arg("--socket")
                    .arg(&sock)
                    .stdin(Stdio::null());
                // Without its log file the process still runs, logging to the terminal.
                if let Ok(out) = logs.stdio(name) {
                    c.stderr(out);
                }
                c
            };
            let s = Supervisor::start(name, make, Duration::from_millis(300), tx.clone())
                .map_err(io_err(format!("starting the supervisor of {name}")))?;
            supervisors.push(s);
        }
        Ok(Demo {
            world,
            client,
            rx,
            supervisors,
            cops,
            broker,
            socket,
            bins: bins.clone(),
            our_uri,
            cfg,
            work_ms: opts.work_ms,
        })
    }

    /// Receives and records everything until `until`.
    fn pump(&mut self, until: Instant) -> Result<(), DemoError> {
        loop {
            if interrupt::requested() {
                return Err(DemoError::Interrupted);
            }
            while let Ok((at, ev)) = self.rx.try_recv() {
                self.world.on_supervisor(at, ev);
            }
            if let Ok(Some(status)) = self.cops.try_wait() {
                let s = describe(status);
                return Err(DemoError::Unexpected(format!("cops exited: {s}")));
            }
            if let Ok(Some(status)) = self.broker.try_wait() {
                let s = describe(status);
                return Err(DemoError::Unexpected(format!("fims_server exited: {s}")));
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            let wait = (until - now).min(Duration::from_millis(20));
            match self.client.recv(Some(wait)) {
                Ok(Some(m)) => {
                    let m = m.to_owned();
                    self.world.on_message(Instant::now(), &m.uri, &m.body);
                }
                Ok(None) => {}
                Err(e) if e.is_disconnect() => {
                    return Err(fims_err("the demo's connection to fims_server")(e))
                }
                Err(e) => self
                    .world
                    .now("demo", &format!("ignored a bad datagram: {e}")),
            }
        }
    }

    /// Pumps until `cond` holds (its value) or `timeout` passes (an error naming `what`).
    fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&World) -> Option<T>,
    ) -> Result<T, DemoError> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(v) = cond(&self.world) {
                return Ok(v);
            }
            if Instant::now() >= end {
                return Err(DemoError::Timeout {
                    what: what.to_owned(),
                    secs: timeout.as_secs_f64(),
                });
            }
            let step = Instant::now() + Duration::from_millis(20);
            self.pump(step.min(end))?;
        }
    }

    fn pause(&mut self, d: Duration) -> Result<(), DemoError> {
        self.pump(Instant::now() + d)
    }

    fn pid_of(&mut self, name: &str) -> Result<u32, DemoError> {
        let what = format!("{name} to be running");
        self.wait_for(&what, Duration::from_secs(10), |w| {
            w.running.get(name).copied()
        })
    }

    /// Waits until COPS's stats show `name` alive as the current PID; returns it.
    fn wait_alive(&mut self, name: &str, timeout: Duration) -> Result<u32, DemoError> {
        let what = format!("COPS's stats to show {name} alive with its current pid");
        self.wait_for(&what, timeout, |w| {
            let pid = *w.running.get(name)?;
            w.alive_as(name, pid).then_some(pid)
        })
    }

    fn play(&mut self, opts: &Options) -> Result<(), DemoError> {
        let (act, linger) = if opts.fast {
            (Duration::from_millis(1500), Duration::from_millis(500))
        } else {
            (Duration::from_secs(6), Duration::from_secs(4))
        };
        for name in [CONTROLLER.0, MODBUS.0] {
            self.pid_of(name)?;
        }
        self.world.now("demo", "act 1: heartbeats flowing");
        for name in [CONTROLLER.0, MODBUS.0] {
            self.wait_alive(name, Duration::from_secs(20))?;
        }
        self.pause(act)?;
        self.hang_act(linger)?;
        self.crash_act(linger)?;
        self.loop_alarm_act(linger)?;
        self.loop_kill_act(linger)?;
        self.finale()?;
        if opts.keep_running {
            self.keep_running()?;
        }
        self.shutdown();
        Ok(())
    }

    fn send(&mut self, uri: &str, body: &[u8]) -> Result<(), DemoError> {
        self.client
            .send(Method::Set, uri, None, body)
            .map_err(fims_err(format!("sending set {uri}")))
    }

    fn hang_act(&mut self, linger: Duration) -> Result<(), DemoError> {
        let (name, uri) = CONTROLLER;
        let old = self.pid_of(name)?;
        self.world.focus = Some(name.to_owned());
        self.world.now("demo", &format!("act 2: {name} hangs"));
        let hang_uri = format!("{uri}/debug/hang");
        self.send(&hang_uri, b"true")?;
        let t0 = Instant::now();
        let text = format!("set {hang_uri}: pid {old} now spins its main loop forever");
        self.world.say(t0, "demo", &text);

        let what = format!("COPS to kill hung pid {old} of {name}");
        let exit = self.wait_for(&what, Duration::from_secs(20), |w| {
            w.exit_of(name, old).cloned()
        })?;
        if exit.status.code().is_some() {
            return Err(DemoError::Unexpected(format!(
                "hung pid {old} ended with {} instead of being killed",
                describe(exit.status)
            )));
        }
        let new = self.wait_alive(name, Duration::from_secs(20))?;
        let secs = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
        let text = format!(
            "{name}: hang -> killed in {:.2} s, heartbeats from new pid {new} after {:.2} s",
            secs(exit.at),
            secs(Instant::now())
        );
        self.world.now("demo", &text);
        let alarm = self.wait_for("COPS's alarm about the hang", Duration::from_secs(3), |w| {
            w.events_since(t0, 3).next().cloned()
        })?;
        self.world
            .now("demo", &format!("COPS raised: {}", alarm.message));
        self.pause(linger)
    }

    fn crash_act(&mut self, linger: Duration) -> Result<(), DemoError> {
        let (name, uri) = MODBUS;
        let old = self.pid_of(name)?;
        let before = self.restarts_in_stats(name);
        self.world.focus = Some(name.to_owned());
        self.world.now("demo", &format!("act 3: {name} crashes"));
        let crash_uri = format!("{uri}/debug/crash");
        self.send(&crash_uri, b"true")?;
        let t0 = Instant::now();
        self.world.say(t0, "demo", &format!("set {crash_uri}"));
        let what = format!("pid {old} of {name} to exit");
        let exit = self.wait_for(&what, Duration::from_secs(10), |w| {
            w.exit_of(name, old).cloned()
        })?;
        if exit.status.code() != Some(3) {
            return Err(DemoError::Unexpected(format!(
                "crashed pid {old} ended with {} instead of exit status 3",
                describe(exit.status)
            )));
        }
        let new = self.wait_alive(name, Duration::from_secs(20))?;
        let what = format!("COPS to count the restart of {name}");
        self.wait_for(&what, Duration::from_secs(10), |w| {
            let (_, p) = w.stats.get(name)?;
            (p.total_restarts.unwrap_or(0) > before && p.pid == Some(u64::from(new))).then_some(())
        })?;
        let secs = Instant::now().saturating_duration_since(t0).as_secs_f64();
        let text = format!("{name}: crash -> heartbeats from new pid {new} after {secs:.2} s");
        self.world.now("demo", &text);
        self.pause(linger)
    }

    fn restarts_in_stats(&self, name: &str) -> u64 {
        self.world
            .stats
            .get(name)
            .and_then(|(_, p)| p.total_restarts)
            .unwrap_or(0)
    }

    fn finale(&mut self) -> Result<(), DemoError> {
        self.world.focus = Some(String::new());
        let uri = format!("{}/stats", self.our_uri);
        let rows = match self
            .client
            .request(Method::Get, &uri, b"", Duration::from_secs(2))
        {
            Ok(answer) => {
                let v = serde_json::from_slice(&answer.body).unwrap_or_default();
                ProcStats::parse_all(&v)
            }
            Err(e) => {
                self.world.now(
                    "demo",
                    &format!("get {uri} failed ({e}); last published stats:"),
                );
                Vec::new()
            }
        };
        let rows = if rows.is_empty() {
            let mut r: Vec<_> = self.world.stats.values().map(|(_, p)| p.clone()).collect();
            r.sort_by(|a, b| a.name.cmp(&b.name));
            r
        } else {
            rows
        };
        self.world.now("demo", &format!("get {uri}:"));
        out(format_args!(""));
        for line in stats::table(&rows).lines() {
            out(format_args!("    {line}"));
        }
        out(format_args!(""));
        let kills = self
            .world
            .exits
            .iter()
            .filter(|e| e.status.code().is_none());
        let text = format!(
            "done: {} events from COPS, {} kill(s), {} restart(s)",
            self.world.events.len(),
            kills.count(),
            self.world.restarts.values().sum::<u32>()
        );
        self.world.now("demo", &text);
        Ok(())
    }

    fn keep_running(&mut self) -> Result<(), DemoError> {
        self.world.focus = None;
        let sock = self.socket.display();
        let bin = |b: &str| self.bins.path(b).display().to_string();
        out(format_args!(
            "\nEverything keeps running; Ctrl-C stops it. Try, in another terminal:"
        ));
        out(format_args!(
            "    {} --socket {sock} -u /cops -u /events",
            bin("fims_listen")
        ));
        out(format_args!(
            "    {} --socket {sock} -m get -u /cops/stats",
            bin("fims_send")
        ));
        let (n, u) = CONTROLLER;
        out(format_args!(
            "    {} --socket {sock} -m get -u {u}/cops",
            bin("fims_send")
        ));
        out(format_args!(
            "    {} --socket {sock} -m set -u {u}/debug/hang true   # {n} hangs",
            bin("fims_send")
        ));
        out(format_args!(
            "    (or export FIMS_SOCKET={sock} and drop the --socket flags)\n"
        ));
        loop {
            match self.pump(Instant::now() + Duration::from_secs(3600)) {
                Err(DemoError::Interrupted) => {
                    self.world.now("demo", "Ctrl-C: stopping");
                    return Ok(());
                }
                other => other?,
            }
        }
    }

    /// Stops everything in order: monitored processes, COPS, broker.
    fn shutdown(&mut self) {
        for s in &mut self.supervisors {
            s.stop();
        }
        self.cops.stop(Duration::from_secs(2));
        self.broker.stop(Duration::from_secs(2));
        self.world.now("demo", "all children stopped");
    }
}

/// The config file COPS runs with (the built-in one is written into `dir`) and its JSON.
fn load_config(opts: &Options, dir: &Path) -> Result<(PathBuf, serde_json::Value), DemoError> {
    let config = match &opts.config {
        Some(c) => c.clone(),
        None => {
            let c = dir.join("demo.json");
            std::fs::write(&c, DEMO_CONFIG).map_err(io_err("writing demo.json"))?;
            c
        }
    };
    let text = std::fs::read_to_string(&config)
        .map_err(io_err(format!("reading {}", config.display())))?;
    let cfg = serde_json::from_str(&text)
        .map_err(|e| DemoError::Unexpected(format!("{}: {e}", config.display())))?;
    Ok((config, cfg))
}

/// "examples/configs/demo.json: heartbeat every 250 ms, hung after 4 missed".
fn describe_config(opts: &Options, cfg: &serde_json::Value) -> String {
    let shown = match &opts.config {
        Some(c) => c.display().to_string(),
        None => "examples/configs/demo.json".to_owned(),
    };
    let period = cfg["heartbeatFreq"]
        .as_u64()
        .or(cfg["heartbeatFrequencyMS"].as_u64())
        .unwrap_or(1000);
    let allowance = cfg["heartbeatErrorAllowance"].as_u64().unwrap_or(5);
    format!("{shown}: heartbeat every {period} ms, hung after {allowance} missed")
}

/// Connects as `cops_demo`, retrying until the broker accepts or `timeout` passes.
fn connect(socket: &Path, timeout: Duration) -> Result<Client, DemoError> {
    let end = Instant::now() + timeout;
    loop {
        match Client::connect_to(socket, "cops_demo") {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= end => {
                return Err(fims_err("connecting to the demo's fims_server")(e))
            }
            Err(_) if interrupt::requested() => return Err(DemoError::Interrupted),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
