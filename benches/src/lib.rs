//! Measurement helpers shared by the criterion benches and `perf-report`.
//!
//! # Layout
//! - [`sys`]: raw `SOCK_SEQPACKET` socket pairs, send/recv and `fork` (the only
//!   `unsafe` of the crate).
//! - [`floor`]: the bare-socket floors: a 4-hop request/answer over socket pairs
//!   relayed by forked processes, and a 1-hop publisher-to-subscriber stream.
//! - [`bus`]: the same two measurements through a real `fims_server` child.
//! - [`rtt`]: the round-trip figures (floor, broker, echo; medians and p99).
//! - [`throughput`]: the 1-hop floor, the 2-hop relay floor and the broker,
//!   in interleaved bursts.
//! - [`load`]: the broker's CPU under a steady, paced load to two subscribers.
//! - [`pace`]: absolute-deadline pacing of a publisher.
//! - [`peer`]: the child-process roles (`echo`, `responder`, `sink`) that
//!   `perf-report --peer ROLE` runs on the broker side.
//! - [`cabi`]: the responder through its C ABI, called as a C host would.
//! - [`msgs`]: the realistic datagrams every measurement uses.
//! - [`responder`]: the real responder serving heartbeats over the broker.
//! - [`report`]: the figures of perf-report, as JSON or a table.
//! - [`scale`]: broker cost against the number of idle connections.
//! - [`cops`]: `cops` supervising `cops-sim`'s simulated processes: CPU, RSS,
//!   detection, false kills.
//! - [`copsfloor`]: the floor of `cops_cpu_pct`: COPS's datagrams through
//!   the same broker to the same `cops-sim`, sent by a bare program.
//! - [`procstat`]: CPU time and resident memory of a process from `/proc`.
//! - [`bins`]: finding (and building if missing) sibling workspace binaries.
//! - [`stats`]: medians and percentiles.
//!
//! Time is read with `Instant`; nothing here runs in `cargo test` except the
//! perf-report smoke test.

pub mod bins;
pub mod bus;
pub mod cabi;
pub mod cops;
pub mod copsfloor;
pub mod floor;
pub mod load;
pub mod msgs;
pub mod pace;
pub mod peer;
pub mod procstat;
pub mod report;
pub mod responder;
pub mod rtt;
pub mod scale;
pub mod stats;
pub mod sys;
pub mod throughput;

/// Errors of the measurement helpers: what failed, in words.
#[derive(Debug, Clone)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(format!("i/o: {e}"))
    }
}

impl From<fims::Error> for Error {
    fn from(e: fims::Error) -> Self {
        Error(format!("fims: {e}"))
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Builds an [`Error`] from format arguments.
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => { $crate::Error(format!($($t)*)) };
}
