//! The pieces of a site: COPS's timing and bounds, the programs, the broker,
//! decoys, and running a program as another user.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use testkit::ChildGuard;
/// COPS's timing in a run.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `fast` or `default`.
    pub name: &'static str,
    /// `heartbeatFreq`.
    pub period: Duration,
    /// `replyToGetDeadline`.
    pub deadline: Duration,
    /// `heartbeatErrorAllowance`.
    pub allowance: u32,
}

impl Timing {
    /// The CI timing: cases take seconds.
    pub const FAST: Timing = Timing {
        name: "fast",
        period: Duration::from_millis(100),
        deadline: Duration::from_millis(90),
        allowance: 3,
    };
    /// The defaults of docs/cops.md (long form only).
    pub const DEFAULT: Timing = Timing {
        name: "default",
        period: Duration::from_millis(1000),
        deadline: Duration::from_millis(900),
        allowance: 5,
    };

    /// The documented worst case from a hang to the verdict:
    /// `allowance x period + deadline` (390 ms fast, 5.9 s default).
    pub fn bound(&self) -> Duration {
        self.period * self.allowance + self.deadline
    }

    /// How long to wait for a stall's "over" event: COPS posts it once a hang
    /// window (`allowance x period`, at least 1 s) passed without disturbance;
    /// twice that plus 5 s, for a loaded host that keeps disturbing COPS a
    /// while (the wait ends as soon as the event comes).
    pub fn stall_over_wait(&self) -> Duration {
        (self.period * self.allowance).max(Duration::from_secs(1)) * 2 + Duration::from_secs(5)
    }
}

/// Added to every bound: COPS's own work, signal delivery and the supervisor
/// seeing the exit on a loaded 2-core machine. Stated in docs/RELIABILITY.md.
pub const SLACK: Duration = Duration::from_millis(150);

/// How long past its bound the suite waits for a kill before calling it missed.
pub const OBSERVE: Duration = Duration::from_secs(3);

/// The programs a site runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `fims_server`.
    pub broker: PathBuf,
    /// `cops`.
    pub cops: PathBuf,
    /// The monitored process (`test_responder`).
    pub responder: PathBuf,
    /// `faults_helper` (forger, flooder, spinner, ...).
    pub helper: PathBuf,
}

/// Environment variables that hand the paths to a copy of the suite running in
/// a PID namespace (which must not run cargo).
const BIN_VARS: [&str; 4] = [
    "COPS_FAULTS_BIN_BROKER",
    "COPS_FAULTS_BIN_COPS",
    "COPS_FAULTS_BIN_RESPONDER",
    "COPS_FAULTS_BIN_HELPER",
];

/// The programs (built once per test process, or taken from the environment).
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let env: Vec<Option<PathBuf>> = BIN_VARS
            .iter()
            .map(|v| std::env::var_os(v).map(PathBuf::from))
            .collect();
        if let [Some(b), Some(c), Some(r), Some(h)] = &env[..] {
            return Bins {
                broker: b.clone(),
                cops: c.clone(),
                responder: r.clone(),
                helper: h.clone(),
            };
        }
        Bins {
            broker: testkit::bin("fims-server", "fims_server"),
            cops: testkit::bin("cops-server", "cops"),
            responder: testkit::example("cops-server", "test_responder"),
            helper: testkit::example("cops-server", "faults_helper"),
        }
    })
}

impl Bins {
    /// The environment that hands these paths on (see [`bins`]).
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        let paths = [&self.broker, &self.cops, &self.responder, &self.helper];
        BIN_VARS
            .iter()
            .zip(paths)
            .map(|(v, p)| (*v, p.clone()))
            .collect()
    }
}

/// Whether the suite runs as root (needed for another user's processes and PID namespaces).
pub fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

/// Whether processes can be started as user `nobody` (root and `setpriv`).
pub fn can_run_as_nobody() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        is_root()
            && as_nobody(Path::new("true"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    })
}

/// The command that runs `prog` as user `nobody`.
pub fn as_nobody(prog: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(prog);
    c
}

/// A broker in its own temp directory.
pub struct Bus {
    dir: tempfile::TempDir,
    socket: PathBuf,
    child: Option<ChildGuard>,
    /// Socket open to every user (for the forger running as `nobody`).
    open: bool,
}

impl Bus {
    /// Starts a broker and waits until it accepts connections.
    pub fn start(open: bool) -> Bus {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("fims.sock");
        let mut b = Bus {
            dir,
            socket,
            child: None,
            open,
        };
        b.restart();
        b
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The temp directory (config, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends `sig` to the broker.
    /// The broker's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            c.signal(sig);
        }
    }

    /// Kills the broker (like a crash).
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// (Re)starts the broker on the same socket and waits until it accepts.
    pub fn restart(&mut self) {
        self.child = None;
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .expect("broker log");
        self.child = Some(ChildGuard::spawn(
            Command::new(&bins().broker)
                .arg("--socket")
                .arg(&self.socket)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        ));
        let sock = self.socket.clone();
        let up = testkit::wait_for(Duration::from_secs(20), || {
            testkit::seqpacket_accepts(&sock)
        });
        assert!(up, "fims_server did not come up at {}", sock.display());
        if self.open {
            let perm =
                |p: &Path, mode| std::fs::set_permissions(p, PermissionsExt::from_mode(mode));
            perm(self.dir.path(), 0o711).expect("chmod the temp dir");
            perm(&self.socket, 0o666).expect("chmod the socket");
        }
    }
}

/// A process that must never be signalled.
pub struct Decoy {
    /// What it is.
    pub label: String,
    child: Child,
}

impl Decoy {
    /// Spawns `cmd` as a decoy called `label`.
    pub fn spawn(label: &str, cmd: &mut Command) -> Decoy {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn decoy {label}: {e}"));
        Decoy {
            label: label.into(),
            child,
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Spawns `cmd` (stdout piped) and waits up to `timeout` for it to print
    /// `ready` (the helper's word for "subscribed").
    pub fn spawn_ready(label: &str, cmd: &mut Command, timeout: Duration) -> Result<Decoy, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {label}: {e}"))?;
        let out = child.stdout.take();
        let decoy = Decoy {
            label: label.into(),
            child,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut line = String::new();
            if let Some(out) = out {
                let _ = std::io::BufReader::new(out).read_line(&mut line);
            }
            let _ = tx.send(line);
        });
        match rx.recv_timeout(timeout) {
            Ok(line) if line.trim() == "ready" => Ok(decoy),
            _ => Err(format!("{label} did not get ready within {timeout:?}")),
        }
    }

    /// Whether it is still running; `Err` with how it ended if not.
    pub fn check(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(format!(
                "decoy {} (pid {}) ended: {}",
                self.label,
                self.child.id(),
                describe(st.signal(), st.code())
            )),
            Err(e) => Err(format!("decoy {}: {e}", self.label)),
        }
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "SIGKILL" / "exit code 3".
pub fn describe(signal: Option<i32>, code: Option<i32>) -> String {
    match (signal, code) {
        (Some(s), _) => format!("signal {s} ({})", signame(s)),
        (None, Some(c)) => format!("exit code {c}"),
        _ => "unknown end".into(),
    }
}

fn signame(s: i32) -> &'static str {
    match s {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGINT => "SIGINT",
        _ => "other",
    }
}
