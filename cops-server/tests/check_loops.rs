//! `cops --check` explains the loop supervision it will apply (defaults
//! filled in) and refuses inconsistent loop keys with the usual message.

use std::process::Command;

use serde_json::Value;

fn check(text: &str) -> (Option<i32>, Value, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cops.json");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(testkit::bin("cops-server", "cops"))
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("cops runs");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_explains_the_effective_loop_supervision() {
    let (code, v, err) = check(
        r#"{"heartbeatFreq":250,"processList":[
            {"name":"modbus","uri":"/modbus","killOnHang":true,"loopDeadlineMS":200},
            {"name":"dispatch","uri":"/dispatch","killOnHang":true,
             "minLoopsPerBeat":20,"maxLoopsPerBeat":40,"loopAction":"kill"},
            {"name":"plain","uri":"/plain","killOnHang":true}]}"#,
    );
    assert_eq!(code, Some(0), "{err}");
    let modbus = &v["processList"][0];
    assert_eq!(modbus["loopDeadlineMS"], 200);
    assert_eq!(modbus["loopToleranceBeats"], 3);
    assert_eq!(modbus["loopAction"], "alarm");
    assert_eq!(v["processList"][1]["loopAction"], "kill");
    assert!(v["processList"][2].get("loopAction").is_none(), "{v}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("cops: loop supervision: "))
        .collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(
            "cops: loop supervision: process \"modbus\": an iteration longer than 200 ms"
        ),
        "{err}"
    );
    assert!(
        lines[1].contains(
            "fewer than 20 or more than 40 iterations per 250 ms heartbeat period is a fault"
        ) && lines[1].contains("killed like a hung process"),
        "{err}"
    );
}

#[test]
fn check_refuses_inconsistent_loop_keys() {
    for (extra, needle) in [
        (
            r#","minLoopsPerBeat":9,"maxLoopsPerBeat":3"#,
            "key \"maxLoopsPerBeat\": must be >= minLoopsPerBeat (9), got 3",
        ),
        (
            r#","loopDeadlineMS":100,"loopToleranceBeats":0"#,
            "key \"loopToleranceBeats\": must be 1..=1000, got 0",
        ),
        (r#","loopDeadlineMS":0"#, "key \"loopDeadlineMS\": must be 1..=3600000, got 0"),
        (
            r#","loopAction":"kill""#,
            "key \"loopAction\": supervises nothing without loopDeadlineMS, minLoopsPerBeat or maxLoopsPerBeat",
        ),
        (
            r#","loopDeadlineMS":100,"loopAction":"reboot""#,
            "key \"loopAction\": unknown action \"reboot\": \"alarm\" (the default) or \"kill\"",
        ),
    ] {
        let text = format!(
            r#"{{"processList":[{{"name":"modbus","uri":"/modbus","killOnHang":true{extra}}}]}}"#
        );
        let (code, _, err) = check(&text);
        assert_eq!(code, Some(1), "{extra}: {err}");
        assert!(err.contains(&format!("process \"modbus\": {needle}")), "{extra}: {err}");
        assert!(err.contains("cops: configuration test failed"), "{err}");
    }
}
