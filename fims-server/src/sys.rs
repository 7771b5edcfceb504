//! Thin wrappers over the socket syscalls the broker needs (the crate's only `unsafe`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

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

/// Most datagrams one [`send_many`] call hands to one `sendmmsg`.
pub(crate) const SEND_CHUNK: usize = 64;

/// Sends each of `dgs` as its own datagram, in order, without blocking (no
/// SIGPIPE), with one `sendmmsg` per [`SEND_CHUNK`] datagrams. Returns how
/// many went out, a prefix of `dgs`: fewer than all when the socket filled up
/// or a datagram failed; `Err` only when the first one failed (a retry from
/// the first unsent one tells why the others did not go).
pub(crate) fn send_many(fd: BorrowedFd<'_>, dgs: &[&[u8]]) -> io::Result<usize> {
    use std::mem::MaybeUninit;
    if let [one] = dgs {
        return send_parts(fd, &[one]).map(|()| 1);
    }
    let mut sent = 0;
    for chunk in dgs.chunks(SEND_CHUNK) {
        let mut iov = [MaybeUninit::<libc::iovec>::uninit(); SEND_CHUNK];
        let mut hdrs = [MaybeUninit::<libc::mmsghdr>::uninit(); SEND_CHUNK];
        for ((v, h), d) in iov.iter_mut().zip(hdrs.iter_mut()).zip(chunk) {
            let v = v.write(libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            });
            // SAFETY: msghdr is plain old data; zeroed is a valid value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = v;
            msg.msg_iovlen = 1;
            h.write(libc::mmsghdr {
                msg_hdr: msg,
                msg_len: 0,
            });
        }
        let n = loop {
            // SAFETY: the first chunk.len() headers are initialised and point
            // at initialised iovecs that borrow live slices.
            let n = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    hdrs.as_mut_ptr().cast(),
                    chunk.len() as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                _ if sent > 0 => return Ok(sent),
                _ => return Err(e),
            }
        };
        sent += n;
        if n < chunk.len() {
            break;
        }
    }
    Ok(sent)
}

/// Most datagrams a [`RecvRing`] holds, and so one `recvmmsg` takes.
pub(crate) const RING_SLOTS: usize = 64;
/// Address space a ring may take (slots of the largest datagram each):
/// pages are only backed by memory once a datagram that long arrives.
const RING_RESERVE: usize = 64 << 20;
/// How long one `recvmmsg` keeps taking datagrams that are already there (or
/// arrive meanwhile): small datagrams fill the ring well within it, while a
/// sender streaming big ones cannot hold the loop (and the routing of what
/// was received first) for longer than about this plus one datagram's copy.
const RECV_SLICE: Duration = Duration::from_micros(200);
/// Bytes at the start of each slot that stay backed once touched; the pages a
/// longer datagram touched beyond are given back after it was handled, so a
/// burst of big datagrams does not leave the broker holding them.
const RING_KEEP: usize = 64 << 10;

/// Buffers for receiving several datagrams with one `recvmmsg`: up to
/// [`RING_SLOTS`] slots, each as long as the largest datagram the broker
/// accepts (fewer slots when that is so large that they would pass
/// 64 MiB of address space).
pub(crate) struct RecvRing {
    buf: Vec<u8>,
    slot: usize,
    slots: usize,
    /// One iovec per slot; only read by the kernel, through `hdrs`.
    _iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Datagrams the last [`recv`](Self::recv) took.
    got: usize,
}

impl std::fmt::Debug for RecvRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvRing")
            .field("slot", &self.slot)
            .field("slots", &self.slots)
            .field("got", &self.got)
            .finish()
    }
}

impl RecvRing {
    /// A ring whose slots hold `slot` bytes each.
    pub(crate) fn new(slot: usize) -> RecvRing {
        let slot = slot.max(1);
        let slots = (RING_RESERVE / slot).clamp(1, RING_SLOTS);
        // Zeroed (calloc): untouched pages cost no memory.
        let mut buf = vec![0u8; slot * slots];
        let base = buf.as_mut_ptr();
        let mut iov: Vec<libc::iovec> = (0..slots)
            .map(|i| libc::iovec {
                // In bounds: buf holds slots * slot bytes.
                iov_base: base.wrapping_add(i * slot).cast(),
                iov_len: slot,
            })
            .collect();
        let iov_base = iov.as_mut_ptr();
        let hdrs = (0..slots)
            .map(|i| {
                // SAFETY: msghdr is plain old data; zeroed is a valid value.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = iov_base.wrapping_add(i);
                msg.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: msg,
                    msg_len: 0,
                }
            })
            .collect();
        // The pointers are set once: `buf` and `iov` are never resized (their
        // heap blocks stay put when the ring moves), `as_mut_ptr` makes no
        // reference that a later read of `buf` could invalidate, and
        // `recvmmsg` writes back only the lengths and flags, never the
        // pointers. Setting 64 of them per call cost 600 instructions per
        // loop turn, a fifth of a lone message's routing.
        RecvRing {
            buf,
            slot,
            slots,
            _iov: iov,
            hdrs,
            got: 0,
        }
    }

    /// Slots in the ring: the most one [`recv`](Self::recv) takes.
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// Receives up to `max` datagrams (at most [`slots`](Self::slots))
    /// without blocking, with one `recvmmsg` that stops taking more after
    /// [`RECV_SLICE`]. Returns how many, and whether more may be waiting
    /// (the ring filled up or the time ran out; otherwise the socket was
    /// drained, or the peer hung up: an empty datagram, see [`peer_hung_up`]).
    /// `WouldBlock` when none was waiting.
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<(usize, bool)> {
        let vlen = max.clamp(1, self.slots);
        self.got = 0;
        loop {
            let mut left = libc::timespec {
                tv_sec: 0,
                tv_nsec: RECV_SLICE.as_nanos() as libc::c_long,
            };
            // SAFETY: the first vlen headers point at iovecs (in self._iov)
            // over disjoint slots of self.buf, both set up in `new`, living as
            // long as self and never reallocated; MSG_TRUNC makes msg_len the datagram's real length;
            // `left` is valid for reading and writing.
            let n = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    vlen as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    &mut left,
                )
            };
            if n >= 0 {
                self.got = n as usize;
                // The kernel wrote back the time left: none means it stopped
                // for the time, not for want of datagrams.
                let timed_out = left.tv_sec == 0 && left.tv_nsec == 0;
                return Ok((self.got, self.got == vlen || timed_out));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Datagram `i` of the last [`recv`](Self::recv): its slot and its real
    /// length, which is larger than the slot when the datagram did not fit.
    pub(crate) fn get(&self, i: usize) -> (&[u8], usize) {
        let len = self.hdrs.get(i).map_or(0, |h| h.msg_len as usize);
        let start = i * self.slot;
        (&self.buf[start..start + self.slot], len)
    }

    /// Gives back the pages the last [`recv`](Self::recv)'s datagrams touched
    /// beyond the first [`RING_KEEP`] bytes of their slot (only datagrams
    /// longer than that cost this one `madvise` each).
    pub(crate) fn trim(&mut self) {
        let page = 4096;
        for i in 0..self.got {
            let len = self.hdrs[i].msg_len as usize;
            if len <= RING_KEEP + page {
                continue;
            }
            let slot_start = self.buf.as_ptr() as usize + i * self.slot;
            let from = (slot_start + RING_KEEP).next_multiple_of(page);
            let to = (slot_start + len.min(self.slot)) / page * page;
            if to > from {
                // SAFETY: [from, to) lies inside this slot of self.buf, which
                // we own; no reference into it is alive (&mut self). The
                // pages read back as zeros, a valid value for u8.
                unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED) };
            }
        }
        self.got = 0;
    }
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
