//! One error type for every FIMS failure, saying what was wrong.

use std::path::PathBuf;

/// Why a datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the 12-byte header.
    #[error("datagram of {len} bytes is shorter than the 12-byte header")]
    Short {
        /// Bytes received.
        len: usize,
    },
    /// The header's lengths do not add up to the datagram's size.
    #[error("header says {expected} bytes but the datagram has {actual}")]
    Length {
        /// Size the header describes.
        expected: usize,
        /// Size received.
        actual: usize,
    },
    /// A string field is not UTF-8.
    #[error("{field} is not UTF-8")]
    NotUtf8 {
        /// Which field.
        field: &'static str,
    },
    /// Method not one of set/get/pub/post/del/sub.
    #[error("unknown method")]
    UnknownMethod,
    /// A data message whose uri does not start with `/`.
    #[error("uri does not start with '/'")]
    BadUri,
    /// A handshake that is not 8 bytes.
    #[error("handshake of {len} bytes, expected 8")]
    Handshake {
        /// Bytes received.
        len: usize,
    },
    /// A malformed `sub` body.
    #[error("malformed subscribe body: {0}")]
    SubBody(&'static str),
}

/// Every failure of the FIMS clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing listens at the socket path.
    #[error("no FIMS broker is running at {}: {source}", path.display())]
    BrokerNotRunning {
        /// The path tried.
        path: PathBuf,
        /// What connect said.
        source: std::io::Error,
    },
    /// The broker speaks another layout version.
    #[error("FIMS broker speaks layout version {0}, this client speaks 1")]
    VersionMismatch(u16),
    /// The broker's handshake was not a handshake.
    #[error("bad handshake from the FIMS broker: {0}")]
    BadHandshake(DecodeError),
    /// A name, uri or replyto over 255 bytes, or an empty process name.
    #[error("{field} is {len} bytes; FIMS allows 1..=255")]
    NameLength {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A message whose whole datagram (header, strings and body) is larger than
    /// the broker announced in the handshake.
    #[error("message of {len} bytes (whole datagram) is over the broker's limit of {max} bytes")]
    TooLarge {
        /// Datagram length.
        len: usize,
        /// The broker's limit.
        max: u32,
    },
    /// A URI that is not valid where it was given.
    #[error("invalid uri {uri:?}: {reason}")]
    InvalidUri {
        /// The URI.
        uri: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A subscription set larger than one `sub` datagram carries. A `sub`
    /// replaces the connection's whole set, so every URI of a connection must
    /// fit in one; nothing was sent and the client's set is unchanged.
    #[error(
        "{count} subscription URIs: one FIMS `sub` carries at most {max}, and a `sub` \
         replaces the connection's whole set, so they must all fit in one"
    )]
    TooManySubscriptions {
        /// URIs in the set that was asked for (each URI counted once).
        count: usize,
        /// The most one `sub` carries (255).
        max: usize,
    },
    /// A subscription set with no URI: a `sub` carries at least one, and FIMS
    /// has no unsubscribe (a new connection starts with none).
    #[error(
        "no subscription URIs: a FIMS `sub` carries at least one \
         (there is no unsubscribe; reconnect to start with none)"
    )]
    NoSubscriptions,
    /// The broker refused a subscription.
    #[error("subscribe refused by the broker: {0}")]
    SubscribeRefused(String),
    /// A received datagram could not be decoded.
    #[error("malformed datagram from the broker: {0}")]
    Decode(#[from] DecodeError),
    /// No answer in time.
    #[error("timed out after {0} ms waiting for an answer")]
    Timeout(u64),
    /// The broker closed the connection (it stopped or restarted).
    #[error("the FIMS broker closed the connection")]
    Closed,
    /// AES body encryption of the existing system was asked for.
    #[error("FIMS body encryption is not supported by this client")]
    EncryptionNotSupported,
    /// Any other socket error.
    #[error("FIMS socket error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::codec::EncodeError> for Error {
    fn from(e: crate::codec::EncodeError) -> Self {
        match e {
            crate::codec::EncodeError::StringTooLong { field, len } => {
                Error::NameLength { field, len }
            }
            crate::codec::EncodeError::BodyTooLarge { len } => {
                Error::TooLarge { len, max: u32::MAX }
            }
        }
    }
}

impl Error {
    /// True when the connection is gone and [`reconnect`](crate::blocking::Client::reconnect)
    /// is the way on.
    pub fn is_disconnect(&self) -> bool {
        match self {
            Error::Closed | Error::BrokerNotRunning { .. } => true,
            Error::Io(e) => is_disconnect(e),
            _ => false,
        }
    }
}

/// Whether a socket error means the peer is gone (the connection is over and
/// no retry on it can succeed): `EPIPE`, `ECONNRESET`, `ECONNABORTED`,
/// `ENOTCONN`, `ECONNREFUSED` (a datagram to a closed Unix peer) and
/// `ESHUTDOWN`. Everything else (`EAGAIN`, `EINTR`, `EMSGSIZE`, `ENOBUFS`, ...)
/// is about one call or one datagram, not the connection. The broker, the
/// clients and COPS decide "the peer is gone" with this one rule.
pub fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::BrokenPipe
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::ConnectionRefused
    ) || e.raw_os_error() == Some(libc::ESHUTDOWN)
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn is_disconnect_knows_a_gone_peer_from_a_passing_error() {
        for errno in [
            libc::EPIPE,
            libc::ECONNRESET,
            libc::ECONNABORTED,
            libc::ENOTCONN,
            libc::ECONNREFUSED,
            libc::ESHUTDOWN,
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(is_disconnect(&e), "{e}");
            assert!(Error::Io(e).is_disconnect());
        }
        for errno in [libc::EAGAIN, libc::EINTR, libc::EMSGSIZE, libc::ENOBUFS] {
            assert!(!is_disconnect(&io::Error::from_raw_os_error(errno)));
        }
        assert!(is_disconnect(&io::ErrorKind::BrokenPipe.into()));
        assert!(!is_disconnect(&io::ErrorKind::WouldBlock.into()));
    }
}
