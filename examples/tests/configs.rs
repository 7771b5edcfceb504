//! Every example configuration passes `cops --check`, and the files that must
//! match the design review do. (The systemd units: `systemd_units.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
}

#[test]
fn every_example_config_passes_cops_check() {
    let cops = testkit::bin("cops-server", "cops");
    for name in ["design-review.json", "demo.json", "deployed.json"] {
        let out = Command::new(&cops)
            .arg("--config")
            .arg(config(name))
            .arg("--check")
            .output()
            .expect("cops runs");
        assert!(
            out.status.success(),
            "cops --check {name}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn deployed_config_warns_about_the_keys_cops_ignores() {
    let cops = testkit::bin("cops-server", "cops");
    let out = Command::new(&cops)
        .arg("--config")
        .arg(config("deployed.json"))
        .arg("--check")
        .output()
        .expect("cops runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("patrolFrequencyMS"), "no warning: {all}");
}

#[test]
fn design_review_config_is_the_spec_example_verbatim() {
    let ours = std::fs::read(config("design-review.json")).expect("ours");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/protocol/examples/design-review-example.json");
    let theirs = std::fs::read(&spec).expect("the protocol's example config");
    assert_eq!(ours, theirs, "differs from {}", spec.display());
    let v: serde_json::Value = serde_json::from_slice(&ours).expect("JSON");
    for key in [
        "ourUri",
        "heartbeatFreq",
        "replyToGetDeadline",
        "heartbeatErrorAllowance",
    ] {
        assert!(v.get(key).is_some(), "{key} missing");
    }
}

#[test]
fn demo_config_is_the_one_the_demo_embeds() {
    let file = std::fs::read_to_string(config("demo.json")).expect("demo.json");
    assert_eq!(file, cops_examples::demo::DEMO_CONFIG);
    let v: serde_json::Value = serde_json::from_str(&file).expect("JSON");
    let names: Vec<_> = v["processList"]
        .as_array()
        .expect("processList")
        .iter()
        .map(|p| (p["name"].as_str(), p["uri"].as_str()))
        .collect();
    let (c, m) = (cops_examples::demo::CONTROLLER, cops_examples::demo::MODBUS);
    assert_eq!(names, [(Some(c.0), Some(c.1)), (Some(m.0), Some(m.1))]);
}
