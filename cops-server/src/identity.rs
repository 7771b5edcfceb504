//! The typed edge between the engine and the OS: the one pure PID rule, and the
//! answers the kill layer gives to the engine's questions (pin, signal, exit).
//!
//! Pure: no I/O. The engine applies [`pid_rule`] to every PID a reply carries;
//! the kill layer ([`crate::kill`]) applies it again before it touches `/proc`,
//! so a PID that fails it is never looked at, let alone signalled.

use std::fmt;

/// Why a PID from a reply is not believed (docs/cops.md, "Identity checks").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidRefusal {
    /// 0, 1 or negative: never a monitored process.
    NotAboveOne(i64),
    /// Larger than any PID.
    OutOfRange(i64),
    /// COPS's own PID.
    OwnPid,
    /// No such process (or it exited while being pinned).
    NoSuchProcess,
    /// The process is a zombie: it has exited already.
    Zombie,
    /// Any other failure of the kernel or /proc, with what was tried.
    Os(String),
}

impl fmt::Display for PidRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidRefusal::NotAboveOne(_) => write!(f, "PIDs <= 1 are never accepted"),
            PidRefusal::OutOfRange(_) => write!(f, "PID out of range"),
            PidRefusal::OwnPid => write!(f, "that is COPS's own PID"),
            PidRefusal::NoSuchProcess => write!(f, "no such process"),
            PidRefusal::Zombie => write!(f, "the process has exited (zombie)"),
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

/// The kill layer's answer to a pin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// The identity is pinned (pidfd and start time).
    Pinned,
    /// Not believed.
    Refused(PidRefusal),
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
        /// What `/proc/<pid>/exe` names.
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
    },
    /// `--dry-run`: logged, not delivered.
    DryRun {
        /// Thread states and wait channels.
        evidence: String,
    },
    /// Not delivered.
    Refused(SignalRefusal),
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
}
