//! The listening socket: bind, replace a stale file, refuse when a live
//! broker answers; and the broker's error type.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::sys;

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A live broker answers at the path.
    #[error("another fims_server is already running at {}", path.display())]
    AlreadyRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket is in the way.
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// bind/listen failed.
    #[error("cannot listen at {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The event loop failed.
    #[error("broker event loop: {0}")]
    Io(#[from] io::Error),
}

/// Binds the listening socket with file mode `mode`, replacing a stale socket file.
pub(crate) fn listen(path: &Path, mode: u32) -> Result<OwnedFd, ServeError> {
    let bind_err = |source| ServeError::Bind {
        path: path.to_path_buf(),
        source,
    };
    match sys::bind_listen(path, 4096, mode) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
        Err(e) => return Err(bind_err(e)),
    }
    let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match sys::probe_connect(path) {
        Ok(()) => {
            return Err(ServeError::AlreadyRunning {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "replacing a stale socket file");
        }
        Err(e) => return Err(bind_err(e)),
    }
    std::fs::remove_file(path).map_err(bind_err)?;
    sys::bind_listen(path, 4096, mode).map_err(bind_err)
}
