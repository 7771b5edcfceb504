//! COPS, the Central Operating Process Supervisor: heartbeats monitored processes
//! over FIMS, declares the ones that stop answering hung, and kills them safely so
//! their service manager restarts them (`shared/spec/COPS.md` is the contract).
//!
//! # Layout
//! - [`config`]: the JSON configuration, validated, defaults filled in.
//! - [`engine`]: the sans-IO heartbeat engine (cycle, verdicts, kill decisions, stats).
//! - [`kill`]: kill safety (PID acceptance, identity pinning, evidence, signals).
//! - [`runtime`]: the tokio shell (FIMS connection, reconnect, actions, events, systemd).
//! - [`batch`]: `sendmmsg`/`recvmmsg` batches on the FIMS socket.

pub mod batch;
pub mod config;
pub mod engine;
pub mod kill;
pub mod runtime;
