//! Kill safety: which PIDs COPS accepts, how it pins a process's identity, and
//! how it signals only that identity (docs/protocol/cops.md "Failure actions").
//!
//! Two layers: [`accept_pid`] and [`parse_stat`] are pure; [`Identity`] and
//! [`KillLayer`] talk to the kernel (`pidfd_open`/`pidfd_send_signal` on Linux
//! >= 5.3, else the start time from `/proc/<pid>/stat` re-checked before `kill`).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::config::Signal;
use crate::engine::SignalOutcome;

/// Why COPS will not accept or signal a PID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KillError {
    /// 0, 1 or negative: never a monitored process.
    #[error("pid {0} is never accepted (must be > 1)")]
    NotAboveOne(i64),
    /// Larger than any PID.
    #[error("pid {0} is out of range")]
    OutOfRange(i64),
    /// COPS's own PID.
    #[error("pid {0} is COPS's own")]
    OwnPid(u32),
    /// No such process.
    #[error("no process with pid {0}")]
    NoSuchProcess(u32),
    /// The PID now belongs to another process (or the pinned one is gone).
    #[error("pid {0} is no longer the process that was pinned (it exited or the pid was reused)")]
    IdentityChanged(u32),
    /// `/proc/<pid>/exe` is not `expectedExe`.
    #[error("pid {pid} runs {actual:?}, not the expected {expected:?}")]
    ExeMismatch {
        /// The PID.
        pid: u32,
        /// `expectedExe`.
        expected: String,
        /// What `/proc/<pid>/exe` names.
        actual: String,
    },
    /// Any other failure of the kernel or /proc.
    #[error("pid {pid}: {what}: {err}")]
    Os {
        /// The PID.
        pid: u32,
        /// What was tried.
        what: &'static str,
        /// The error.
        err: String,
    },
}

/// The pure acceptance rule: `pid > 1`, not `own`, and `exists(pid)`.
pub fn accept_pid(pid: i64, own: u32, exists: impl Fn(u32) -> bool) -> Result<u32, KillError> {
    if pid <= 1 {
        return Err(KillError::NotAboveOne(pid));
    }
    let p = u32::try_from(pid)
        .ok()
        .filter(|&p| p <= i32::MAX as u32)
        .ok_or(KillError::OutOfRange(pid))?;
    if p == own {
        return Err(KillError::OwnPid(p));
    }
    if !exists(p) {
        return Err(KillError::NoSuchProcess(p));
    }
    Ok(p)
}

/// State (field 3) and start time (field 22) from the text of `/proc/<pid>/stat`.
/// The command name (field 2) may hold spaces and parentheses, so the fields are
/// counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), field 22 is the 19th.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// State and start time of `pid`, from /proc.
pub fn read_stat(pid: u32) -> std::io::Result<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "unparsable stat"))
}

/// Whether a process with this PID exists (zombies included).
pub fn pid_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// File name of the executable of `pid` (`/proc/<pid>/exe`, " (deleted)" stripped).
pub fn exe_name(pid: u32) -> std::io::Result<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(name.strip_suffix(" (deleted)").unwrap_or(&name).to_owned())
}

/// What the kernel says about each thread of `pid`: `tid 4242 S futex_wait_queue, ...`.
pub fn evidence(pid: u32) -> String {
    const MAX_THREADS: usize = 32;
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("pid {pid} gone from /proc");
    };
    let mut tids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    let mut parts: Vec<String> = tids
        .iter()
        .take(MAX_THREADS)
        .map(|tid| {
            let base = format!("/proc/{pid}/task/{tid}");
            let state = std::fs::read_to_string(format!("{base}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .map_or('?', |(st, _)| st);
            let wchan = std::fs::read_to_string(format!("{base}/wchan")).unwrap_or_default();
            let wchan = match wchan.trim() {
                "" | "0" => "-",
                w => w,
            };
            format!("tid {tid} {state} {wchan}")
        })
        .collect();
    if tids.len() > MAX_THREADS {
        parts.push(format!("... {} more threads", tids.len() - MAX_THREADS));
    }
    parts.join(", ")
}

/// A pinned process: its PID plus what proves it is still the same process.
#[derive(Debug)]
pub struct Identity {
    pid: u32,
    start_time: u64,
    pidfd: Option<OwnedFd>,
}

impl Identity {
    /// Accepts `pid` (see [`accept_pid`]) and pins it: a pidfd where the kernel
    /// has them, and the start time in every case.
    pub fn pin(pid: u32, own: u32) -> Result<Identity, KillError> {
        Identity::pin_with(pid, own, true)
    }

    /// As [`pin`](Self::pin); `use_pidfd` false pins by start time only.
    pub fn pin_with(pid: u32, own: u32, use_pidfd: bool) -> Result<Identity, KillError> {
        let pid = accept_pid(i64::from(pid), own, pid_exists)?;
        let pidfd = if use_pidfd { pidfd_open(pid) } else { None };
        let (_, start_time) = read_stat(pid).map_err(|_| KillError::NoSuchProcess(pid))?;
        Ok(Identity {
            pid,
            start_time,
            pidfd,
        })
    }

    /// An identity from parts (tests: a start time that does not match).
    pub fn from_parts(pid: u32, start_time: u64, pidfd: Option<OwnedFd>) -> Identity {
        Identity {
            pid,
            start_time,
            pidfd,
        }
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the identity is pinned by a pidfd (else by start time only).
    pub fn has_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }

    /// `Ok` while the PID still names the pinned, running process.
    pub fn verify(&self) -> Result<(), KillError> {
        if self.exited() {
            return Err(KillError::IdentityChanged(self.pid));
        }
        Ok(())
    }

    /// Whether the pinned process has exited (a zombie counts as exited).
    pub fn exited(&self) -> bool {
        if let Some(fd) = &self.pidfd {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, zero timeout.
            let n = unsafe { libc::poll(&mut p, 1, 0) };
            if n > 0 {
                return true;
            }
        }
        match read_stat(self.pid) {
            Ok((state, start)) => start != self.start_time || matches!(state, 'Z' | 'X' | 'x'),
            Err(_) => true,
        }
    }

    /// Sends `sig` to the pinned process only.
    pub fn signal(&self, sig: i32) -> Result<(), KillError> {
        self.verify()?;
        let rc = match &self.pidfd {
            // SAFETY: pidfd_send_signal on a pidfd we own; NULL siginfo, flags 0.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            // SAFETY: kill(2) right after the start time was re-verified.
            None => i64::from(unsafe { libc::kill(self.pid as libc::pid_t, sig) }),
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Err(KillError::IdentityChanged(self.pid));
        }
        Err(KillError::Os {
            pid: self.pid,
            what: "signal",
            err: err.to_string(),
        })
    }
}

/// `pidfd_open(2)`; `None` where the kernel has no pidfds (or the descriptor
/// limit is reached): the start time then pins the identity alone.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; on success we own the returned descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor returned to us by the kernel.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The runtime's kill layer: pinned identities by (process, pid) and the OS side
/// of the engine's actions.
#[derive(Debug)]
pub struct KillLayer {
    own_pid: u32,
    dry_run: bool,
    pinned: HashMap<(usize, u32), Identity>,
    /// Most pidfds to hold: the descriptor limit less a reserve for everything
    /// else (sockets, /proc reads). Past it, identities are pinned by start time.
    max_pidfds: usize,
    pidfds: usize,
}

/// Descriptors kept free for COPS's own use when holding pidfds.
const FD_RESERVE: usize = 128;

fn fd_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

impl KillLayer {
    /// A kill layer for COPS with PID `own_pid`; `dry_run` signals nothing.
    pub fn new(own_pid: u32, dry_run: bool) -> KillLayer {
        KillLayer {
            own_pid,
            dry_run,
            pinned: HashMap::new(),
            max_pidfds: fd_limit().saturating_sub(FD_RESERVE),
            pidfds: 0,
        }
    }

    /// [`Action::Pin`](crate::engine::Action::Pin).
    pub fn pin(&mut self, process: usize, pid: u32) -> Result<(), String> {
        let use_pidfd = self.pidfds < self.max_pidfds;
        let id = Identity::pin_with(pid, self.own_pid, use_pidfd).map_err(|e| e.to_string())?;
        self.pidfds += usize::from(id.has_pidfd());
        if let Some(old) = self.pinned.insert((process, pid), id) {
            self.pidfds -= usize::from(old.has_pidfd());
        }
        Ok(())
    }

    /// [`Action::Unpin`](crate::engine::Action::Unpin).
    pub fn unpin(&mut self, process: usize, pid: u32) {
        if let Some(old) = self.pinned.remove(&(process, pid)) {
            self.pidfds -= usize::from(old.has_pidfd());
        }
    }

    /// Number of pinned identities.
    pub fn pinned(&self) -> usize {
        self.pinned.len()
    }

    /// [`Action::Signal`](crate::engine::Action::Signal): verifies identity and
    /// `expected_exe`, gathers the evidence, then signals (unless dry run).
    pub fn signal(
        &mut self,
        process: usize,
        pid: u32,
        signal: Signal,
        expected_exe: Option<&str>,
    ) -> SignalOutcome {
        let refused = |e: KillError| SignalOutcome::Refused {
            reason: e.to_string(),
        };
        let Some(id) = self.pinned.get(&(process, pid)) else {
            return refused(KillError::IdentityChanged(pid));
        };
        if let Err(e) = id.verify() {
            return refused(e);
        }
        if let Some(expected) = expected_exe {
            match exe_name(pid) {
                Ok(actual) if actual == expected => {}
                Ok(actual) => {
                    return refused(KillError::ExeMismatch {
                        pid,
                        expected: expected.into(),
                        actual,
                    })
                }
                Err(e) => {
                    return refused(KillError::Os {
                        pid,
                        what: "reading /proc/<pid>/exe for expectedExe",
                        err: e.to_string(),
                    })
                }
            }
        }
        let evidence = evidence(pid);
        if self.dry_run {
            return SignalOutcome::DryRun { evidence };
        }
        match id.signal(signal.number) {
            Ok(()) => SignalOutcome::Delivered { evidence },
            Err(e) => refused(e),
        }
    }

    /// [`Action::CheckExit`](crate::engine::Action::CheckExit): `Ok` when gone,
    /// else `Err(evidence)`.
    pub fn check_exit(&mut self, process: usize, pid: u32) -> Result<(), String> {
        match self.pinned.get(&(process, pid)) {
            Some(id) if !id.exited() => Err(evidence(pid)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
