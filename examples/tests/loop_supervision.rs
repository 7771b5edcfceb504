//! Deadline supervision of a Rust host end to end: `demo_process` ticks
//! `Responder::loop_tick` at the end of every iteration of its work loop,
//! under the real `cops` and broker. Its loop slows from 20 ms to 300 ms
//! iterations (`set <uri>/debug/slow 300`) while it keeps answering: with
//! `loopAction: "alarm"` COPS raises the overrun alarm, the stats show it,
//! and the alarm ends when the loop is fast again; with `"kill"` COPS kills
//! it (SIGKILL, like a hang), and the restart is alive and healthy. A third
//! process with a deadline and a healthy loop is never touched.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fims::{blocking::Client, Method};
use serde_json::Value;
use testkit::{Broker, ChildGuard};

fn host(broker: &Broker, name: &str, uri: &str) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_demo_process"))
            .args(["--name", name, "--uri", uri, "--work-ms", "20"])
            .arg("--socket")
            .arg(broker.socket())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null()),
    )
}

fn stats(client: &mut Client, name: &str) -> Option<Value> {
    let uri = format!("/cops/stats/{name}");
    let answer = client
        .request(Method::Get, &uri, b"", Duration::from_millis(500))
        .ok()?;
    serde_json::from_slice(&answer.body).ok()
}

fn wait_stats(client: &mut Client, name: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < end {
        if let Some(v) = stats(client, name) {
            if cond(&v) {
                return v;
            }
            last = Some(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}: last stats of {name} {last:?}");
}

/// Every `/events` message so far that holds all of `needles` (reads what
/// has arrived, waiting up to 30 s for a first match).
fn wait_event(events: &mut Client, seen: &mut Vec<String>, needles: &[&str]) -> String {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = seen.iter().find(|e| needles.iter().all(|n| e.contains(n))) {
            return e.clone();
        }
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            panic!("no event with {needles:?} within 30 s; seen {seen:#?}");
        };
        if let Ok(Some(m)) = events.recv(Some(left.min(Duration::from_millis(200)))) {
            let v: Value = serde_json::from_slice(m.body).unwrap_or_default();
            seen.push(v["message"].as_str().unwrap_or_default().to_owned());
        }
    }
}

#[test]
fn cops_alarms_on_and_kills_for_a_rust_hosts_slow_loop() {
    testkit::bin("cops-server", "cops");
    let broker = Broker::start();
    let config = broker.dir().join("cops.json");
    std::fs::write(
        &config,
        r#"{"heartbeatFreq":100,"replyToGetDeadline":80,"heartbeatErrorAllowance":3,
            "briefingFrequencyMS":1000,"controllerName":"rust-loops",
            "processList":[
              {"name":"r_alarm","uri":"/r_alarm","killOnHang":true,"expectedExe":"demo_process",
               "loopDeadlineMS":150,"loopToleranceBeats":3},
              {"name":"r_kill","uri":"/r_kill","killOnHang":true,"expectedExe":"demo_process",
               "loopDeadlineMS":150,"loopToleranceBeats":3,"loopAction":"kill"},
              {"name":"r_fine","uri":"/r_fine","killOnHang":true,
               "loopDeadlineMS":150,"minLoopsPerBeat":1,"maxLoopsPerBeat":50,"loopAction":"kill"}
            ]}"#,
    )
    .expect("write config");
    let alarmed = host(&broker, "r_alarm", "/r_alarm");
    let mut killed = host(&broker, "r_kill", "/r_kill");
    let fine = host(&broker, "r_fine", "/r_fine");
    let _cops = ChildGuard::spawn(
        Command::new(testkit::bin("cops-server", "cops"))
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(broker.socket())
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    let mut client = Client::connect_to(broker.socket(), "loops_e2e").expect("connect");
    let mut events = Client::connect_to(broker.socket(), "loops_events").expect("connect");
    events.subscribe(&["/events"]).expect("sub /events");
    let mut seen = Vec::new();
    for (name, pid) in [
        ("r_alarm", alarmed.pid()),
        ("r_kill", killed.pid()),
        ("r_fine", fine.pid()),
    ] {
        let v = wait_stats(&mut client, name, "alive with loop figures", |v| {
            v["state"] == "alive"
                && v["pid_confirmed"] == true
                && v["loop_count"].as_u64() > Some(0)
        });
        assert_eq!(v["pid"], pid, "{v}");
    }

    // "alarm": an alarm, the stats, no kill; the alarm ends when it is fast again.
    client
        .send(Method::Set, "/r_alarm/debug/slow", None, b"300")
        .expect("send slow");
    let alarm = wait_event(
        &mut events,
        &mut seen,
        &["r_alarm (pid", "loop overran its 150 ms deadline"],
    );
    eprintln!("alarm: {alarm}");
    let v = wait_stats(&mut client, "r_alarm", "the loop alarm in the stats", |v| {
        v["loop_alarm"] == true
    });
    assert!(v["loop_overruns"].as_u64() >= Some(3), "{v}");
    assert!(v["loop_p99_us"].as_u64() >= Some(290_000), "{v}");
    assert_eq!(
        (&v["state"], &v["pid"]),
        (&Value::from("alive"), &Value::from(alarmed.pid()))
    );
    client
        .send(Method::Set, "/r_alarm/debug/slow", None, b"false")
        .expect("send fast");
    let over = wait_event(
        &mut events,
        &mut seen,
        &["r_alarm (pid", "loop back within its limits"],
    );
    eprintln!("over: {over}");

    // "kill": treated like a hang.
    let old = killed.pid();
    client
        .send(Method::Set, "/r_kill/debug/slow", None, b"300")
        .expect("send slow");
    let status = killed
        .wait_timeout(Duration::from_secs(20))
        .expect("cops kills the host with the slow loop");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let fault = wait_event(
        &mut events,
        &mut seen,
        &["r_kill (pid", "; killing with SIGKILL"],
    );
    eprintln!("fault: {fault}");
    wait_event(
        &mut events,
        &mut seen,
        &[&format!("r_kill (pid {old}) sent SIGKILL; threads: ")],
    );
    let again = host(&broker, "r_kill", "/r_kill");
    let v = wait_stats(&mut client, "r_kill", "alive again with the new PID", |v| {
        v["state"] == "alive" && v["pid"] == again.pid() && v["loop_count"].as_u64() > Some(0)
    });
    assert_eq!(v["cops_restarts"], 1, "{v}");
    assert_eq!(v["loop_alarm"], false, "{v}");

    // The healthy loop and the alarm-only one were never signalled.
    for (name, pid) in [("r_fine", fine.pid()), ("r_alarm", alarmed.pid())] {
        let v = stats(&mut client, name).expect("stats");
        assert_eq!(v["pid"], pid, "{v}");
        assert_eq!(v["total_restarts"], 0, "{v}");
    }
    let fine_stats = stats(&mut client, "r_fine").expect("stats");
    assert_eq!(fine_stats["loop_overruns"], 0, "{fine_stats}");
    assert!(
        !seen.iter().any(|e| e.starts_with("r_fine")),
        "nothing said about the healthy loop: {seen:#?}"
    );
}
