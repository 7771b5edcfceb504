//! A stand-in for a site controller or modbus client, supervised by COPS.
//!
//! It connects to FIMS as `--name`, subscribes to `--uri`, and runs an event
//! loop: one *iteration* of its work loop every `--work-ms` (standing for a
//! Modbus poll and the dispatch of its answer), and the messages that arrive
//! in between. It answers COPS's heartbeats from that same loop through the
//! responder (host-routed: every received message goes to the responder
//! first; what is not under `<uri>/cops` is the host's), and ticks the
//! responder's loop meter at the end of every iteration, so its answers carry
//! `"loop":{"count":N,"max_us":M,"p99_us":P}`.
//!
//! The test hooks of docs/protocol/cops.md: `set <uri>/debug/hang` makes the
//! main loop spin forever (so heartbeats stop and COPS kills it);
//! `set <uri>/debug/crash` exits at once with status 3; `set <uri>/debug/slow
//! N` makes every iteration last N ms from now on (the device answers that
//! late), while the loop still serves FIMS and answers heartbeats in time
//! (`0` or `false`: back to `--work-ms`). It reconnects when the broker
//! restarts and logs to stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use cops_responder::{Outcome, Responder};
use fims::{blocking::Client, Method};
use tracing::{debug, error, info, warn};

/// Exit status of `set <uri>/debug/crash`.
const CRASH_STATUS: i32 = 3;

/// A demo process COPS can supervise, hang and crash.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// FIMS process name (also the `name` in COPS's processList).
    #[arg(long)]
    name: String,
    /// Base URI, e.g. /site (heartbeats arrive on /site/cops).
    #[arg(long)]
    uri: String,
    /// Broker socket (default: $FIMS_SOCKET, else /tmp/FlexGen_FIMS_Server.socket).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Length of one iteration of the work loop, ms.
    #[arg(long, default_value_t = 100)]
    work_ms: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut responder = match Responder::new(&args.name, &args.uri) {
        Ok(r) => r,
        Err(e) => {
            error!(%e, "bad --name or --uri");
            return ExitCode::from(2);
        }
    };
    responder.set_version(env!("CARGO_PKG_VERSION"), "demo", "0");
    let mut host = Host {
        socket: args.socket.clone().unwrap_or_else(fims::socket_path),
        hang_uri: format!("{}/debug/hang", args.uri.trim_end_matches('/')),
        crash_uri: format!("{}/debug/crash", args.uri.trim_end_matches('/')),
        slow_uri: format!("{}/debug/slow", args.uri.trim_end_matches('/')),
        status_uri: format!("{}/status", args.uri.trim_end_matches('/')),
        work: Duration::from_millis(args.work_ms.max(1)),
        normal: Duration::from_millis(args.work_ms.max(1)),
        work_cycles: 0,
        args,
        responder,
    };
    info!(name = %host.args.name, uri = %host.args.uri, pid = std::process::id(), "starting");
    host.run()
}

struct Host {
    args: Args,
    responder: Responder,
    socket: PathBuf,
    hang_uri: String,
    crash_uri: String,
    slow_uri: String,
    status_uri: String,
    /// The length of an iteration now.
    work: Duration,
    /// `--work-ms`.
    normal: Duration,
    work_cycles: u64,
}

impl Host {
    /// Connects, serves until the broker goes away, reconnects; forever.
    fn run(&mut self) -> ExitCode {
        loop {
            let mut client = self.connect();
            match self.serve(&mut client) {
                Err(e) if e.is_disconnect() => warn!(%e, "lost the broker; reconnecting"),
                Err(e) => {
                    error!(%e, "FIMS failure");
                    return ExitCode::FAILURE;
                }
            }
        }
    }

    /// Connects and subscribes, retrying with a capped backoff while doing the work.
    fn connect(&mut self) -> Client {
        let mut backoff = Duration::from_millis(20);
        loop {
            match Client::connect_to(&self.socket, &self.args.name).and_then(|mut c| {
                c.subscribe(&[&self.args.uri])?;
                Ok(c)
            }) {
                Ok(c) => {
                    info!(socket = %self.socket.display(), uri = %self.args.uri, "connected");
                    return c;
                }
                Err(e) => {
                    debug!(%e, "connect failed; retrying");
                    std::thread::sleep(backoff);
                    self.do_work();
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// The main loop: work every period, and handle messages in between.
    fn serve(&mut self, client: &mut Client) -> fims::Result<std::convert::Infallible> {
        let mut reply = Vec::with_capacity(256);
        let mut replyto = String::new();
        let mut next_work = Instant::now();
        let mut next_status = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_work {
                self.do_work();
                next_work = now + self.work;
            }
            if now >= next_status {
                let body = format!(
                    r#"{{"pid":{},"work_cycles":{},"cops_heartbeat":{}}}"#,
                    std::process::id(),
                    self.work_cycles,
                    self.responder.heartbeat()
                );
                client.send(Method::Pub, &self.status_uri, None, body.as_bytes())?;
                next_status = now + Duration::from_secs(1);
            }
            let wait = next_work.saturating_duration_since(Instant::now());
            let msg = match client.recv(Some(wait)) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e @ fims::Error::Decode(_)) => {
                    warn!(%e, "dropped a malformed datagram");
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self
                .responder
                .handle_message(Instant::now(), &msg, &mut reply)
            {
                Outcome::Reply => {
                    replyto.clear();
                    replyto.push_str(msg.replyto);
                    client.send(Method::Set, &replyto, None, &reply)?;
                }
                Outcome::Handled => {}
                Outcome::NotMine => {
                    let (method, uri) = (msg.method.to_owned(), msg.uri.to_owned());
                    let body = String::from_utf8_lossy(msg.body).into_owned();
                    self.host_message(&method, &uri, &body);
                }
            }
        }
    }

    /// Messages under `<uri>` that are not the responder's.
    fn host_message(&mut self, method: &str, uri: &str, body: &str) {
        if method == "set" && uri == self.hang_uri {
            warn!(
                pid = std::process::id(),
                "debug/hang: spinning the main loop forever"
            );
            loop {
                std::hint::spin_loop();
            }
        }
        if method == "set" && uri == self.crash_uri {
            warn!(
                pid = std::process::id(),
                status = CRASH_STATUS,
                "debug/crash: exiting"
            );
            std::process::exit(CRASH_STATUS);
        }
        if method == "set" && uri == self.slow_uri {
            return self.slow(body);
        }
        debug!(method, uri, "ignored");
    }

    /// `set <uri>/debug/slow N`: iterations of N ms from now on (0 or
    /// `false`: back to `--work-ms`); anything else is ignored.
    fn slow(&mut self, body: &str) {
        let body = body.trim();
        let ms = match body {
            "false" => Some(0),
            b => b.parse::<u64>().ok(),
        };
        match ms {
            Some(0) => {
                self.work = self.normal;
                warn!(
                    ms = self.work.as_millis() as u64,
                    "debug/slow: back to the normal pace"
                );
            }
            Some(ms) => {
                self.work = Duration::from_millis(ms);
                warn!(
                    ms,
                    "debug/slow: every work-loop iteration lasts this long now"
                );
            }
            None => warn!(body, "debug/slow: not a number of ms; ignored"),
        }
    }

    /// One iteration of the work loop: a counter standing in for a control
    /// cycle, then the tick that ends it (the heartbeat answer carries the
    /// loop's figures).
    fn do_work(&mut self) {
        self.work_cycles = self.work_cycles.wrapping_add(1);
        self.responder.loop_tick(Instant::now());
    }
}
