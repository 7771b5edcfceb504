//! Kill safety against the real kernel. No test signals a PID it did not start
//! itself: the refusals for PID 1, COPS's own PID and strangers are checked
//! without any signal. The "broker" here is a plain SOCK_SEQPACKET listener:
//! the bus check looks at sockets, not at FIMS.

use super::procfs::{parse_stat, parse_status, read_stat};
use super::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const OWN: u32 = 777_777;

fn sleeper() -> Child {
    Command::new("sleep")
        .arg("100")
        .spawn()
        .expect("spawn sleep")
}

/// A `sleep` holding `fd` as its descriptor 3 (a connection it inherited).
fn sleeper_holding(fd: &OwnedFd) -> Child {
    let raw = fd.as_raw_fd();
    let mut cmd = Command::new("sleep");
    cmd.arg("100");
    // SAFETY: only dup2 (async-signal-safe) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn sleep")
}

fn reap(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn alive(c: &mut Child) -> bool {
    c.try_wait().expect("try_wait").is_none()
}

fn sockaddr(path: &Path) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let p = path.as_os_str().as_encoded_bytes();
    assert!(p.len() < a.sun_path.len());
    for (d, s) in a.sun_path.iter_mut().zip(p) {
        *d = *s as libc::c_char;
    }
    (
        a,
        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
    )
}

fn seqpacket() -> OwnedFd {
    // SAFETY: plain socket(2), owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A listening SOCK_SEQPACKET socket standing in for the broker.
struct FakeBroker {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: OwnedFd,
    accepted: Vec<OwnedFd>,
}

impl FakeBroker {
    fn start() -> FakeBroker {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fims.sock");
        let listener = seqpacket();
        let (a, len) = sockaddr(&path);
        // SAFETY: bind/listen on our socket with a valid address.
        unsafe {
            assert_eq!(
                libc::bind(
                    listener.as_raw_fd(),
                    &a as *const _ as *const libc::sockaddr,
                    len
                ),
                0
            );
            assert_eq!(libc::listen(listener.as_raw_fd(), 16), 0);
        }
        FakeBroker {
            _dir: dir,
            path,
            listener,
            accepted: Vec::new(),
        }
    }

    /// A client connection to it (accepted on the broker's side).
    fn connect(&mut self) -> OwnedFd {
        let c = seqpacket();
        let (a, len) = sockaddr(&self.path);
        // SAFETY: connect our socket to a valid address; accept on our listener.
        unsafe {
            assert_eq!(
                libc::connect(c.as_raw_fd(), &a as *const _ as *const libc::sockaddr, len),
                0
            );
            let s = libc::accept4(
                self.listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            );
            assert!(s >= 0);
            self.accepted.push(OwnedFd::from_raw_fd(s));
        }
        c
    }
}

fn request(pid: u32, received: Instant) -> PinRequest<'static> {
    PinRequest {
        process: 0,
        pid,
        received,
        round_sent: received,
        sender: "",
        expected_exe: None,
        expected_user: None,
    }
}

fn refusal(layer: &mut KillLayer, req: &PinRequest<'_>) -> PidRefusal {
    match layer.pin(req) {
        PinOutcome::Refused(r) => r,
        other => panic!("pinned: {other:?}"),
    }
}

#[test]
fn pin_refuses_pid_one_and_own_pid_without_signalling() {
    // PID 1 exists, and so does our own: the rule refuses both before any syscall.
    assert_eq!(
        Identity::pin(1, OWN).unwrap_err(),
        PidRefusal::NotAboveOne(1)
    );
    let me = std::process::id();
    assert_eq!(Identity::pin(me, me).unwrap_err(), PidRefusal::OwnPid);
    let mut layer = KillLayer::new(me, false);
    let now = Instant::now();
    assert_eq!(
        refusal(&mut layer, &request(1, now)),
        PidRefusal::NotAboveOne(1)
    );
    assert_eq!(refusal(&mut layer, &request(me, now)), PidRefusal::OwnPid);
    assert_eq!(layer.pinned(), 0);
    // Nothing pinned: a signal action for them is refused.
    let out = layer.signal(0, 1, Signal::KILL, None);
    assert_eq!(out, SignalOutcome::Refused(SignalRefusal::NotPinned));
}

#[test]
fn nonexistent_pid_refused() {
    let c = sleeper();
    let pid = c.id();
    reap(c);
    if Path::new(&format!("/proc/{pid}")).exists() {
        return; // reused already (very unlikely); nothing to test honestly
    }
    assert_eq!(
        Identity::pin(pid, OWN).unwrap_err(),
        PidRefusal::NoSuchProcess
    );
    let mut layer = KillLayer::new(OWN, false);
    let r = refusal(&mut layer, &request(pid, Instant::now()));
    assert_eq!(r, PidRefusal::NoSuchProcess);
}

#[test]
fn parse_stat_and_status() {
    let text =
        "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 100 0\n";
    let s = parse_stat(text).unwrap();
    assert_eq!(
        (s.comm.as_str(), s.state, s.start_time),
        ("a) (b c", 'S', 987_654)
    );
    assert_eq!(parse_stat("garbage"), None);
    assert!(read_stat(std::process::id()).expect("own stat").start_time > 0);
    let status = "Name:\tx\nTgid:\t42\nPid:\t43\nUid:\t1000\t1001\t1000\t1000\n";
    let st = parse_status(status).unwrap();
    assert_eq!((st.tgid, st.uids), (42, (1000, 1001)));
    assert_eq!(parse_status("Uid: x"), None);
}

#[test]
fn exe_and_comm_comparisons() {
    use super::procfs::{comm_matches, exe_matches};
    assert!(exe_matches("/usr/bin/site", "/usr/bin/site"));
    assert!(!exe_matches("/usr/bin/site", "/opt/bin/site"));
    assert!(exe_matches("site", "/opt/bin/site"));
    assert!(!exe_matches("site", "/opt/bin/site2"));
    assert!(comm_matches(
        "/usr/bin/hybridos_controller",
        "hybridos_contro"
    ));
    assert!(!comm_matches("/usr/bin/hybridos_controller", "hybridos"));
}

#[test]
fn exited_and_reused_identities_are_never_signalled() {
    // A: pinned, then killed and reaped by this test (its own child).
    let a = sleeper();
    let a_pid = a.id();
    let pinned_a = Identity::pin(a_pid, OWN).expect("pin A");
    assert!(pinned_a.verify().is_ok());
    reap(a);
    assert!(pinned_a.exited());
    assert_eq!(
        pinned_a.signal(libc::SIGTERM),
        Err(SignalRefusal::IdentityGone)
    );

    // B: another child of ours. An identity with B's PID number but an earlier
    // start time is what a reused PID looks like: refused, and B lives on.
    let mut b = sleeper();
    let b_pid = b.id();
    let b_start = read_stat(b_pid).unwrap().start_time;
    let reused = Identity::from_parts(b_pid, b_start - 1, None);
    assert!(reused.exited());
    assert_eq!(
        reused.signal(libc::SIGKILL),
        Err(SignalRefusal::IdentityGone)
    );
    // Same with A's (dead) pidfd and B's PID number and start time.
    let a2 = sleeper();
    let a2_pid = a2.id();
    let fd = identity::pidfd_open(a2_pid).expect("a2 exists");
    reap(a2);
    if let Some(fd) = fd {
        let stale = Identity::from_parts(b_pid, b_start, Some(fd));
        assert!(stale.exited());
        assert_eq!(
            stale.signal(libc::SIGKILL),
            Err(SignalRefusal::IdentityGone)
        );
    }
    std::thread::sleep(Duration::from_millis(20));
    assert!(alive(&mut b), "B must not have been signalled");
    reap(b);
}

#[test]
fn a_process_started_after_the_reply_is_not_the_one_that_answered() {
    let received = Instant::now() - Duration::from_secs(1);
    let c = sleeper();
    let mut layer = KillLayer::new(OWN, false);
    let r = refusal(&mut layer, &request(c.id(), received));
    assert_eq!(r, PidRefusal::StartedAfterReply);
    // Started after the round's request but before the reply: pinned, but
    // not known to be the one that answered.
    let mut req = request(c.id(), Instant::now());
    req.round_sent = received;
    match layer.pin(&req) {
        PinOutcome::Pinned(p) => assert!(!p.started_before_round),
        other => panic!("{other:?}"),
    }
    // Started before the round's request: the one that answered.
    std::thread::sleep(Duration::from_millis(30)); // a clock tick later
    let now = Instant::now();
    match layer.pin(&request(c.id(), now)) {
        PinOutcome::Pinned(p) => assert!(p.started_before_round),
        other => panic!("{other:?}"),
    }
    reap(c);
}

#[test]
fn only_a_process_holding_a_connection_to_the_broker_is_on_the_bus() {
    let mut broker = FakeBroker::start();
    let mut other = FakeBroker::start();
    let cops = broker.connect();
    let diag = bus::SockDiag::open().and_then(|mut d| d.bus_of(cops.as_raw_fd()));
    if let Err(e) = diag {
        eprintln!("skipped: this kernel offers no sock_diag for Unix sockets ({e})");
        return;
    }
    let mut layer = KillLayer::new(OWN, false);
    layer.set_bus(cops.as_raw_fd());
    let on_bus = broker.connect();
    let elsewhere = other.connect();
    let mut member = sleeper_holding(&on_bus);
    let stranger = sleeper();
    let wrong_bus = sleeper_holding(&elsewhere);
    std::thread::sleep(Duration::from_millis(50)); // exec'd, descriptors in place
    let now = Instant::now();
    match layer.pin(&request(member.id(), now)) {
        PinOutcome::Pinned(p) => assert!(p.unchecked.is_empty(), "{p:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        refusal(&mut layer, &request(stranger.id(), now)),
        PidRefusal::NotOnBus
    );
    assert_eq!(
        refusal(&mut layer, &request(wrong_bus.id(), now)),
        PidRefusal::NotOnBus
    );
    assert!(alive(&mut member));
    for c in [member, stranger, wrong_bus] {
        reap(c);
    }
}

#[test]
fn without_the_broker_known_the_bus_check_is_named_as_not_made() {
    let c = sleeper();
    let mut layer = KillLayer::new(OWN, false);
    match layer.pin(&request(c.id(), Instant::now())) {
        PinOutcome::Pinned(p) => {
            assert_eq!(p.unchecked.len(), 1);
            assert_eq!(p.unchecked[0].check, Check::Bus);
        }
        other => panic!("{other:?}"),
    }
    reap(c);
}

#[test]
fn owner_must_be_the_sender_and_the_expected_user() {
    let c = sleeper();
    // SAFETY: getuid has no failure mode.
    let me = unsafe { libc::getuid() }.to_string();
    let stranger = if me == "65534" { "65533" } else { "65534" };
    let mut layer = KillLayer::new(OWN, false);
    let now = Instant::now();
    let mut req = request(c.id(), now);
    req.sender = stranger;
    assert!(matches!(
        refusal(&mut layer, &req),
        PidRefusal::NotTheSender { .. }
    ));
    req.sender = &me;
    req.expected_user = Some(stranger);
    assert!(matches!(
        refusal(&mut layer, &req),
        PidRefusal::NotExpectedUser { .. }
    ));
    req.expected_user = Some(&me);
    assert!(matches!(layer.pin(&req), PinOutcome::Pinned(_)));
    assert!(layer.sent_by_owner(&me, (u32::MAX, me.parse().unwrap())));
    assert!(
        layer.sent_by_owner("0", (1000, 1000)),
        "root speaks for anyone"
    );
    assert!(!layer.sent_by_owner("1001", (1000, 1000)));
    reap(c);
}

#[test]
fn expected_exe_compares_the_full_path_or_the_file_name() {
    let c = sleeper();
    let path = std::fs::read_link(format!("/proc/{}/exe", c.id()))
        .unwrap()
        .display()
        .to_string();
    let mut layer = KillLayer::new(OWN, false);
    let now = Instant::now();
    let mut req = request(c.id(), now);
    for good in [path.as_str(), "sleep"] {
        req.expected_exe = Some(good);
        assert!(matches!(layer.pin(&req), PinOutcome::Pinned(_)), "{good}");
    }
    for bad in ["/usr/local/bin/sleep-not", "site_controller"] {
        req.expected_exe = Some(bad);
        match refusal(&mut layer, &req) {
            PidRefusal::ExeMismatch { actual, .. } => assert_eq!(actual, path),
            other => panic!("{bad}: {other:?}"),
        }
    }
    reap(c);
}

#[test]
fn a_thread_id_is_not_a_process() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        // SAFETY: gettid has no failure mode.
        tx.send(unsafe { libc::gettid() } as u32).unwrap();
        let _ = stop_rx.recv();
    });
    let tid = rx.recv().unwrap();
    let mut layer = KillLayer::new(OWN, false);
    let r = refusal(&mut layer, &request(tid, Instant::now()));
    assert_eq!(r, PidRefusal::Thread);
    stop_tx.send(()).unwrap();
    t.join().unwrap();
}

#[test]
fn layer_signals_its_pinned_child_with_evidence() {
    let mut c = sleeper();
    let pid = c.id();
    let mut layer = KillLayer::new(std::process::id(), false);
    let mut req = request(pid, Instant::now());
    req.process = 3;
    assert!(matches!(layer.pin(&req), PinOutcome::Pinned(_)));
    assert!(layer.alive(3, pid));
    assert!(matches!(
        layer.check_exit(3, pid),
        ExitCheck::StillAlive { evidence } if !evidence.is_empty()
    ));
    match layer.signal(3, pid, Signal::parse("TERM").unwrap(), Some("sleep")) {
        SignalOutcome::Delivered { evidence, .. } => {
            assert!(evidence.starts_with(&format!("tid {pid} ")), "{evidence}")
        }
        other => panic!("{other:?}"),
    }
    let status = c.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );
    assert_eq!(layer.check_exit(3, pid), ExitCheck::Exited);
    assert!(!layer.alive(3, pid));
    layer.forget(3, pid);
    assert_eq!(layer.pinned(), 0);
}

#[test]
fn dry_run_and_exe_mismatch_signal_nothing() {
    let mut c = sleeper();
    let pid = c.id();
    let now = Instant::now();
    let mut dry = KillLayer::new(std::process::id(), true);
    assert!(matches!(dry.pin(&request(pid, now)), PinOutcome::Pinned(_)));
    assert!(matches!(
        dry.signal(0, pid, Signal::KILL, None),
        SignalOutcome::DryRun { .. }
    ));
    let mut layer = KillLayer::new(std::process::id(), false);
    assert!(matches!(
        layer.pin(&request(pid, now)),
        PinOutcome::Pinned(_)
    ));
    match layer.signal(0, pid, Signal::KILL, Some("site_controller")) {
        SignalOutcome::Refused(SignalRefusal::ExeMismatch { actual, .. }) => {
            assert!(actual.ends_with("/sleep"), "{actual}")
        }
        other => panic!("{other:?}"),
    }
    // Not pinned for that process index: refused.
    assert_eq!(
        layer.signal(1, pid, Signal::KILL, None),
        SignalOutcome::Refused(SignalRefusal::NotPinned)
    );
    std::thread::sleep(Duration::from_millis(20));
    assert!(alive(&mut c));
    reap(c);
}

/// What one pin costs (all checks, bus check included): run with
/// `cargo test --release -p cops-server --lib -- --ignored pin_cost --nocapture`.
#[test]
#[ignore]
fn pin_cost() {
    let mut broker = FakeBroker::start();
    let cops = broker.connect();
    let conn = broker.connect();
    let mut layer = KillLayer::new(OWN, false);
    layer.set_bus(cops.as_raw_fd());
    let kids: Vec<Child> = (0..200).map(|_| sleeper_holding(&conn)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let now = Instant::now();
    let t = Instant::now();
    for (i, c) in kids.iter().enumerate() {
        let mut req = request(c.id(), now);
        req.process = i;
        req.sender = "root";
        assert!(matches!(layer.pin(&req), PinOutcome::Pinned(_)));
    }
    let per = t.elapsed() / kids.len() as u32;
    eprintln!("one pin: {per:?}");
    let n = kids.len() as u32;
    let time = |what: &str, f: &mut dyn FnMut(u32)| {
        let t = Instant::now();
        for c in &kids {
            f(c.id());
        }
        eprintln!("{what}: {:?}", t.elapsed() / n);
    };
    time("pidfd_open", &mut |p| drop(identity::pidfd_open(p)));
    time("stat", &mut |p| drop(read_stat(p)));
    time("status", &mut |p| drop(super::procfs::read_status(p)));
    time("fd scan", &mut |p| drop(super::procfs::socket_inodes(p)));
    let mut d = bus::SockDiag::open().unwrap();
    let b = d.bus_of(cops.as_raw_fd()).unwrap();
    time("sock_diag", &mut |p| {
        let inodes = super::procfs::socket_inodes(p).unwrap();
        assert!(d.connected_to(&b, &inodes).unwrap());
    });
    time("boot_ticks", &mut |_| {
        std::hint::black_box(super::procfs::boot_ticks(now));
    });
    for c in kids {
        reap(c);
    }
}

/// Capabilities by number (linux/capability.h).
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_KILL: u32 = 5;
const CAP_SYS_PTRACE: u32 = 19;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Runs `f` on a thread of its own whose effective capabilities lack `caps`
/// (capabilities are per thread: the rest of the test process keeps them), as
/// COPS run as root without them would see the kernel. `None` where the tests
/// do not run as root (nothing to drop).
fn without_caps<T: Send>(caps: &[u32], f: impl FnOnce() -> T + Send) -> Option<T> {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (the test drops capabilities root has)");
        return None;
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let header = CapHeader {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let mut data = [CapData::default(); 2];
            // SAFETY: capget/capset on this thread with a v3 header and two data structs.
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_capget, &header, data.as_mut_ptr()),
                    0
                );
                for &c in caps {
                    data[(c / 32) as usize].effective &= !(1 << (c % 32));
                }
                assert_eq!(libc::syscall(libc::SYS_capset, &header, data.as_ptr()), 0);
            }
            f()
        })
        .join()
        .expect("the capability-less thread")
    })
    .into()
}

/// A `sleep` run as user 65534 (another user than the root test).
fn strangers_sleeper() -> Child {
    Command::new("sleep")
        .arg("100")
        .uid(65534)
        .gid(65534)
        .spawn()
        .expect("spawn sleep as 65534")
}

#[test]
fn without_ptrace_read_access_the_bus_check_is_skipped_not_failed() {
    // COPS with CAP_DAC_READ_SEARCH but no CAP_SYS_PTRACE lists
    // /proc/<pid>/fd of another user's process but reads none of its links;
    // those unread links once passed for "no socket", so the PID of a process
    // on the bus was refused as off the bus and its hang never acted on.
    let mut broker = FakeBroker::start();
    let cops = broker.connect();
    let on_bus = broker.connect();
    let member = sleeper_holding(&on_bus);
    std::thread::sleep(Duration::from_millis(50)); // exec'd, descriptors in place
    let pid = member.id();
    let mut layer = KillLayer::new(OWN, false);
    layer.set_bus(cops.as_raw_fd());
    let outcome = without_caps(&[CAP_SYS_PTRACE], || {
        let listed = super::procfs::socket_inodes(pid);
        let mut req = request(pid, Instant::now());
        req.expected_exe = Some("/no/such/dir/sleep");
        let pinned = layer.pin(&req);
        let signalled = layer.signal(0, pid, Signal::KILL, Some("/no/such/dir/sleep"));
        (listed, pinned, signalled)
    });
    let Some((listed, pinned, signalled)) = outcome else {
        return reap(member);
    };
    let e = listed.expect_err("the links are not readable without CAP_SYS_PTRACE");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(e.to_string().contains("CAP_SYS_PTRACE"), "{e}");
    let p = match pinned {
        PinOutcome::Pinned(p) => p,
        other => panic!("a process on the bus is believed on the other checks: {other:?}"),
    };
    let checks: Vec<Check> = p.unchecked.iter().map(|u| u.check).collect();
    assert_eq!(checks, [Check::Exe, Check::Bus], "{:?}", p.unchecked);
    assert!(p.unchecked[0]
        .why
        .contains("the command name \"sleep\" matched instead"));
    assert!(p.unchecked[1].why.contains(&format!("/proc/{pid}/fd/")));
    // The kill event names both: expectedExe as re-checked at the signal, the
    // bus check as when the PID was pinned.
    match signalled {
        SignalOutcome::Delivered { unchecked, .. } => {
            let checks: Vec<Check> = unchecked.iter().map(|u| u.check).collect();
            assert_eq!(checks, [Check::Bus, Check::Exe], "{unchecked:?}");
        }
        other => panic!("{other:?}"),
    }
    let mut member = member;
    let status = member.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
}

#[test]
fn without_dac_read_search_listing_another_users_descriptors_is_named() {
    let c = strangers_sleeper();
    let pid = c.id();
    std::thread::sleep(Duration::from_millis(50));
    let listed = without_caps(&[CAP_DAC_READ_SEARCH, CAP_DAC_OVERRIDE], || {
        super::procfs::socket_inodes(pid)
    });
    if let Some(listed) = listed {
        let e = listed.expect_err("the directory is its owner's, mode 0500");
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(
            e.to_string()
                .starts_with(&format!("/proc/{pid}/fd: Permission denied")),
            "{e}"
        );
        assert!(e.to_string().contains("CAP_DAC_READ_SEARCH"), "{e}");
    }
    reap(c);
}

#[test]
fn a_signal_refused_for_want_of_cap_kill_says_so_and_the_process_lives() {
    let mut c = strangers_sleeper();
    let pid = c.id();
    let mut layer = KillLayer::new(OWN, false);
    assert!(matches!(
        layer.pin(&request(pid, Instant::now())),
        PinOutcome::Pinned(_)
    ));
    let outcome = without_caps(&[CAP_KILL], || layer.signal(0, pid, Signal::KILL, None));
    if let Some(outcome) = outcome {
        match outcome {
            SignalOutcome::Refused(SignalRefusal::Os(why)) => {
                assert!(why.contains("Operation not permitted"), "{why}");
                assert!(why.contains("needs CAP_KILL"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(alive(&mut c));
        assert!(layer.alive(0, pid), "still pinned");
    }
    reap(c);
}
