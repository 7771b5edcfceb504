//! A recording stand-in for a FIMS broker: it speaks the handshake, keeps every
//! datagram each connection sends, and answers through a test's handler. Tests
//! use it to assert the exact datagrams a client puts on the wire (e.g. one
//! `sub` holding the whole set), which a real broker does not show.
//!
//! Also the raw pieces for stranger brokers: [`SeqpacketListener`] (bind,
//! listen with a chosen backlog, accept when the test decides) and
//! [`send_datagram`] / [`recv_datagram`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The handshake the existing broker sends: layout 1, max_len 924288.
pub const HANDSHAKE: [u8; 8] = [1, 0, 0, 0, 0x80, 0x1a, 0x0e, 0];

/// The broker's answer to a successful `sub` (docs/protocol/fims.md test vector):
/// every string empty but process_name `fims_server`, body `SUCCESS`.
pub const SUB_SUCCESS: &[u8] =
    b"\x00\x00\x00\x0b\x00\x00\x00\x00\x07\x00\x00\x00fims_serverSUCCESS";

/// A listening `SOCK_SEQPACKET` socket that accepts only when asked.
#[derive(Debug)]
pub struct SeqpacketListener {
    fd: OwnedFd,
}

impl SeqpacketListener {
    /// Binds `path` and listens with `backlog` (0 makes the backlog fill at once
    /// when nobody accepts). Panics when the socket cannot be set up.
    pub fn bind(path: &Path, backlog: i32) -> SeqpacketListener {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: plain syscalls on a descriptor owned here; results checked.
        unsafe {
            let raw = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
            assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(raw);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            let bytes = path.as_os_str().as_bytes();
            assert!(bytes.len() < addr.sun_path.len(), "socket path too long");
            for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
                *d = *s as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            let ptr = &addr as *const libc::sockaddr_un as *const libc::sockaddr;
            assert_eq!(libc::bind(fd.as_raw_fd(), ptr, len), 0, "bind {path:?}");
            assert_eq!(libc::listen(fd.as_raw_fd(), backlog), 0, "listen");
            SeqpacketListener { fd }
        }
    }

    /// Accepts one connection, waiting up to `timeout`; `None` when none came.
    pub fn accept(&self, timeout: Duration) -> Option<OwnedFd> {
        if !poll_one(self.fd.as_fd(), libc::POLLIN, timeout) {
            return None;
        }
        // SAFETY: accept on our listener; the new descriptor is owned below.
        let c = unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        // SAFETY: c is a fresh descriptor we own.
        (c >= 0).then(|| unsafe { OwnedFd::from_raw_fd(c) })
    }
}

/// Sends one datagram; false when the send failed.
pub fn send_datagram(fd: BorrowedFd<'_>, dg: &[u8]) -> bool {
    // SAFETY: dg is valid for its length.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            dg.as_ptr().cast(),
            dg.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    n == dg.len() as isize
}

/// What [`recv_datagram`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// One datagram.
    Datagram(Vec<u8>),
    /// Nothing within the timeout.
    Timeout,
    /// The peer closed the connection (or an error ended it).
    Closed,
}

/// Receives one datagram (up to 1 MiB), waiting up to `timeout`.
pub fn recv_datagram(fd: BorrowedFd<'_>, timeout: Duration) -> Received {
    if !poll_one(fd, libc::POLLIN, timeout) {
        return Received::Timeout;
    }
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: buf is valid for writing its length.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Received::Timeout,
            _ => Received::Closed,
        };
    }
    if n == 0 {
        return Received::Closed;
    }
    buf.truncate(n as usize);
    Received::Datagram(buf)
}

/// Polls one descriptor for `events`; whether it became ready in time.
fn poll_one(fd: BorrowedFd<'_>, events: libc::c_short, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// Answers a fake broker sends back for one received datagram.
type Handler = dyn Fn(&[u8]) -> Vec<Vec<u8>> + Send + Sync;

/// One connection as the fake broker saw it.
#[derive(Debug)]
struct Conn {
    fd: Arc<OwnedFd>,
    name: String,
    datagrams: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    conns: Mutex<Vec<Conn>>,
    changed: Condvar,
}

/// A fake broker in its own temp directory: handshake (924288), then every
/// datagram of each connection recorded and passed to the handler, whose
/// answers are sent back. Stopped when dropped.
pub struct FakeBroker {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeBroker")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl FakeBroker {
    /// Starts a fake broker answering each datagram with `handler`'s datagrams.
    pub fn start(handler: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + Sync + 'static) -> FakeBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("fake.sock");
        let listener = SeqpacketListener::bind(&socket, 64);
        let shared = Arc::new(Shared::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let sh = shared.clone();
        let thread = std::thread::spawn(move || accept_loop(listener, sh, handler));
        FakeBroker {
            _dir: dir,
            socket,
            shared,
            thread: Some(thread),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Connections that finished the handshake so far.
    pub fn connections(&self) -> usize {
        self.lock().len()
    }

    /// The process name connection `conn` (0 = the first) gave.
    pub fn name(&self, conn: usize) -> String {
        self.lock()[conn].name.clone()
    }

    /// Every datagram connection `conn` has sent after its handshake so far.
    pub fn datagrams(&self, conn: usize) -> Vec<Vec<u8>> {
        self.lock()
            .get(conn)
            .map(|c| c.datagrams.clone())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` until connection `conn` exists and has sent at
    /// least `n` datagrams; returns them all (panics when they did not come).
    pub fn wait_datagrams(&self, conn: usize, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let end = Instant::now() + timeout;
        let mut conns = self.lock();
        loop {
            if let Some(c) = conns.get(conn) {
                if c.datagrams.len() >= n {
                    return c.datagrams.clone();
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "connection {conn}: fewer than {n} datagrams within {timeout:?}"
            );
            conns = match self.shared.changed.wait_timeout(conns, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Closes every open connection (shutdown both ways): the clients see the
    /// broker go away, as at a restart. The listener keeps accepting.
    pub fn disconnect_all(&self) {
        for c in self.lock().iter() {
            // SAFETY: shutdown on a descriptor kept open by the Arc.
            unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.shared.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.disconnect_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: SeqpacketListener, shared: Arc<Shared>, handler: Arc<Handler>) {
    let mut threads = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(fd) = listener.accept(Duration::from_millis(20)) {
            let (sh, h) = (shared.clone(), handler.clone());
            threads.push(std::thread::spawn(move || serve(fd, &sh, &*h)));
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

/// One connection: handshake, then record and answer until it closes.
fn serve(fd: OwnedFd, shared: &Shared, handler: &Handler) {
    let wait = Duration::from_secs(10);
    if !send_datagram(fd.as_fd(), &HANDSHAKE) {
        return;
    }
    let Received::Datagram(_their_handshake) = recv_datagram(fd.as_fd(), wait) else {
        return;
    };
    let Received::Datagram(name) = recv_datagram(fd.as_fd(), wait) else {
        return;
    };
    let fd = Arc::new(fd);
    let index = {
        let mut conns = shared.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.push(Conn {
            fd: fd.clone(),
            name: String::from_utf8_lossy(&name).into_owned(),
            datagrams: Vec::new(),
        });
        shared.changed.notify_all();
        conns.len() - 1
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let dg = match recv_datagram(fd.as_fd(), Duration::from_millis(20)) {
            Received::Datagram(d) => d,
            Received::Timeout => continue,
            Received::Closed => break,
        };
        {
            let mut conns = shared.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns[index].datagrams.push(dg.clone());
            shared.changed.notify_all();
        }
        for answer in handler(&dg) {
            send_datagram(fd.as_fd(), &answer);
        }
    }
}
