//! `cops-demo --keep-running` stays up for `fims_send` (with the printed
//! command), and every child dies with the demo: on Ctrl-C (SIGINT, exit 0
//! after the scenario) and when the demo itself is SIGKILLed (the kernel's
//! parent-death signal).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use testkit::{wait_for, ChildGuard};

struct Demo {
    child: ChildGuard,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start() -> Demo {
        testkit::bin("fims-server", "fims_server");
        testkit::bin("fims-server", "fims_send");
        testkit::bin("cops-server", "cops");
        let mut child = ChildGuard::spawn(
            Command::new(env!("CARGO_BIN_EXE_cops-demo"))
                .args(["--fast", "--no-build", "--keep-running"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped()),
        );
        let out = child.0.stdout.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads stdout until a line contains `needle`; that line.
    fn line_with(&mut self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(60);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?}; saw:\n{}", self.seen.join("\n"));
    }
}

/// PIDs of live processes whose command line mentions `text`.
fn procs_mentioning(text: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(text))
        })
        .collect()
}

/// Starts the demo, waits for the keep-running phase; the demo and its temp dir.
fn running_demo() -> (Demo, String) {
    let mut demo = Demo::start();
    let line = demo.line_with("working in ");
    let dir = line
        .split("working in ")
        .nth(1)
        .expect("dir")
        .trim()
        .to_owned();
    demo.line_with("Everything keeps running");
    let n = procs_mentioning(&dir).len();
    assert!(
        n >= 4,
        "expected broker, cops and 2 demo processes, found {n}"
    );
    (demo, dir)
}

#[test]
fn keep_running_serves_fims_send_and_ctrl_c_stops_every_child() {
    let (mut demo, dir) = running_demo();
    // The printed fims_send command works as printed.
    let cmd = demo.line_with("-m get -u /cops/stats");
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let out = Command::new(words[0])
        .args(&words[1..])
        .output()
        .expect("fims_send runs");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{cmd}: {out:?}");
    assert!(body.contains("hybridos_controller"), "{body}");

    demo.child.signal(libc::SIGINT);
    let status = demo.child.wait_timeout(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    assert!(
        wait_for(Duration::from_secs(5), || procs_mentioning(&dir).is_empty()),
        "children left: {:?}",
        procs_mentioning(&dir)
    );
    assert!(!std::path::Path::new(&dir).exists(), "temp dir left behind");
}

#[test]
fn children_die_with_a_killed_demo() {
    let (mut demo, dir) = running_demo();
    demo.child.signal(libc::SIGKILL);
    demo.child.wait_timeout(Duration::from_secs(10));
    assert!(
        wait_for(Duration::from_secs(5), || procs_mentioning(&dir).is_empty()),
        "children left: {:?}",
        procs_mentioning(&dir)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_run_says_why_and_exits_non_zero() {
    testkit::bin("fims-server", "fims_server");
    testkit::bin("cops-server", "cops");
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.json");
    let text = cops_examples::demo::DEMO_CONFIG.replace("\"killOnHang\"", "\"kilOnHang\"");
    std::fs::write(&bad, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_cops-demo"))
        .args(["--fast", "--no-build", "--config"])
        .arg(&bad)
        .stdin(Stdio::null())
        .output()
        .expect("cops-demo runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cops-demo FAILED: cops exited"), "{err}");
    // cops's own complaint is in the log tail the demo prints.
    assert!(err.contains("kilOnHang"), "{err}");
}
