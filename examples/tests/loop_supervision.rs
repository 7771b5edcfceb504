//! Deadline supervision of a Rust host end to end: `demo_process` ticks
//! `Responder::loop_tick` at the end of every iteration of its work loop,
//! under the real `cops` and broker. Its loop slows from 20 ms to 300 ms
//! iterations (`set <uri>/debug/slow 300`) while it keeps answering: with
//! `loopAction: "alarm"` COPS raises the overrun alarm, the stats show it,
//! and the alarm ends when the loop is fast again; with `"kill"` COPS kills
//! it (SIGKILL, like a hang), and the restart is alive and healthy. A third
//! process with a deadline and a healthy loop is never touched. What
//! operators see of it, from the real binaries: `cops status` (the LOOP
//! column, the alarm line), `cops why` (the loop verdict with its numbers, the
//! kill, the end of the alarm) and the metrics (`cops_loop_*`, the loop kill
//! in `cops_kills_total`; promtool checks the exposition where installed).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fims::{blocking::Client, Method};
use serde_json::Value;
use testkit::{scrape, Broker, ChildGuard};

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
    let what = format!("{what} (stats of {name})");
    testkit::poll_until(Duration::from_secs(30), &what, || stats(client, name), cond)
}

/// `cops <args> --socket <s>` without colour: (exit status, stdout).
fn cops_cmd(broker: &Broker, args: &[&str]) -> (i32, String) {
    let out = Command::new(testkit::bin("cops-server", "cops"))
        .args(args)
        .arg("--socket")
        .arg(broker.socket())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run cops");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `cops why NAME` once it holds all of `needles` (COPS logs the events of
/// one reply together; this waits up to 10 s for the reply).
fn why_with(broker: &Broker, name: &str, needles: &[&str]) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, text) = cops_cmd(broker, &["why", name]);
        if code == 0 && needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        assert!(
            Instant::now() < end,
            "cops why {name} lacks {needles:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `metrics at http://ADDR/metrics` from COPS's log, once it is there.
fn metrics_addr(log: &std::path::Path) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(a) = text
            .split("metrics at http://")
            .nth(1)
            .and_then(|r| r.split("/metrics").next())
        {
            return a.to_owned();
        }
        assert!(Instant::now() < end, "no metrics address in {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scrape of COPS's metrics, checked by promtool where it is installed.
fn scrape_cops(addr: &str) -> String {
    let a = scrape::get(addr, "/metrics", None).expect("a scrape answers");
    assert_eq!(a.status, 200, "{}", a.body);
    match scrape::promtool_check(&a.body) {
        Some(r) => r.unwrap_or_else(|e| panic!("{e}\n{}", a.body)),
        None => eprintln!(
            "promtool check metrics: SKIPPED (promtool not installed; apt-get install prometheus)"
        ),
    }
    a.body
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
    let log = broker.dir().join("cops.log");
    let _cops = ChildGuard::spawn(
        Command::new(testkit::bin("cops-server", "cops"))
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(broker.socket())
            .args(["--metrics-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file")),
    );
    let metrics = metrics_addr(&log);
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
    // The operators' views of the alarm: still alive (exit 0), the loop in alarm.
    let (code, status) = cops_cmd(&broker, &["status"]);
    eprintln!("{status}");
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("LOOP p99"), "{status}");
    assert!(status.contains(", 1 loop alarm"), "{status}");
    let row = status
        .lines()
        .find(|l| l.starts_with("r_alarm "))
        .expect("row");
    assert!(row.contains(" alarm "), "{row}");
    let row = status
        .lines()
        .find(|l| l.starts_with("r_fine "))
        .expect("row");
    // Its LOOP cell is `ok 20ms` (a transient failing beat on a loaded host
    // may show `overrun 1/3`): never an alarm.
    assert!(!row.contains("alarm"), "{row}");
    assert!(
        status.contains("r_alarm loop alarm: ")
            && status.contains("overrun beats so far (cops why r_alarm)"),
        "{status}"
    );
    let text = scrape_cops(&metrics);
    let v = |series: &str| scrape::sample(&text, series);
    assert_eq!(
        v(r#"cops_loop_alarm{process="r_alarm"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"cops_loop_alarms_total{process="r_alarm"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(
        v(r#"cops_loop_overruns_total{process="r_alarm"}"#) >= Some(3.0),
        "{text}"
    );
    assert!(
        v(r#"cops_loop_iteration_p99_seconds{process="r_alarm"}"#) >= Some(0.29),
        "{text}"
    );
    assert_eq!(
        v(r#"cops_loop_alarm{process="r_fine"}"#),
        Some(0.0),
        "{text}"
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
    assert_eq!(v["last_kill"]["reason"], "loop", "{v}");
    let why = why_with(
        &broker,
        "r_kill",
        &[
            "loop_fault",
            "decided by: 3 failing beats in a row (loopToleranceBeats 3, period 100 ms; loopDeadlineMS 150)",
            ": killing with SIGKILL",
            "sent SIGKILL",
            &format!("r_kill loop alarm over: pid {old} was replaced by pid {}", again.pid()),
        ],
    );
    eprintln!("{why}");
    let text = scrape_cops(&metrics);
    assert_eq!(
        scrape::sample(
            &text,
            r#"cops_kills_total{process="r_kill",signal="SIGKILL",reason="loop"}"#
        ),
        Some(1.0),
        "{text}"
    );

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
