//! `cops why NAME [--json]`: the decision log of one process, newest first,
//! from `get <ourUri>/events/<name>`.

use std::process::ExitCode;

use fims::Method;
use serde_json::Value;

use super::{age, use_color, Paint, Target};

/// `cops why`.
#[derive(Debug, Clone, clap::Args)]
pub struct WhyArgs {
    #[command(flatten)]
    target: Target,
    /// The process (its configured name).
    name: String,
    /// Print what COPS answered as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(a: &WhyArgs) -> ExitCode {
    let answer = a.target.connect("cops_why").and_then(|mut c| {
        let path = format!("/events/{}", a.name);
        a.target.ask(&mut c, Method::Get, &path, b"")
    });
    match answer {
        Ok(v) if a.json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", render_why(&v, Paint(use_color())));
            ExitCode::SUCCESS
        }
        Err(f) => f.exit(),
    }
}

/// `1` info, `2` status, `3` alarm, `4` fault.
fn severity(n: u64) -> (&'static str, &'static str) {
    match n {
        4 => ("FAULT", "1;31"),
        3 => ("ALARM", "33"),
        2 => ("status", "0"),
        _ => ("info", "2"),
    }
}

/// The numbers behind a loop verdict, in words.
fn loop_decided_by(d: &Value) -> Option<String> {
    let f = d.get("loop")?;
    let mut limits = Vec::new();
    if let Some(ms) = d["deadline_ms"].as_u64() {
        limits.push(format!("loopDeadlineMS {ms}"));
    }
    for (k, name) in [
        ("min_per_beat", "minLoopsPerBeat"),
        ("max_per_beat", "maxLoopsPerBeat"),
    ] {
        if let Some(n) = d[k].as_u64() {
            limits.push(format!("{name} {n}"));
        }
    }
    let us = |k: &str| {
        f[k].as_f64()
            .map_or_else(|| "?".into(), |us| super::ms(us / 1000.0))
    };
    let last = match f["count"].as_u64() {
        Some(0) => "last beat: no iteration ended".to_owned(),
        Some(n) => format!(
            "last beat {n} iteration{}, longest {}",
            if n == 1 { "" } else { "s" },
            us("max_us")
        ),
        None => "no loop figures".to_owned(),
    };
    let signal = d["signal"].as_str().unwrap_or("?");
    let decision = match d["decision"].as_str().unwrap_or("?") {
        "alarm" => "alarm only (loopAction \"alarm\")".to_owned(),
        "killing" => format!("killing with {signal}"),
        "deferred" => "kill deferred (site kill budget)".into(),
        "not_killed" => "not killed".into(),
        other => format!("not killed ({other})"),
    };
    Some(format!(
        "decided by: {} failing beats in a row (loopToleranceBeats {}, period {} ms; {}); {last}, p99 {}: {decision}",
        d["failing"],
        d["tolerance"],
        d["period_ms"],
        limits.join(", "),
        us("p99_us"),
    ))
}

/// The numbers behind an entry, in words (verdicts carry them).
fn decided_by(d: &Value) -> Option<String> {
    if d.get("loop").is_some() {
        return loop_decided_by(d);
    }
    let missed = d.get("missed")?.as_u64()?;
    let allowance = d["allowance"].as_u64().unwrap_or(0);
    let rule = match d["hang_time_allowance_ms"].as_u64() {
        Some(ms) => format!("{missed} heartbeats missed, hangTimeAllowanceMS {ms}"),
        None if missed > allowance => {
            format!("{missed} heartbeats missed (allowance {allowance})")
        }
        None => format!("{missed} of {allowance} heartbeats missed"),
    };
    let since = match (d["since_last_good_ms"].as_u64(), d["last_good"].as_str()) {
        (Some(ms), Some(at)) => format!(
            "{ms} ms since the last good reply at {}",
            at.replace('T', " ")
        ),
        _ => "never a good reply".into(),
    };
    let signal = d["signal"].as_str().unwrap_or("?");
    let decision = match d["decision"].as_str().unwrap_or("?") {
        "killing" => format!("killing with {signal}"),
        "deferred" => "kill deferred (site kill budget)".into(),
        "not_killed" => "not killed".into(),
        other => format!("not killed ({other})"),
    };
    Some(format!(
        "decided by: {rule}, {since} (period {} ms, deadline {} ms): {decision}",
        d["period_ms"], d["deadline_ms"]
    ))
}

/// The log as text: one line per event (time, age, kind, severity, text),
/// the numbers that decided a verdict on the line below it.
pub fn render_why(v: &Value, p: Paint) -> String {
    let events = v["events"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let name = v["name"].as_str().unwrap_or("?");
    let mut out = format!(
        "{name}: {} events, newest first (times UTC; [site] marks events of the whole site)\n",
        events.len()
    );
    let kind_w = events
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(0);
    for e in events {
        let at = e["at"].as_str().unwrap_or("?").replace('T', " ");
        let ago = age(&e["age_ms"])
            .map(|a| format!("{a} ago"))
            .unwrap_or_default();
        let (sev, color) = severity(e["severity"].as_u64().unwrap_or(1));
        let kind = e["kind"].as_str().unwrap_or("?");
        let site = if e["scope"] == "site" { "[site] " } else { "" };
        let msg = e["message"].as_str().unwrap_or("");
        out.push_str(&format!(
            "{at}  {ago:>9}  {}  {}  {site}{msg}\n",
            p.paint(color, &format!("{sev:<6}")),
            format_args!("{kind:<kind_w$}"),
        ));
        if let Some(d) = e.get("data").and_then(decided_by) {
            out.push_str(&format!("{:>w$}{d}\n", "", w = at.len() + 2));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_the_log_with_its_numbers() {
        let v = json!({"name":"victim","events":[
            {"at":"2026-11-26T14:02:24.329Z","age_ms":3100,"kind":"restarted","severity":2,"scope":"process","pid":6816,
             "message":"victim restarted: pid 6794 -> 6816 (restart #1)"},
            {"at":"2026-11-26T14:02:23.916Z","age_ms":3500,"kind":"signalled","severity":3,"scope":"process","pid":6794,
             "message":"victim (pid 6794) sent SIGKILL; threads: tid 6794 T do_signal_stop"},
            {"at":"2026-11-26T14:02:23.915Z","age_ms":3501,"kind":"hung","severity":3,"scope":"process","pid":6794,
             "message":"victim (pid 6794) hung (alive -> hung): 3 heartbeats missed, 488 ms since the last good reply; killing with SIGKILL",
             "data":{"missed":3,"allowance":3,"hang_time_allowance_ms":null,"since_last_good_ms":488,
                     "last_good":"2026-11-26T14:02:23.427Z","period_ms":100,"deadline_ms":90,"decision":"killing","signal":"SIGKILL"}},
            {"at":"2026-11-26T14:00:00.000Z","age_ms":147000,"kind":"bus","severity":2,"scope":"site","pid":null,
             "message":"connected to the FIMS broker"}
        ]});
        let text = render_why(&v, Paint(false));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("victim: 4 events, newest first"));
        assert!(
            lines[1].starts_with(
                "2026-11-26 14:02:24.329Z   3.1s ago  status  restarted  victim restarted"
            ),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("ALARM   signalled  victim (pid 6794) sent SIGKILL"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("hung       victim (pid 6794) hung"),
            "{}",
            lines[3]
        );
        assert_eq!(
            lines[4].trim_start(),
            "decided by: 3 of 3 heartbeats missed, 488 ms since the last good reply at 2026-11-26 14:02:23.427Z (period 100 ms, deadline 90 ms): killing with SIGKILL"
        );
        assert!(
            lines[5].contains("[site] connected to the FIMS broker"),
            "{}",
            lines[5]
        );
    }

    /// Loop verdicts carry their numbers; the end of an alarm is its message.
    #[test]
    fn renders_loop_alarms_kills_and_their_end() {
        let v = json!({"name":"modbus_client","events":[
            {"at":"2026-11-30T10:00:09.000Z","age_ms":1000,"kind":"loop_over","severity":2,"scope":"process","pid":7001,
             "message":"modbus_client loop alarm over: pid 7000 was replaced by pid 7001"},
            {"at":"2026-11-30T10:00:05.000Z","age_ms":5000,"kind":"loop_fault","severity":3,"scope":"process","pid":7000,
             "message":"modbus_client (pid 7000) loop overran its 100 ms deadline: 400 ms (3 of the last 5 beats); killing with SIGKILL",
             "data":{"loop":{"count":1,"max_us":400000,"p99_us":398000},"failing":3,"tolerance":3,"deadline_ms":100,
                     "min_per_beat":null,"max_per_beat":null,"period_ms":500,"decision":"killing","signal":"SIGKILL"}},
            {"at":"2026-11-30T10:00:01.000Z","age_ms":9000,"kind":"loop_fault","severity":3,"scope":"process","pid":7000,
             "message":"modbus_client (pid 7000) loop too slow: 1 iteration in 500 ms, at least 4 expected (3 of the last 5 beats); not killed: inhibited until 10:10:00",
             "data":{"loop":{"count":1,"max_us":90000,"p99_us":88000},"failing":3,"tolerance":3,"deadline_ms":null,
                     "min_per_beat":4,"max_per_beat":20,"period_ms":500,"decision":"inhibited","signal":"SIGKILL"}}
        ]});
        let text = render_why(&v, Paint(false));
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains(
                "loop_over   modbus_client loop alarm over: pid 7000 was replaced by pid 7001"
            ),
            "{text}"
        );
        assert!(lines[2].contains("ALARM   loop_fault  modbus_client (pid 7000) loop overran its 100 ms deadline: 400 ms (3 of the last 5 beats); killing with SIGKILL"), "{text}");
        assert_eq!(
            lines[3].trim_start(),
            "decided by: 3 failing beats in a row (loopToleranceBeats 3, period 500 ms; loopDeadlineMS 100); last beat 1 iteration, longest 400ms, p99 398ms: killing with SIGKILL"
        );
        assert_eq!(
            lines[5].trim_start(),
            "decided by: 3 failing beats in a row (loopToleranceBeats 3, period 500 ms; minLoopsPerBeat 4, maxLoopsPerBeat 20); last beat 1 iteration, longest 90ms, p99 88ms: not killed (inhibited)"
        );
    }
}
