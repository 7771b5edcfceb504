//! The COPS configuration file (JSON, `docs/protocol/cops.md`): parsing, defaults,
//! ranges, and errors that name the file, the process and the key.
//!
//! The file is read into a raw JSON map first (refusing duplicate keys, which
//! JSON parsers silently resolve to one of the values) so that every key can be
//! checked: known keys are validated against their ranges ([`limits`]), keys of
//! today's deployed configs that COPS does not act on are accepted with one
//! warning, anything else is an error with a "did you mean" hint. Nothing here
//! does I/O except [`load`], which reads the file.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

pub mod limits;
pub mod loops;
mod read;
mod strict;

pub use loops::{LoopAction, LoopConfig};

/// Keys of today's configs that this server accepts but does not act on.
pub const IGNORED_KEYS: &[&str] = &[
    "patrolFrequencyMS",
    "c2cMsgFrequencyMS",
    "allowActions",
    "writeOutC2C",
    "configRestart",
    "connectionStatus",
    "syswatch",
    "temperatureSource",
    "primaryIP",
    "primaryNetworkInterface",
    "otherIPs",
    "thisCtrlrStayActive",
];

pub(crate) const TOP_KEYS: &[&str] = &[
    "ourUri",
    "heartbeatFreq",
    "heartbeatFrequencyMS",
    "replyToGetDeadline",
    "heartbeatErrorAllowance",
    "briefingFrequencyMS",
    "controllerName",
    "processList",
    "enableRedundantFailover",
    "maxKillsPerWindow",
    "controlUsers",
];

pub(crate) const PROC_KEYS: &[&str] = &[
    "name",
    "uri",
    "killOnHang",
    "requiredForHealthyStatus",
    "hangTimeAllowanceMS",
    "killSignal",
    "killEscalationMS",
    "expectedExe",
    "expectedUser",
    "maxKills",
    "killWindowMS",
    "loopDeadlineMS",
    "minLoopsPerBeat",
    "maxLoopsPerBeat",
    "loopToleranceBeats",
    "loopAction",
];

/// Signals a `killSignal` may name (with or without the `SIG` prefix).
const SIGNALS: &[(&str, i32)] = &[
    ("KILL", libc::SIGKILL),
    ("ABRT", libc::SIGABRT),
    ("TERM", libc::SIGTERM),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("HUP", libc::SIGHUP),
    ("SEGV", libc::SIGSEGV),
    ("BUS", libc::SIGBUS),
    ("TRAP", libc::SIGTRAP),
    ("ILL", libc::SIGILL),
    ("FPE", libc::SIGFPE),
    ("SYS", libc::SIGSYS),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("XCPU", libc::SIGXCPU),
];

/// A signal COPS may send, with its conventional name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// The signal number.
    pub number: i32,
    /// Name without the `SIG` prefix, e.g. `KILL`.
    pub name: &'static str,
}

impl Signal {
    /// SIGKILL.
    pub const KILL: Signal = Signal {
        number: libc::SIGKILL,
        name: "KILL",
    };

    /// Parses `SIGABRT`, `abrt`, `SIGKILL`, ...; `None` for a signal COPS does not send.
    pub fn parse(s: &str) -> Option<Signal> {
        let up = s.trim().to_ascii_uppercase();
        let bare = up.strip_prefix("SIG").unwrap_or(&up);
        SIGNALS
            .iter()
            .find(|(n, _)| *n == bare)
            .map(|&(name, number)| Signal { number, name })
    }

    /// True for SIGKILL.
    pub fn is_kill(self) -> bool {
        self.number == libc::SIGKILL
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIG{}", self.name)
    }
}

/// The effective settings of COPS, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// COPS's own URI (default `/cops`).
    pub our_uri: String,
    /// Period of the heartbeat cycle.
    pub heartbeat: Duration,
    /// How long after step 1 a reply may arrive.
    pub reply_deadline: Duration,
    /// Consecutive misses before "hung".
    pub error_allowance: u32,
    /// Period of the stats publications.
    pub briefing: Duration,
    /// Shown in the summary.
    pub controller_name: String,
    /// The monitored processes, in file order.
    pub processes: Vec<ProcessConfig>,
    /// Site-wide kill budget per `error_allowance x heartbeat` (`None`: no limit).
    pub max_kills_per_window: Option<u32>,
    /// Users (names or numeric uids) whose control requests (`set
    /// ourUri/control/<name>`: inhibit, resume) COPS takes; `None`: root and
    /// the user COPS runs as.
    pub control_users: Option<Vec<String>>,
    /// Warnings to log (ignored keys, ...).
    pub warnings: Vec<String>,
    /// Advice `cops --check` prints (not logged at start).
    pub suggestions: Vec<String>,
}

impl Config {
    /// The window of `maxKillsPerWindow`: `heartbeatErrorAllowance x heartbeatFreq`.
    pub fn kill_window(&self) -> Duration {
        self.heartbeat * self.error_allowance
    }
}

/// One monitored process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessConfig {
    /// Unique name, last segment of the reply URI.
    pub name: String,
    /// The process's base URI, e.g. `/site`.
    pub uri: String,
    /// Kill when declared hung.
    pub kill_on_hang: bool,
    /// False: listed, not heartbeated.
    pub required: bool,
    /// Hung after this long without a success (instead of the miss count).
    pub hang_time_allowance: Option<Duration>,
    /// The signal for a hung process.
    pub kill_signal: Signal,
    /// SIGKILL after this long when the kill signal was not SIGKILL; also the
    /// time allowed for the process to exit.
    pub kill_escalation: Duration,
    /// What `/proc/<pid>/exe` must be before COPS believes or signals the PID:
    /// a full path (compared whole) or a bare file name (compared with the
    /// last component).
    pub expected_exe: Option<String>,
    /// The user (name or numeric uid) that must own the process.
    pub expected_user: Option<String>,
    /// Kill budget: at most `.0` kills in `.1`.
    pub kill_budget: Option<(u32, Duration)>,
    /// Deadline and alive supervision of the work loop (`None`: not supervised).
    pub loops: Option<LoopConfig>,
}

/// A configuration error naming the file, the process and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{}{message}", process_part(.process), key_part(.key))]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The process, by name (or `processList[i]` when it has none).
    pub process: Option<String>,
    /// The key.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

fn process_part(p: &Option<String>) -> String {
    p.as_ref()
        .map(|p| format!("process {p}: "))
        .unwrap_or_default()
}

fn key_part(k: &Option<String>) -> String {
    k.as_ref()
        .map(|k| format!("key \"{k}\": "))
        .unwrap_or_default()
}

/// Largest configuration file read (10,000 processes take about 1 MB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads and validates a configuration file; `hostname` is the default
/// `controllerName` (see [`host_name`]). Only a regular file is read: a FIFO or
/// a device (which could block or never end) fails at once.
pub fn load(path: &Path, hostname: &str) -> Result<Config, ConfigError> {
    use std::io::Read;
    let file = path.display().to_string();
    let fail = |message: String| ConfigError {
        file: file.clone(),
        process: None,
        key: None,
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(fail(format!(
            "not a regular file ({}): give the path of the JSON file",
            file_kind(&meta)
        )));
    }
    // O_NONBLOCK: should the path be swapped for a FIFO after the check, the open
    // does not wait for a writer.
    let f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| fail(format!("cannot read: {e}")))?
    };
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(fail("not a regular file".into()));
    }
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    parse(&file, &text, hostname)
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Parses and validates configuration text; `file` is used in errors,
/// `hostname` is the default `controllerName`. No I/O.
pub fn parse(file: &str, text: &str, hostname: &str) -> Result<Config, ConfigError> {
    let root = strict::from_str(text).map_err(|e| ConfigError {
        file: file.into(),
        process: None,
        key: e.key,
        message: e.message,
    })?;
    read::Ctx::new(file, hostname).top(&root)
}

/// The closest known key to an unknown one, when close enough to be a typo.
pub fn did_you_mean<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len() / 4).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The host name, the default `controllerName` (read by the binary, passed to
/// [`load`]/[`parse`]).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Config {
    /// The effective settings as JSON (what `cops --check` prints).
    pub fn to_json(&self) -> Value {
        let procs: Vec<Value> = self
            .processes
            .iter()
            .map(|p| {
                let mut m = Map::new();
                m.insert("name".into(), p.name.clone().into());
                m.insert("uri".into(), p.uri.clone().into());
                m.insert("killOnHang".into(), p.kill_on_hang.into());
                m.insert("requiredForHealthyStatus".into(), p.required.into());
                if let Some(h) = p.hang_time_allowance {
                    m.insert("hangTimeAllowanceMS".into(), (h.as_millis() as u64).into());
                }
                m.insert("killSignal".into(), p.kill_signal.to_string().into());
                m.insert(
                    "killEscalationMS".into(),
                    (p.kill_escalation.as_millis() as u64).into(),
                );
                if let Some(e) = &p.expected_exe {
                    m.insert("expectedExe".into(), e.clone().into());
                }
                if let Some(u) = &p.expected_user {
                    m.insert("expectedUser".into(), u.clone().into());
                }
                if let Some((k, w)) = p.kill_budget {
                    m.insert("maxKills".into(), k.into());
                    m.insert("killWindowMS".into(), (w.as_millis() as u64).into());
                }
                if let Some(l) = &p.loops {
                    l.insert_json(&mut m);
                }
                Value::Object(m)
            })
            .collect();
        let mut top = serde_json::json!({
            "ourUri": self.our_uri,
            "heartbeatFreq": self.heartbeat.as_millis() as u64,
            "replyToGetDeadline": self.reply_deadline.as_millis() as u64,
            "heartbeatErrorAllowance": self.error_allowance,
            "briefingFrequencyMS": self.briefing.as_millis() as u64,
            "controllerName": self.controller_name,
            "processList": procs,
        });
        if let (Some(k), Some(m)) = (self.max_kills_per_window, top.as_object_mut()) {
            m.insert("maxKillsPerWindow".into(), k.into());
        }
        if let (Some(u), Some(m)) = (&self.control_users, top.as_object_mut()) {
            m.insert("controlUsers".into(), u.clone().into());
        }
        top
    }

    /// One line per process with loop supervision, for `cops --check`:
    /// `process "x": an iteration longer than 200 ms ... is an overrun; ...`.
    pub fn explain_loops(&self) -> Vec<String> {
        self.processes
            .iter()
            .filter_map(|p| {
                let l = p.loops.as_ref()?;
                Some(format!(
                    "process \"{}\": {}",
                    p.name,
                    l.explain(self.heartbeat)
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
