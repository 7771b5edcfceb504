//! Runs `perf-report --quick --json` with tiny sizes so it cannot rot: every
//! key is there and every figure is a positive number (not checked: values).

use std::process::Command;
use std::time::{Duration, Instant};

use cops_benches::report::KEYS;

#[test]
fn quick_json_report_has_every_figure() {
    // The workspace build testkit makes (a no-op under `cargo test --workspace`)
    // puts the siblings next to perf-report; --no-build keeps it from running
    // per-package builds in the middle of the test run.
    testkit::bin("fims-server", "fims_server");
    testkit::bin("cops-server", "cops");
    testkit::bin("cops-server", "cops-sim");
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_perf-report"))
        .args([
            "--quick",
            "--no-build",
            "--json",
            "--processes",
            "50",
            "--window-ms",
            "1500",
            "--period-ms",
            "200",
            "--rtt-samples",
            "200",
            "--tp-messages",
            "2000",
            "--load-ms",
            "1000",
        ])
        .output()
        .expect("perf-report runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "perf-report failed: {stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    let obj = v.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "exactly the documented keys");
    for k in KEYS {
        let x = obj[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} is not a number: {stdout}\n{stderr}"));
        if k == "false_kills" {
            assert!(x >= 0.0, "{k} = {x}");
        } else if k == "cabi_overhead_ns" {
            // A difference of two timings (C call minus Rust call): on a loaded
            // machine noise can push a small overhead below zero.
            assert!(x.is_finite() && x > -1000.0, "{k} = {x}");
        } else {
            assert!(x > 0.0, "{k} = {x} is not positive");
        }
    }
    // Figures that are derived from others agree with them (JSON rounds to 3 decimals).
    let f = |k: &str| obj[k].as_f64().unwrap_or(f64::NAN);
    let near = |a: f64, b: f64| (a - b).abs() <= 0.002 + 1e-3 * b.abs();
    assert!(f("rtt_floor_p99_us") >= f("rtt_floor_us"), "{stdout}");
    assert!(f("rtt_broker_p99_us") >= f("rtt_broker_us"), "{stdout}");
    let relay_ratio = f("throughput_broker_mps") / f("throughput_relay_floor_mps");
    assert!(near(f("throughput_relay_ratio"), relay_ratio), "{stdout}");
    assert!(f("supervision_cpu_pct") >= f("cops_cpu_pct"), "{stdout}");
    eprintln!(
        "perf-report --quick with smoke sizes took {:.1} s: {stdout}",
        t.elapsed().as_secs_f64()
    );
    // Not a timing assertion on the code under test: the smoke run must stay
    // cheap enough for the workspace suite.
    assert!(
        t.elapsed() < Duration::from_secs(120),
        "smoke run took {:?}",
        t.elapsed()
    );
}
