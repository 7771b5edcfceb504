//! The COPS configuration file (JSON, `docs/protocol/cops.md`): parsing, defaults,
//! ranges, and errors that name the file, the process and the key.
//!
//! The file is read into a raw JSON map first so that every key can be checked:
//! known keys are validated, keys of today's deployed configs that COPS does not
//! act on are accepted with one warning, anything else is an error with a
//! "did you mean" hint.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

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

const TOP_KEYS: &[&str] = &[
    "ourUri",
    "heartbeatFreq",
    "heartbeatFrequencyMS",
    "replyToGetDeadline",
    "heartbeatErrorAllowance",
    "briefingFrequencyMS",
    "controllerName",
    "processList",
    "enableRedundantFailover",
];

const PROC_KEYS: &[&str] = &[
    "name",
    "uri",
    "killOnHang",
    "requiredForHealthyStatus",
    "hangTimeAllowanceMS",
    "killSignal",
    "killEscalationMS",
    "expectedExe",
    "maxKills",
    "killWindowMS",
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
    /// Warnings to log (ignored keys, ...).
    pub warnings: Vec<String>,
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
    /// File name `/proc/<pid>/exe` must have before COPS signals.
    pub expected_exe: Option<String>,
    /// Kill budget: at most `.0` kills in `.1`.
    pub kill_budget: Option<(u32, Duration)>,
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

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        process: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(&file, &text)
}

/// Parses and validates configuration text; `file` is used in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let root: Value = serde_json::from_str(text).map_err(|e| ConfigError {
        file: file.into(),
        process: None,
        key: None,
        message: format!("not valid JSON: {e}"),
    })?;
    Ctx {
        file,
        process: None,
    }
    .top(&root)
}

/// Where we are in the file, for errors.
struct Ctx<'a> {
    file: &'a str,
    process: Option<String>,
}

impl Ctx<'_> {
    fn err(&self, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.into(),
            process: self.process.clone(),
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    fn top(&mut self, root: &Value) -> Result<Config, ConfigError> {
        let map = root
            .as_object()
            .ok_or_else(|| self.err(None, "the top level must be a JSON object"))?;
        let mut ignored = Vec::new();
        self.check_keys(map, TOP_KEYS, &mut ignored)?;
        if let Some(v) = map.get("enableRedundantFailover") {
            match v.as_bool() {
                Some(false) => {}
                Some(true) => {
                    return Err(self.err(
                        Some("enableRedundantFailover"),
                        "redundant failover is not supported by this COPS; set it to false or remove it",
                    ))
                }
                None => return Err(self.err(Some("enableRedundantFailover"), "must be true or false")),
            }
        }
        let our_uri = self
            .opt_str(map, "ourUri")?
            .unwrap_or_else(|| "/cops".into());
        fims::uri::validate(&our_uri)
            .map_err(|r| self.err(Some("ourUri"), format!("{our_uri:?} {r}")))?;
        let period = self.period(map)?;
        let deadline = match self.opt_u64(map, "replyToGetDeadline")? {
            None => period * 9 / 10,
            Some(d) if d == 0 || d > period => {
                return Err(self.err(
                    Some("replyToGetDeadline"),
                    format!("must be > 0 and <= the heartbeat period ({period} ms), got {d}"),
                ))
            }
            Some(d) => d,
        };
        let allowance = match self.opt_u64(map, "heartbeatErrorAllowance")? {
            None => 5,
            Some(a) if a == 0 || a > u64::from(u32::MAX) => {
                return Err(self.err(
                    Some("heartbeatErrorAllowance"),
                    format!("must be >= 1, got {a}"),
                ))
            }
            Some(a) => a as u32,
        };
        let briefing = match self.opt_u64(map, "briefingFrequencyMS")? {
            None => 5000,
            Some(b) if b < 10 => {
                return Err(self.err(
                    Some("briefingFrequencyMS"),
                    format!("must be >= 10, got {b}"),
                ))
            }
            Some(b) => b,
        };
        let controller_name = match self.opt_str(map, "controllerName")? {
            Some(n) => n,
            None => host_name(),
        };
        let list = map
            .get("processList")
            .ok_or_else(|| {
                self.err(
                    Some("processList"),
                    "missing (the list of monitored processes)",
                )
            })?
            .as_array()
            .ok_or_else(|| self.err(Some("processList"), "must be an array"))?;
        let mut processes: Vec<ProcessConfig> = Vec::with_capacity(list.len());
        let mut names = std::collections::HashSet::new();
        let mut uris = std::collections::HashSet::new();
        for (i, entry) in list.iter().enumerate() {
            self.process = Some(
                entry
                    .get("name")
                    .and_then(Value::as_str)
                    .map(|n| format!("\"{n}\""))
                    .unwrap_or_else(|| format!("processList[{i}]")),
            );
            let p = self.process_entry(entry, &our_uri, &mut ignored)?;
            if !names.insert(p.name.clone()) {
                return Err(self.err(Some("name"), "duplicate process name"));
            }
            if p.required && !uris.insert(p.uri.clone()) {
                return Err(self.err(
                    Some("uri"),
                    format!("{} is heartbeated for another process already", p.uri),
                ));
            }
            processes.push(p);
        }
        self.process = None;
        let mut warnings = Vec::new();
        if !ignored.is_empty() {
            ignored.sort();
            ignored.dedup();
            warnings.push(format!(
                "{}: keys accepted but not acted on by this COPS: {}",
                self.file,
                ignored.join(", ")
            ));
        }
        if allowance == 1 && processes.iter().any(|p| p.hang_time_allowance.is_none()) {
            warnings.push(format!(
                "{}: heartbeatErrorAllowance 1: the first misses of a bus stall cannot be told from a hang (2 or more recommended)",
                self.file
            ));
        }
        if processes.is_empty() {
            warnings.push(format!(
                "{}: processList is empty: nothing to monitor",
                self.file
            ));
        }
        Ok(Config {
            our_uri,
            heartbeat: Duration::from_millis(period),
            reply_deadline: Duration::from_millis(deadline),
            error_allowance: allowance,
            briefing: Duration::from_millis(briefing),
            controller_name,
            processes,
            warnings,
        })
    }

    fn period(&self, map: &Map<String, Value>) -> Result<u64, ConfigError> {
        let a = self.opt_u64(map, "heartbeatFreq")?;
        let b = self.opt_u64(map, "heartbeatFrequencyMS")?;
        let (key, p) = match (a, b) {
            (Some(x), Some(y)) if x != y => {
                return Err(self.err(
                    Some("heartbeatFrequencyMS"),
                    format!("conflicts with heartbeatFreq ({x} vs {y}); give one of them"),
                ))
            }
            (Some(x), _) => ("heartbeatFreq", x),
            (None, Some(y)) => ("heartbeatFrequencyMS", y),
            (None, None) => return Ok(1000),
        };
        if p < 10 {
            return Err(self.err(Some(key), format!("must be >= 10 ms, got {p}")));
        }
        Ok(p)
    }

    fn process_entry(
        &self,
        entry: &Value,
        our_uri: &str,
        ignored: &mut Vec<String>,
    ) -> Result<ProcessConfig, ConfigError> {
        let map = entry
            .as_object()
            .ok_or_else(|| self.err(None, "each processList entry must be a JSON object"))?;
        self.check_keys(map, PROC_KEYS, ignored)?;
        let name = self
            .opt_str(map, "name")?
            .ok_or_else(|| self.err(Some("name"), "missing"))?;
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
            return Err(self.err(Some("name"), "must be non-empty, without '/' or spaces"));
        }
        let reply_len = our_uri.len() + "/heartbeat/".len() + name.len();
        if reply_len > fims::codec::MAX_STRING_LEN {
            return Err(self.err(
                Some("name"),
                "too long: the reply URI would be over 255 bytes",
            ));
        }
        let uri = self
            .opt_str(map, "uri")?
            .ok_or_else(|| self.err(Some("uri"), "missing"))?;
        fims::uri::validate(&uri).map_err(|r| self.err(Some("uri"), format!("{uri:?} {r}")))?;
        if uri.len() + "/cops/cops_heartbeat".len() > fims::codec::MAX_STRING_LEN {
            return Err(self.err(Some("uri"), "too long for the heartbeat URI"));
        }
        let kill_on_hang = self
            .opt_bool(map, "killOnHang")?
            .ok_or_else(|| self.err(Some("killOnHang"), "missing: say true or false explicitly"))?;
        let required = self
            .opt_bool(map, "requiredForHealthyStatus")?
            .unwrap_or(true);
        let hang_time_allowance = match self.opt_u64(map, "hangTimeAllowanceMS")? {
            Some(0) => return Err(self.err(Some("hangTimeAllowanceMS"), "must be > 0")),
            other => other.map(Duration::from_millis),
        };
        let kill_signal = match map.get("killSignal") {
            None => Signal::KILL,
            Some(Value::String(s)) => Signal::parse(s).ok_or_else(|| {
                self.err(
                    Some("killSignal"),
                    format!("unknown or unsupported signal {s:?} (e.g. SIGKILL, SIGABRT, SIGTERM)"),
                )
            })?,
            Some(_) => {
                return Err(self.err(
                    Some("killSignal"),
                    "must be a signal name such as \"SIGABRT\"",
                ))
            }
        };
        let kill_escalation = match self.opt_u64(map, "killEscalationMS")? {
            None => Duration::from_millis(5000),
            Some(0) => return Err(self.err(Some("killEscalationMS"), "must be > 0")),
            Some(ms) => Duration::from_millis(ms),
        };
        let expected_exe = self.opt_str(map, "expectedExe")?;
        if let Some(e) = &expected_exe {
            if e.is_empty() || e.contains('/') {
                return Err(self.err(
                    Some("expectedExe"),
                    "must be the executable's file name (no '/'), e.g. \"site_controller\"",
                ));
            }
        }
        let kill_budget = match (
            self.opt_u64(map, "maxKills")?,
            self.opt_u64(map, "killWindowMS")?,
        ) {
            (None, None) => None,
            (Some(k), Some(w)) => {
                if k == 0 || k > u64::from(u32::MAX) {
                    return Err(self.err(Some("maxKills"), "must be >= 1"));
                }
                if w == 0 {
                    return Err(self.err(Some("killWindowMS"), "must be > 0"));
                }
                Some((k as u32, Duration::from_millis(w)))
            }
            (Some(_), None) => {
                return Err(self.err(
                    Some("killWindowMS"),
                    "missing: maxKills needs a killWindowMS",
                ))
            }
            (None, Some(_)) => {
                return Err(self.err(Some("maxKills"), "missing: killWindowMS needs a maxKills"))
            }
        };
        Ok(ProcessConfig {
            name,
            uri,
            kill_on_hang,
            required,
            hang_time_allowance,
            kill_signal,
            kill_escalation,
            expected_exe,
            kill_budget,
        })
    }

    fn check_keys(
        &self,
        map: &Map<String, Value>,
        known: &[&str],
        ignored: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        for key in map.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            if IGNORED_KEYS.contains(&key.as_str()) {
                ignored.push(key.clone());
                continue;
            }
            let hint = did_you_mean(key, known)
                .map(|k| format!(" (did you mean \"{k}\"?)"))
                .unwrap_or_default();
            return Err(self.err(Some(key), format!("unknown key{hint}")));
        }
        Ok(())
    }

    fn opt_u64(&self, map: &Map<String, Value>, key: &str) -> Result<Option<u64>, ConfigError> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                self.err(
                    Some(key),
                    format!("must be a non-negative integer, got {v}"),
                )
            }),
        }
    }

    fn opt_bool(&self, map: &Map<String, Value>, key: &str) -> Result<Option<bool>, ConfigError> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(Some(key), format!("must be true or false, got {v}"))),
        }
    }

    fn opt_str(&self, map: &Map<String, Value>, key: &str) -> Result<Option<String>, ConfigError> {
        match map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(Some(key), format!("must be a string, got {v}"))),
        }
    }
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

/// The host name, for the default `controllerName`.
fn host_name() -> String {
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
                if let Some((k, w)) = p.kill_budget {
                    m.insert("maxKills".into(), k.into());
                    m.insert("killWindowMS".into(), (w.as_millis() as u64).into());
                }
                Value::Object(m)
            })
            .collect();
        serde_json::json!({
            "ourUri": self.our_uri,
            "heartbeatFreq": self.heartbeat.as_millis() as u64,
            "replyToGetDeadline": self.reply_deadline.as_millis() as u64,
            "heartbeatErrorAllowance": self.error_allowance,
            "briefingFrequencyMS": self.briefing.as_millis() as u64,
            "controllerName": self.controller_name,
            "processList": procs,
        })
    }
}

#[cfg(test)]
mod tests;
