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
