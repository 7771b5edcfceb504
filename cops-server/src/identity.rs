//! The typed edge between the engine and the OS: the one pure PID rule, the
//! [`Verifier`] port through which the engine has a reply's PID checked and
//! pinned at the moment the reply is read, and the answers the kill layer gives
//! (pin, signal, exit).
//!
//! Pure: no I/O. The engine applies [`pid_rule`] to every PID a reply carries;
//! the kill layer ([`crate::kill`]) applies it again before it touches `/proc`,
//! so a PID that fails it is never looked at, let alone signalled.

use std::fmt;
use std::time::Instant;

/// Why a PID from a reply is not believed (docs/cops.md, "Identity checks and
/// the privileges they need"), in the order the checks are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidRefusal {
    /// 0, 1 or negative: never a monitored process.
    NotAboveOne(i64),
    /// Larger than any PID.
    OutOfRange(i64),
    /// COPS's own PID.
    OwnPid,
    /// Pinned already for another configured process (a reply for A naming
    /// B's PID must not get B killed as A).
    PinnedForOther {
        /// The other process.
        process: String,
    },
    /// No such process (or it exited while being checked).
    NoSuchProcess,
    /// The process is a zombie: it has exited already.
    Zombie,
    /// The PID names a thread, not a process.
    Thread,
    /// The process started after the reply was received: it is not the one
    /// that answered (the PID was reused).
    StartedAfterReply,
    /// Its owner is not the user the broker stamped on the reply (nor is
    /// that user root).
    NotTheSender {
        /// The process's real and effective uid.
        uids: (u32, u32),
        /// The reply's `username`.
        sender: String,
    },
    /// Its owner is not `expectedUser`.
    NotExpectedUser {
        /// The process's real and effective uid.
        uids: (u32, u32),
        /// `expectedUser`, as configured.
        expected: String,
    },
    /// Its executable is not `expectedExe`.
    ExeMismatch {
        /// `expectedExe`.
        expected: String,
        /// What `/proc/<pid>/exe` (or, without access to it, the command name) says.
        actual: String,
    },
    /// It holds no connection to the FIMS broker's socket.
    NotOnBus,
    /// Too many new PIDs were checked for this process in this round already.
    CheckBudgetSpent,
    /// Any other failure of the kernel or /proc, with what was tried.
    Os(String),
}

impl fmt::Display for PidRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidRefusal::NotAboveOne(_) => write!(f, "PIDs <= 1 are never accepted"),
            PidRefusal::OutOfRange(_) => write!(f, "PID out of range"),
            PidRefusal::OwnPid => write!(f, "that is COPS's own PID"),
            PidRefusal::PinnedForOther { process } => {
                write!(f, "that PID is pinned for {process}")
            }
            PidRefusal::NoSuchProcess => write!(f, "no such process"),
            PidRefusal::Zombie => write!(f, "the process has exited (zombie)"),
            PidRefusal::Thread => write!(f, "that is a thread, not a process"),
            PidRefusal::StartedAfterReply => write!(
                f,
                "that process started after the reply was received (the PID was reused)"
            ),
            PidRefusal::NotTheSender { uids, sender } => write!(
                f,
                "owned by uid {} (effective {}), but the reply came from user {sender:?}",
                uids.0, uids.1
            ),
            PidRefusal::NotExpectedUser { uids, expected } => write!(
                f,
                "owned by uid {} (effective {}), not expectedUser {expected:?}",
                uids.0, uids.1
            ),
            PidRefusal::ExeMismatch { expected, actual } => {
                write!(f, "runs {actual:?}, not expectedExe {expected:?}")
            }
            PidRefusal::NotOnBus => write!(
                f,
                "that process holds no connection to the FIMS broker's socket"
            ),
            PidRefusal::CheckBudgetSpent => write!(
                f,
                "too many new PIDs answered for this process in this round; not checked"
            ),
            PidRefusal::Os(what) => write!(f, "{what}"),
        }
    }
}

/// The pure rule every PID passes first: `> 1`, a valid PID, not COPS's own.
pub fn pid_rule(pid: i64, own: u32) -> Result<u32, PidRefusal> {
    if pid <= 1 {
        return Err(PidRefusal::NotAboveOne(pid));
    }
    let p = u32::try_from(pid)
        .ok()
        .filter(|&p| p <= i32::MAX as u32)
        .ok_or(PidRefusal::OutOfRange(pid))?;
    if p == own {
        return Err(PidRefusal::OwnPid);
    }
    Ok(p)
}

/// An identity check that could not be made (no privilege, no kernel support).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchecked {
    /// Which check.
    pub check: Check,
    /// Why not, and what was done instead.
    pub why: String,
}

impl fmt::Display for Unchecked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.check, self.why)
    }
}

/// The identity checks that need more than world-readable `/proc` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// "holds a connection to the FIMS socket" (`/proc/<pid>/fd`).
    Bus,
    /// `expectedExe` against `/proc/<pid>/exe`.
    Exe,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Bus => write!(f, "on the FIMS bus"),
            Check::Exe => write!(f, "expectedExe"),
        }
    }
}

/// A pinned identity, as the engine keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// Real and effective uid when pinned: later replies naming this PID must
    /// come from this user (when the broker stamps one).
    pub uids: (u32, u32),
    /// Checks that could not be made; the others passed.
    pub unchecked: Vec<Unchecked>,
    /// The process started in an earlier clock tick than the round's request
    /// was sent, so it held the PID when the reply was written: it is the one
    /// that answered. Otherwise (it started in the same tick or later: a PID
    /// reused between the reply and its reading cannot be ruled out) it
    /// becomes a kill target only once it answers a later round.
    pub started_before_round: bool,
}

/// The kill layer's answer to a pin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// Every check that could be made passed; the identity is pinned (pidfd
    /// where the kernel has them, and the start time).
    Pinned(Pinned),
    /// Not believed.
    Refused(PidRefusal),
}

/// A request to check and pin a PID that a reply named.
#[derive(Debug, Clone, Copy)]
pub struct PinRequest<'a> {
    /// Process index (config order).
    pub process: usize,
    /// The PID the reply carried (already through [`pid_rule`]).
    pub pid: u32,
    /// When the reply arrived (the kernel's receive time): a process started
    /// later is not the one that answered.
    pub received: Instant,
    /// When the round's request went out: a process started before it held
    /// the PID when the reply was written.
    pub round_sent: Instant,
    /// The reply's `username` as the broker stamped it (`""`: not stamped).
    pub sender: &'a str,
    /// `expectedExe`: a full path, or a bare file name.
    pub expected_exe: Option<&'a str>,
    /// `expectedUser`: a user name or a numeric uid.
    pub expected_user: Option<&'a str>,
}

/// The engine's port to the OS for identities. The runtime passes the kill
/// layer; tests pass a fake. Every call is synchronous and made while the reply
/// is being read, so no check is ever pending: a reply is believed or not
/// before the next one is looked at.
pub trait Verifier {
    /// Checks `req.pid` against the identity rules (except the ones the
    /// engine applies itself: [`pid_rule`], pinned for another process) and
    /// pins it for `req.process`.
    fn pin(&mut self, req: &PinRequest<'_>) -> PinOutcome;
    /// Whether the identity pinned for (`process`, `pid`) still runs.
    fn alive(&mut self, process: usize, pid: u32) -> bool;
    /// Forgets the identity pinned for (`process`, `pid`).
    fn unpin(&mut self, process: usize, pid: u32);
    /// Whether a reply stamped with `username` may speak for a process owned
    /// by `uids`: the user is its owner, or root (who could signal any process
    /// anyway, and whose stamp a process keeps when it drops its privileges
    /// after connecting).
    fn sent_by_owner(&mut self, username: &str, uids: (u32, u32)) -> bool;
}

/// Why a signal was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalRefusal {
    /// Nothing is pinned for that process and PID.
    NotPinned,
    /// The pinned process exited, or the PID now names another process.
    IdentityGone,
    /// `/proc/<pid>/exe` is not `expectedExe`.
    ExeMismatch {
        /// `expectedExe`.
        expected: String,
        /// What `/proc/<pid>/exe` (or the command name) says.
        actual: String,
    },
    /// The kernel refused, or /proc could not be read, with what was tried.
    Os(String),
}

impl fmt::Display for SignalRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalRefusal::NotPinned => write!(f, "no pinned identity for that PID"),
            SignalRefusal::IdentityGone => write!(
                f,
                "no longer the process that was pinned (it exited or the pid was reused)"
            ),
            SignalRefusal::ExeMismatch { expected, actual } => {
                write!(f, "runs {actual:?}, not the expected {expected:?}")
            }
            SignalRefusal::Os(what) => write!(f, "{what}"),
        }
    }
}

/// What delivering a signal came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalOutcome {
    /// Delivered; `evidence` is what /proc said just before.
    Delivered {
        /// Thread states and wait channels.
        evidence: String,
        /// Checks that could not be made just before the signal.
        unchecked: Vec<Unchecked>,
    },
    /// `--dry-run`: logged, not delivered.
    DryRun {
        /// Thread states and wait channels.
        evidence: String,
    },
    /// Not delivered.
    Refused(SignalRefusal),
    /// Not delivered: the process was runnable but hardly scheduled since its
    /// first missed heartbeat (it had no CPU to answer with). The engine gives
    /// the kill back and decides again at the next missed heartbeat.
    Starved(CpuUse),
}

/// What the scheduler says a process did between two samples
/// (`/proc/<pid>/task/*/schedstat`, summed over its threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuUse {
    /// Time its threads spent runnable, waiting for a CPU (summed).
    pub waited: std::time::Duration,
    /// Time its threads spent running (summed).
    pub ran: std::time::Duration,
    /// The interval the two are measured over.
    pub over: std::time::Duration,
}

impl fmt::Display for CpuUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "waited {} ms for a CPU and ran {} ms in the last {} ms",
            self.waited.as_millis(),
            self.ran.as_millis(),
            self.over.as_millis()
        )
    }
}

/// The kill layer's answer to an exit check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitCheck {
    /// The pinned process is gone (a zombie counts as gone).
    Exited,
    /// It still runs; `evidence` is what /proc says about its threads now.
    StillAlive {
        /// Thread states and wait channels.
        evidence: String,
    },
}

/// `; not checked: on the FIMS bus (...)`, or nothing when every check was made.
pub fn unchecked_note(unchecked: &[Unchecked]) -> String {
    if unchecked.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = unchecked.iter().map(ToString::to_string).collect();
    format!("; not checked: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pure_rule() {
        const OWN: u32 = 777_777;
        assert_eq!(pid_rule(1, OWN), Err(PidRefusal::NotAboveOne(1)));
        assert_eq!(pid_rule(0, OWN), Err(PidRefusal::NotAboveOne(0)));
        assert_eq!(pid_rule(-7, OWN), Err(PidRefusal::NotAboveOne(-7)));
        assert_eq!(pid_rule(i64::from(OWN), OWN), Err(PidRefusal::OwnPid));
        assert_eq!(pid_rule(1 << 40, OWN), Err(PidRefusal::OutOfRange(1 << 40)));
        assert_eq!(
            pid_rule(i64::from(i32::MAX) + 1, OWN),
            Err(PidRefusal::OutOfRange(i64::from(i32::MAX) + 1))
        );
        assert_eq!(pid_rule(4242, OWN), Ok(4242));
    }

    #[test]
    fn unchecked_note_names_each_check() {
        assert_eq!(unchecked_note(&[]), "");
        let u = [Unchecked {
            check: Check::Bus,
            why: "/proc/42/fd: permission denied".into(),
        }];
        assert_eq!(
            unchecked_note(&u),
            "; not checked: on the FIMS bus (/proc/42/fd: permission denied)"
        );
    }
}
