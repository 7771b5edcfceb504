//! `cops`: the supervisor (the default: `cops --config FILE`) and the operator
//! commands (`cops status`, `why`, `inhibit`, `resume`). Thin: parse
//! arguments, set up logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cops_server::{access, cli, config, metrics, runtime};
use tokio::signal::unix::{signal, SignalKind};

/// Where to read more, at the end of `cops --help`.
const MORE: &str = "\
Without a command, cops is the supervisor: `cops --config /etc/cops/cops.json`.
The operator commands ask a running cops over FIMS: cops status, cops why NAME,
cops inhibit NAME --for 10m, cops resume NAME (`cops help <command>`).

Logs go to stderr (the journal under systemd); RUST_LOG sets the level
(default info; RUST_LOG=debug adds connection details).

Docs: /usr/share/doc/cops/cops.md (docs/cops.md in the source): configuration,
events, stats, operating COPS, metrics; the protocol: /usr/share/doc/cops/protocol/cops.md.";

/// COPS: heartbeats the configured processes over FIMS and kills hung ones safely.
#[derive(Debug, Parser)]
#[command(
    name = "cops",
    version,
    after_help = MORE,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    /// An operator command (without one, cops supervises).
    #[command(subcommand)]
    command: Option<cli::Command>,
    /// The configuration file (JSON).
    #[arg(long, short = 'c', required = true)]
    config: Option<PathBuf>,
    /// The FIMS broker's socket (default: $FIMS_SOCKET, else /tmp/FlexGen_FIMS_Server.socket).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Run everything but deliver no signal: log what would be signalled.
    #[arg(long)]
    dry_run: bool,
    /// Validate the configuration, print the effective settings and exit (0 valid, 1 not).
    #[arg(long)]
    check: bool,
    /// FIMS process name.
    #[arg(long, default_value = "cops")]
    name: String,
    /// Serve metrics (Prometheus text, OpenMetrics) at http://ADDR:PORT/metrics,
    /// e.g. 127.0.0.1:9632. Off by default.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<String>,
}

/// Every `expectedUser` must name a user of this host: a name that matches
/// nobody would refuse every PID of that process, so it would never be killed.
fn known_users(
    cfg: config::Config,
    file: &std::path::Path,
) -> Result<config::Config, config::ConfigError> {
    let mut users = cops_server::kill::Users::default();
    for p in &cfg.processes {
        if let Some(u) = p.expected_user.as_deref() {
            if users.uid(u).is_none() {
                return Err(config::ConfigError {
                    file: file.display().to_string(),
                    process: Some(format!("\"{}\"", p.name)),
                    key: Some("expectedUser".into()),
                    message: format!("{u:?} is no user of this host"),
                });
            }
        }
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(cmd) = args.command {
        return cmd.run();
    }
    // clap requires --config without a command.
    let Some(path) = args.config.clone() else {
        eprintln!("cops: --config FILE is required (or give a command: cops status)");
        return ExitCode::from(2);
    };
    let cfg = match config::load(&path, &config::host_name()).and_then(|c| known_users(c, &path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cops: {e}");
            if args.check {
                eprintln!("cops: configuration test failed");
            }
            return ExitCode::from(1);
        }
    };
    let control_users = match access::control_stamps(cfg.control_users.as_deref()) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("cops: {}: key \"controlUsers\": {e}", path.display());
            if args.check {
                eprintln!("cops: configuration test failed");
            }
            return ExitCode::from(1);
        }
    };
    if args.check {
        return check(&path, &cfg);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    runtime::raise_fd_limit();
    let scrapes = match args.metrics_listen.as_deref().map(metrics::start) {
        None => None,
        Some(Ok((addr, scrapes))) => {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            Some(scrapes)
        }
        Some(Err(e)) => {
            let addr = args.metrics_listen.as_deref().unwrap_or_default();
            eprintln!("cops: --metrics-listen {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let opts = runtime::Options {
        socket: args.socket.unwrap_or_else(fims::socket_path),
        dry_run: args.dry_run,
        process_name: args.name,
        control_users,
    };
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(supervise(cfg, opts, scrapes)),
        Err(e) => {
            eprintln!("cops: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--check`: warnings, suggestions, the effective settings.
fn check(path: &std::path::Path, cfg: &config::Config) -> ExitCode {
    for w in &cfg.warnings {
        eprintln!("cops: warning: {w}");
    }
    for s in &cfg.suggestions {
        eprintln!("cops: suggestion: {s}");
    }
    for l in cfg.explain_loops() {
        eprintln!("cops: loop supervision: {l}");
    }
    match serde_json::to_string_pretty(&cfg.to_json()) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cops: {e}"),
    }
    eprintln!(
        "cops: configuration file {} test is successful",
        path.display()
    );
    ExitCode::SUCCESS
}

/// Runs COPS until SIGTERM or SIGINT.
async fn supervise(
    cfg: config::Config,
    opts: runtime::Options,
    scrapes: Option<metrics::Scrapes>,
) -> ExitCode {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cops: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        processes = cfg.processes.len(),
        period_ms = cfg.heartbeat.as_millis() as u64,
        dry_run = opts.dry_run,
        "cops starting"
    );
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    };
    runtime::run(cfg, opts, scrapes, shutdown).await;
    ExitCode::SUCCESS
}
