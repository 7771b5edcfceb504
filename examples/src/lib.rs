//! The one-command demo of COPS (hang -> alarm -> kill -> restart) and the demo
//! processes it supervises.
//!
//! # Layout
//! - [`children`]: child processes that die with the demo (killed on drop, and by
//!   the kernel if the demo itself dies), and [`children::Supervisor`], the small
//!   restart loop that plays systemd's `Restart=always`.
//! - [`stats`]: reading the stats and events COPS publishes, and the final table.
//! - [`bins`]: finding the sibling binaries (`fims_server`, `cops`, `demo_process`)
//!   and building them with cargo when they are missing.
//! - [`interrupt`]: a Ctrl-C / SIGTERM flag so every exit path cleans up.
//! - [`world`]: what the demo has seen (stats, events, starts, exits) and the
//!   timeline it prints.
//! - [`demo`]: the scenario `cops-demo` runs.
//!
//! # I/O and time
//! Everything here is a test and demo harness: it spawns processes, talks FIMS
//! over a Unix socket and reads the wall clock. Nothing in it is a library for
//! production hosts; those link `cops-responder` directly.

pub mod bins;
pub mod children;
pub mod demo;
pub mod interrupt;
pub mod stats;
pub mod world;
