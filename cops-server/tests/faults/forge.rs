//! Forged replies from another bus client: the forger listens on the victim's
//! URI like the victim does and answers every round first, with the right
//! counter and a PID that is not the victim's.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::faults::cases::site;
use crate::faults::harness::{as_nobody, bins, can_run_as_nobody, Decoy, Spec, Timing};
use crate::faults::outcome::{Outcome, Stalls};

/// Which PIDs the forger names in the victim's (`p0`'s) replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgery {
    /// A PID no process has.
    Nonexistent,
    /// Wrong PIDs: the healthy bystander `p1` (on the bus, same user, same
    /// executable) and a `sleep` of the same user.
    Wrong,
    /// A `sleep` of user `nobody`.
    OtherUsers,
    /// A different PID in every reply: all of the above in turn.
    Changing,
    /// As `Changing`, from a forger running as user `nobody`.
    AsNobody,
    /// The forger's own PID (on the bus, same user): only `expectedExe`,
    /// given as a full path, tells it from the victim.
    OwnWithExpectedExe,
}

impl Forgery {
    /// The case name.
    pub fn name(self) -> &'static str {
        match self {
            Forgery::Nonexistent => "forged: nonexistent PID",
            Forgery::Wrong => "forged: wrong PID (bystander, sleep)",
            Forgery::OtherUsers => "forged: other user's PID",
            Forgery::Changing => "forged: changing PID",
            Forgery::AsNobody => "forged: changing PID, forger as nobody",
            Forgery::OwnWithExpectedExe => "forged: forger's own PID, expectedExe path",
        }
    }

    fn needs_root(self) -> bool {
        matches!(self, Forgery::OtherUsers | Forgery::AsNobody)
    }
}

/// A PID no process has now (counting down from `pid_max`, far from the PIDs
/// being handed out).
fn free_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (2..max)
        .rev()
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap_or(max - 1)
}

/// Forged replies for `p0` for three hang windows (nothing may be killed), then
/// `p0` really hangs while the forger goes on (it must be killed within its
/// bound and come back), then the forger stops (still nothing else killed).
pub fn forged(t: Timing, kind: Forgery) -> Outcome {
    if kind.needs_root() && !can_run_as_nobody() {
        let why = "needs root and setpriv (a process of user nobody)";
        return Outcome::skipped(kind.name(), t.name, why);
    }
    let mut spec = Spec::new(2, t);
    spec.open_socket = kind == Forgery::AsNobody;
    if kind == Forgery::OwnWithExpectedExe {
        let exe = std::fs::canonicalize(&bins().responder).unwrap_or(bins().responder.clone());
        let exe = Value::String(exe.display().to_string());
        spec.per_process.insert("expectedExe".into(), exe);
    }
    let mut site = site!(kind.name(), spec);
    let free = free_pid().to_string();
    let sleep_root = site.decoys[0].pid().to_string();
    let sleep_nobody = site.decoys.get(1).map(|d| d.pid().to_string());
    let bystander = site.procs[1].pid().to_string();
    let mut all = vec![free.clone(), sleep_root.clone(), bystander.clone()];
    all.extend(sleep_nobody.clone());
    let pids = match kind {
        Forgery::Nonexistent => vec![free],
        Forgery::Wrong => vec![bystander, sleep_root],
        Forgery::OtherUsers => sleep_nobody.into_iter().collect(),
        Forgery::Changing | Forgery::AsNobody => all,
        Forgery::OwnWithExpectedExe => vec!["self".to_string()],
    };
    site.notes.push(format!("forged pids {}", pids.join(",")));
    let mut cmd = if kind == Forgery::AsNobody {
        // A copy in the site's directory, which `nobody` can reach wherever the
        // build lives.
        let copy = site.bus.dir().join("faults_helper");
        if let Err(e) = std::fs::copy(&bins().helper, &copy) {
            site.problems
                .push(format!("copy the helper for nobody: {e}"));
        }
        as_nobody(&copy)
    } else {
        Command::new(&bins().helper)
    };
    cmd.arg("forge")
        .arg("--socket")
        .arg(site.bus.socket())
        .args(["--uri", "/p0", "--reply-uri", "/cops/heartbeat/p0"])
        .args(["--pids", &pids.join(","), "--duration-ms", "600000"]);
    match Decoy::spawn_ready("forger", &mut cmd, Duration::from_secs(10)) {
        Ok(d) => site.decoys.push(d),
        Err(e) => {
            site.problems.push(e);
            return site.finish(Stalls::None, 0);
        }
    }
    std::thread::sleep(t.bound() * 3);
    let hangs = site.hang(&[0], 1);
    if site.wait_kills(&hangs) {
        site.expect_ready("after the kill, the forger still forging");
    }
    site.retire("forger");
    // Nothing may die once the forged replies stop (a decoy COPS was tricked
    // into taking for p0 would now be "hung").
    std::thread::sleep(t.bound() * 2);
    site.finish(Stalls::None, 0)
}
