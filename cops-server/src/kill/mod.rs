//! Kill safety, the OS side: believing a PID only with evidence, pinning the
//! identity at the moment a reply is read, and signalling only that identity
//! (docs/protocol/cops.md "Failure actions"; docs/cops.md "Identity checks and
//! the privileges they need").
//!
//! [`KillLayer`] is the engine's [`Verifier`]. The checks, in order (each
//! refusal is a [`PidRefusal`]); the engine applies the first two itself:
//! 1. [`crate::identity::pid_rule`]: `> 1`, a valid PID, not COPS's own;
//! 2. not pinned for another configured process;
//! 3. it exists and is not a zombie, and is a process (not a thread);
//!    its pidfd is opened first (Linux >= 5.3), then `/proc/<pid>/stat` read;
//! 4. it started no later than the reply was received (`/proc/<pid>/stat`
//!    start time against the kernel's receive stamp): a PID reused since is
//!    not the one that answered. When it started in an earlier clock tick
//!    than the round's request went out, it held the PID when the reply was
//!    written, so it is the one that answered; otherwise the engine waits for
//!    it to answer a later round before it may kill it;
//! 5. its owner (real or effective uid, `/proc/<pid>/status`) is the user the
//!    broker stamped on the reply (or that user is root), when stamped, and
//!    `expectedUser`, when set;
//! 6. `expectedExe`: `/proc/<pid>/exe`, the full path when a path is
//!    configured (the last component for a bare name); without access to it,
//!    the command name (`comm`) instead, and the event says so;
//! 7. it holds a connection to the FIMS broker's socket ([`bus`]): its
//!    `/proc/<pid>/fd` sockets, whose peers `sock_diag` names; without access to
//!    `/proc/<pid>/fd` the check is skipped and the event says so;
//! 8. the pidfd still shows the process running (the reads above were of it).
//!
//! Checks 3-5 read world-readable files; 6 and 7 need ptrace-read access to a
//! process of another user (`CAP_SYS_PTRACE` or the same user), and 7 also
//! `CAP_DAC_READ_SEARCH` to list its descriptors. A check skipped for want of
//! a privilege is named in the pin ([`Pinned::unchecked`]) and again in the
//! signal's outcome, so the kill event says what the PID was believed on.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::fd::RawFd;

use crate::config::Signal;
use crate::identity::{
    pid_rule, Check, ExitCheck, PidRefusal, PinOutcome, PinRequest, Pinned, SignalOutcome,
    SignalRefusal, Unchecked, Verifier,
};

pub mod bus;
pub mod cpu;
mod identity;
pub mod procfs;
mod users;

pub use identity::Identity;
use procfs::{
    boot_ticks, comm_matches, evidence, exe_matches, exe_path, read_stat, read_status,
    socket_inodes, Stat,
};
pub use users::Users;

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

const PTRACE_NOTE: &str = "needs ptrace-read access: the same user, or CAP_SYS_PTRACE";

/// A pinned identity and the checks that could not be made when it was pinned.
#[derive(Debug)]
struct Pin {
    id: Identity,
    unchecked: Vec<Unchecked>,
    /// Scheduler times since the first missed heartbeat of the current series
    /// ([`Action::Watch`](crate::engine::Action::Watch)): what a verdict
    /// compares against to tell a starved process from a hung one.
    cpu: Option<cpu::CpuSample>,
}

/// The runtime's kill layer: pinned identities by (process, pid), the checks
/// that pin them, and the OS side of the engine's actions.
#[derive(Debug)]
pub struct KillLayer {
    own_pid: u32,
    dry_run: bool,
    pinned: HashMap<(usize, u32), Pin>,
    /// Most pidfds to hold: the descriptor limit less a reserve for everything
    /// else (sockets, /proc reads). Past it, identities are pinned by start time.
    max_pidfds: usize,
    pidfds: usize,
    /// The netlink socket for `sock_diag` (opened on first use).
    diag: Option<bus::SockDiag>,
    /// The broker's socket, learned from COPS's own connection; or why not.
    bus: Result<bus::BusId, String>,
    users: Users,
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
            diag: None,
            bus: Err("not connected to the broker yet".into()),
            users: Users::default(),
        }
    }

    /// Learns the broker's socket from `fd`, COPS's own connection to it
    /// (after every connect: a restarted broker has a new socket file).
    pub fn set_bus(&mut self, fd: RawFd) {
        self.bus = match self.diag() {
            Ok(d) => d.bus_of(fd).map_err(|e| format!("sock_diag: {e}")),
            Err(e) => Err(e),
        };
        if let Err(e) = &self.bus {
            tracing::warn!(error = %e, "the FIMS bus check cannot be made");
        }
    }

    fn diag(&mut self) -> Result<&mut bus::SockDiag, String> {
        if self.diag.is_none() {
            self.diag = Some(bus::SockDiag::open().map_err(|e| format!("sock_diag: {e}"))?);
        }
        self.diag.as_mut().ok_or_else(|| "sock_diag".to_string())
    }

    /// Number of pinned identities.
    pub fn pinned(&self) -> usize {
        self.pinned.len()
    }

    /// The checks of the module documentation; the identity and the checks
    /// that could not be made, or why the PID is not believed.
    fn check(
        &mut self,
        req: &PinRequest<'_>,
    ) -> Result<(Identity, Vec<Unchecked>, bool), PidRefusal> {
        let pid = pid_rule(i64::from(req.pid), self.own_pid)?;
        let use_pidfd = self.pidfds < self.max_pidfds;
        let mut id = Identity::pin_with(pid, self.own_pid, use_pidfd)?;
        if boot_ticks(req.received).is_some_and(|r| id.start_time() > r) {
            return Err(PidRefusal::StartedAfterReply);
        }
        let before_round = boot_ticks(req.round_sent).is_some_and(|r| id.start_time() < r);
        let status = read_status(pid).map_err(|e| os_refusal(pid, "status", &e))?;
        if status.tgid != pid {
            return Err(PidRefusal::Thread);
        }
        let uids = status.uids;
        id.set_uids(uids);
        if !req.sender.is_empty() && !self.sent_by_owner(req.sender, uids) {
            let sender = req.sender.to_owned();
            return Err(PidRefusal::NotTheSender { uids, sender });
        }
        if let Some(u) = req.expected_user {
            if !self.user_is(u, uids) {
                let expected = u.to_owned();
                return Err(PidRefusal::NotExpectedUser { uids, expected });
            }
        }
        let mut unchecked = Vec::new();
        if let Some(e) = req.expected_exe {
            let stat = read_stat(pid).map_err(|err| os_refusal(pid, "stat", &err))?;
            if let Some(u) = exe_check(pid, e, &stat).map_err(|actual| PidRefusal::ExeMismatch {
                expected: e.to_owned(),
                actual,
            })? {
                unchecked.push(u);
            }
        }
        if let Some(u) = self.bus_check(pid)? {
            unchecked.push(u);
        }
        if id.exited() {
            return Err(PidRefusal::NoSuchProcess);
        }
        Ok((id, unchecked, before_round))
    }

    /// Check 7: does `pid` hold a connection to the broker's socket.
    fn bus_check(&mut self, pid: u32) -> Result<Option<Unchecked>, PidRefusal> {
        let skipped = |why: String| {
            Ok(Some(Unchecked {
                check: Check::Bus,
                why,
            }))
        };
        let inodes = match socket_inodes(pid) {
            Ok(v) => v,
            // The error names the refused step (listing, or reading a link)
            // and the privilege it needs.
            Err(e) if e.kind() == ErrorKind::PermissionDenied => return skipped(e.to_string()),
            Err(e) => return Err(os_refusal(pid, "fd", &e)),
        };
        let bus = match &self.bus {
            Ok(b) => b.clone(),
            Err(why) => return skipped(why.clone()),
        };
        let diag = match self.diag() {
            Ok(d) => d,
            Err(why) => return skipped(why),
        };
        match diag.connected_to(&bus, &inodes) {
            Ok(true) => Ok(None),
            Ok(false) if inodes.len() > bus::MAX_SOCKETS => skipped(format!(
                "{} sockets; only the first {} were looked at",
                inodes.len(),
                bus::MAX_SOCKETS
            )),
            Ok(false) => Err(PidRefusal::NotOnBus),
            Err(e) => skipped(format!("sock_diag: {e}")),
        }
    }
}

/// Check 6: `Ok(None)` matched, `Ok(Some(note))` matched by the command name
/// only (no access to `/proc/<pid>/exe`), `Err(actual)` does not match.
fn exe_check(pid: u32, expected: &str, stat: &Stat) -> Result<Option<Unchecked>, String> {
    match exe_path(pid) {
        Ok(path) if exe_matches(expected, &path) => Ok(None),
        Ok(path) => Err(path),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            if comm_matches(expected, &stat.comm) {
                Ok(Some(Unchecked {
                    check: Check::Exe,
                    why: format!(
                        "/proc/{pid}/exe: {e}; {PTRACE_NOTE}; the command name {:?} matched instead",
                        stat.comm
                    ),
                }))
            } else {
                Err(format!("command name {:?}", stat.comm))
            }
        }
        Err(e) => Err(format!("no readable executable ({e})")),
    }
}

fn os_refusal(pid: u32, file: &str, e: &std::io::Error) -> PidRefusal {
    match e.kind() {
        ErrorKind::NotFound => PidRefusal::NoSuchProcess,
        _ => PidRefusal::Os(format!("reading /proc/{pid}/{file}: {e}")),
    }
}

impl Verifier for KillLayer {
    fn pin(&mut self, req: &PinRequest<'_>) -> PinOutcome {
        let (id, unchecked, started_before_round) = match self.check(req) {
            Ok(x) => x,
            Err(why) => return PinOutcome::Refused(why),
        };
        let uids = id.uids();
        self.pidfds += usize::from(id.has_pidfd());
        let pin = Pin {
            id,
            unchecked: unchecked.clone(),
            cpu: None,
        };
        if let Some(old) = self.pinned.insert((req.process, req.pid), pin) {
            self.pidfds -= usize::from(old.id.has_pidfd());
        }
        PinOutcome::Pinned(Pinned {
            uids,
            unchecked,
            started_before_round,
        })
    }

    fn alive(&mut self, process: usize, pid: u32) -> bool {
        self.pinned
            .get(&(process, pid))
            .is_some_and(|p| !p.id.exited())
    }

    fn unpin(&mut self, process: usize, pid: u32) {
        if let Some(old) = self.pinned.remove(&(process, pid)) {
            self.pidfds -= usize::from(old.id.has_pidfd());
        }
    }

    fn sent_by_owner(&mut self, username: &str, uids: (u32, u32)) -> bool {
        self.users
            .uid(username)
            .is_some_and(|u| u == 0 || u == uids.0 || u == uids.1)
    }
}

impl KillLayer {
    /// Whether `user` (a name or a uid) is one of `uids`.
    fn user_is(&mut self, user: &str, uids: (u32, u32)) -> bool {
        self.users
            .uid(user)
            .is_some_and(|u| u == uids.0 || u == uids.1)
    }
}

impl KillLayer {
    /// [`Action::Signal`](crate::engine::Action::Signal): verifies the
    /// identity and `expected_exe` again, gathers the evidence, then signals
    /// (unless dry run). The outcome names the checks that could not be made:
    /// `expectedExe` as just re-checked, the others as when the PID was pinned
    /// (the bus check is not repeated: the broker may have dropped a hung
    /// process's connection, which does not make it another process).
    pub fn signal(
        &mut self,
        process: usize,
        pid: u32,
        signal: Signal,
        expected_exe: Option<&str>,
    ) -> SignalOutcome {
        let Some(Pin { id, unchecked, cpu }) = self.pinned.get_mut(&(process, pid)) else {
            return SignalOutcome::Refused(SignalRefusal::NotPinned);
        };
        if let Err(e) = id.verify() {
            return SignalOutcome::Refused(e);
        }
        // Starved, not hung: hold the signal and measure again from now.
        let mut cpu_use = None;
        if let Some(before) = cpu.take() {
            let now = cpu::sample(pid);
            cpu_use = now.as_ref().and_then(|n| cpu::measure(&before, n));
            if let Some(u) = cpu_use.filter(cpu::starved) {
                *cpu = now;
                return SignalOutcome::Starved(u);
            }
        }
        let mut unchecked: Vec<Unchecked> = unchecked
            .iter()
            .filter(|u| u.check != Check::Exe || expected_exe.is_none())
            .cloned()
            .collect();
        if let Some(expected) = expected_exe {
            let stat = match read_stat(pid) {
                Ok(s) => s,
                Err(_) => return SignalOutcome::Refused(SignalRefusal::IdentityGone),
            };
            match exe_check(pid, expected, &stat) {
                Ok(None) => {}
                Ok(Some(u)) => unchecked.push(u),
                Err(actual) => {
                    return SignalOutcome::Refused(SignalRefusal::ExeMismatch {
                        expected: expected.into(),
                        actual,
                    })
                }
            }
        }
        let mut evidence = evidence(pid);
        if let Some(u) = cpu_use {
            evidence = format!("{evidence}; since the first miss it {u}");
        }
        if self.dry_run {
            return SignalOutcome::DryRun { evidence };
        }
        match id.signal(signal.number) {
            Ok(()) => SignalOutcome::Delivered {
                evidence,
                unchecked,
            },
            Err(e) => SignalOutcome::Refused(e),
        }
    }

    /// [`Action::Watch`](crate::engine::Action::Watch): the scheduler times of
    /// the pinned process now, the baseline of its next signal's starvation check.
    pub fn watch(&mut self, process: usize, pid: u32) {
        if let Some(pin) = self.pinned.get_mut(&(process, pid)) {
            pin.cpu = if pin.id.exited() {
                None
            } else {
                cpu::sample(pid)
            };
        }
    }

    /// [`Action::CheckExit`](crate::engine::Action::CheckExit).
    pub fn check_exit(&mut self, process: usize, pid: u32) -> ExitCheck {
        match self.pinned.get(&(process, pid)) {
            Some(p) if !p.id.exited() => ExitCheck::StillAlive {
                evidence: evidence(pid),
            },
            _ => ExitCheck::Exited,
        }
    }

    /// [`Action::Unpin`](crate::engine::Action::Unpin).
    pub fn forget(&mut self, process: usize, pid: u32) {
        Verifier::unpin(self, process, pid);
    }
}

#[cfg(test)]
mod tests;
