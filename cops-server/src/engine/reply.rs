//! Heartbeat replies: parsing, the checks a reply must pass, and what a good
//! one changes (counter, stats, PID, restarts); also the hash of the reply-URI map.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Action, Engine, EventKind, PendingReply, PinOutcome, Severity, State};
use crate::identity::pid_rule;

/// A parsed heartbeat reply.
pub(super) struct Reply<'a> {
    pub(super) heartbeat: u64,
    pub(super) pid: i64,
    pub(super) versions: [Option<Cow<'a, str>>; 3],
}

/// The usual reply, parsed without building a JSON tree.
#[derive(serde::Deserialize)]
struct PlainReply<'a> {
    cops_heartbeat: u64,
    pid: i64,
    #[serde(borrow, default)]
    version_tag: Option<&'a str>,
    #[serde(borrow, default)]
    version_commit: Option<&'a str>,
    #[serde(borrow, default)]
    version_build: Option<&'a str>,
}

/// Parses `{"cops_heartbeat":17,"pid":4242,"version_tag":...}` (clothed
/// `{"value":..}` fields accepted too).
pub(super) fn parse_reply(body: &[u8]) -> Result<Reply<'_>, String> {
    if let Ok(r) = serde_json::from_slice::<PlainReply<'_>>(body) {
        return Ok(Reply {
            heartbeat: r.cops_heartbeat,
            pid: r.pid,
            versions: [r.version_tag, r.version_commit, r.version_build]
                .map(|v| v.map(Cow::Borrowed)),
        });
    }
    // Anything else (clothed values, escapes, errors) the slow way.
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let field = |k: &str| {
        obj.get(k)
            .map(|v| v.as_object().and_then(|o| o.get("value")).unwrap_or(v))
    };
    let heartbeat = field("cops_heartbeat")
        .ok_or("no cops_heartbeat")?
        .as_u64()
        .ok_or("cops_heartbeat is not a non-negative integer")?;
    let pid = field("pid")
        .ok_or("no pid")?
        .as_i64()
        .ok_or("pid is not an integer")?;
    let version = |k: &str| {
        field(k)
            .and_then(Value::as_str)
            .map(|s| Cow::Owned(s.to_owned()))
    };
    Ok(Reply {
        heartbeat,
        pid,
        versions: [
            version("version_tag"),
            version("version_commit"),
            version("version_build"),
        ],
    })
}

/// A hash of a reply's three version fields (absent and empty differ).
pub(super) fn versions_hash(v: &[Option<Cow<'_, str>>; 3]) -> u64 {
    use std::hash::Hasher;
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for f in v {
        match f {
            Some(s) => {
                h.write(s.as_bytes());
                h.write(&[0xff]);
            }
            None => h.write(&[0xfe]),
        }
    }
    h.finish()
}

/// FNV-1a for the reply-URI map: the keys are our own configured names (no
/// untrusted input chooses them), so a fast non-keyed hash is fine.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BuildFnv;

#[derive(Debug)]
pub(super) struct Fnv(u64);

impl std::hash::BuildHasher for BuildFnv {
    type Hasher = Fnv;
    fn build_hasher(&self) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl Engine {
    pub(super) fn on_reply(&mut self, now: Instant, i: usize, body: &[u8]) {
        let reply = match parse_reply(body) {
            Ok(r) => r,
            Err(why) => return self.complain(now, i, why),
        };
        let pid_check = pid_rule(reply.pid, self.own_pid);
        let p = &mut self.procs[i];
        let Some(round) = p.round.filter(|r| !r.answered && p.pending.is_none()) else {
            return; // no round open, or already answered: a duplicate or a straggler
        };
        if now > round.deadline {
            return; // late: the deadline makes it a miss
        }
        if reply.heartbeat != p.h {
            let why = format!("stale heartbeat {} (expected {})", reply.heartbeat, p.h);
            return self.complain(now, i, why);
        }
        let pid = match pid_check {
            Ok(pid) => pid,
            Err(why) => return self.reject_pid(now, i, reply.pid, why.to_string()),
        };
        let versions_hash = versions_hash(&reply.versions);
        let pending = PendingReply {
            round: round.seq,
            pid,
            received: now,
            // Allocate (and touch the stored strings) only when the versions changed.
            versions: if versions_hash == p.stats.versions_hash {
                [None, None, None]
            } else {
                reply.versions.map(|v| v.map(Cow::into_owned))
            },
            versions_hash,
        };
        if p.pid == Some(pid) {
            self.succeed(now, i, pending);
        } else {
            // A PID not seen before: the runtime checks it exists and pins it first.
            p.pending = Some(pending);
            self.actions.push_back(Action::Pin { process: i, pid });
        }
    }

    /// The runtime's answer to [`Action::Pin`]: unless pinned, the reply is
    /// not a success.
    pub fn pin_result(&mut self, now: Instant, process: usize, pid: u32, outcome: PinOutcome) {
        let Some(p) = self.procs.get_mut(process) else {
            return;
        };
        let Some(pending) = p.pending.take().filter(|r| r.pid == pid) else {
            return;
        };
        match outcome {
            PinOutcome::Pinned => self.succeed(now, process, pending),
            PinOutcome::Refused(why) => {
                self.reject_pid(now, process, i64::from(pid), why.to_string())
            }
        }
    }

    /// A good reply: counter, misses, stats, and the PID (a new one is a restart).
    fn succeed(&mut self, now: Instant, i: usize, r: PendingReply) {
        let p = &mut self.procs[i];
        let Some(round) = p.round.as_mut().filter(|x| x.seq == r.round) else {
            return;
        };
        round.answered = true;
        let rt = r.received.saturating_duration_since(round.sent);
        p.h += 1;
        p.misses = 0;
        p.miss_base = r.received;
        p.complained = false;
        p.rejected_pid = None;
        p.stats.record(rt, r.received, r.versions, r.versions_hash);
        let restarted = self.adopt_pid(i, r.pid);
        let p = &mut self.procs[i];
        let before = std::mem::replace(&mut p.state, State::Alive);
        if restarted.is_some() || before != State::Alive {
            self.announce_alive(now, i, before, restarted, rt);
        }
    }

    /// Makes `pid` the current incarnation of process `i`; returns the old PID
    /// when this is a restart.
    fn adopt_pid(&mut self, i: usize, pid: u32) -> Option<u32> {
        let p = &mut self.procs[i];
        if p.pid == Some(pid) {
            return None;
        }
        let old = p.pid.replace(pid);
        p.incarnation += 1;
        let old = old?;
        p.stats.total_restarts += 1;
        if p.killed_incarnation == Some(p.incarnation - 1) {
            p.stats.cops_restarts += 1;
        }
        if p.kill.is_none_or(|k| k.pid != old) {
            self.actions.push_back(Action::Unpin {
                process: i,
                pid: old,
            });
        }
        Some(old)
    }

    /// The events of a state change on a good reply (first answer, restart,
    /// alive again); the common case (alive, same PID) reports nothing.
    fn announce_alive(
        &mut self,
        now: Instant,
        i: usize,
        before: State,
        restarted: Option<u32>,
        rt: Duration,
    ) {
        let p = &self.procs[i];
        let (name, total) = (p.cfg.name.clone(), p.stats.total_restarts);
        let pid = p.pid.unwrap_or_default();
        let ms = rt.as_secs_f64() * 1000.0;
        if let Some(old) = restarted {
            let msg = format!("{name} restarted: pid {old} -> {pid} (restart #{total})");
            self.event(
                now,
                Severity::Status,
                EventKind::Restarted,
                Some(i),
                msg,
                true,
            );
        }
        match before {
            State::Unknown => {
                let msg = format!("{name} (pid {pid}) alive, answered in {ms:.1} ms");
                self.event(now, Severity::Info, EventKind::Alive, Some(i), msg, false);
            }
            State::Hung => {
                let msg = format!(
                    "{name} (pid {pid}) alive again after being hung, answered in {ms:.1} ms"
                );
                self.event(
                    now,
                    Severity::Status,
                    EventKind::Resurrected,
                    Some(i),
                    msg,
                    true,
                );
            }
            State::Alive => {}
        }
    }

    fn complain(&mut self, now: Instant, i: usize, why: String) {
        let p = &mut self.procs[i];
        if std::mem::replace(&mut p.complained, true) {
            return;
        }
        let msg = format!("{}: bad heartbeat reply: {why}", p.cfg.name);
        self.event(
            now,
            Severity::Status,
            EventKind::BadReply,
            Some(i),
            msg,
            false,
        );
    }

    fn reject_pid(&mut self, now: Instant, i: usize, pid: i64, why: String) {
        let p = &mut self.procs[i];
        if p.rejected_pid.replace(pid) == Some(pid) {
            return;
        }
        let msg = format!("{}: reply with pid {pid} not accepted: {why}", p.cfg.name);
        self.event(
            now,
            Severity::Alarm,
            EventKind::PidRejected,
            Some(i),
            msg,
            true,
        );
    }
}
