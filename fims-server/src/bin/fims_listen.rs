//! `fims_listen`: subscribes (default `/`) and prints every message.
//!
//! Text mode prints a block per message; `--json` prints one JSON object per
//! line on stdout and nothing else (errors go to stderr). Exit status: 1 when
//! the broker is not running or goes away, 0 when stdout is closed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Parser;
use fims::blocking::Client;
use fims_server::tools;

/// Print every FIMS message on the subscribed URIs.
#[derive(Debug, Parser)]
#[command(name = "fims_listen", version, about)]
struct Args {
    /// URI to subscribe to (segment prefix); repeat for more [default: /].
    #[arg(short, long)]
    uri: Vec<String>,
    /// One JSON object per line: method, uri, replyto, process_name, username,
    /// body (parsed when JSON, else text), timestamp (RFC 3339 UTC).
    #[arg(long)]
    json: bool,
    /// Socket path [default: $FIMS_SOCKET, else /tmp/FlexGen_FIMS_Server.socket].
    #[arg(long)]
    socket: Option<PathBuf>,
}

fn run(args: Args) -> Result<(), String> {
    if tools::encryption_requested() {
        return Err(fims::Error::EncryptionNotSupported.to_string());
    }
    let path = args.socket.unwrap_or_else(fims::socket_path);
    let mut c = Client::connect_to(&path, "fims_listen").map_err(|e| e.to_string())?;
    let uris: Vec<&str> = if args.uri.is_empty() {
        vec!["/"]
    } else {
        args.uri.iter().map(String::as_str).collect()
    };
    c.subscribe(&uris).map_err(|e| e.to_string())?;
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

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fims_listen: {e}");
            ExitCode::FAILURE
        }
    }
}
