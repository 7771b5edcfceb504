//! Thin wrappers over the socket syscalls the broker needs (the crate's only `unsafe`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use fims::batch::RecvBatch;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is empty, longer than {} bytes or contains NUL",
                path.display(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn seqpacket(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut ty = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: plain syscall; the result is checked before use.
    let raw = cvt(unsafe { libc::socket(libc::AF_UNIX, ty, 0) })?;
    // SAFETY: raw is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A nonblocking `SOCK_SEQPACKET` socket bound to `path` and listening.
/// The file gets `mode` between bind and listen, so no client can connect to the
/// socket while it still has the umask's permissions.
pub(crate) fn bind_listen(path: &Path, backlog: i32, mode: u32) -> io::Result<OwnedFd> {
    let (addr, len) = sockaddr(path)?;
    let fd = seqpacket(true)?;
    // SAFETY: addr is a valid sockaddr_un of at least len bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    // SAFETY: plain syscall on a descriptor we own.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// Tries a blocking connect to `path` (to tell a live broker from a stale file).
pub(crate) fn probe_connect(path: &Path) -> io::Result<()> {
    let (addr, len) = sockaddr(path)?;
    let fd = seqpacket(false)?;
    // SAFETY: addr is a valid sockaddr_un of at least len bytes.
    cvt(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    })?;
    Ok(())
}

/// Accepts one connection, nonblocking and close-on-exec.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: null address pointers are allowed by accept4.
        let rc = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        match cvt(rc) {
            // SAFETY: rc is a fresh descriptor nobody else owns.
            Ok(raw) => return Ok(unsafe { OwnedFd::from_raw_fd(raw) }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The uid of the peer (`SO_PEERCRED`).
pub(crate) fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writing and len holds cred's size.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

/// The user name of `uid`: `None` when the uid has none (or an unusable
/// one), `Err` when the lookup itself failed (e.g. no descriptor to read the
/// user database with).
pub(crate) fn user_name(uid: u32) -> io::Result<Option<String>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: passwd is plain old data; zeroed is a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf's length is passed.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        // "Not found" is rc 0 with no result (glibc may also say ENOENT/ESRCH).
        if rc != 0 && !matches!(rc, libc::ENOENT | libc::ESRCH) {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return Ok(None);
        }
        // SAFETY: on success pw_name points at a NUL-terminated string inside buf.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return Ok(match name.to_str() {
            Ok(s) if !s.is_empty() && s.len() <= 255 => Some(s.to_owned()),
            _ => None,
        });
    }
}

/// Sends `parts` as one datagram without blocking (no SIGPIPE).
pub(crate) fn send_parts(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<()> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 4];
    let count = parts.len().min(iov.len());
    for (v, p) in iov.iter_mut().zip(parts) {
        v.iov_base = p.as_ptr() as *mut libc::c_void;
        v.iov_len = p.len();
    }
    // SAFETY: msghdr is plain old data; zeroed is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = count as _;
    loop {
        // SAFETY: msg points at `count` iovecs that borrow live slices.
        let n = unsafe {
            libc::sendmsg(
                fd.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Most datagrams the broker hands to one `send_many` (`fims::batch`): its
/// lists of them live on the stack.
pub(crate) const SEND_CHUNK: usize = 64;

/// Most datagrams the receive ring ([`recv_ring`]) holds, and so one `recvmmsg` takes.
pub(crate) const RING_SLOTS: usize = 64;
/// Address space a ring may take (slots of the largest datagram each):
/// pages are only backed by memory once a datagram that long arrives.
pub(crate) const RING_RESERVE: usize = 64 << 20;
/// How long one `recvmmsg` keeps taking datagrams that are already there (or
/// arrive meanwhile): small datagrams fill the ring well within it, while a
/// sender streaming big ones cannot hold the loop (and the routing of what
/// was received first) for longer than about this plus one datagram's copy.
pub(crate) const RECV_SLICE: Duration = Duration::from_micros(200);
/// Bytes at the start of each slot that stay backed once touched; the pages a
/// longer datagram touched beyond are given back after it was handled, so a
/// burst of big datagrams does not leave the broker holding them.
pub(crate) const RING_KEEP: usize = 64 << 10;

/// The broker's receive ring (`fims::batch::RecvBatch`): up to
/// [`RING_SLOTS`] slots, each as long as the largest datagram the broker
/// accepts (fewer slots when that is so large that they would pass
/// [`RING_RESERVE`] of address space). Read it with
/// `recv_raw(fd, max, Some(RECV_SLICE))`, then `trim(RING_KEEP)`.
pub(crate) fn recv_ring(slot: usize) -> RecvBatch {
    let slot = slot.max(1);
    RecvBatch::new(slot, (RING_RESERVE / slot).clamp(1, RING_SLOTS))
}

/// Whether the peer has hung up (tells an empty datagram from end of stream).
pub(crate) fn peer_hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    rc < 0 || pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}
