//! Helpers for the workspace's tests: find (and build once) the workspace's
//! binaries, run a `fims_server` in its own temp directory, and make sure every
//! child process dies with the test.
//!
//! Tests never use the fixed default socket path: every broker here lives in a
//! fresh temp directory, so tests run in parallel. [`fake_broker`] records the
//! exact datagrams a client sends, for what a real broker does not show.

pub mod alloc;
pub mod fake_broker;
pub mod scrape;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The target profile directory the running test binary lives in
/// (`target/debug` or `target/release`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary has a path");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Builds what `cargo test --workspace` builds (every library, binary and
/// example, with the workspace's unified features), once per test process.
///
/// Building single packages (`cargo build -p X`) from inside a workspace test run
/// would resolve other features, rebuild shared crates under new hashes and swap
/// the binaries under the feet of concurrently running tests; this build is a no-op
/// when the outer run is `cargo test --workspace`, and builds the rest otherwise.
fn build_workspace() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile = profile_dir();
        let target = profile
            .parent()
            .expect("profile dir has a parent")
            .to_path_buf();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["test", "--workspace", "--no-run", "--quiet"]);
        if profile.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        cmd.env("CARGO_TARGET_DIR", &target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null());
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "cargo test --workspace --no-run failed");
    });
}

fn build_once(what: &str, out: PathBuf) -> PathBuf {
    build_workspace();
    assert!(
        out.exists(),
        "{what}: {} missing after the workspace build",
        out.display()
    );
    out
}

/// Path of binary `bin` of workspace package `package`, built if needed (once per test process).
pub fn bin(package: &str, bin: &str) -> PathBuf {
    build_once(
        &format!("binary {bin} of {package}"),
        profile_dir().join(bin),
    )
}

/// Path of example `example` of workspace package `package`, built if needed.
pub fn example(package: &str, example: &str) -> PathBuf {
    build_once(
        &format!("example {example} of {package}"),
        profile_dir().join("examples").join(example),
    )
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Spawns `cmd`.
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        ChildGuard(cmd.spawn().expect("spawn child"))
    }
    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
    /// Sends `sig` to the child.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall on the PID of a child we own and have not reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, sig) };
    }
    /// Waits up to `timeout` for the child to exit; its status if it did.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads a value with `get` every 20 ms until `cond` holds for it, and
/// returns it; panics after `timeout` naming `what` and the last value read.
pub fn poll_until<T: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut get: impl FnMut() -> Option<T>,
    cond: impl Fn(&T) -> bool,
) -> T {
    let end = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < end {
        if let Some(v) = get() {
            if cond(&v) {
                return v;
            }
            last = Some(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}: last value {last:?}");
}

/// A `fims_server` in its own temp directory, killed when dropped.
#[derive(Debug)]
pub struct Broker {
    dir: tempfile::TempDir,
    socket: PathBuf,
    args: Vec<String>,
    child: Option<ChildGuard>,
}

impl Broker {
    /// Starts a broker with default settings and waits until it accepts connections.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts a broker with extra command-line arguments.
    pub fn start_with(args: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("fims.sock");
        let mut b = Broker {
            dir,
            socket,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        b.restart();
        b
    }

    /// The broker's socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The temp directory the socket lives in (for other files of the test).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's PID, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// Kills the broker (SIGKILL, like a crash) and waits for it to exit.
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Stops the broker with SIGTERM and returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        c.signal(libc::SIGTERM);
        c.wait_timeout(Duration::from_secs(10))
    }

    /// (Re)starts the broker on the same socket path and waits until it accepts.
    pub fn restart(&mut self) {
        self.child = None;
        let exe = bin("fims-server", "fims_server");
        let child = ChildGuard::spawn(
            Command::new(exe)
                .arg("--socket")
                .arg(&self.socket)
                .args(&self.args)
                .stdin(Stdio::null()),
        );
        self.child = Some(child);
        let sock = self.socket.clone();
        let up = wait_for(Duration::from_secs(20), || seqpacket_accepts(&sock));
        assert!(
            up,
            "fims_server did not come up at {}",
            self.socket.display()
        );
    }
}

/// Whether a `SOCK_SEQPACKET` listener accepts at `path`.
pub fn seqpacket_accepts(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: plain syscalls on a descriptor we own and close.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let rc = libc::connect(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        libc::close(fd);
        rc == 0
    }
}

/// Path of `file` (e.g. `libcops_responder.a`) after building the workspace:
/// in the profile's `deps/` directory, which the workspace build always
/// refreshes (C libraries of crates with a `cdylib`/`staticlib` type carry no
/// hash in their names). The copy cargo puts in the profile directory itself is
/// only refreshed by a `cargo build` of that package, so it can be stale; it is
/// used only when `deps/` has none.
pub fn lib(package: &str, file: &str) -> PathBuf {
    build_workspace();
    let deps = profile_dir().join("deps").join(file);
    let out = if deps.exists() {
        deps
    } else {
        profile_dir().join(file)
    };
    build_once(&format!("library {file} of {package}"), out)
}
