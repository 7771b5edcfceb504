//! Kill safety: which PIDs COPS accepts, how it pins a process's identity, and
//! how it signals only that identity (docs/protocol/cops.md "Failure actions").
//!
//! Two layers: [`crate::identity::pid_rule`] and [`parse_stat`] are pure;
//! [`Identity`] and [`KillLayer`] talk to the kernel (`pidfd_open`/`pidfd_send_signal` on Linux
//! >= 5.3, else the start time from `/proc/<pid>/stat` re-checked before `kill`).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::config::Signal;
use crate::identity::{pid_rule, ExitCheck, PidRefusal, PinOutcome, SignalOutcome, SignalRefusal};

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
    /// Accepts `pid` (see [`pid_rule`]) and pins it: a pidfd where the kernel
    /// has them, and the start time in every case.
    pub fn pin(pid: u32, own: u32) -> Result<Identity, PidRefusal> {
        Identity::pin_with(pid, own, true)
    }

    /// As [`pin`](Self::pin); `use_pidfd` false pins by start time only.
    pub fn pin_with(pid: u32, own: u32, use_pidfd: bool) -> Result<Identity, PidRefusal> {
        let pid = pid_rule(i64::from(pid), own)?;
        if !pid_exists(pid) {
            return Err(PidRefusal::NoSuchProcess);
        }
        let pidfd = if use_pidfd { pidfd_open(pid) } else { None };
        let (_, start_time) = read_stat(pid).map_err(|_| PidRefusal::NoSuchProcess)?;
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
    pub fn verify(&self) -> Result<(), SignalRefusal> {
        if self.exited() {
            return Err(SignalRefusal::IdentityGone);
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
    pub fn signal(&self, sig: i32) -> Result<(), SignalRefusal> {
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
            return Err(SignalRefusal::IdentityGone);
        }
        Err(SignalRefusal::Os(format!("signal: {err}")))
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
    pub fn pin(&mut self, process: usize, pid: u32) -> PinOutcome {
        let use_pidfd = self.pidfds < self.max_pidfds;
        let id = match Identity::pin_with(pid, self.own_pid, use_pidfd) {
            Ok(id) => id,
            Err(why) => return PinOutcome::Refused(why),
        };
        self.pidfds += usize::from(id.has_pidfd());
        if let Some(old) = self.pinned.insert((process, pid), id) {
            self.pidfds -= usize::from(old.has_pidfd());
        }
        PinOutcome::Pinned
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
        let Some(id) = self.pinned.get(&(process, pid)) else {
            return SignalOutcome::Refused(SignalRefusal::NotPinned);
        };
        if let Err(e) = id.verify() {
            return SignalOutcome::Refused(e);
        }
        if let Some(expected) = expected_exe {
            match exe_name(pid) {
                Ok(actual) if actual == expected => {}
                Ok(actual) => {
                    return SignalOutcome::Refused(SignalRefusal::ExeMismatch {
                        expected: expected.into(),
                        actual,
                    })
                }
                Err(e) => {
                    return SignalOutcome::Refused(SignalRefusal::Os(format!(
                        "reading /proc/{pid}/exe for expectedExe: {e}"
                    )))
                }
            }
        }
        let evidence = evidence(pid);
        if self.dry_run {
            return SignalOutcome::DryRun { evidence };
        }
        match id.signal(signal.number) {
            Ok(()) => SignalOutcome::Delivered { evidence },
            Err(e) => SignalOutcome::Refused(e),
        }
    }

    /// [`Action::CheckExit`](crate::engine::Action::CheckExit).
    pub fn check_exit(&mut self, process: usize, pid: u32) -> ExitCheck {
        match self.pinned.get(&(process, pid)) {
            Some(id) if !id.exited() => ExitCheck::StillAlive {
                evidence: evidence(pid),
            },
            _ => ExitCheck::Exited,
        }
    }
}

#[cfg(test)]
mod tests;
