//! `cops`: the supervisor. Thin: parse arguments, set up logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cops_server::{config, runtime};
use tokio::signal::unix::{signal, SignalKind};

/// COPS: heartbeats the configured processes over FIMS and kills hung ones safely.
#[derive(Debug, Parser)]
#[command(name = "cops", version)]
struct Args {
    /// The configuration file (JSON).
    #[arg(long, short = 'c')]
    config: PathBuf,
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
    let cfg = match config::load(&args.config, &config::host_name())
        .and_then(|c| known_users(c, &args.config))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cops: {e}");
            if args.check {
                eprintln!("cops: configuration test failed");
            }
            return ExitCode::from(1);
        }
    };
    if args.check {
        return check(&args, &cfg);
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
    let opts = runtime::Options {
        socket: args.socket.unwrap_or_else(fims::socket_path),
        dry_run: args.dry_run,
        process_name: args.name,
    };
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(supervise(cfg, opts)),
        Err(e) => {
            eprintln!("cops: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--check`: warnings, suggestions, the effective settings.
fn check(args: &Args, cfg: &config::Config) -> ExitCode {
    for w in &cfg.warnings {
        eprintln!("cops: warning: {w}");
    }
    for s in &cfg.suggestions {
        eprintln!("cops: suggestion: {s}");
    }
    match serde_json::to_string_pretty(&cfg.to_json()) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cops: {e}"),
    }
    eprintln!(
        "cops: configuration file {} test is successful",
        args.config.display()
    );
    ExitCode::SUCCESS
}

/// Runs COPS until SIGTERM or SIGINT.
async fn supervise(cfg: config::Config, opts: runtime::Options) -> ExitCode {
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
    runtime::run(cfg, opts, shutdown).await;
    ExitCode::SUCCESS
}
