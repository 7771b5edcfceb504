//! Events: what COPS logs and posts to `/events`.

use std::time::Instant;

/// Severity of an event, as `/events` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// 1: information.
    Info = 1,
    /// 2: a status change.
    Status = 2,
    /// 3: an alarm.
    Alarm = 3,
    /// 4: a fault.
    Fault = 4,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// First good reply (`unknown -> alive`).
    Alive,
    /// Declared hung.
    Hung,
    /// Hung since an earlier verdict, and signalled now (its inhibit or
    /// quarantine ended).
    StillHung,
    /// Good replies again after `hung`.
    Resurrected,
    /// A new PID answered.
    Restarted,
    /// A signal was delivered.
    Signalled,
    /// `--dry-run`: a signal that would have been delivered.
    WouldSignal,
    /// A signal was not delivered (identity changed, exe mismatch, ...).
    SignalRefused,
    /// A signal was held: the process was runnable but starved of CPU since
    /// its first missed heartbeat (COPS decides again at the next miss).
    Starved,
    /// A signalled process exited.
    Exited,
    /// A signal other than SIGKILL did not end it: SIGKILL follows.
    Escalated,
    /// A signalled process did not exit.
    DidNotExit,
    /// The kill budget is spent.
    Quarantined,
    /// The kill budget window passed.
    QuarantineOver,
    /// A kill waits for room in the site kill budget (`maxKillsPerWindow`).
    KillDeferred,
    /// A probe through the broker was late or lost, or COPS lagged: a bus or
    /// host stall (rounds overlapping it are void).
    Stall,
    /// The stall is over.
    StallOver,
    /// A malformed, stale, late or duplicate reply (rate-limited log line).
    BadReply,
    /// A reply carried a PID that is not believed.
    PidRejected,
    /// Two live processes answer as one process.
    Conflict,
    /// Requests to `ourUri` dropped by the serving rate limit.
    ServeLimited,
    /// Bus connection up or down.
    Bus,
    /// The work loop failed `loopToleranceBeats` beats in a row (overrun, too
    /// slow or too fast): the loop alarm, with the kill under `loopAction: "kill"`.
    LoopFault,
    /// A failing beat within the tolerance (rate-limited log line).
    LoopTolerated,
    /// The loop alarm is over (good beats again, or a new incarnation).
    LoopOver,
    /// A process with loop supervision answers without loop figures.
    LoopUnmeasured,
    /// A maintenance inhibit started (or was changed): no signals until it ends.
    Inhibited,
    /// A maintenance inhibit ended (resumed, or expired by itself).
    InhibitEnded,
    /// A control request (`set ourUri/control/<name>`) was refused.
    ControlRefused,
}

impl EventKind {
    /// The spelling in the decision log (`get ourUri/events/<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Alive => "alive",
            EventKind::Hung => "hung",
            EventKind::StillHung => "still_hung",
            EventKind::Resurrected => "alive_again",
            EventKind::Restarted => "restarted",
            EventKind::Signalled => "signalled",
            EventKind::WouldSignal => "would_signal",
            EventKind::SignalRefused => "signal_refused",
            EventKind::Starved => "starved",
            EventKind::Exited => "exited",
            EventKind::Escalated => "escalated",
            EventKind::DidNotExit => "did_not_exit",
            EventKind::Quarantined => "quarantined",
            EventKind::QuarantineOver => "quarantine_over",
            EventKind::KillDeferred => "kill_deferred",
            EventKind::Stall => "stall",
            EventKind::StallOver => "stall_over",
            EventKind::BadReply => "bad_reply",
            EventKind::PidRejected => "pid_rejected",
            EventKind::Conflict => "conflict",
            EventKind::ServeLimited => "serve_limited",
            EventKind::Bus => "bus",
            EventKind::Inhibited => "inhibited",
            EventKind::InhibitEnded => "inhibit_ended",
            EventKind::ControlRefused => "control_refused",
            EventKind::LoopFault => "loop_fault",
            EventKind::LoopTolerated => "loop_tolerated",
            EventKind::LoopOver => "loop_over",
            EventKind::LoopUnmeasured => "loop_unmeasured",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When.
    pub at: Instant,
    /// How bad.
    pub severity: Severity,
    /// What.
    pub kind: EventKind,
    /// The process concerned, if any.
    pub process: Option<String>,
    /// Its current PID, if known.
    pub pid: Option<u32>,
    /// The text (also the `/events` message).
    pub message: String,
    /// Whether to `post /events` (else only logged).
    pub post: bool,
}

impl Event {
    /// The body of `post /events`: `{"source":"COPS","message":"...","severity":S}`.
    pub fn body(&self) -> Vec<u8> {
        serde_json::json!({
            "source": "COPS",
            "message": self.message,
            "severity": self.severity as u8,
        })
        .to_string()
        .into_bytes()
    }
}
