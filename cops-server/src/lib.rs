//! COPS, the Central Operating Process Supervisor: heartbeats monitored processes
//! over FIMS, declares the ones that stop answering hung, and kills them safely so
//! their service manager restarts them (`docs/protocol/cops.md` is the contract).
//!
//! # Layout
//! - [`config`]: the JSON configuration, validated, defaults filled in.
//! - [`engine`]: the sans-IO heartbeat engine (cycle, verdicts, kill decisions, stats).
//! - [`identity`]: the pure PID rule and the typed answers of the OS side.
//! - [`kill`]: kill safety (PID acceptance, identity pinning, evidence, signals).
//! - [`runtime`]: the tokio shell (FIMS connection, reconnect, actions, events, systemd).
//!   Its child [`runtime::batch`] does the `sendmmsg`/`recvmmsg` batches.
//! - [`metrics`]: `--metrics-listen`, the exporter and its snapshot channel;
//!   [`access`]: who may send control requests (inhibit, resume).
//! - [`cli`]: the operator commands `cops status`, `cops why`, `cops inhibit`,
//!   `cops resume` (clients of what COPS serves over FIMS); [`human`]:
//!   durations as operators read and write them.
//!
//! Binaries: `cops` (the supervisor: parse arguments, set up logging, run
//! [`runtime::run`]) and `cops-sim` (simulated responders for measuring COPS).
//!
//! # Time and I/O
//! [`config`] and [`engine`] do no I/O and read no clock: every engine entry point
//! takes `now: Instant`, so tests drive thousands of processes on a fake clock.
//! [`kill`] reads `/proc` and signals; [`runtime`] owns the socket, the clock and
//! the OS side of the engine's actions. Operator documentation: `docs/cops.md`.
#![warn(missing_docs)]

pub mod access;
pub mod cli;
pub mod config;
pub mod engine;
pub mod human;
pub mod identity;
pub mod kill;
pub mod metrics;
pub mod runtime;
