//! A restart supervisor per monitored process (what systemd's `Restart=always`
//! does on a site) that records every death: PID, exit time, signal or code.
//!
//! The exit is seen with `waitid(WNOWAIT)`, so the time is the kernel's and the
//! child is not reaped until the record is made under the lock that also guards
//! every signal the suite sends: the suite can never signal a PID that was
//! reaped and handed to another process.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the supervisor waits before a restart (systemd's `RestartSec=`).
pub const RESTART_DELAY: Duration = Duration::from_millis(20);

/// One end of one incarnation.
#[derive(Debug, Clone, Copy)]
pub struct Death {
    /// Its PID.
    pub pid: u32,
    /// When the kernel saw it exit (as seen by `waitid`).
    pub at: Instant,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
}

#[derive(Default)]
struct Shared {
    stop: bool,
    /// The running (not yet reaped) incarnation.
    current: Option<u32>,
    deaths: Vec<Death>,
}

/// A restart loop around one command.
pub struct Supervised {
    shared: Arc<Mutex<Shared>>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panicking test thread must not hide the records from the teardown.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocks until `pid` (our unreaped child) has exited, without reaping it.
fn wait_exit_nowait(pid: u32) {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall on our own child's PID.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

impl Supervised {
    /// Starts `make()` and restarts it after every exit until [`stop`](Self::stop).
    pub fn start(make: impl Fn() -> Command + Send + 'static) -> Supervised {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stopping = Arc::new(AtomicBool::new(false));
        let (sh, stop) = (shared.clone(), stopping.clone());
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let mut child: Child = match make().spawn() {
                    Ok(c) => c,
                    Err(e) => panic!("supervisor cannot spawn: {e}"),
                };
                let pid = child.id();
                {
                    let mut s = lock(&sh);
                    s.current = Some(pid);
                    if s.stop {
                        let _ = child.kill();
                    }
                }
                wait_exit_nowait(pid);
                let at = Instant::now();
                let mut s = lock(&sh);
                let status = child.wait();
                s.current = None;
                if let Ok(status) = status {
                    s.deaths.push(Death {
                        pid,
                        at,
                        signal: status.signal(),
                        code: status.code(),
                    });
                }
                if s.stop {
                    break;
                }
                drop(s);
                std::thread::sleep(RESTART_DELAY);
            }
        });
        Supervised {
            shared,
            stopping,
            thread: Some(thread),
        }
    }

    /// The running incarnation's PID (0 between an exit and the restart).
    pub fn pid(&self) -> u32 {
        lock(&self.shared).current.unwrap_or(0)
    }

    /// Sends `sig` to the running incarnation; its PID, or `None` if none runs.
    pub fn signal(&self, sig: i32) -> Option<u32> {
        let s = lock(&self.shared);
        let pid = s.current?;
        // SAFETY: plain syscall; `pid` is our child and not reaped while we hold the lock.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
        Some(pid)
    }

    /// Every death so far.
    pub fn deaths(&self) -> Vec<Death> {
        lock(&self.shared).deaths.clone()
    }

    /// Ends the loop: no more restarts, the running incarnation is killed.
    /// Returns when it was asked to stop (deaths after that are the suite's own).
    pub fn stop(&mut self) -> Instant {
        let at = Instant::now();
        {
            let mut s = lock(&self.shared);
            if !s.stop {
                s.stop = true;
                self.stopping.store(true, Ordering::SeqCst);
                if let Some(pid) = s.current {
                    // SAFETY: our unreaped child (see `signal`); SIGKILL also ends a stopped one.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        at
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}
