//! Reading the raw JSON map into a [`Config`]: every key checked, every error
//! naming the file, the process and the key.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{
    did_you_mean, Config, ConfigError, ProcessConfig, Signal, IGNORED_KEYS, PROC_KEYS, TOP_KEYS,
};

/// Where we are in the file, for errors.
pub(super) struct Ctx<'a> {
    file: &'a str,
    process: Option<String>,
    hostname: &'a str,
}

/// The timing keys of the top level, validated.
struct Timing {
    period: u64,
    deadline: u64,
    allowance: u32,
    briefing: u64,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(file: &'a str, hostname: &'a str) -> Ctx<'a> {
        Ctx {
            file,
            process: None,
            hostname,
        }
    }

    fn err(&self, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.into(),
            process: self.process.clone(),
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    pub(super) fn top(&mut self, root: &Value) -> Result<Config, ConfigError> {
        let map = root
            .as_object()
            .ok_or_else(|| self.err(None, "the top level must be a JSON object"))?;
        let mut ignored = Vec::new();
        self.check_keys(map, TOP_KEYS, &mut ignored)?;
        self.failover(map)?;
        let our_uri = self
            .opt_str(map, "ourUri")?
            .unwrap_or_else(|| "/cops".into());
        fims::uri::validate(&our_uri)
            .map_err(|r| self.err(Some("ourUri"), format!("{our_uri:?} {r}")))?;
        let timing = self.timing(map)?;
        let controller_name = match self.opt_str(map, "controllerName")? {
            Some(n) => n,
            None => self.hostname.to_owned(),
        };
        let processes = self.process_list(map, &our_uri, &mut ignored)?;
        let warnings = self.warnings(ignored, &timing, &processes);
        Ok(Config {
            our_uri,
            heartbeat: Duration::from_millis(timing.period),
            reply_deadline: Duration::from_millis(timing.deadline),
            error_allowance: timing.allowance,
            briefing: Duration::from_millis(timing.briefing),
            controller_name,
            processes,
            warnings,
        })
    }

    fn failover(&self, map: &Map<String, Value>) -> Result<(), ConfigError> {
        match map.get("enableRedundantFailover").map(Value::as_bool) {
            None | Some(Some(false)) => Ok(()),
            Some(Some(true)) => Err(self.err(
                Some("enableRedundantFailover"),
                "redundant failover is not supported by this COPS; set it to false or remove it",
            )),
            Some(None) => Err(self.err(Some("enableRedundantFailover"), "must be true or false")),
        }
    }

    fn timing(&self, map: &Map<String, Value>) -> Result<Timing, ConfigError> {
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
        Ok(Timing {
            period,
            deadline,
            allowance,
            briefing,
        })
    }

    fn process_list(
        &mut self,
        map: &Map<String, Value>,
        our_uri: &str,
        ignored: &mut Vec<String>,
    ) -> Result<Vec<ProcessConfig>, ConfigError> {
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
        let mut names = HashSet::new();
        let mut uris = HashSet::new();
        for (i, entry) in list.iter().enumerate() {
            self.process = Some(
                entry
                    .get("name")
                    .and_then(Value::as_str)
                    .map(|n| format!("\"{n}\""))
                    .unwrap_or_else(|| format!("processList[{i}]")),
            );
            let p = self.process_entry(entry, our_uri, ignored)?;
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
        Ok(processes)
    }

    fn warnings(
        &self,
        mut ignored: Vec<String>,
        timing: &Timing,
        processes: &[ProcessConfig],
    ) -> Vec<String> {
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
        if timing.allowance == 1 && processes.iter().any(|p| p.hang_time_allowance.is_none()) {
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
        warnings
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
        let (name, uri) = self.name_and_uri(map, our_uri)?;
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
        let kill_signal = self.kill_signal(map)?;
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
        let kill_budget = self.kill_budget(map)?;
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

    fn name_and_uri(
        &self,
        map: &Map<String, Value>,
        our_uri: &str,
    ) -> Result<(String, String), ConfigError> {
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
        Ok((name, uri))
    }

    fn kill_signal(&self, map: &Map<String, Value>) -> Result<Signal, ConfigError> {
        match map.get("killSignal") {
            None => Ok(Signal::KILL),
            Some(Value::String(s)) => Signal::parse(s).ok_or_else(|| {
                self.err(
                    Some("killSignal"),
                    format!("unknown or unsupported signal {s:?} (e.g. SIGKILL, SIGABRT, SIGTERM)"),
                )
            }),
            Some(_) => Err(self.err(
                Some("killSignal"),
                "must be a signal name such as \"SIGABRT\"",
            )),
        }
    }

    fn kill_budget(
        &self,
        map: &Map<String, Value>,
    ) -> Result<Option<(u32, Duration)>, ConfigError> {
        match (
            self.opt_u64(map, "maxKills")?,
            self.opt_u64(map, "killWindowMS")?,
        ) {
            (None, None) => Ok(None),
            (Some(k), Some(w)) => {
                if k == 0 || k > u64::from(u32::MAX) {
                    return Err(self.err(Some("maxKills"), "must be >= 1"));
                }
                if w == 0 {
                    return Err(self.err(Some("killWindowMS"), "must be > 0"));
                }
                Ok(Some((k as u32, Duration::from_millis(w))))
            }
            (Some(_), None) => Err(self.err(
                Some("killWindowMS"),
                "missing: maxKills needs a killWindowMS",
            )),
            (None, Some(_)) => {
                Err(self.err(Some("maxKills"), "missing: killWindowMS needs a maxKills"))
            }
        }
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
