//! Child processes that never outlive the demo, and the restart loop that plays
//! the service manager.
//!
//! Every child is started in its own process group (so a terminal's Ctrl-C
//! reaches only the demo, which then stops the children in order) and with
//! `PR_SET_PDEATHSIG = SIGKILL` (so the kernel kills it if the demo dies without
//! cleaning up, even by SIGKILL).

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Guarded {
    child: Option<Child>,
}

impl Guarded {
    /// Spawns `cmd` in its own process group, to die with the spawning thread.
    pub fn spawn(cmd: &mut Command) -> io::Result<Guarded> {
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(Guarded {
            child: Some(cmd.spawn()?),
        })
    }

    /// The child's PID (0 once it was reaped by [`close`](Self::close)).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its exit status if it has exited (reaps it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }

    /// Sends `sig` to the child if it has not been reaped.
    pub fn signal(&mut self, sig: i32) {
        if let Some(c) = self.child.as_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                // SAFETY: plain syscall on the PID of a live child we have not reaped.
                unsafe { libc::kill(c.id() as libc::pid_t, sig) };
            }
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; reaps. Idempotent.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.try_wait() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.close()
    }

    /// SIGKILL and reap. Idempotent; `Drop` calls it.
    pub fn close(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.close();
    }
}

/// How an exit status reads in the timeline: "exit status 3", "killed by SIGKILL".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by {}", signal_name(s)),
        _ => status.to_string(),
    }
}

/// The name of the usual signals, else `signal N`.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        s => format!("signal {s}"),
    }
}

/// What a [`Supervisor`] reports, each with the instant it saw it.
#[derive(Debug, Clone)]
pub enum SupervisorEvent {
    /// A new incarnation runs.
    Started {
        /// The supervised name.
        name: String,
        /// Its PID.
        pid: u32,
        /// 1 for the first start, 2 after the first restart, ...
        incarnation: u32,
    },
    /// The incarnation exited (by itself or killed by someone else).
    Exited {
        /// The supervised name.
        name: String,
        /// The PID that exited.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// The program could not be started; retried after the restart delay.
    SpawnFailed {
        /// The supervised name.
        name: String,
        /// Why.
        error: String,
    },
}

/// Keeps one program running like systemd's `Restart=always`: when it exits, for
/// any reason, it is started again after `restart_delay`. Stopping the
/// supervisor (or dropping it) kills the current incarnation.
#[derive(Debug)]
pub struct Supervisor {
    name: String,
    stop: Arc<AtomicBool>,
    pid: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts the restart loop on its own thread. `make` builds a fresh command
    /// for each incarnation; events go to `tx` with the instant they were seen.
    pub fn start(
        name: &str,
        make: impl FnMut() -> Command + Send + 'static,
        restart_delay: Duration,
        tx: Sender<(Instant, SupervisorEvent)>,
    ) -> io::Result<Supervisor> {
        let stop = Arc::new(AtomicBool::new(false));
        let pid = Arc::new(AtomicU32::new(0));
        let ctx = Loop {
            name: name.to_owned(),
            stop: stop.clone(),
            pid: pid.clone(),
            restart_delay,
            tx,
        };
        let thread = std::thread::Builder::new()
            .name(format!("supervise-{name}"))
            .spawn(move || ctx.run(make))?;
        Ok(Supervisor {
            name: name.to_owned(),
            stop,
            pid,
            thread: Some(thread),
        })
    }

    /// The supervised name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// PID of the incarnation running now, if any.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|p| *p != 0)
    }

    /// Stops restarting, kills the current incarnation and waits. Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Loop {
    name: String,
    stop: Arc<AtomicBool>,
    pid: Arc<AtomicU32>,
    restart_delay: Duration,
    tx: Sender<(Instant, SupervisorEvent)>,
}

impl Loop {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn report(&self, ev: SupervisorEvent) {
        // The receiver may be gone while the demo shuts down; nothing to tell then.
        let _ = self.tx.send((Instant::now(), ev));
    }

    fn run(self, mut make: impl FnMut() -> Command) {
        let mut incarnation = 0;
        while !self.stopping() {
            match Guarded::spawn(&mut make()) {
                Ok(child) => {
                    incarnation += 1;
                    self.watch(child, incarnation);
                }
                Err(e) => self.report(SupervisorEvent::SpawnFailed {
                    name: self.name.clone(),
                    error: e.to_string(),
                }),
            }
            self.pause();
        }
    }

    /// Waits for the child to exit or for the stop request (then kills it).
    fn watch(&self, mut child: Guarded, incarnation: u32) {
        let pid = child.pid();
        self.pid.store(pid, Ordering::SeqCst);
        self.report(SupervisorEvent::Started {
            name: self.name.clone(),
            pid,
            incarnation,
        });
        loop {
            if self.stopping() {
                self.pid.store(0, Ordering::SeqCst);
                child.stop(Duration::from_millis(500));
                return;
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.pid.store(0, Ordering::SeqCst);
                    self.report(SupervisorEvent::Exited {
                        name: self.name.clone(),
                        pid,
                        status,
                    });
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    self.report(SupervisorEvent::SpawnFailed {
                        name: self.name.clone(),
                        error: format!("waiting for pid {pid}: {e}"),
                    });
                    child.close();
                    self.pid.store(0, Ordering::SeqCst);
                    return;
                }
            }
        }
    }

    fn pause(&self) {
        let end = Instant::now() + self.restart_delay;
        while !self.stopping() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
