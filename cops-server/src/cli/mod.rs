//! The operator commands of `cops` (docs/cops.md, "Operating COPS"):
//! `status`, `why`, `inhibit`, `resume`. Each is a FIMS client of what a
//! running COPS serves under its `ourUri`; none reads COPS's memory or files.
//!
//! Exit status, like `systemctl is-active` and the LSB status codes: 0 all
//! asked about healthy (or the request done), 3 unhealthy, 1 COPS cannot be
//! reached or refused the request (with a message saying which socket, and
//! whether the broker or COPS is the one not answering), 4 no such process,
//! 2 a usage error (clap's).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use fims::blocking::Client;
use fims::Method;
use serde_json::Value;

mod control;
mod status;
mod why;

pub use status::{render_status, StatusArgs};
pub use why::render_why;

/// How long a command waits for the broker's handshake and for each answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The operator commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// One screen of what COPS sees: a row per process, a header line.
    /// Exit 0 all healthy, 3 unhealthy, 1 COPS unreachable, 4 no such process.
    Status(StatusArgs),
    /// The decision log of one process, newest first: verdicts, signals and
    /// their evidence, exits, restarts, stalls, inhibits, with the numbers.
    Why(why::WhyArgs),
    /// Holds COPS off a process for maintenance: heartbeats and reports go
    /// on, no signal is sent, until `cops resume` or the time runs out (<= 24 h).
    Inhibit(control::InhibitArgs),
    /// Ends a maintenance inhibit: COPS supervises the process again.
    Resume(control::ResumeArgs),
}

impl Command {
    /// Runs the command; its exit status.
    pub fn run(self) -> ExitCode {
        match self {
            Command::Status(a) => status::run(&a),
            Command::Why(a) => why::run(&a),
            Command::Inhibit(a) => control::inhibit(&a),
            Command::Resume(a) => control::resume(&a),
        }
    }
}

/// Where COPS is: the broker's socket and COPS's `ourUri`.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The FIMS broker's socket (default: $FIMS_SOCKET, else /tmp/FlexGen_FIMS_Server.socket).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// COPS's ourUri.
    #[arg(long, default_value = "/cops")]
    pub uri: String,
}

/// Why a command failed, and its exit status.
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub code: u8,
    /// What to print (on stderr).
    pub message: String,
}

impl Failure {
    fn unreachable(message: String) -> Failure {
        Failure { code: 1, message }
    }

    /// Prints the message; the exit status.
    pub fn exit(self) -> ExitCode {
        eprintln!("{}", self.message);
        ExitCode::from(self.code)
    }
}

impl Target {
    fn socket(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(fims::socket_path)
    }

    /// Connects to the broker as `name`.
    pub fn connect(&self, name: &str) -> Result<Client, Failure> {
        let socket = self.socket();
        Client::connect_timeout(&socket, name, TIMEOUT).map_err(|e| {
            Failure::unreachable(format!(
                "cops: cannot reach the FIMS broker at {}: {e}\n  is fims_server running (systemctl status fims_server)? \
                 is that its socket (--socket, $FIMS_SOCKET)?",
                socket.display()
            ))
        })
    }

    /// Sends `method <ourUri><path>` with `body` and waits for the answer;
    /// an `"Error: ..."` answer is returned as `Err` with code 1 (4 when it
    /// says there is no such process).
    pub fn ask(
        &self,
        c: &mut Client,
        method: Method,
        path: &str,
        body: &[u8],
    ) -> Result<Value, Failure> {
        let uri = format!("{}{path}", self.uri);
        let answer = c.request(method, &uri, body, TIMEOUT).map_err(|e| {
            let socket = self.socket();
            let why = match e {
                fims::Error::Timeout(_) => format!(
                    "the FIMS broker at {} is up, but COPS does not answer at {} within {} s\n  is cops running (systemctl status cops)? is its ourUri {} (--uri)?",
                    socket.display(),
                    self.uri,
                    TIMEOUT.as_secs(),
                    self.uri
                ),
                e => format!(
                    "lost the FIMS broker at {} while asking COPS: {e}",
                    socket.display()
                ),
            };
            Failure::unreachable(format!("cops: {why}"))
        })?;
        let v: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            Failure::unreachable(format!("cops: the answer from {uri} is not JSON: {e}"))
        })?;
        match v.as_str().and_then(|s| s.strip_prefix("Error: ")) {
            Some(err) => Err(Failure {
                code: if err.starts_with("no process named") {
                    4
                } else {
                    1
                },
                message: format!("cops: COPS says: {err}"),
            }),
            None => Ok(v),
        }
    }
}

/// Whether to colour what goes to stdout: only on a terminal, and never
/// when `NO_COLOR` is set to anything but the empty string (no-color.org).
pub fn use_color() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// ANSI colours, or nothing.
#[derive(Debug, Clone, Copy)]
pub struct Paint(pub bool);

impl Paint {
    /// `text` in SGR `code` (e.g. "32" green, "1;31" bold red), when painting.
    pub fn paint(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// A number of milliseconds, compact: `0.31ms`, `4.2ms`, `45ms`, `1.2s`.
pub fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.2}ms")
    } else if v < 10.0 {
        format!("{v:.1}ms")
    } else if v < 1000.0 {
        format!("{v:.0}ms")
    } else {
        format!("{:.1}s", v / 1000.0)
    }
}

/// A field holding milliseconds as a compact age (`4m`), or `None`.
pub fn age(v: &Value) -> Option<String> {
    v.as_f64()
        .map(|ms| crate::human::duration(Duration::from_micros((ms.max(0.0) * 1000.0) as u64)))
}
