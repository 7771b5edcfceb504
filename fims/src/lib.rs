//! FIMS, the message bus of energy-site controllers: wire codec, URI helpers and
//! clients, byte-compatible with the existing C++/Go/Python clients
//! (`docs/protocol/fims.md` is the contract).
//!
//! # Layout
//! - [`codec`]: [`Message`] (decode borrows from the datagram, encode appends to a
//!   caller buffer), [`Handshake`], subscribe bodies. Pure, no I/O.
//! - [`uri`]: frags and the broker's segment-prefix match.
//! - [`blocking`]: a std-only client (poll + recv with timeouts).
//! - `tokio` (feature `tokio`): the same client for async hosts.
//! - [`socket_path`]: `FIMS_SOCKET` when set, else the default path.
//!
//! # Example
//! ```no_run
//! use fims::{blocking::Client, Method};
//! # fn main() -> fims::Result<()> {
//! let mut c = Client::connect("my_process")?;
//! c.send(Method::Set, "/components/bms_9/cap", None, b"1234")?;
//! let answer = c.request(Method::Get, "/site/cops", b"", std::time::Duration::from_secs(1))?;
//! println!("{}", answer.body_text());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod blocking;
pub mod codec;
#[cfg(test)]
mod codec_tests;
mod error;
mod proto;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;
pub mod uri;

pub use codec::{
    Handshake, Message, Method, OwnedMessage, Subscription, DEFAULT_MAX_LEN, MAX_OVERHEAD,
};
pub use error::{is_disconnect, DecodeError, Error, Result};

/// Socket and descriptor tuning shared by the clients, the broker and COPS.
pub mod socket {
    pub use crate::sys::{raise_nofile_limit, set_buffers};
}

/// The socket path of the existing system.
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/FlexGen_FIMS_Server.socket";

/// The broker's socket path: `$FIMS_SOCKET` when set and non-empty, else
/// [`DEFAULT_SOCKET_PATH`]. Programs with a `--socket` flag let it win over this.
pub fn socket_path() -> std::path::PathBuf {
    match std::env::var_os("FIMS_SOCKET") {
        Some(p) if !p.is_empty() => p.into(),
        _ => DEFAULT_SOCKET_PATH.into(),
    }
}
