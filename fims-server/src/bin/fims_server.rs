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
    /// Largest whole datagram accepted and delivered (announced in the handshake).
    #[arg(long, default_value_t = fims::DEFAULT_MAX_LEN)]
    max_len: u32,
    /// Outbound queue bound per connection, in datagrams.
    #[arg(long, default_value_t = fims_server::DEFAULT_QUEUE_DATAGRAMS)]
    queue_datagrams: usize,
    /// Outbound queue bound per connection, in bytes (at most --max-queued-bytes).
    #[arg(long, default_value_t = fims_server::DEFAULT_QUEUE_BYTES)]
    queue_bytes: usize,
    /// Budget for the bytes queued for all slow receivers together; when full,
    /// the largest queues lose messages first.
    #[arg(long, default_value_t = fims_server::DEFAULT_MAX_QUEUED_BYTES)]
    max_queued_bytes: usize,
    /// Milliseconds a new connection has to send its handshake and name before
    /// it is closed (0: wait forever).
    #[arg(long, default_value_t = fims_server::DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64)]
    handshake_timeout_ms: u64,
    /// Most subscriptions one connection holds (a larger `sub` is refused).
    #[arg(long, default_value_t = fims_server::DEFAULT_MAX_SUBS_PER_CONN)]
    max_subs_per_conn: usize,
    /// Most connections one Unix user may hold open (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_conns_per_uid: usize,
    /// Serve the broker's counters (Prometheus text, OpenMetrics) at
    /// http://ADDR:PORT/metrics, e.g. 127.0.0.1:9633. Off by default.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<String>,
}

fn parse_octal(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("{s:?} is not an octal file mode (e.g. 0660)")),
    }
}

/// Blocks SIGTERM, SIGINT and SIGUSR1 in this thread (and the threads it
/// starts) and returns the set, for a thread that waits on it with `sigwait`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset; the
    // calls only touch the set and this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// SIGUSR1 logs the broker's counters; SIGTERM or SIGINT stops it.
fn wait_for_signal(set: libc::sigset_t, handle: ShutdownHandle) {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: set is initialised and sig valid for writing.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        if sig == libc::SIGUSR1 {
            handle.log_stats();
            continue;
        }
        tracing::info!(signal = sig, "stopping");
        return handle.shutdown();
    }
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
    cfg.max_queued_bytes = args.max_queued_bytes;
    cfg.handshake_timeout = std::time::Duration::from_millis(args.handshake_timeout_ms);
    cfg.max_subs_per_conn = args.max_subs_per_conn;
    cfg.max_conns_per_uid = args.max_conns_per_uid;
    let mut server = match Server::bind(cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("fims_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = &args.metrics_listen {
        let published = server.publish_stats();
        let render: metrics_http::Render = std::sync::Arc::new(move || {
            let s = published.load();
            Box::pin(async move { Ok(fims_server::metrics::registry(s)) })
        });
        match metrics_http::spawn(addr, "fims-metrics", render) {
            Ok(bound) => tracing::info!(addr = %bound, "metrics at http://{bound}/metrics"),
            Err(e) => {
                eprintln!("fims_server: --metrics-listen {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
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
