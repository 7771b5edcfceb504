//! One real, tiny process per simulated process, each holding a connection to
//! the broker, so that every simulated process reports a PID COPS believes:
//! on the bus, owned by the sim's user, and pinned for no other process.
//!
//! The holders are `clone(CLONE_VM)` children: they share the sim's memory
//! (no page tables to copy) and run only `prctl` and `pause` on a small stack
//! of their own, so 10,000 of them cost a few hundred MB of kernel memory, not
//! gigabytes. Each inherits a copy of the descriptor table, hence the holder
//! connection; each dies with the thread that made it (`PR_SET_PDEATHSIG`).

use std::io;
use std::path::Path;

use fims::blocking::Client;

/// Stack of one holder: it calls two functions and never returns.
const STACK: usize = 64 * 1024;

/// The holders and the connection they hold.
pub struct Holders {
    /// The connection every holder holds (kept open by the sim too).
    _conn: Client,
    /// Their PIDs, in the order they were made.
    pub pids: Vec<u32>,
    /// The memory of their stacks, freed only when all are gone.
    stacks: *mut libc::c_void,
    len: usize,
}

/// What a holder runs: nothing but waiting to be killed.
extern "C" fn hold(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: raw system calls only; no allocation, no locks, no TLS besides
    // errno (not written: prctl succeeds, pause returns only by a handled
    // signal, and the holder handles none).
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        loop {
            libc::pause();
        }
    }
}

impl Holders {
    /// Connects to the broker at `socket` and makes `n` holders.
    pub fn spawn(socket: &Path, n: usize) -> io::Result<Holders> {
        let conn = Client::connect_to(socket, "cops_sim_holders").map_err(io::Error::other)?;
        let len = STACK * n.max(1);
        // SAFETY: an anonymous private mapping we own until drop.
        let stacks = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if stacks == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut h = Holders {
            _conn: conn,
            pids: Vec::with_capacity(n),
            stacks,
            len,
        };
        for i in 0..n {
            // SAFETY: the top of holder i's own stack, inside the mapping.
            let top = unsafe { (stacks as *mut u8).add(STACK * (i + 1)) } as *mut libc::c_void;
            // SAFETY: `hold` touches only its own stack; CLONE_VM shares the
            // mapping, which outlives every holder (Drop kills them first).
            let pid = unsafe {
                libc::clone(
                    hold,
                    top,
                    libc::CLONE_VM | libc::SIGCHLD,
                    std::ptr::null_mut(),
                )
            };
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            h.pids.push(pid as u32);
        }
        Ok(h)
    }

    /// Reaps the holders that died since the last call (any of them).
    pub fn reap(&self) -> Vec<u32> {
        let mut dead = Vec::new();
        loop {
            let mut status = 0;
            // SAFETY: waitpid for any child of ours, without blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return dead;
            }
            dead.push(pid as u32);
        }
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for &pid in &self.pids {
            // SAFETY: our own children, killed and reaped before their stacks go.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        for &pid in &self.pids {
            let mut status = 0;
            // SAFETY: waits for our own child (ECHILD when reaped already).
            unsafe {
                libc::waitpid(pid as libc::pid_t, &mut status, 0);
            }
        }
        // SAFETY: the mapping made in spawn; no holder runs on it any more.
        unsafe {
            libc::munmap(self.stacks, self.len);
        }
    }
}
