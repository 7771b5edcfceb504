//! A pinned process: its PID plus what proves it is still the same process
//! (a pidfd where the kernel has them, and the start time in every case), and
//! signals that can only reach that process.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::procfs::read_stat;
use crate::identity::{pid_rule, PidRefusal, SignalRefusal};

/// A pinned process.
#[derive(Debug)]
pub struct Identity {
    pid: u32,
    start_time: u64,
    pidfd: Option<OwnedFd>,
    uids: (u32, u32),
}

impl Identity {
    /// Pins `pid` (after [`pid_rule`]) with a pidfd and its start time; a
    /// process that is gone or a zombie is refused. The identity checks of
    /// [`crate::kill::KillLayer`] come on top of this.
    pub fn pin(pid: u32, own: u32) -> Result<Identity, PidRefusal> {
        Identity::pin_with(pid, own, true)
    }

    /// As [`pin`](Self::pin); `use_pidfd` false pins by start time only.
    pub fn pin_with(pid: u32, own: u32, use_pidfd: bool) -> Result<Identity, PidRefusal> {
        let pid = pid_rule(i64::from(pid), own)?;
        // The pidfd first: the /proc reads that follow are then checked
        // against it (a PID reused in between shows as an exited pidfd).
        let pidfd = if use_pidfd { pidfd_open(pid)? } else { None };
        let stat = read_stat(pid).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PidRefusal::NoSuchProcess,
            _ => PidRefusal::Os(format!("reading /proc/{pid}/stat: {e}")),
        })?;
        if matches!(stat.state, 'Z' | 'X' | 'x') {
            return Err(PidRefusal::Zombie);
        }
        Ok(Identity {
            pid,
            start_time: stat.start_time,
            pidfd,
            uids: (u32::MAX, u32::MAX),
        })
    }

    /// An identity from parts (tests: a start time that does not match).
    pub fn from_parts(pid: u32, start_time: u64, pidfd: Option<OwnedFd>) -> Identity {
        Identity {
            pid,
            start_time,
            pidfd,
            uids: (u32::MAX, u32::MAX),
        }
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The start time pinned (clock ticks since boot).
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// Real and effective uid when pinned.
    pub fn uids(&self) -> (u32, u32) {
        self.uids
    }

    pub(super) fn set_uids(&mut self, uids: (u32, u32)) {
        self.uids = uids;
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
    /// With a pidfd, its readiness says it (the pidfd names the process, not
    /// the PID); without, the start time and state from `/proc/<pid>/stat`.
    pub fn exited(&self) -> bool {
        if let Some(fd) = &self.pidfd {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, zero timeout.
            let n = unsafe { libc::poll(&mut p, 1, 0) };
            return n != 0; // readable (exited), or an error: not provably running
        }
        match read_stat(self.pid) {
            Ok(s) => s.start_time != self.start_time || matches!(s.state, 'Z' | 'X' | 'x'),
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
        match err.raw_os_error() {
            Some(libc::ESRCH) => Err(SignalRefusal::IdentityGone),
            // Said in the event, so that an operator knows what to grant.
            Some(libc::EPERM) => Err(SignalRefusal::Os(format!(
                "signal: {err}; {}",
                NO_KILL_NOTE
            ))),
            _ => Err(SignalRefusal::Os(format!("signal: {err}"))),
        }
    }
}

/// Why the kernel refuses a signal with `EPERM`: COPS runs as another user
/// than the process, without `CAP_KILL`.
pub(super) const NO_KILL_NOTE: &str =
    "signalling a process of another user needs CAP_KILL (docs/systemd.md, \"COPS without root\")";

/// `pidfd_open(2)`: `Ok(None)` where the kernel has no pidfds (the start time
/// then pins the identity alone); no such process is a refusal.
pub(super) fn pidfd_open(pid: u32) -> Result<Option<OwnedFd>, PidRefusal> {
    // SAFETY: plain syscall; on success we own the returned descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ESRCH) => Err(PidRefusal::NoSuchProcess),
            _ => Ok(None),
        };
    }
    // SAFETY: fd is a fresh descriptor returned to us by the kernel.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}
