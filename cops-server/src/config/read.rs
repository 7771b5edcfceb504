//! Reading the raw JSON map into a [`Config`]: every key checked, every error
//! naming the file, the process and the key.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Map, Value};

use super::limits::{
    ALLOWANCE, BRIEFING_MS, ESCALATION_MS, HANG_TIME_MS, KILL_WINDOW_MS, MAX_KILLS, PERIOD_MS,
    SITE_KILLS, SUGGEST_SITE_BUDGET_FROM,
};
use super::{
    did_you_mean, Config, ConfigError, ProcessConfig, Signal, IGNORED_KEYS, PROC_KEYS, TOP_KEYS,
};

mod loops;

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

/// Whether `s` holds a NUL or another control character.
fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Whether `u` can be a user name or a numeric uid.
fn valid_user(u: &str) -> bool {
    !(u.is_empty() || has_control(u) || u.contains(':') || u.contains('/') || u.len() > 255)
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
        self.check_uri("ourUri", &our_uri)?;
        let timing = self.timing(map)?;
        let controller_name = match self.opt_str(map, "controllerName")? {
            Some(n) => n,
            None => self.hostname.to_owned(),
        };
        if has_control(&controller_name) {
            return Err(self.err(
                Some("controllerName"),
                "must not hold NUL or other control characters",
            ));
        }
        let max_kills_per_window = self
            .ranged(map, "maxKillsPerWindow", SITE_KILLS)?
            .map(|k| k as u32);
        let control_users = self.control_users(map)?;
        let processes = self.process_list(map, &our_uri, &mut ignored)?;
        let mut warnings = self.warnings(ignored, &timing, &processes);
        warnings.extend(self.process_warnings(&timing, &processes));
        let suggestions = self.suggestions(&timing, max_kills_per_window, &processes);
        Ok(Config {
            our_uri,
            heartbeat: Duration::from_millis(timing.period),
            reply_deadline: Duration::from_millis(timing.deadline),
            error_allowance: timing.allowance,
            briefing: Duration::from_millis(timing.briefing),
            controller_name,
            processes,
            max_kills_per_window,
            control_users,
            warnings,
            suggestions,
        })
    }

    /// A URI COPS talks on: valid, printable, and not the whole bus.
    fn check_uri(&self, key: &str, uri: &str) -> Result<(), ConfigError> {
        fims::uri::validate(uri).map_err(|r| self.err(Some(key), format!("{uri:?} {r}")))?;
        if has_control(uri) {
            return Err(self.err(Some(key), "must not hold NUL or other control characters"));
        }
        if uri == "/" {
            return Err(self.err(Some(key), "must not be \"/\": that is every URI on the bus"));
        }
        Ok(())
    }

    /// An integer key within `range` (inclusive), if present.
    fn ranged(
        &self,
        map: &Map<String, Value>,
        key: &str,
        (lo, hi): (u64, u64),
    ) -> Result<Option<u64>, ConfigError> {
        match self.opt_u64(map, key)? {
            Some(v) if v < lo || v > hi => {
                Err(self.err(Some(key), format!("must be {lo}..={hi}, got {v}")))
            }
            other => Ok(other),
        }
    }

    /// `controlUsers`: who may inhibit and resume (user names or numeric uids).
    fn control_users(&self, map: &Map<String, Value>) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(v) = map.get("controlUsers") else {
            return Ok(None);
        };
        let bad = || {
            self.err(
                Some("controlUsers"),
                "must be an array of user names or numeric uids, e.g. [\"root\", \"site\"] ([] lets nobody inhibit)",
            )
        };
        let list = v.as_array().ok_or_else(bad)?;
        if list.len() > 64 {
            return Err(self.err(Some("controlUsers"), "at most 64 users"));
        }
        let mut users = Vec::with_capacity(list.len());
        for u in list {
            let u = u.as_str().ok_or_else(bad)?;
            if !valid_user(u) {
                return Err(bad());
            }
            users.push(u.to_owned());
        }
        Ok(Some(users))
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
        let allowance = self
            .ranged(map, "heartbeatErrorAllowance", ALLOWANCE)?
            .unwrap_or(5) as u32;
        let briefing = self
            .ranged(map, "briefingFrequencyMS", BRIEFING_MS)?
            .unwrap_or(5000);
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
            if fims::uri::matches(&p.uri, our_uri) || fims::uri::matches(our_uri, &p.uri) {
                return Err(self.err(
                    Some("uri"),
                    format!(
                        "{} and ourUri {our_uri} overlap (one is under the other): COPS would take the process's messages for its own or answer its own heartbeats",
                        p.uri
                    ),
                ));
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
                "{}: heartbeatErrorAllowance 1: a single reply lost on the bus makes a verdict (2 or more recommended)",
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

    fn process_warnings(&self, timing: &Timing, processes: &[ProcessConfig]) -> Vec<String> {
        let mut out = Vec::new();
        for p in processes {
            if let Some(h) = p.hang_time_allowance {
                if (h.as_millis() as u64) < timing.period {
                    out.push(format!(
                        "{}: process \"{}\": hangTimeAllowanceMS {} is shorter than the heartbeat period ({} ms): the process is hung at its first missed deadline",
                        self.file,
                        p.name,
                        h.as_millis(),
                        timing.period
                    ));
                }
            }
            out.extend(self.loop_warnings(p));
            if let Some(e) = p.expected_exe.as_deref().filter(|e| !e.contains('/')) {
                out.push(format!(
                    "{}: process \"{}\": expectedExe {e:?} is a bare file name: only the last component of /proc/<pid>/exe is compared; give the full path",
                    self.file, p.name
                ));
            }
        }
        out
    }

    fn suggestions(
        &self,
        timing: &Timing,
        site: Option<u32>,
        processes: &[ProcessConfig],
    ) -> Vec<String> {
        let killable = processes
            .iter()
            .filter(|p| p.required && p.kill_on_hang)
            .count();
        if site.is_some() || killable < SUGGEST_SITE_BUDGET_FROM {
            return Vec::new();
        }
        let k = killable.div_ceil(4).max(2);
        vec![format!(
            "{}: {killable} processes may be killed and maxKillsPerWindow is unset (no site-wide limit). If a fault outside them (a shared dependency, a storage stall) can hang many at once, a budget such as \"maxKillsPerWindow\": {k} (a quarter of them per {} ms) makes COPS kill them at a bounded rate, in order",
            self.file,
            u64::from(timing.allowance) * timing.period
        )]
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
        let hang_time_allowance = self
            .ranged(map, "hangTimeAllowanceMS", HANG_TIME_MS)?
            .map(Duration::from_millis);
        let kill_signal = self.kill_signal(map)?;
        let kill_escalation = Duration::from_millis(
            self.ranged(map, "killEscalationMS", ESCALATION_MS)?
                .unwrap_or(5000),
        );
        let expected_exe = self.expected_exe(map)?;
        let expected_user = self.opt_str(map, "expectedUser")?;
        if let Some(u) = &expected_user {
            if !valid_user(u) {
                return Err(self.err(
                    Some("expectedUser"),
                    "must be a user name or a numeric uid, e.g. \"site\" or \"1001\"",
                ));
            }
        }
        let kill_budget = self.kill_budget(map)?;
        let loops = self.loops(map, required, kill_on_hang)?;
        Ok(ProcessConfig {
            name,
            uri,
            kill_on_hang,
            required,
            hang_time_allowance,
            kill_signal,
            kill_escalation,
            expected_exe,
            expected_user,
            kill_budget,
            loops,
        })
    }

    /// `expectedExe`: an absolute path, or a bare file name.
    fn expected_exe(&self, map: &Map<String, Value>) -> Result<Option<String>, ConfigError> {
        let Some(e) = self.opt_str(map, "expectedExe")? else {
            return Ok(None);
        };
        let bare = !e.contains('/');
        let path_ok = e.starts_with('/') && !e.ends_with('/') && !e.contains("//");
        if e.is_empty() || has_control(&e) || !(bare || path_ok) {
            return Err(self.err(
                Some("expectedExe"),
                "must be the executable's full path (e.g. \"/usr/bin/site_controller\") or its file name",
            ));
        }
        Ok(Some(e))
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
        if has_control(&name) {
            return Err(self.err(
                Some("name"),
                "must not hold NUL or other control characters",
            ));
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
        self.check_uri("uri", &uri)?;
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
            (Some(_), Some(_)) => {
                let k = self.ranged(map, "maxKills", MAX_KILLS)?.unwrap_or(1);
                let w = self
                    .ranged(map, "killWindowMS", KILL_WINDOW_MS)?
                    .unwrap_or(1);
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
        if p < PERIOD_MS.0 || p > PERIOD_MS.1 {
            return Err(self.err(
                Some(key),
                format!("must be {}..={} ms, got {p}", PERIOD_MS.0, PERIOD_MS.1),
            ));
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
