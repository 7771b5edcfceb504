//! Raw socket and process helpers. Everything a forked child calls here is a
//! plain syscall wrapper that does not allocate, so it is safe after `fork`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A connected pair of `SOCK_SEQPACKET` Unix sockets (close-on-exec).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one datagram, blocking, without SIGPIPE; retries on EINTR.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one datagram into `buf`, blocking; `Ok(0)` when the peer closed.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits until one of `fds` is readable (or hung up); returns the readiness
/// bits per descriptor in `revents`. Allocation-free (safe after `fork`).
pub fn poll_readable<const N: usize>(fds: &[RawFd; N], revents: &mut [i16; N]) -> io::Result<()> {
    let mut p = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        // SAFETY: p is an array of N valid pollfd.
        let rc = unsafe { libc::poll(p.as_mut_ptr(), N as libc::nfds_t, -1) };
        if rc > 0 {
            for (r, q) in revents.iter_mut().zip(&p) {
                *r = q.revents;
            }
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if rc < 0 && e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Forks; the child runs `child` (which must only make plain syscalls: no
/// allocation, no locks) and leaves with `_exit` of its result. Returns the
/// child's PID in the parent.
pub fn fork_child(child: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    // SAFETY: fork has no memory-safety preconditions; the child only runs
    // `child`, whose contract above keeps it async-signal-safe, then `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = child();
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Waits for child `pid` up to `timeout`, then SIGKILLs and reaps it.
pub fn reap(pid: libc::pid_t, timeout: std::time::Duration) {
    let end = std::time::Instant::now() + timeout;
    let mut status = 0;
    loop {
        // SAFETY: plain syscall on our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc != 0 {
            return;
        }
        if std::time::Instant::now() >= end {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // SAFETY: pid is our own unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::kill(pid, sig) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ticks per second of `/proc/<pid>/stat` CPU times.
pub fn clock_ticks() -> u64 {
    // SAFETY: plain libc call.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// In a forked child: closes every descriptor from 3 up except `keep`, so
/// sockets of the parent's other roles reach EOF when the parent closes them.
/// `keep` is sorted in place; allocation-free.
pub fn close_except(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut first: libc::c_uint = 3;
    for &k in keep.iter() {
        let k = k as libc::c_uint;
        if k > first {
            close_range(first, k - 1);
        }
        first = first.max(k + 1);
    }
    close_range(first, libc::c_uint::MAX);
}

fn close_range(first: libc::c_uint, last: libc::c_uint) {
    // SAFETY: closing descriptors of this (forked) process that no Rust object
    // of the child will use again; the child only runs raw syscalls.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
}

/// While alive, this process (and every child it starts) runs on one CPU only;
/// the previous affinity comes back on drop.
#[derive(Debug)]
pub struct Pinned {
    previous: libc::cpu_set_t,
    /// The CPU everything runs on.
    pub cpu: usize,
}

impl Pinned {
    /// Pins to the first CPU this process may run on.
    pub fn first_cpu() -> io::Result<Pinned> {
        // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
        let mut previous: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: previous is a valid cpu_set_t of `size` bytes.
        if unsafe { libc::sched_getaffinity(0, size, &mut previous) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let cpu = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: i is below CPU_SETSIZE.
            .find(|&i| unsafe { libc::CPU_ISSET(i, &previous) })
            .ok_or_else(|| io::Error::other("empty CPU affinity"))?;
        // SAFETY: as above.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: cpu is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut one) };
        // SAFETY: one is a valid cpu_set_t.
        if unsafe { libc::sched_setaffinity(0, size, &one) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pinned { previous, cpu })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: previous is the valid set read at creation.
        unsafe { libc::sched_setaffinity(0, size, &self.previous) };
    }
}

/// CLOCK_MONOTONIC in nanoseconds (the clock `Instant` reads on Linux).
pub fn mono_ns() -> u64 {
    // SAFETY: timespec is plain data; zeroed is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until CLOCK_MONOTONIC reads `deadline_ns` (an absolute deadline:
/// time lost to a late wakeup is not added to the next sleep); retries on EINTR.
pub fn sleep_until_ns(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: ts is a valid timespec; no remaining-time output with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        // clock_nanosleep returns the error number instead of setting errno.
        if rc != libc::EINTR {
            return;
        }
    }
}

/// While alive, this thread's timer slack is 1 ns, so an absolute-deadline
/// sleep wakes on time rather than up to 50 us late (the default slack); the
/// previous slack comes back on drop.
#[derive(Debug)]
pub struct TightTimers {
    previous: libc::c_ulong,
}

impl TightTimers {
    /// Sets this thread's timer slack to 1 ns.
    pub fn new() -> TightTimers {
        // SAFETY: PR_GET_TIMERSLACK takes no pointer and returns the slack.
        let previous = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        // SAFETY: PR_SET_TIMERSLACK takes the slack in ns by value.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        TightTimers {
            previous: previous.max(1) as libc::c_ulong,
        }
    }
}

impl Default for TightTimers {
    fn default() -> Self {
        TightTimers::new()
    }
}

impl Drop for TightTimers {
    fn drop(&mut self) {
        // SAFETY: as in new.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, self.previous, 0, 0, 0) };
    }
}

/// Preallocated `recvmmsg`/`sendmmsg` buffers: `n` slots of `slot` bytes.
/// Build it before `fork`; the child only re-points and reuses it (no
/// allocation after the fork).
#[derive(Debug)]
pub struct Batch {
    bufs: Vec<u8>,
    slot: usize,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    /// `n` slots of `slot` bytes each.
    pub fn new(n: usize, slot: usize) -> Batch {
        let n = n.max(1);
        Batch {
            bufs: vec![0u8; n * slot],
            slot,
            iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ],
            // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
            hdrs: vec![unsafe { std::mem::zeroed() }; n],
        }
    }

    /// Points header `i` at slot `i` with `len` bytes.
    fn point(&mut self, i: usize, len: usize) {
        let base = self.bufs[i * self.slot..].as_mut_ptr();
        self.iov[i] = libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        };
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_iov = &mut self.iov[i];
        h.msg_iovlen = 1;
    }

    /// Receives up to all slots' worth of datagrams without waiting (at
    /// least one must be ready for a non-zero count); `Ok(0)` when none was.
    /// A datagram of length 0 is the peer closing (SOCK_SEQPACKET).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..self.hdrs.len() {
            self.point(i, self.slot);
        }
        loop {
            // SAFETY: every header points at a valid iovec over its own slot.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    /// Length of received datagram `i`.
    pub fn len_of(&self, i: usize) -> usize {
        self.hdrs[i].msg_len as usize
    }

    /// Sends the first `n` received datagrams to `fd` with `sendmmsg`,
    /// blocking until all are sent.
    pub fn send(&mut self, fd: RawFd, n: usize) -> io::Result<()> {
        for i in 0..n {
            let len = self.len_of(i);
            self.point(i, len);
        }
        let mut done = 0;
        while done < n {
            // SAFETY: headers done..n point at valid iovecs over their slots.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..n].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    libc::MSG_NOSIGNAL,
                )
            };
            if sent < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            done += sent as usize;
        }
        Ok(())
    }
}

/// `SO_TIMESTAMPNS` on x86-64 and aarch64 (libc does not export it for linux-gnu).
const SO_TIMESTAMPNS: libc::c_int = 35;
/// Control space per received datagram (one timespec cmsg fits in 32 bytes).
const STAMP_CTRL: usize = 64;
/// Most datagrams per `sendmmsg`/`recvmmsg`, as `cops` batches.
pub const MMSG_MAX: usize = 256;

/// Asks the kernel to stamp every datagram arriving on `fd` with its arrival
/// time (`SO_TIMESTAMPNS`), as `cops` does on its heartbeat connection.
pub fn enable_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Datagrams of any length packed in one buffer, sent with `sendmmsg` in
/// chunks of [`MMSG_MAX`] (the way `cops` sends a tick's rounds); every
/// buffer is kept between flushes.
#[derive(Debug, Default)]
pub struct SendQueue {
    buf: Vec<u8>,
    ends: Vec<usize>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl SendQueue {
    /// The buffer to append one datagram to; call [`SendQueue::end`] after.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Ends the datagram appended since the last call.
    pub fn end(&mut self) {
        self.ends.push(self.buf.len());
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Sends every waiting datagram on the non-blocking `fd`, waiting for
    /// room (`poll`) when the socket buffer is full; returns how many
    /// `sendmmsg` calls it took.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.ends.len();
        self.iov.clear();
        let mut start = 0;
        for &end in &self.ends {
            self.iov.push(libc::iovec {
                // In bounds: start..end lies within buf.
                iov_base: self.buf[start..end].as_ptr() as *mut libc::c_void,
                iov_len: end - start,
            });
            start = end;
        }
        // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
        self.hdrs.resize(n, unsafe { std::mem::zeroed() });
        for (h, iov) in self.hdrs.iter_mut().zip(self.iov.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        let (mut done, mut calls) = (0, 0);
        while done < n {
            let chunk = (n - done).min(MMSG_MAX);
            // SAFETY: headers done..done+chunk point at iovecs over buf, all alive.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..].as_mut_ptr(),
                    chunk as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            calls += 1;
            if rc >= 0 {
                done += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, 100) };
                }
                _ => return Err(e),
            }
        }
        self.buf.clear();
        self.ends.clear();
        Ok(calls)
    }
}

/// `recvmmsg` of up to [`MMSG_MAX`] datagrams with their kernel timestamps
/// (read, as `cops` reads them), every buffer allocated once.
#[derive(Debug)]
pub struct StampedRecv {
    bufs: Vec<u8>,
    ctrl: Vec<u64>,
    slot: usize,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl StampedRecv {
    /// Slots of `slot` bytes.
    pub fn new(slot: usize) -> StampedRecv {
        StampedRecv {
            bufs: vec![0; slot * MMSG_MAX],
            // u64 for the alignment cmsghdr needs.
            ctrl: vec![0; STAMP_CTRL / 8 * MMSG_MAX],
            slot,
            iov: Vec::with_capacity(MMSG_MAX),
            // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
            hdrs: vec![unsafe { std::mem::zeroed() }; MMSG_MAX],
        }
    }

    /// Receives what is waiting on the non-blocking `fd` (one call): the
    /// number of datagrams and the sum of their timestamps' nanoseconds (so
    /// that reading them is not optimised away); `Ok(None)` when the peer
    /// closed.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<Option<(usize, u64)>> {
        self.iov.clear();
        let ctrl = self.ctrl.as_mut_ptr().cast::<u8>();
        for (i, chunk) in self.bufs.chunks_exact_mut(self.slot).enumerate() {
            self.iov.push(libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: chunk.len(),
            });
            let h = &mut self.hdrs[i].msg_hdr;
            // SAFETY: slot i of the control buffer (MMSG_MAX slots of STAMP_CTRL bytes).
            h.msg_control = unsafe { ctrl.add(i * STAMP_CTRL) }.cast();
            h.msg_controllen = STAMP_CTRL as _;
        }
        for (h, iov) in self.hdrs.iter_mut().zip(self.iov.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at its own slot and control space.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                MMSG_MAX as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(Some((0, 0))),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Ok(None),
                _ => Err(e),
            };
        }
        let mut stamps = 0u64;
        for h in &self.hdrs[..rc as usize] {
            if h.msg_len == 0 {
                return Ok(None);
            }
            stamps = stamps.wrapping_add(stamp_ns(&h.msg_hdr));
        }
        Ok(Some((rc as usize, stamps)))
    }
}

/// The `SCM_TIMESTAMPNS` of a received message in ns, 0 without one.
fn stamp_ns(m: &libc::msghdr) -> u64 {
    // SAFETY: walking the control messages the kernel wrote, with the libc
    // CMSG macros and within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == SO_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
    0
}
