//! Counted outcomes of one run of one case, what makes a run fail, and the
//! table the long form prints.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many stall alarms a case may raise ("one alarm per stall").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stalls {
    /// No stall was injected: no stall alarm at all.
    None,
    /// Exactly this many stalls were injected: that many alarms and "over" events.
    Exactly(usize),
    /// A fault COPS may or may not call a stall (its own stop, a broker restart,
    /// a flood): at most this many alarms, each with its "over" event.
    AtMost(usize),
}

impl Stalls {
    fn rule(self) -> String {
        match self {
            Stalls::None => "0".into(),
            Stalls::Exactly(n) => format!("={n}"),
            Stalls::AtMost(n) => format!("<={n}"),
        }
    }
}

/// What one run of one case came to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Outcome {
    /// The case (and sub-case) name.
    pub case: String,
    /// `fast` or `default`.
    pub timing: String,
    /// Real hangs injected.
    pub hangs: usize,
    /// Real hangs killed (in time or late).
    pub kills: usize,
    /// Healthy monitored processes signalled.
    pub false_kills: Vec<String>,
    /// Other processes signalled: decoys, a forger's named targets, a reused PID.
    pub wrong_kills: Vec<String>,
    /// Real hangs killed after their bound.
    pub late_kills: Vec<String>,
    /// Real hangs never killed.
    pub missed_kills: Vec<String>,
    /// Worst hang-to-death time, ms, and the bound it was held to.
    pub worst_ms: Option<(f64, f64)>,
    /// Every hang-to-death time, ms.
    pub latencies_ms: Vec<f64>,
    /// Stalls injected.
    pub stalls: usize,
    /// `bus or host stall` alarms seen.
    pub stall_alarms: usize,
    /// `stall over` events seen.
    pub stall_overs: usize,
    /// The stall rule in force: `0`, `=n` or `<=n`.
    pub stall_rule: String,
    /// `hung (` verdicts seen.
    pub verdicts: usize,
    /// Anything else that went wrong (COPS exited, a process not alive again, ...).
    pub problems: Vec<String>,
    /// Informative notes (skips, figures).
    pub notes: Vec<String>,
    /// Wall time of the run, s.
    pub secs: f64,
    /// Why the case did not run here (e.g. it needs root), if it did not.
    pub skipped: Option<String>,
    /// Stalls that were COPS's own lag alone (the host stalled COPS: its
    /// "over" event counts COPS lags and no late or lost probe), and the worst
    /// such lag, ms. The suite injects none outside `cops_sigstop`.
    pub host_stalls: usize,
    /// The worst lag of those stalls, ms.
    pub host_lag_ms: f64,
    /// Runs of this case before this one that were disturbed by the host and
    /// run again (see [`Outcome::rerun_worthy`]).
    pub disturbed_reruns: usize,
}

impl Outcome {
    /// A run that could not even start.
    pub fn broken(case: &str, timing: &str, why: String) -> Outcome {
        Outcome {
            case: case.into(),
            timing: timing.into(),
            problems: vec![why],
            stall_rule: "-".into(),
            ..Outcome::default()
        }
    }

    /// A case that cannot run here, and why (reported, not failed).
    pub fn skipped(case: &str, timing: &str, why: &str) -> Outcome {
        eprintln!("NOTICE: case {case:?} SKIPPED: {why}");
        Outcome {
            case: case.into(),
            timing: timing.into(),
            stall_rule: "-".into(),
            skipped: Some(why.into()),
            ..Outcome::default()
        }
    }

    /// Records the stall counts against `rule`.
    pub fn set_stalls(&mut self, rule: Stalls, injected: usize, alarms: usize, overs: usize) {
        self.stalls = injected;
        self.stall_alarms = alarms;
        self.stall_overs = overs;
        self.stall_rule = rule.rule();
        let ok = match rule {
            Stalls::None => alarms == 0 && overs == 0,
            Stalls::Exactly(n) => alarms == n && overs == n,
            Stalls::AtMost(n) => alarms <= n && overs == alarms,
        };
        if !ok {
            self.problems.push(format!(
                "stall alarms: {alarms} alarms and {overs} \"over\" events for {injected} injected stalls (rule {})",
                rule.rule()
            ));
        }
    }

    /// Records one real kill and its latency against its bound.
    pub fn kill(&mut self, what: &str, took: Duration, bound: Duration) {
        self.kills += 1;
        let (ms, b) = (ms(took), ms(bound));
        self.latencies_ms.push(ms);
        if self.worst_ms.is_none_or(|(w, wb)| ms / b > w / wb) {
            self.worst_ms = Some((ms, b));
        }
        if took > bound {
            self.late_kills.push(format!(
                "{what}: killed {ms:.0} ms after the hang, bound {b:.0} ms"
            ));
        }
    }

    /// Every reason this run fails (empty: it passed).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (label, list) in [
            ("false kill", &self.false_kills),
            ("wrong kill", &self.wrong_kills),
            ("late kill", &self.late_kills),
            ("missed kill", &self.missed_kills),
            ("problem", &self.problems),
        ] {
            out.extend(list.iter().map(|x| format!("{label}: {x}")));
        }
        out
    }

    /// Whether this run passed.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// A run that failed only by time (late kills, stall alarms) while the host
    /// stalled COPS itself is a disturbance of the machine, not a verdict on
    /// COPS: contract-wise COPS may act later by its own lag. Such a run is run
    /// again (never one with a false, wrong or missed kill).
    pub fn rerun_worthy(&self) -> bool {
        !self.passed()
            && self.host_stalls > 0
            && self.false_kills.is_empty()
            && self.wrong_kills.is_empty()
            && self.missed_kills.is_empty()
            && self.problems.iter().all(|p| p.starts_with("stall alarms:"))
    }
}

/// Milliseconds of a duration, as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The header of the outcome table.
pub const TABLE_HEAD: &str = "| case | timing | runs | failed | hangs | killed | false | wrong | late | missed | hang->death median / worst / bound (ms) | stall alarms / stalls (rule) | host-disturbed runs rerun | s/run |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// One table row summing the runs of one case at one timing.
pub fn table_row(runs: &[Outcome]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    let sum = |f: fn(&Outcome) -> usize| runs.iter().map(f).sum::<usize>();
    let mut all: Vec<f64> = runs.iter().flat_map(|o| o.latencies_ms.clone()).collect();
    all.sort_by(f64::total_cmp);
    let median = all
        .get(all.len() / 2)
        .map_or("-".into(), |m| format!("{m:.0}"));
    let worst = runs
        .iter()
        .filter_map(|o| o.worst_ms)
        .max_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)))
        .map(|(w, b)| format!("{median} / {w:.0} / {b:.0}"))
        .unwrap_or_else(|| "-".into());
    let secs = runs.iter().map(|o| o.secs).sum::<f64>() / runs.len() as f64;
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} ({}) | {} | {:.1} |",
        first.case,
        first.timing,
        runs.len(),
        match &first.skipped {
            Some(why) => format!("skipped: {why}"),
            None => runs.iter().filter(|o| !o.passed()).count().to_string(),
        },
        sum(|o| o.hangs),
        sum(|o| o.kills),
        sum(|o| o.false_kills.len()),
        sum(|o| o.wrong_kills.len()),
        sum(|o| o.late_kills.len()),
        sum(|o| o.missed_kills.len()),
        worst,
        sum(|o| o.stall_alarms),
        sum(|o| o.stalls),
        first.stall_rule,
        sum(|o| o.disturbed_reruns),
        secs,
    )
}

/// For a stall's "over" event (`... (N rounds void; L late probes (worst X
/// ms), D lost, G COPS lags (worst Y ms))`, docs/cops.md's events table): the
/// worst lag, ms, when the stall was COPS's own lag alone (G > 0, L = D = 0).
pub fn host_only_lag(message: &str) -> Option<f64> {
    let count = |key: &str| -> Option<u64> {
        let i = message.find(key)?;
        let before = message[..i].trim_end();
        let digits = before.rsplit(|c: char| !c.is_ascii_digit()).next()?;
        digits.parse().ok()
    };
    let (late, lost, lags) = (
        count(" late probes")?,
        count(" lost")?,
        count(" COPS lags")?,
    );
    let rest = &message[message.find(" COPS lags (worst ")? + " COPS lags (worst ".len()..];
    let worst: f64 = rest.split(' ').next()?.parse().ok()?;
    (late == 0 && lost == 0 && lags > 0).then_some(worst)
}

#[test]
fn host_only_lag_reads_the_over_event() {
    let host = "bus or host stall over after 169 ms (6 rounds void; 0 late probes (worst 0 ms), 0 lost, 4 COPS lags (worst 169 ms))";
    assert_eq!(host_only_lag(host), Some(169.0));
    let bus = "bus or host stall over after 584 ms (8 rounds void; 18 late probes (worst 328 ms), 0 lost, 0 COPS lags (worst 0 ms))";
    assert_eq!(host_only_lag(bus), None);
    assert_eq!(host_only_lag("bus or host stall over after 41 ms"), None);
}
