//! Helpers of COPS's end-to-end tests: monitored test processes under a
//! restart loop, COPS started on a generated config, its stats and log, and
//! the `/events` it posts. Only the test's own children are ever stopped or
//! killed.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fims::{blocking::Client, Method};
use serde_json::Value;
use testkit::{Broker, ChildGuard};

/// The fast timing of the end-to-end tests.
pub const PERIOD_MS: u64 = 100;
/// `replyToGetDeadline`.
pub const DEADLINE_MS: u64 = 90;
/// `heartbeatErrorAllowance`.
pub const ALLOWANCE: u64 = 3;

/// (pid, when it died, the signal that ended it).
pub type Death = (u32, Instant, Option<i32>);

/// A restart loop, like systemd's `Restart=always`: every exit is followed by a new start.
pub struct Supervised {
    stop: Arc<AtomicBool>,
    current: Arc<AtomicU32>,
    deaths: Arc<Mutex<Vec<Death>>>,
    thread: Option<JoinHandle<()>>,
}

impl Supervised {
    pub fn start(socket: &Path, uri: &str, delay_ms: u64) -> Supervised {
        let exe = testkit::example("cops-server", "test_responder");
        Supervised::start_as(socket, uri, delay_ms, exe, None)
    }

    /// As [`start`](Self::start), running `exe` (a `test_responder`), as
    /// `ids` (uid, gid) when given (the tests must run as root).
    pub fn start_as(
        socket: &Path,
        uri: &str,
        delay_ms: u64,
        exe: PathBuf,
        ids: Option<(u32, u32)>,
    ) -> Supervised {
        use std::os::unix::process::CommandExt;
        let stop = Arc::new(AtomicBool::new(false));
        let current = Arc::new(AtomicU32::new(0));
        let deaths = Arc::new(Mutex::new(Vec::new()));
        let (s, cur, d) = (stop.clone(), current.clone(), deaths.clone());
        let (socket, uri) = (socket.to_path_buf(), uri.to_owned());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let mut cmd = Command::new(&exe);
                cmd.arg("--socket")
                    .arg(&socket)
                    .args(["--uri", &uri, "--delay-ms", &delay_ms.to_string()])
                    .stdin(Stdio::null());
                if let Some((uid, gid)) = ids {
                    cmd.uid(uid).gid(gid);
                }
                let mut child: Child = cmd.spawn().expect("spawn test_responder");
                cur.store(child.id(), Ordering::SeqCst);
                // Polled, so that only this thread, which has not reaped the
                // child yet, ever signals it (its PID cannot be reused meanwhile).
                let status = loop {
                    if s.load(Ordering::SeqCst) {
                        // SAFETY: our own unreaped child: continue it if stopped.
                        unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
                        let _ = child.kill();
                        let _ = child.wait();
                        return;
                    }
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        break status;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                };
                let at = Instant::now();
                use std::os::unix::process::ExitStatusExt;
                d.lock().unwrap().push((child.id(), at, status.signal()));
            }
        });
        Supervised {
            stop,
            current,
            deaths,
            thread: Some(thread),
        }
    }

    pub fn pid(&self) -> u32 {
        self.current.load(Ordering::SeqCst)
    }

    pub fn deaths(&self) -> Vec<Death> {
        self.deaths.lock().unwrap().clone()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // The loop thread ends its own child (see `start`).
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("cops.json");
    std::fs::write(&path, body).unwrap();
    path
}

pub fn start_cops(broker: &Broker, config: &Path, extra: &[&str]) -> ChildGuard {
    let log = std::fs::File::create(broker.dir().join("cops.log")).unwrap();
    ChildGuard::spawn(
        Command::new(testkit::bin("cops-server", "cops"))
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(broker.socket())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    )
}

pub fn cops_log(broker: &Broker) -> String {
    std::fs::read_to_string(broker.dir().join("cops.log")).unwrap_or_default()
}

pub fn stats(client: &mut Client, name: &str) -> Option<Value> {
    let uri = format!("/cops/stats/{name}");
    let answer = client
        .request(Method::Get, &uri, b"", Duration::from_millis(500))
        .ok()?;
    serde_json::from_slice(&answer.body).ok()
}

pub fn wait_stats(
    client: &mut Client,
    name: &str,
    timeout: Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = stats(client, name) {
            if cond(&v) {
                return v;
            }
            if Instant::now() > end {
                panic!("timed out waiting on {name}: last stats {v}");
            }
        } else if Instant::now() > end {
            panic!("timed out waiting on {name}: no stats");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Seconds since midnight UTC of the first `cops` log line holding `needle`.
pub fn log_time_of_day(broker: &Broker, needle: &str) -> Option<f64> {
    let log = cops_log(broker);
    let line = log.lines().find(|l| l.contains(needle))?;
    // "2026-11-26T14:02:23.916097Z  WARN ..."
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let mut hms = time.trim_end_matches('Z').split(':');
    let (h, m, s): (f64, f64, f64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

/// COPS must signal within the budget (its own log says when it did); the
/// death the test observes comes a little later (signal delivery, reaping, the
/// restart loop's thread being scheduled).
pub fn check_latency(
    broker: &Broker,
    how: &str,
    pid: u32,
    hung: SystemTime,
    observed: Duration,
    budget: Duration,
) {
    let hung_tod = hung.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() % 86_400.0;
    let needle = format!("(pid {pid}) sent SIGKILL");
    // The child can die (and the test see it) before COPS has written its log line.
    let mut signal_tod = None;
    testkit::wait_for(Duration::from_secs(3), || {
        signal_tod = log_time_of_day(broker, &needle);
        signal_tod.is_some()
    });
    let signal_tod = signal_tod.expect("the kill is in the log");
    let signalled = Duration::from_secs_f64((signal_tod - hung_tod).rem_euclid(86_400.0));
    eprintln!("{how} -> SIGKILL sent after {signalled:?}, death seen after {observed:?} (budget {budget:?})");
    assert!(
        signalled <= budget,
        "{how}: hang to signal {signalled:?} > {budget:?}; log:\n{}",
        cops_log(broker)
    );
    assert!(
        observed <= budget + Duration::from_millis(500),
        "{how}: death seen after {observed:?}"
    );
}

/// Whether the tests run as root (cases with another user need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no failure mode.
    unsafe { libc::geteuid() == 0 }
}

/// A broker another user can connect to (socket 0666 in a 0755 directory).
pub fn open_broker() -> Broker {
    use std::os::unix::fs::PermissionsExt;
    let b = Broker::start_with(&["--mode", "0666"]);
    std::fs::set_permissions(b.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    b
}

/// The forger of `test_responder`: overhears `uri`'s counter and answers as
/// `name` with `pid`, first; as `uid` when given.
pub fn forger(socket: &Path, uri: &str, name: &str, pid: u32, uid: Option<u32>) -> ChildGuard {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(testkit::example("cops-server", "test_responder"));
    cmd.arg("--socket")
        .arg(socket)
        .args([
            "--uri",
            uri,
            "--forge-as",
            name,
            "--forge-pid",
            &pid.to_string(),
        ])
        .stdin(Stdio::null());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    ChildGuard::spawn(&mut cmd)
}

/// One `post /events` COPS made: (when seen, severity, message).
pub type Posted = (Instant, u64, String);

/// Collects what COPS posts to `/events`, from a thread of its own.
pub struct Events {
    seen: Arc<Mutex<Vec<Posted>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Events {
    /// Subscribes to `/events` on the broker at `socket` (reconnecting).
    pub fn listen(socket: &Path) -> Events {
        let seen: Arc<Mutex<Vec<Posted>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, path) = (seen.clone(), stop.clone(), socket.to_path_buf());
        let mut c = Client::connect_to(&path, "e2e_events").expect("events listener");
        c.subscribe(&["/events"]).expect("sub /events");
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match c.recv(Some(Duration::from_millis(50))) {
                    Ok(Some(m)) => {
                        if let Ok(v) = serde_json::from_slice::<Value>(m.body) {
                            let sev = v["severity"].as_u64().unwrap_or(0);
                            let msg = v["message"].as_str().unwrap_or("").to_owned();
                            s.lock().unwrap().push((Instant::now(), sev, msg));
                        }
                    }
                    Ok(None) => {}
                    Err(e) if e.is_disconnect() => {
                        std::thread::sleep(Duration::from_millis(50));
                        if let Ok(mut n) = Client::connect_to(&path, "e2e_events") {
                            if n.subscribe(&["/events"]).is_ok() {
                                c = n;
                            }
                        }
                    }
                    Err(_) => {}
                }
            }
        });
        Events {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything posted so far.
    pub fn all(&self) -> Vec<Posted> {
        self.seen.lock().unwrap().clone()
    }

    /// The messages posted so far that contain `needle`.
    pub fn matching(&self, needle: &str) -> Vec<Posted> {
        self.all()
            .into_iter()
            .filter(|e| e.2.contains(needle))
            .collect()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `method uri` as fast as the broker takes it until dropped.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    /// Starts flooding (`replyto` set for requests, so COPS would answer them).
    pub fn start(socket: &Path, method: Method, uri: &str, replyto: Option<&str>) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU32::new(0));
        let (st, n) = (stop.clone(), sent.clone());
        let mut c = Client::connect_to(socket, "e2e_flood").expect("flooder");
        let (uri, replyto) = (uri.to_owned(), replyto.map(str::to_owned));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if c.send(method, &uri, replyto.as_deref(), b"{}").is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Flood {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u32 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The victim/slow configuration with `extra` top-level keys (`,"k":v`).
pub fn two_process_config(extra: &str, victim_extra: &str) -> String {
    format!(
        r#"{{"heartbeatFreq":{PERIOD_MS},"replyToGetDeadline":{DEADLINE_MS},"heartbeatErrorAllowance":{ALLOWANCE},
            "briefingFrequencyMS":1000,"controllerName":"e2e"{extra},
            "processList":[
              {{"name":"victim","uri":"/victim","killOnHang":true{victim_extra}}},
              {{"name":"slow","uri":"/slow","killOnHang":true}}
            ]}}"#
    )
}

/// The bound from a hang to COPS's signal: allowance x period + deadline,
/// plus 50 ms for COPS and the machine.
pub fn bound() -> Duration {
    Duration::from_millis(ALLOWANCE * PERIOD_MS + DEADLINE_MS + 50)
}
