//! The COPS heartbeat responder every monitored process links
//! (`docs/protocol/cops.md`, "The responder", is the contract).
//!
//! COPS sends `set <uri>/cops/cops_heartbeat N` then `get <uri>/cops` with a
//! replyto; the process answers `{"cops_heartbeat":N,"pid":P,...}`. A process
//! whose work loop is stuck must stop answering, so COPS can kill it.
//!
//! # The one rule
//! **Answer from the thread that does the process's real work.** A responder on
//! a side thread that keeps answering while the main loop is stuck defeats the
//! purpose: COPS would never see the hang. Where FIMS I/O must live on another
//! thread or task (tokio hosts, hosts with an I/O thread), turn on the liveness
//! gate ([`Responder::set_liveness_window`]) and pet it from the work loop
//! ([`Responder::pet`] or [`Responder::loop_tick`], or a [`PetHandle`] across
//! threads): the responder stays silent once the last pet is older than the window.
//!
//! # The work loop's health (deadline supervision)
//! [`Responder::loop_tick`] (or [`PetHandle::tick`]) marks the end of one
//! iteration of the work loop. From the first tick on, the heartbeat answer
//! carries `"loop":{"count":N,"max_us":M,"p99_us":P}` after the usual fields:
//! the iterations since the previous heartbeat answer, the longest of them,
//! and the 99th percentile over the rolling minute (the last 51-60 s), so COPS
//! can see a loop that overruns its budget or crawls while it still answers.
//! [`Responder::loop_stats`] and `get <uri>/cops/loop` give every figure
//! (with the median and the minute's maximum). A tick is a few relaxed atomic
//! operations in fixed memory: no lock, no allocation, ~10 ns with the time
//! given. A host that never ticks answers exactly as before.
//! ```
//! use std::time::{Duration, Instant};
//! use cops_responder::{Outcome, Responder};
//!
//! let mut r = Responder::new("modbus_interface", "/components/modbus")?;
//! r.set_version("2.0.1", "9f8e7d6", "118");
//! let t0 = Instant::now();
//! for i in 0..=10 {
//!     // ... one poll-and-dispatch cycle of the work loop, then:
//!     r.loop_tick(t0 + Duration::from_millis(100 * i));
//! }
//! let mut reply = Vec::new();
//! let o = r.handle(t0, "get", "/components/modbus/cops", Some("/cops/heartbeat/modbus"), b"", &mut reply);
//! assert_eq!(o, Outcome::Reply);
//! assert!(reply.ends_with(br#""loop":{"count":11,"max_us":100000,"p99_us":100000}}"#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - [`Responder`]: the sans-IO core. No sockets, no clock reads (every entry
//!   point that needs time takes `now: Instant`), no threads. `handle` says
//!   [`Outcome::NotMine`], [`Outcome::Handled`] or [`Outcome::Reply`] with the
//!   answer body written into a caller-owned `Vec<u8>`.
//! - [`Driver`]: blocking; owns a FIMS connection subscribed to `<uri>/cops`,
//!   polled from the host's loop ([`Driver::poll`]) or waited on through its fd
//!   ([`Driver::raw_fd`]); reconnects after the broker restarts.
//! - [`Router`]: for hosts that already own a FIMS connection (blocking
//!   [`offer`](Router::offer) + [`flush`](Router::flush), or
//!   [`route`](Router::route); tokio `route_async`).
//! - `TokioDriver` (feature `tokio`): a task answering on its own async
//!   connection, gated by a [`PetHandle`].
//! - [`PetHandle`]: a cloneable, lock-free pet and tick for another thread or task.
//! - `meter`: the loop figures in fixed atomics, shared by the responder and
//!   its [`PetHandle`]s ([`LoopStats`]).
//! - `ffi`: the C ABI of docs/protocol/cops.md (written with `c-bindings/`).
//!
//! # Behaviour (decisions where docs/protocol/cops.md leaves a choice)
//! - `set <uri>/cops/cops_heartbeat`: naked integer `0..=18446744073709551615`
//!   (JSON whitespace around it allowed, no leading zeros) or clothed
//!   `{"value":N}` (other keys ignored) is stored; with a replyto the stored
//!   value is answered naked. Any other body keeps the old value and answers a
//!   JSON string `"Error: ..."`.
//! - `get <uri>/cops`: `{"cops_heartbeat":N,"pid":P,"version_tag":"..",
//!   "version_commit":"..","version_build":".."}`. `pid` is the process's
//!   current PID: cached after the first `getpid`, and forgotten in a forked
//!   child by a `pthread_atfork` handler, so it is right after a fork too. The
//!   three version fields are always there (`""` when unset: the existing COPS
//!   logs an error for every reply that lacks one); `"loop":{..}` follows them
//!   once the host ticks, and that answer starts a new beat.
//! - `get <uri>/cops/<field>` for `cops_heartbeat`, `pid`, `version_tag`,
//!   `version_commit`, `version_build`: that one naked value (`""` for an unset
//!   version). `get <uri>/cops/loop`: every loop figure as an object, without
//!   starting a new beat; `"Error: ..."` when the host never ticks.
//! - No replyto (or an empty one): nothing is answered ([`Outcome::Handled`]).
//! - Other methods, or unknown names under `<uri>/cops` (including deeper
//!   paths): `"Error: ..."`.
//! - What is ours is decided by the broker's routing rule
//!   ([`fims::uri::routes`]): empty segments and a trailing `/` do not count,
//!   so `get /site//cops/pid` is answered as `get /site/cops/pid`.
//! - Everything outside `<uri>/cops` (including `/sitex/cops` for `/site`,
//!   `/site` itself and `/site/copsx`) is [`Outcome::NotMine`].
//! - Liveness gate closed: every message under `<uri>/cops` is
//!   [`Outcome::Handled`] with nothing to send, but a good heartbeat `set` is
//!   **still stored**: the gate silences answers, it does not lose COPS's
//!   counter. "Closed" means a window is set and the last pet or tick is
//!   older than the window, or there was none yet. An age exactly equal to
//!   the window still answers.
//!
//! # Performance
//! Once the reply buffer has grown to fit, handling any `get` or a naked
//! integer `set` does not allocate, nor does the blocking [`Driver`]'s whole
//! answer path (checked by `tests/no_alloc.rs` with a counting global
//! allocator); JSON is written by hand, serde_json is only the fallback parser
//! for clothed and odd `set` bodies. `get <uri>/cops` into its
//! answer takes ~60-100 ns in release on the project machine (`tests/speed.rs`,
//! and `handle_ns` of the perf report); a loop tick ~10 ns (`tick_ns`).
//!
//! # Hosting it
//! ## The core alone
//! ```
//! use std::time::Instant;
//! use cops_responder::{Outcome, Responder};
//!
//! let mut r = Responder::new("hybridos_controller", "/site").unwrap();
//! r.set_version("1.4.0", "a1b2c3d", "372");
//! let mut reply = Vec::new();
//! let now = Instant::now();
//! let o = r.handle(now, "set", "/site/cops/cops_heartbeat", None, b"17", &mut reply);
//! assert_eq!(o, Outcome::Handled);
//! let o = r.handle(now, "get", "/site/cops", Some("/cops/heartbeat/hybridos_controller"), b"", &mut reply);
//! assert_eq!(o, Outcome::Reply); // send `set /cops/heartbeat/hybridos_controller` with `reply`
//! let expected = format!(
//!     r#"{{"cops_heartbeat":17,"pid":{},"version_tag":"1.4.0","version_commit":"a1b2c3d","version_build":"372"}}"#,
//!     std::process::id()
//! );
//! assert_eq!(reply, expected.as_bytes());
//! assert_eq!(r.handle(now, "get", "/sitex/cops", Some("/r"), b"", &mut reply), Outcome::NotMine);
//! ```
//!
//! ## Its own connection, polled from the main loop
//! ```no_run
//! use std::time::Duration;
//! use cops_responder::{Driver, Responder};
//!
//! # fn do_some_work() {}
//! let mut r = Responder::new("hybridos_controller", "/site")?;
//! r.set_version(env!("CARGO_PKG_VERSION"), "a1b2c3d", "372");
//! // Connects on the first poll and keeps reconnecting: the broker may start later.
//! let mut cops = Driver::new(r, fims::socket_path());
//! loop {
//!     do_some_work();
//!     if let Err(e) = cops.poll(Duration::from_millis(10)) {
//!         eprintln!("COPS connection lost: {e}"); // reported once; later polls reconnect
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Its fd in the host's poll/epoll loop
//! ```no_run
//! use std::time::{Duration, Instant};
//! use cops_responder::{Driver, Responder};
//!
//! # fn handle_my_other_fds(_: &[libc::pollfd]) {}
//! let mut cops = Driver::connect(Responder::new("meter_reader", "/components/meter")?, fims::socket_path())?;
//! loop {
//!     // The fd changes on each reconnect (cops.connects() counts them): an epoll
//!     // host re-registers when that number changes; with poll(2) just re-read it.
//!     let mut fds = vec![libc::pollfd { fd: cops.raw_fd().unwrap_or(-1), events: libc::POLLIN, revents: 0 }];
//!     // ... push the host's own fds ...
//!     // While disconnected, wake up in time for the next reconnect attempt.
//!     let timeout_ms = cops
//!         .reconnect_at()
//!         .map(|t| t.saturating_duration_since(Instant::now()).as_millis().min(1000) as i32)
//!         .unwrap_or(1000);
//!     // SAFETY: `fds` is a valid array of pollfd for its length.
//!     let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
//!     if n >= 0 && (fds[0].revents != 0 || !cops.is_connected()) {
//!         // Readable (or time to reconnect): answer what is waiting, do not block.
//!         let _ = cops.poll(Duration::ZERO);
//!     }
//!     handle_my_other_fds(&fds[1..]);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Routed through the host's own FIMS connection
//! ```no_run
//! use std::time::Duration;
//! use cops_responder::{Responder, Router};
//!
//! # fn handle_mine(_: &fims::Message<'_>) {}
//! let mut client = fims::blocking::Client::connect("site_controller")?;
//! client.subscribe(&["/site"])?; // covers /site/cops
//! let mut cops = Router::new(Responder::new("site_controller", "/site")?);
//! loop {
//!     if let Some(msg) = client.recv(Some(Duration::from_millis(100)))? {
//!         // The message borrows the client: offer it now, send the answer below.
//!         if !cops.offer(&msg) {
//!             handle_mine(&msg);
//!         }
//!     }
//!     cops.flush(&mut client)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! With a message that does not borrow the client (an [`fims::OwnedMessage`],
//! or one from another connection) [`Router::route`] does both steps.
//!
//! ## Tokio (feature `tokio`)
//! The answering task is not the work loop, so the liveness gate is the way to
//! tie answers to the real work: set a window a little above the work loop's
//! longest normal iteration (and below COPS's reply deadline budget), and pet
//! from the loop.
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use cops_responder::{Responder, TokioDriver};
//! # async fn do_the_real_work() {}
//!
//! let mut r = Responder::new("async_controller", "/ctl")?;
//! r.set_liveness_window(Some(Duration::from_millis(500)));
//! let mut cops = TokioDriver::new(r, fims::socket_path());
//! let pets = cops.pet_handle();
//! tokio::spawn(async move { cops.run(std::future::pending()).await });
//! loop {
//!     do_the_real_work().await;
//!     pets.pet(); // one atomic store
//! }
//! # }
//! # #[cfg(not(feature = "tokio"))]
//! # fn main() {}
//! ```
//! A tokio host that owns its [`fims::tokio::Client`] routes instead:
//! `router.route_async(&mut sender, &msg).await?` with `sender = client.sender()`
//! (with a liveness window and [`Router::pet_handle`] petted from the work loop).
#![warn(unreachable_pub)]

mod driver;
pub mod ffi;
mod json;
mod meter;
mod pet;
mod pid;
mod responder;
mod router;
#[cfg(feature = "tokio")]
mod tokio_driver;

pub use driver::{Driver, Event, CONNECT_TIMEOUT, MAX_PER_POLL, RECONNECT_MAX, RECONNECT_MIN};
pub use meter::LoopStats;
pub use pet::PetHandle;
pub use responder::{ConfigError, Outcome, Responder};
pub use router::Router;
#[cfg(feature = "tokio")]
pub use tokio_driver::TokioDriver;
