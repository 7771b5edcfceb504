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
