//! `cargo run --release -p cops-examples --bin cops-demo`: watch COPS find a hung
//! process, kill it and see it restarted, with nothing installed and no systemd.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cops_examples::bins::Build;
use cops_examples::demo::{self, DemoError, Options};
use cops_examples::world::out;

/// The one-command demo of COPS: hang -> alarm -> kill -> restart.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Shorter pauses between the acts (about 12 s in all).
    #[arg(long)]
    fast: bool,
    /// After the scenario, keep everything running until Ctrl-C (prints the
    /// fims_send / fims_listen commands to poke it).
    #[arg(long)]
    keep_running: bool,
    /// Show the children's logs on the terminal instead of log files.
    #[arg(long, short)]
    verbose: bool,
    /// Never run cargo; fail when fims_server, cops or demo_process is missing
    /// next to this executable.
    #[arg(long)]
    no_build: bool,
    /// A COPS config to run instead of the built-in examples/configs/demo.json
    /// (it must list hybridos_controller on /site and modbus_client on
    /// /components/modbus_test_client).
    #[arg(long)]
    config: Option<PathBuf>,
    /// One iteration of the demo processes' work loop, ms (acts 4 and 5 slow
    /// it to 400 ms).
    #[arg(long, default_value_t = 100)]
    work_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Under `cargo run`, rebuild the broker and COPS too (a no-op when fresh)
    // so edits to them are picked up; otherwise build only what is missing.
    let build = if args.no_build {
        Build::Never
    } else if std::env::var_os("CARGO").is_some() {
        Build::Always
    } else {
        Build::IfMissing
    };
    let opts = Options {
        fast: args.fast,
        keep_running: args.keep_running,
        verbose: args.verbose,
        build,
        config: args.config,
        work_ms: args.work_ms,
    };
    out(format_args!(
        "cops-demo: COPS finds a hung process, kills it, and the service manager restarts it\n"
    ));
    match demo::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(DemoError::Interrupted) => {
            eprintln!("cops-demo: interrupted; every child stopped");
            ExitCode::from(130)
        }
        Err(_) => ExitCode::FAILURE,
    }
}
