//! Helpers shared by the broker's integration tests.
#![allow(dead_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use fims::blocking::Client;
use fims::{Message, Subscription};

/// Generous wait for things that must happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// Hex to bytes.
pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The name of the user running the tests, as the broker stamps it.
pub fn my_user() -> String {
    // SAFETY: getuid cannot fail; getpwuid returns NULL or a valid entry that
    // is copied out before any other passwd call.
    unsafe {
        let uid = libc::getuid();
        let pw = libc::getpwuid(uid);
        if pw.is_null() {
            return uid.to_string();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// A connected client subscribed to `uris`.
pub fn client(path: &Path, name: &str, uris: &[&str]) -> Client {
    let mut c = Client::connect_to(path, name).expect("connect");
    if !uris.is_empty() {
        c.subscribe(uris).expect("subscribe");
    }
    c
}

/// A connected client with explicit subscriptions.
pub fn client_with(path: &Path, name: &str, subs: &[Subscription]) -> Client {
    let mut c = Client::connect_to(path, name).expect("connect");
    c.subscribe_with(subs).expect("subscribe");
    c
}

/// Receives the next message as owned, failing the test after [`WAIT`].
pub fn next(c: &mut Client) -> fims::OwnedMessage {
    match c.recv(Some(WAIT)) {
        Ok(Some(m)) => m.to_owned(),
        Ok(None) => panic!("{}: no message within {WAIT:?}", c.name()),
        Err(e) => panic!("{}: recv failed: {e}", c.name()),
    }
}

/// Sends a `pub` to `uri` with body `body` (the sentinel of negative tests).
pub fn sentinel(c: &mut Client, uri: &str) {
    c.send(fims::Method::Pub, uri, None, b"\"sentinel\"")
        .expect("send sentinel");
}

/// A raw SOCK_SEQPACKET connection, for bytes the clients would never send.
#[derive(Debug)]
pub struct Raw {
    fd: OwnedFd,
}

/// What a raw receive saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    /// One datagram.
    Datagram(Vec<u8>),
    /// The broker closed the connection.
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

impl Raw {
    /// Connects without any handshake.
    pub fn connect(path: &Path) -> Raw {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        // SAFETY: plain syscalls; every result is checked.
        unsafe {
            let raw = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
            assert!(raw >= 0, "socket: {}", io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(raw);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
                *d = *s as libc::c_char;
            }
            let rc = libc::connect(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "connect: {}", io::Error::last_os_error());
            Raw { fd }
        }
    }

    /// Connects and completes the handshake as `name`; returns max_len too.
    pub fn handshake(path: &Path, name: &str) -> (Raw, u32) {
        let r = Raw::connect(path);
        let hs = match r.recv(WAIT) {
            Got::Datagram(d) => d,
            other => panic!("no handshake: {other:?}"),
        };
        assert_eq!(hs.len(), 8);
        assert_eq!(&hs[..2], &[1, 0]);
        let max = u32::from_le_bytes([hs[4], hs[5], hs[6], hs[7]]);
        r.send(&hs).expect("send handshake");
        r.send(name.as_bytes()).expect("send name");
        (r, max)
    }

    /// Sends one datagram.
    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sends a message datagram.
    pub fn send_msg(&self, m: &Message<'_>) {
        let mut out = Vec::new();
        m.encode(&mut out).expect("encode");
        self.send(&out).expect("send");
    }

    /// Receives one datagram within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Got {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        if rc == 0 {
            return Got::Timeout;
        }
        let mut buf = vec![0u8; 1 << 21];
        // SAFETY: buf is valid for writing buf.len() bytes.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => Got::Closed,
            n if n < 0 => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ECONNRESET) => Got::Closed,
                    _ => panic!("recv: {e}"),
                }
            }
            n => {
                buf.truncate(n as usize);
                Got::Datagram(buf)
            }
        }
    }

    /// The descriptor (to shrink buffers or check state).
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Resident memory of process `pid` in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Raises this test process's open-file soft limit to the hard limit (tests
/// that hold a thousand connections need more than the usual 1024).
pub fn raise_nofile_limit() {
    let _ = fims::socket::raise_nofile_limit();
}

/// A `fims_server` child process with its stderr in a log file, optionally
/// with a lowered open-file limit (soft and hard, so it cannot raise it).
pub struct BrokerProc {
    pub dir: tempfile::TempDir,
    pub sock: std::path::PathBuf,
    pub log: std::path::PathBuf,
    pub child: testkit::ChildGuard,
}

impl BrokerProc {
    /// Starts the broker with `args` and waits until it accepts.
    pub fn start(args: &[&str], nofile: Option<u64>) -> BrokerProc {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let sock = dir.path().join("fims.sock");
        let log = dir.path().join("broker.log");
        let mut cmd = std::process::Command::new(testkit::bin("fims-server", "fims_server"));
        cmd.arg("--socket")
            .arg(&sock)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(n) = nofile {
            let lim = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe and only touches the child.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = testkit::ChildGuard::spawn(&mut cmd);
        assert!(
            testkit::wait_for(Duration::from_secs(20), || testkit::seqpacket_accepts(
                &sock
            )),
            "fims_server did not come up"
        );
        BrokerProc {
            dir,
            sock,
            log,
            child,
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the broker (SIGTERM) and returns its log, which ends with the
    /// counters line.
    pub fn stop(mut self) -> String {
        self.child.signal(libc::SIGTERM);
        assert!(
            self.child
                .wait_timeout(Duration::from_secs(20))
                .expect("broker stops")
                .success(),
            "broker exit status"
        );
        self.log_text()
    }
}

/// The value of counter `key` in the broker's last counters line of `log`
/// (`key=value`, as tracing writes fields).
pub fn counter(log: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("fims_server stopped") || l.contains("fims_server counters"))
        .unwrap_or_else(|| panic!("no counters line in {log}"));
    let pat = format!(" {key}=");
    let start = line
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + pat.len();
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not a number in {line}"))
}

/// A `sub` datagram for `uris` (none pub-only).
pub fn sub_datagram(uris: &[&str]) -> Vec<u8> {
    let subs: Vec<_> = uris.iter().map(|u| Subscription::all(*u)).collect();
    let mut body = Vec::new();
    fims::codec::encode_sub_body(&subs, &mut body).expect("sub body");
    let m = Message {
        method: "sub",
        body: &body,
        ..Message::default()
    };
    let mut out = Vec::new();
    m.encode(&mut out).expect("encode");
    out
}

impl Raw {
    /// Sends a `sub` for `uris` and returns the broker's answer body.
    pub fn subscribe(&self, uris: &[&str]) -> String {
        self.send(&sub_datagram(uris)).expect("send sub");
        match self.recv(WAIT) {
            Got::Datagram(d) => {
                let m = Message::decode(&d).expect("answer decodes");
                String::from_utf8_lossy(m.body).into_owned()
            }
            other => panic!("no sub answer: {other:?}"),
        }
    }
}

/// Peak resident memory of process `pid` in KiB (VmHWM).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}
