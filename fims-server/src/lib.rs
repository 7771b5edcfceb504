//! The FIMS broker (`fims_server`) and the `fims_send` / `fims_listen` tools.
//!
//! # Layout
//! - [`Server`] (module `server`): the broker's single-threaded epoll loop:
//!   accept, handshake, subscribe, route, bounded per-connection queues.
//! - `listener`: binding the socket file (stale file replaced, live broker
//!   refused) and [`ServeError`].
//! - `core`, `subscribe`, `route`: the broker's logic without I/O (sans-IO):
//!   handshake state machine and deadlines, `sub` (replaces the set), routing,
//!   per-connection queues under a broker-wide memory budget. It sends through a
//!   `Link` (a socket in the server, a fake in [`sim`], which the fuzz targets drive).
//! - `out`: the datagrams routed in one loop turn, sent per receiver with one
//!   `sendmmsg` when the turn ends (the driver calls `flush`).
//! - `index`: the subscription index (pure), `conn`: one connection's state,
//!   `queue`: its outbound queue, `stats`: [`Stats`] counters and the warning
//!   rate limiter, `sys`: the socket syscalls (the only `unsafe`).
//! - [`tools`]: formatting shared by the `fims_send` / `fims_listen` binaries.
//! - [`metrics`]: `--metrics-listen`: the counters the loop publishes through
//!   atomics, and their encoding for Prometheus (served by `metrics-http` on a
//!   thread of its own).
//! - [`spawn`]: runs a broker on a thread of this process (tests, benches).
//!
//! # I/O and time
//! All I/O happens in [`Server::run`] on the thread that called [`Server::bind`].
//! A readable connection is drained with `recvmmsg` (up to 64 datagrams per
//! call); what the turn routed goes out per receiver with `sendmmsg`.
//! The clock is read once per loop turn while a handshake deadline or an
//! accept retry is pending, and to rate-limit warnings (one per kind per second).
//!
//! `docs/protocol/fims.md` is the contract; `README.md` lists the choices made
//! where it left one open.
#![warn(missing_docs)]

mod conn;
mod core;
mod index;
mod listener;
pub mod metrics;
mod out;
mod queue;
mod route;
mod server;
pub mod sim;
mod stats;
mod subscribe;
mod sys;
pub mod tools;

use std::path::PathBuf;
use std::time::Duration;

pub use listener::ServeError;
pub use server::{Server, ShutdownHandle};
pub use stats::{Stats, METHODS};

/// Default outbound queue bound per connection, in datagrams.
pub const DEFAULT_QUEUE_DATAGRAMS: usize = 4096;
/// Default outbound queue bound per connection, in bytes (one datagram is always allowed).
pub const DEFAULT_QUEUE_BYTES: usize = 32 << 20;
/// Default budget for the bytes queued for all slow receivers together.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 256 << 20;
/// Default time a new connection has to send its handshake and name.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit of subscriptions one connection holds.
pub const DEFAULT_MAX_SUBS_PER_CONN: usize = 4096;

/// How a broker is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Socket path.
    pub socket: PathBuf,
    /// Permissions of the socket file.
    pub mode: u32,
    /// Largest whole datagram accepted and delivered (announced in the handshake).
    pub max_len: u32,
    /// Outbound queue bound per connection, in datagrams.
    pub queue_datagrams: usize,
    /// Outbound queue bound per connection, in bytes (at most `max_queued_bytes`).
    pub queue_bytes: usize,
    /// Budget for the bytes queued for all receivers together; when it is
    /// full the largest queues lose datagrams first.
    pub max_queued_bytes: usize,
    /// Time a new connection has to complete its handshake and name before it
    /// is closed; zero waits forever.
    pub handshake_timeout: Duration,
    /// Most subscriptions one connection holds (a `sub` with more distinct URIs
    /// is answered `FAILURE: too many subscriptions`).
    pub max_subs_per_conn: usize,
    /// Most connections one Unix uid may hold open; zero for no limit.
    pub max_conns_per_uid: usize,
}

impl Config {
    /// Defaults (mode 0660, max_len 924288 (whole datagram), 4096 datagrams / 32 MiB of
    /// queue per connection, 256 MiB for all queues, 5 s handshake deadline,
    /// 4096 subscriptions per connection, no limit per uid) at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Config {
        Config {
            socket: socket.into(),
            mode: 0o660,
            max_len: fims::DEFAULT_MAX_LEN,
            queue_datagrams: DEFAULT_QUEUE_DATAGRAMS,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_subs_per_conn: DEFAULT_MAX_SUBS_PER_CONN,
            max_conns_per_uid: 0,
        }
    }
}

/// A broker running on a thread of this process.
#[derive(Debug)]
pub struct Running {
    handle: ShutdownHandle,
    thread: std::thread::JoinHandle<Result<Stats, ServeError>>,
}

impl Running {
    /// Stops the broker and returns its counters.
    pub fn shutdown(self) -> Result<Stats, ServeError> {
        self.handle.shutdown();
        match self.thread.join() {
            Ok(r) => r,
            Err(_) => Err(ServeError::Io(std::io::Error::other(
                "broker thread panicked",
            ))),
        }
    }
}

/// Binds a broker and runs it on a new thread; returns once it accepts connections.
pub fn spawn(cfg: Config) -> Result<Running, ServeError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("fims_server".into())
        .spawn(move || match Server::bind(cfg) {
            Ok(server) => {
                let _ = tx.send(Ok(server.shutdown_handle()));
                server.run()
            }
            Err(e) => {
                let msg = e.to_string();
                let _ = tx.send(Err(e));
                Err(ServeError::Io(std::io::Error::other(msg)))
            }
        })?;
    match rx.recv() {
        Ok(Ok(handle)) => Ok(Running { handle, thread }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(ServeError::Io(std::io::Error::other(
            "broker thread ended before binding",
        ))),
    }
}
