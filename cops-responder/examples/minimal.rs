//! A monitored process that only responds to COPS, logging each answer to stderr.
//!
//! ```text
//! cargo run -p cops-responder --example minimal -- --name NAME --uri URI [--socket PATH]
//!     [--version-tag TAG] [--version-commit COMMIT] [--version-build BUILD]
//! ```
//! The socket is `--socket`, else `$FIMS_SOCKET`, else the default path. It
//! waits for the broker if there is none yet, reconnects when it restarts, and
//! exits 0 on SIGTERM or SIGINT.
//!
//! It answers all three version strings (the existing COPS logs an error for
//! every reply that lacks one): by default the crate's version, and the commit
//! and build number given at build time in `COPS_VERSION_COMMIT` and
//! `COPS_VERSION_BUILD` (`unknown` and `dev` without them); the flags override.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cops_responder::{Driver, Outcome, Responder};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

struct Args {
    name: String,
    uri: String,
    socket: Option<String>,
    /// Tag, commit, build.
    version: [String; 3],
}

const USAGE: &str = "usage: minimal --name NAME --uri URI [--socket PATH] \
                     [--version-tag TAG] [--version-commit COMMIT] [--version-build BUILD]";

fn parse_args() -> Result<Args, String> {
    let (mut name, mut uri, mut socket) = (None, None, None);
    let (mut tag, mut commit, mut build) = (None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--name" => &mut name,
            "--uri" => &mut uri,
            "--socket" => &mut socket,
            "--version-tag" => &mut tag,
            "--version-commit" => &mut commit,
            "--version-build" => &mut build,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        };
        *slot = Some(
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?,
        );
    }
    Ok(Args {
        name: name.ok_or_else(|| format!("--name is required\n{USAGE}"))?,
        uri: uri.ok_or_else(|| format!("--uri is required\n{USAGE}"))?,
        socket,
        version: [
            tag.unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            commit.unwrap_or_else(|| {
                option_env!("COPS_VERSION_COMMIT")
                    .unwrap_or("unknown")
                    .into()
            }),
            build.unwrap_or_else(|| option_env!("COPS_VERSION_BUILD").unwrap_or("dev").into()),
        ],
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut responder = match Responder::new(&args.name, &args.uri) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("minimal: {e}");
            return ExitCode::from(2);
        }
    };
    let [tag, commit, build] = &args.version;
    responder.set_version(tag, commit, build);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    let socket = args
        .socket
        .map(Into::into)
        .unwrap_or_else(fims::socket_path);
    eprintln!(
        "minimal: {} answering on {} via {}",
        args.name,
        responder.cops_uri(),
        socket.display()
    );
    let mut driver = Driver::new(responder, socket);
    let (mut was_connected, mut reported) = (false, false);
    while !STOP.load(Ordering::Relaxed) {
        // This loop is the process's work loop: it answers, so it is alive.
        let polled = driver.poll_with(Duration::from_millis(200), |e| match e.outcome {
            Outcome::Reply => eprintln!(
                "minimal: {} {} -> set {} {}",
                e.method,
                e.uri,
                e.replyto,
                String::from_utf8_lossy(e.reply)
            ),
            _ => eprintln!("minimal: {} {} (nothing to answer)", e.method, e.uri),
        });
        if let Err(e) = polled {
            eprintln!("minimal: connection lost: {e}; reconnecting");
        }
        if driver.is_connected() && !was_connected {
            eprintln!("minimal: connected (connect #{})", driver.connects());
            was_connected = true;
            reported = false;
        } else if !driver.is_connected() {
            was_connected = false;
            if let (false, Some(e)) = (reported, driver.last_error()) {
                eprintln!("minimal: not connected: {e}; retrying");
                reported = true;
            }
        }
    }
    eprintln!("minimal: stopping");
    ExitCode::SUCCESS
}
