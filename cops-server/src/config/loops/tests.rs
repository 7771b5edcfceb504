//! The loop keys: defaults, ranges, the combinations that are errors, what
//! `--check` prints.

use std::time::Duration;

use crate::config::{parse, ConfigError, LoopAction, LoopConfig};

/// One process with the required keys plus `extra`, 250 ms period.
fn one(extra: &str) -> Result<crate::config::Config, ConfigError> {
    let text = format!(
        r#"{{"heartbeatFreq":250,"processList":[{{"name":"modbus","uri":"/modbus","killOnHang":true{extra}}}]}}"#
    );
    parse("f.json", &text, "testhost")
}

/// The error for `extra`: (key, message).
fn err(extra: &str) -> (Option<String>, String) {
    let e = one(extra).expect_err(extra);
    assert_eq!(e.process.as_deref(), Some("\"modbus\""), "{e}");
    (e.key.clone(), e.to_string())
}

#[test]
fn no_loop_key_no_supervision() {
    let c = one("").unwrap();
    assert_eq!(c.processes[0].loops, None);
    assert!(c.explain_loops().is_empty());
    let json = c.to_json();
    assert!(json["processList"][0].get("loopAction").is_none(), "{json}");
}

#[test]
fn defaults_filled_in() {
    let c = one(r#","loopDeadlineMS":200"#).unwrap();
    assert_eq!(
        c.processes[0].loops,
        Some(LoopConfig {
            deadline: Some(Duration::from_millis(200)),
            min_per_beat: None,
            max_per_beat: None,
            tolerance: 3,
            action: LoopAction::Alarm,
        })
    );
    let json = c.to_json();
    let p = &json["processList"][0];
    assert_eq!(p["loopDeadlineMS"], 200);
    assert_eq!(p["loopToleranceBeats"], 3, "the default is printed");
    assert_eq!(p["loopAction"], "alarm", "the default is printed");
    assert!(p.get("minLoopsPerBeat").is_none());
}

#[test]
fn every_key() {
    let c = one(
        r#","loopDeadlineMS":150,"minLoopsPerBeat":1,"maxLoopsPerBeat":50,"loopToleranceBeats":4,"loopAction":"kill""#,
    )
    .unwrap();
    let l = c.processes[0].loops.unwrap();
    assert_eq!(l.deadline_us(), Some(150_000));
    assert_eq!((l.min_per_beat, l.max_per_beat), (Some(1), Some(50)));
    assert_eq!((l.tolerance, l.action), (4, LoopAction::Kill));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let lines = c.explain_loops();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0],
        "process \"modbus\": an iteration longer than 150 ms (or none ending for that long) is an overrun; \
         fewer than 1 or more than 50 iterations per 250 ms heartbeat period is a fault; \
         after 4 failing beats in a row: killed like a hung process (same identity checks, kill budgets and evidence); \
         the alarm ends after 4 good beats in a row. Judged only on replies that carry \"loop\" (hosts that tick)"
    );
}

#[test]
fn min_alone_and_max_alone() {
    let c = one(r#","minLoopsPerBeat":2"#).unwrap();
    assert!(c.explain_loops()[0].contains("fewer than 2 iterations per 250 ms"));
    let c = one(r#","maxLoopsPerBeat":9,"loopToleranceBeats":1"#).unwrap();
    let line = &c.explain_loops()[0];
    assert!(line.contains("more than 9 iterations per 250 ms"), "{line}");
    assert!(line.contains("after 1 failing beat in a row"), "{line}");
}

#[test]
fn zero_and_out_of_range_are_errors() {
    for (extra, key) in [
        (r#","loopDeadlineMS":0"#, "loopDeadlineMS"),
        (r#","loopDeadlineMS":3600001"#, "loopDeadlineMS"),
        (r#","minLoopsPerBeat":0"#, "minLoopsPerBeat"),
        (r#","maxLoopsPerBeat":0"#, "maxLoopsPerBeat"),
        (
            r#","loopDeadlineMS":100,"loopToleranceBeats":0"#,
            "loopToleranceBeats",
        ),
        (
            r#","loopDeadlineMS":100,"loopToleranceBeats":1001"#,
            "loopToleranceBeats",
        ),
        (r#","loopDeadlineMS":-5"#, "loopDeadlineMS"),
        (r#","loopDeadlineMS":1.5"#, "loopDeadlineMS"),
        (r#","loopDeadlineMS":"100""#, "loopDeadlineMS"),
    ] {
        let (k, msg) = err(extra);
        assert_eq!(k.as_deref(), Some(key), "{extra}: {msg}");
        assert!(msg.contains("must be"), "{extra}: {msg}");
    }
    let (_, msg) = err(r#","loopDeadlineMS":100,"loopToleranceBeats":0"#);
    assert!(msg.ends_with("must be 1..=1000, got 0"), "{msg}");
}

#[test]
fn min_above_max_is_an_error() {
    let (k, msg) = err(r#","minLoopsPerBeat":5,"maxLoopsPerBeat":3"#);
    assert_eq!(k.as_deref(), Some("maxLoopsPerBeat"));
    assert!(
        msg.contains("must be >= minLoopsPerBeat (5), got 3"),
        "{msg}"
    );
    // Equal bounds are a valid (strict) setting.
    assert!(one(r#","minLoopsPerBeat":4,"maxLoopsPerBeat":4"#).is_ok());
}

#[test]
fn action_or_tolerance_alone_supervise_nothing() {
    for (extra, key) in [
        (r#","loopAction":"kill""#, "loopAction"),
        (r#","loopAction":"alarm""#, "loopAction"),
        (r#","loopToleranceBeats":3"#, "loopToleranceBeats"),
    ] {
        let (k, msg) = err(extra);
        assert_eq!(k.as_deref(), Some(key), "{extra}");
        assert!(
            msg.contains(
                "supervises nothing without loopDeadlineMS, minLoopsPerBeat or maxLoopsPerBeat"
            ),
            "{msg}"
        );
    }
}

#[test]
fn unknown_action_is_an_error() {
    let (k, msg) = err(r#","loopDeadlineMS":100,"loopAction":"restart""#);
    assert_eq!(k.as_deref(), Some("loopAction"));
    assert!(
        msg.contains("unknown action \"restart\": \"alarm\" (the default) or \"kill\""),
        "{msg}"
    );
    let (_, msg) = err(r#","loopDeadlineMS":100,"loopAction":true"#);
    assert!(
        msg.contains("must be \"alarm\" or \"kill\", got true"),
        "{msg}"
    );
    let (_, msg) = err(r#","loopDeadlineMS":100,"loopAction":"Kill""#);
    assert!(
        msg.contains("unknown action \"Kill\""),
        "case matters: {msg}"
    );
}

#[test]
fn kill_needs_kill_on_hang() {
    let text = r#"{"processList":[{"name":"modbus","uri":"/modbus","killOnHang":false,
        "loopDeadlineMS":100,"loopAction":"kill"}]}"#;
    let e = parse("f.json", text, "h").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("loopAction"));
    assert!(e.message.contains("\"kill\" needs killOnHang: true"), "{e}");
    // An alarm needs no killOnHang.
    let text = text.replace("\"kill\"", "\"alarm\"");
    assert!(parse("f.json", &text, "h").is_ok());
}

#[test]
fn not_heartbeated_is_never_judged_so_an_error() {
    let (k, msg) = err(r#","requiredForHealthyStatus":false,"minLoopsPerBeat":1"#);
    assert_eq!(k.as_deref(), Some("minLoopsPerBeat"));
    assert!(msg.contains("is not heartbeated"), "{msg}");
}

#[test]
fn typos_get_a_suggestion() {
    let (k, msg) = err(r#","loopDeadlineMs":100"#);
    assert_eq!(k.as_deref(), Some("loopDeadlineMs"));
    assert!(msg.contains("did you mean \"loopDeadlineMS\""), "{msg}");
    let (_, msg) = err(r#","loopToleranceBeat":2"#);
    assert!(msg.contains("did you mean \"loopToleranceBeats\""), "{msg}");
}

#[test]
fn tolerance_one_with_kill_draws_a_warning() {
    let c = one(r#","loopDeadlineMS":100,"loopToleranceBeats":1,"loopAction":"kill""#).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("a single bad beat kills the process"));
    let c = one(r#","loopDeadlineMS":100,"loopToleranceBeats":1"#).unwrap();
    assert!(
        c.warnings.is_empty(),
        "an alarm on one beat is fine: {:?}",
        c.warnings
    );
}
