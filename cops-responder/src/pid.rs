//! The process's PID without a system call per answer, still right after a fork.
//!
//! `getpid(2)` is a real system call (glibc stopped caching it), and it was most
//! of the cost of answering `get <uri>/cops`. The PID is cached on first use and
//! a `pthread_atfork` child handler forgets it, so a forked child reads its own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// The cached PID; 0 means "read it again".
static PID: AtomicU32 = AtomicU32::new(0);
static FORK_HOOK: Once = Once::new();

extern "C" fn forget_after_fork() {
    PID.store(0, Ordering::Relaxed);
}

/// The current PID of this process (correct in a forked child too).
pub(crate) fn current() -> u32 {
    FORK_HOOK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic (async-signal-safe).
        // If registration fails the cache is never trusted.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_after_fork)) };
        if rc != 0 {
            PID.store(u32::MAX, Ordering::Relaxed);
        }
    });
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            // Keep u32::MAX (no fork hook) sticky: never cache then.
            let _ = PID.compare_exchange(0, pid, Ordering::Relaxed, Ordering::Relaxed);
            pid
        }
        u32::MAX => std::process::id(),
        pid => pid,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cached_pid_is_ours() {
        assert_eq!(super::current(), std::process::id());
        assert_eq!(super::current(), std::process::id());
    }
}
