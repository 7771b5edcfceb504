//! The unit files in `examples/systemd/` (the ones the packages install) keep
//! the conventions docs/systemd.md explains: `Wants=` + `After=` toward the
//! broker and never `Requires=`; COPS `Type=notify` with a watchdog and a
//! config check; one socket path that the broker and its clients agree on;
//! hardening within the exposure limits (when `systemd-analyze` is there);
//! `Documentation=` files that the packages install; and the configuration the
//! `cops` package installs as /etc/cops/cops.json passes `cops --check`.
//! `packaging/check` repeats the unit checks on the installed packages, with
//! `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn unit_path(name: &str) -> PathBuf {
    repo().join("examples/systemd").join(name)
}

/// `(key, value)` of every setting line of a unit file, in order.
fn settings(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(unit_path(name)).expect(name);
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Every value of `key` (space-separated list values split apart).
fn values(unit: &[(String, String)], key: &str) -> Vec<String> {
    unit.iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_owned))
        .collect()
}

fn one(unit: &[(String, String)], key: &str) -> String {
    let found: Vec<_> = unit.iter().filter(|(k, _)| k == key).collect();
    assert_eq!(found.len(), 1, "{key}= should appear once: {found:?}");
    found[0].1.clone()
}

const CLIENTS: [&str; 2] = ["cops.service", "cops-monitored@.service"];

#[test]
fn clients_want_and_follow_the_broker_never_require_it() {
    for name in CLIENTS {
        let unit = settings(name);
        let broker = "fims_server.service".to_owned();
        assert!(values(&unit, "Wants").contains(&broker), "{name}: Wants=");
        assert!(values(&unit, "After").contains(&broker), "{name}: After=");
        for strong in ["Requires", "Requisite", "BindsTo", "PartOf"] {
            assert!(
                values(&unit, strong).is_empty(),
                "{name}: {strong}= would restart the site with the broker"
            );
        }
        assert_eq!(one(&unit, "Restart"), "always", "{name}");
    }
    assert_eq!(one(&settings("fims_server.service"), "Restart"), "always");
}

#[test]
fn cops_is_notify_with_watchdog_and_checks_its_config_first() {
    let unit = settings("cops.service");
    assert_eq!(one(&unit, "Type"), "notify");
    let watchdog: u64 = one(&unit, "WatchdogSec").parse().expect("seconds");
    assert!(
        watchdog >= 5,
        "WatchdogSec {watchdog} too short for a loaded host"
    );
    let pre = one(&unit, "ExecStartPre");
    let start = one(&unit, "ExecStart");
    assert!(pre.ends_with("--check"), "{pre}");
    assert_eq!(
        pre.trim_end_matches("--check").trim(),
        start,
        "same binary and config"
    );
    assert_eq!(one(&settings("fims_server.service"), "Type"), "notify");
}

#[test]
fn broker_and_clients_agree_on_the_socket() {
    let broker = settings("fims_server.service");
    let exec = one(&broker, "ExecStart");
    let args: Vec<_> = exec.split_whitespace().collect();
    let after = |flag: &str| {
        let at = args.iter().position(|a| *a == flag).expect(flag);
        args[at + 1].to_owned()
    };
    let socket = after("--socket");
    let dir = one(&broker, "RuntimeDirectory");
    assert!(
        socket.starts_with(&format!("/run/{dir}/")),
        "{socket} is not in the broker's RuntimeDirectory {dir}"
    );
    assert_eq!(after("--mode"), "0660");
    let group = one(&broker, "Group");
    for name in CLIENTS {
        let unit = settings(name);
        let env = values(&unit, "Environment");
        assert!(
            env.contains(&format!("FIMS_SOCKET={socket}")),
            "{name}: FIMS_SOCKET {env:?}"
        );
        assert!(
            values(&unit, "SupplementaryGroups").contains(&group),
            "{name}: not in group {group}"
        );
    }
}

#[test]
fn documentation_files_are_installed_by_the_packages() {
    let units = [
        ("fims_server.service", "fims-server"),
        ("cops.service", "cops-server"),
        ("cops-monitored@.service", "cops-server"),
    ];
    for (name, krate) in units {
        let manifest =
            std::fs::read_to_string(repo().join(krate).join("Cargo.toml")).expect("Cargo.toml");
        let docs = values(&settings(name), "Documentation");
        assert!(!docs.is_empty(), "{name}: no Documentation=");
        for doc in docs {
            let path = doc.strip_prefix("file:///").expect("file:// URL");
            assert!(
                manifest.contains(&format!("\"{path}\""))
                    && manifest.contains(&format!("\"/{path}\"")),
                "{name}: {doc} is not installed by both packages of {krate}"
            );
        }
    }
}

/// COPS without root (docs/systemd.md): `cops.service` runs as the `cops`
/// system user that the package's sysusers file creates, with exactly the
/// capabilities that cops-server/tests/unprivileged.rs shows it needs, as
/// ambient and bounding set alike, and no way to gain more.
#[test]
fn cops_runs_as_its_own_user_with_exactly_the_documented_capabilities() {
    let unit = settings("cops.service");
    assert_eq!(one(&unit, "User"), "cops");
    let caps = ["CAP_KILL", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"];
    assert_eq!(values(&unit, "AmbientCapabilities"), caps);
    assert_eq!(values(&unit, "CapabilityBoundingSet"), caps);
    assert_eq!(one(&unit, "NoNewPrivileges"), "yes");
    let sysusers =
        std::fs::read_to_string(repo().join("packaging/sysusers.d/cops.conf")).expect("cops.conf");
    assert!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", "cops"])),
        "packaging/sysusers.d/cops.conf does not create user cops:\n{sysusers}"
    );
    let doc = std::fs::read_to_string(repo().join("docs/systemd.md")).expect("systemd.md");
    assert!(
        doc.contains(&format!("AmbientCapabilities={}", caps.join(" "))),
        "docs/systemd.md does not show the unit's capabilities"
    );
}

/// `systemd-analyze security --offline=yes` exposure within docs/systemd.md's
/// limits. Skipped with a notice where systemd-analyze is missing (.ci/run
/// installs it; packaging/check checks the installed units as well).
#[test]
fn exposure_within_limits() {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("NOTICE: systemd-analyze is not installed; skipping the exposure check");
        return;
    }
    for (name, limit) in [
        ("fims_server.service", "30"),
        ("cops-monitored@.service", "30"),
        ("cops.service", "45"),
    ] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={limit}"))
            .arg(unit_path(name))
            .output()
            .expect("systemd-analyze runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: exposure over {limit}/10:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn packaged_default_config_passes_cops_check() {
    let cops = testkit::bin("cops-server", "cops");
    let out = Command::new(cops)
        .arg("--config")
        .arg(repo().join("packaging/etc/cops/cops.json"))
        .arg("--check")
        .output()
        .expect("cops runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
