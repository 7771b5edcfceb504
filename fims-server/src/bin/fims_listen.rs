//! `fims_listen`: subscribes (default `/`) and prints every message.
//!
//! Text mode prints a block per message; `--json` prints one JSON object per
//! line on stdout and nothing else (errors go to stderr). Every `-u` goes in one
//! `sub` (a `sub` replaces the connection's whole set; at most 255 URIs).
//!
//! When the broker goes away (a restart) it says so on stderr, reconnects and
//! subscribes again, and says so when it is back; `--no-reconnect` exits 1
//! instead. Exit status: 1 when no broker runs at start, a subscription is
//! refused, or (with `--no-reconnect`) the broker goes away; 0 when stdout is
//! closed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use fims::blocking::Client;
use fims::Subscription;
use fims_server::tools;

/// Print every FIMS message on the subscribed URIs (reconnects after a broker restart).
#[derive(Debug, Parser)]
#[command(name = "fims_listen", version)]
struct Args {
    /// URI to subscribe to (segment prefix); repeat for more, up to 255, all
    /// sent in one `sub` [default: /].
    #[arg(short, long)]
    uri: Vec<String>,
    /// One JSON object per line: method, uri, replyto, process_name, username,
    /// body (parsed when JSON, else text), timestamp (RFC 3339 UTC).
    #[arg(long)]
    json: bool,
    /// Exit 1 when the broker goes away instead of reconnecting.
    #[arg(long)]
    no_reconnect: bool,
    /// Socket path [default: $FIMS_SOCKET, else /tmp/FlexGen_FIMS_Server.socket].
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// First pause between reconnect attempts; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest pause between reconnect attempts.
const RETRY_MAX: Duration = Duration::from_secs(1);

fn run(args: Args) -> Result<(), String> {
    if tools::encryption_requested() {
        return Err(fims::Error::EncryptionNotSupported.to_string());
    }
    let path = args.socket.clone().unwrap_or_else(fims::socket_path);
    let subs: Vec<Subscription> = if args.uri.is_empty() {
        vec![Subscription::all("/")]
    } else {
        args.uri.iter().map(Subscription::all).collect()
    };
    let mut c = Client::connect_to(&path, "fims_listen").map_err(|e| e.to_string())?;
    c.set_subscriptions(&subs).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    loop {
        let msg = match c.recv(None) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            // One undecodable datagram is not a reason to stop listening.
            Err(fims::Error::Decode(e)) => {
                eprintln!("fims_listen: skipped a malformed datagram: {e}");
                continue;
            }
            Err(e) if e.is_disconnect() && !args.no_reconnect => {
                eprintln!(
                    "fims_listen: lost the broker at {} ({e}); reconnecting",
                    path.display()
                );
                reconnect(&mut c, &path)?;
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let now = SystemTime::now();
        let text = if args.json {
            tools::json_line(&msg, now) + "\n"
        } else {
            tools::text_block(&msg, now) + "\n"
        };
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            // Reader went away (e.g. `| head`): a normal end.
            return Ok(());
        }
    }
}

/// Reconnects until the broker is back and has taken the whole subscription
/// set again (pausing 100 ms, doubling to 1 s, between attempts), then says so
/// on stderr. A refused subscription ends the program: retrying cannot help.
fn reconnect(c: &mut Client, path: &Path) -> Result<(), String> {
    let mut pause = RETRY_MIN;
    loop {
        match c.reconnect() {
            Ok(()) => {
                eprintln!(
                    "fims_listen: reconnected to the broker at {}; subscribed again to {} URI(s)",
                    path.display(),
                    c.subscriptions().len()
                );
                return Ok(());
            }
            Err(e @ fims::Error::SubscribeRefused(_)) => return Err(e.to_string()),
            // Not there yet (gone, starting, or slow to answer): try again.
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fims_listen: {e}");
            ExitCode::FAILURE
        }
    }
}
