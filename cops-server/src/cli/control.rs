//! `cops inhibit NAME --for 10m [--reason TEXT]` and `cops resume NAME`: a
//! FIMS `set <ourUri>/control/<name>` with `{"inhibit_ms":N,"reason":"..."}`
//! or `{"resume":true}`, answered by COPS on the replyto.

use std::process::ExitCode;
use std::time::Duration;

use fims::Method;
use serde_json::{json, Value};

use super::{age, Target};
use crate::human;

/// The longest inhibit COPS takes.
const MAX: Duration = Duration::from_secs(24 * 3600);

/// `cops inhibit`.
#[derive(Debug, Clone, clap::Args)]
pub struct InhibitArgs {
    #[command(flatten)]
    target: Target,
    /// The process (its configured name).
    name: String,
    /// How long: 10m, 1h30m, 90s, 500ms (at most 24h). It ends by itself.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_for)]
    time: Duration,
    /// Why (shown in `cops status`, the events and the log).
    #[arg(long)]
    reason: Option<String>,
}

/// `cops resume`.
#[derive(Debug, Clone, clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    target: Target,
    /// The process (its configured name).
    name: String,
}

fn parse_for(s: &str) -> Result<Duration, String> {
    let d = human::parse_duration(s)?;
    if d.is_zero() || d > MAX {
        return Err(format!("{s:?}: an inhibit lasts 1 ms to 24 h"));
    }
    Ok(d)
}

fn send(t: &Target, name: &str, body: &Value) -> Result<Value, super::Failure> {
    let mut c = t.connect("cops_control")?;
    let path = format!("/control/{name}");
    t.ask(&mut c, Method::Set, &path, body.to_string().as_bytes())
}

pub(super) fn inhibit(a: &InhibitArgs) -> ExitCode {
    let mut body = json!({"inhibit_ms": a.time.as_millis() as u64});
    if let Some(r) = &a.reason {
        body["reason"] = r.clone().into();
    }
    match send(&a.target, &a.name, &body) {
        Ok(v) => {
            let reason = v["reason"].as_str().filter(|r| !r.is_empty());
            println!(
                "{} inhibited by {} for {}, until {}{}\nCOPS keeps heartbeating and reporting it but sends it no signal until then; `cops resume {}` ends it sooner.",
                a.name,
                v["by"].as_str().unwrap_or("?"),
                age(&v["inhibit_left_ms"]).unwrap_or_default(),
                v["until"].as_str().unwrap_or("?"),
                reason.map(|r| format!(": {r}")).unwrap_or_default(),
                a.name
            );
            ExitCode::SUCCESS
        }
        Err(f) => f.exit(),
    }
}

pub(super) fn resume(a: &ResumeArgs) -> ExitCode {
    match send(&a.target, &a.name, &json!({"resume": true})) {
        Ok(v) if v["was_inhibited"] == true => {
            println!("{}: inhibit ended; COPS supervises it again", a.name);
            ExitCode::SUCCESS
        }
        Ok(_) => {
            println!("{} was not inhibited; nothing changed", a.name);
            ExitCode::SUCCESS
        }
        Err(f) => f.exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_within_a_day() {
        assert_eq!(parse_for("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_for("24h"), Ok(MAX));
        assert!(parse_for("25h").is_err());
        assert!(parse_for("0s").is_err());
        assert!(parse_for("soon").is_err());
    }
}
