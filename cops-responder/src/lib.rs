//! The COPS heartbeat responder every monitored process links
//! (`shared/spec/COPS.md`, "The responder", is the contract).
//!
//! COPS sends `set <uri>/cops/cops_heartbeat N` then `get <uri>/cops` with a
//! replyto; the process answers `{"cops_heartbeat":N,"pid":P,...}`. A process
//! whose work loop is stuck must stop answering, so COPS can kill it.
//!
//! # The one rule
//! **Answer from the thread that does the process's real work.** A responder on
//! a side thread that keeps answering while the main loop is stuck defeats the
//! purpose. Where FIMS I/O must live on another thread, turn on the liveness
//! gate ([`Responder::set_liveness_window`]) and call [`Responder::pet`] from
//! the work loop: the responder stays silent once the last pet is too old.
//!
//! # Layout
//! - [`Responder`]: the sans-IO core. No sockets, no clock reads (every entry
//!   point that needs time takes `now: Instant`), no threads. `handle` says
//!   [`Outcome::NotMine`], [`Outcome::Handled`] or [`Outcome::Reply`] with the
//!   answer body written into a caller-owned `Vec<u8>`.
//!
//! # Behaviour (decisions where COPS.md leaves a choice)
//! - `set <uri>/cops/cops_heartbeat`: naked integer `0..=18446744073709551615`
//!   (JSON whitespace around it allowed, no leading zeros) or clothed
//!   `{"value":N}` (other keys ignored) is stored; with a replyto the stored
//!   value is answered naked. Any other body keeps the old value and answers a
//!   JSON string `"Error: ..."`.
//! - `get <uri>/cops`: `{"cops_heartbeat":N,"pid":P,"version_tag":"..",
//!   "version_commit":"..","version_build":".."}`. `pid` is read with
//!   `std::process::id()` at answer time (right after a fork too). Version
//!   fields that are unset (never set, or set to `""`) are **left out**.
//! - `get <uri>/cops/<field>` for `cops_heartbeat`, `pid`, `version_tag`,
//!   `version_commit`, `version_build`: that one naked value; an unset version
//!   field answers `"Error: version_tag is not set"`.
//! - No replyto (or an empty one): nothing is answered ([`Outcome::Handled`]).
//! - Other methods, or unknown names under `<uri>/cops`: `"Error: ..."`.
//! - Everything outside `<uri>/cops` (including `/sitex/cops` for `/site`,
//!   `/site` itself and `/site/copsx`) is [`Outcome::NotMine`].
//! - Liveness gate closed: every message under `<uri>/cops` is
//!   [`Outcome::Handled`] with nothing to send, but a good heartbeat `set` is
//!   **still stored**: the gate silences answers, it does not lose COPS's
//!   counter. "Closed" means a window is set and the last pet is older than
//!   the window, or there was no pet yet.
//!
//! # Performance
//! Once the reply buffer has grown to fit, handling any `get` or a naked
//! integer `set` does not allocate (checked by `tests/no_alloc.rs` with a
//! counting global allocator); JSON is written by hand, serde_json is only the
//! fallback parser for clothed and odd `set` bodies.
//!
//! # Example: the core alone
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
//! assert_eq!(o, Outcome::Reply);
//! let expected = format!(
//!     r#"{{"cops_heartbeat":17,"pid":{},"version_tag":"1.4.0","version_commit":"a1b2c3d","version_build":"372"}}"#,
//!     std::process::id()
//! );
//! assert_eq!(reply, expected.as_bytes());
//! assert_eq!(r.handle(now, "get", "/sitex/cops", Some("/r"), b"", &mut reply), Outcome::NotMine);
//! ```
#![warn(missing_docs)]

mod driver;
pub mod ffi;
mod json;
mod pet;
mod responder;
mod router;
#[cfg(feature = "tokio")]
mod tokio_driver;

pub use driver::{Driver, Event, MAX_PER_POLL, RECONNECT_MAX, RECONNECT_MIN};
pub use pet::PetHandle;
pub use responder::{ConfigError, Outcome, Responder};
pub use router::Router;
#[cfg(feature = "tokio")]
pub use tokio_driver::TokioDriver;
