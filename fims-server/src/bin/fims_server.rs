//! `fims_server`: the FIMS broker. See the crate README for flags and choices.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fims_server::{Config, Server, ShutdownHandle};

/// The FIMS message broker.
#[derive(Debug, Parser)]
#[command(
    name = "fims_server",
    version,
    about = "The FIMS message broker: routes messages between the processes of a site"
)]
struct Args {
    /// Socket path [default: $FIMS_SOCKET, else /tmp/FlexGen_FIMS_Server.socket].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Permissions of the socket file, octal.
    #[arg(long, default_value = "0660", value_parser = parse_octal)]
    mode: u32,
    /// Largest message body accepted and delivered (announced in the handshake).
    #[arg(long, default_value_t = fims::DEFAULT_MAX_LEN)]
    max_len: u32,
    /// Outbound queue bound per connection, in datagrams.
    #[arg(long, default_value_t = fims_server::DEFAULT_QUEUE_DATAGRAMS)]
    queue_datagrams: usize,
    /// Outbound queue bound per connection, in bytes.
    #[arg(long, default_value_t = fims_server::DEFAULT_QUEUE_BYTES)]
    queue_bytes: usize,
}

fn parse_octal(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("{s:?} is not an octal file mode (e.g. 0660)")),
    }
}

/// Blocks SIGTERM and SIGINT in this thread (and the threads it starts) and
/// returns the set, for a thread that waits on it with `sigwait`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset; the
    // calls only touch the set and this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: libc::sigset_t, handle: ShutdownHandle) {
    let mut sig: libc::c_int = 0;
    // SAFETY: set is initialised and sig valid for writing.
    while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
    tracing::info!(signal = sig, "stopping");
    handle.shutdown();
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let set = block_signals();
    let mut cfg = Config::new(args.socket.unwrap_or_else(fims::socket_path));
    cfg.mode = args.mode;
    cfg.max_len = args.max_len;
    cfg.queue_datagrams = args.queue_datagrams;
    cfg.queue_bytes = args.queue_bytes;
    let server = match Server::bind(cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("fims_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = server.shutdown_handle();
    std::thread::spawn(move || wait_for_signal(set, handle));
    // Under systemd with Type=notify: ready once the socket accepts. Without
    // NOTIFY_SOCKET this does nothing.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    match server.run() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fims_server: {e}");
            ExitCode::FAILURE
        }
    }
}
