//! `fims_send`: sends one FIMS message; for `get`, or with `-r`, waits for the
//! answer and prints its body.
//!
//! Exit status: 0 sent (and answered); 1 failed (no broker, timeout, refused)
//! or the answer, printed as usual, is an error (a JSON string starting with
//! `Error:`, the convention of docs/protocol/fims.md); 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fims::blocking::Client;
use fims::Method;

/// Send one FIMS message; for get (or with -r) wait for the answer and print it.
#[derive(Debug, Parser)]
#[command(name = "fims_send", version)]
struct Args {
    /// Method: set, get, pub, post or del.
    #[arg(short, long)]
    method: Method,
    /// Target URI.
    #[arg(short, long)]
    uri: String,
    /// Wait for the answer on this URI (a unique one is made for `get` without -r).
    #[arg(short, long)]
    replyto: Option<String>,
    /// Read the body from this file.
    #[arg(short, long, conflicts_with = "body")]
    file: Option<PathBuf>,
    /// How long to wait for an answer, in milliseconds.
    #[arg(short, long, default_value_t = 2000)]
    timeout: u64,
    /// Socket path [default: $FIMS_SOCKET, else /tmp/FlexGen_FIMS_Server.socket].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Ask for the existing system's AES body encryption (refused: not supported).
    #[arg(long)]
    encrypt: bool,
    /// Message body (usually JSON).
    body: Option<String>,
}

fn run(args: Args) -> Result<Option<Vec<u8>>, String> {
    if args.encrypt || fims_server::tools::encryption_requested() {
        return Err(fims::Error::EncryptionNotSupported.to_string());
    }
    if args.method == Method::Sub {
        return Err("sub is a request to the broker; use fims_listen to subscribe".into());
    }
    let body = match (&args.file, args.body) {
        (Some(f), _) => {
            std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?
        }
        (None, Some(b)) => b.into_bytes(),
        (None, None) => Vec::new(),
    };
    let path = args.socket.unwrap_or_else(fims::socket_path);
    let mut c = Client::connect_to(&path, "fims_send").map_err(|e| e.to_string())?;
    let timeout = Duration::from_millis(args.timeout);
    let answer = match (&args.replyto, args.method) {
        (Some(r), m) => c.request_on(m, &args.uri, r, &body, timeout),
        (None, Method::Get) => c.request(Method::Get, &args.uri, &body, timeout),
        (None, m) => {
            return c
                .send(m, &args.uri, None, &body)
                .map(|()| None)
                .map_err(|e| e.to_string())
        }
    };
    match answer {
        Ok(m) => Ok(Some(m.body)),
        Err(fims::Error::Timeout(ms)) => Err(format!(
            "no answer to {} {} within {ms} ms",
            args.method, args.uri
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(Some(body)) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&body);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
            if fims_server::tools::is_error_answer(&body) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fims_send: {e}");
            ExitCode::FAILURE
        }
    }
}
