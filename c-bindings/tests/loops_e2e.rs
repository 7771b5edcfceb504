//! Deadline supervision of a C host end to end: `examples/work_loop.c`
//! ticks `cops_responder_tick` at the end of every iteration of its work
//! loop, under the real `cops` and broker. Its loop slows from 20 ms to
//! 300 ms iterations (`set <uri>/debug/slow 300`) while it keeps answering:
//! with `loopAction: "alarm"` COPS raises the overrun alarm, the stats show
//! it, and the alarm ends when the loop is fast again; with `"kill"` COPS
//! kills it (SIGKILL, like a hang), and the restart is alive and healthy.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{compile, spawn_ready, Link};
use fims::blocking::Client;
use fims::Method;
use serde_json::Value;
use testkit::{Broker, ChildGuard};

/// The first `/events` message holding every one of `needles`.
fn wait_event(events: &mut Client, needles: &[&str]) -> String {
    let end = Instant::now() + Duration::from_secs(30);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(Some(m)) = events.recv(Some(left.min(Duration::from_millis(200)))) else {
            continue;
        };
        let v: Value = serde_json::from_slice(m.body).unwrap_or_default();
        let text = v["message"].as_str().unwrap_or_default();
        if needles.iter().all(|n| text.contains(n)) {
            return text.to_owned();
        }
    }
    panic!("no event with {needles:?} within 30 s");
}

fn start_host(broker: &Broker, name: &str, uri: &str) -> ChildGuard {
    let (child, line) = spawn_ready(
        Command::new(compile("examples/work_loop.c", Link::Static))
            .args(["--name", name, "--uri", uri, "--work-ms", "20", "--socket"])
            .arg(broker.socket()),
    );
    assert!(line.contains("ready"), "{line:?}");
    child
}

#[test]
fn cops_alarms_on_and_kills_for_a_c_hosts_slow_loop() {
    let broker = Broker::start();
    let config = broker.dir().join("cops.json");
    std::fs::write(
        &config,
        r#"{"heartbeatFreq":100,"replyToGetDeadline":80,"heartbeatErrorAllowance":3,
            "briefingFrequencyMS":1000,"controllerName":"c-loops",
            "processList":[
              {"name":"c_alarm","uri":"/c_alarm","killOnHang":true,
               "loopDeadlineMS":150,"loopToleranceBeats":3},
              {"name":"c_kill","uri":"/c_kill","killOnHang":true,
               "loopDeadlineMS":150,"loopToleranceBeats":3,"loopAction":"kill"}
            ]}"#,
    )
    .expect("write config");
    let alarmed = start_host(&broker, "c_alarm", "/c_alarm");
    let mut killed = start_host(&broker, "c_kill", "/c_kill");
    let _cops = common::start_cops(&broker, &config);
    let mut client = Client::connect_to(broker.socket(), "loops_e2e").expect("connect");
    let mut events = Client::connect_to(broker.socket(), "loops_events").expect("connect");
    events.subscribe(&["/events"]).expect("sub /events");
    for (name, pid) in [("c_alarm", alarmed.pid()), ("c_kill", killed.pid())] {
        let v = common::wait_stats(&mut client, name, "alive with loop figures", 30, |v| {
            v["state"] == "alive"
                && v["pid_confirmed"] == true
                && v["loop_count"].as_u64() > Some(0)
        });
        assert_eq!(v["pid"], pid, "{v}");
        assert!(
            v["loop_max_us"].as_u64() < Some(150_000),
            "20 ms iterations: {v}"
        );
    }

    // "alarm": an alarm, the stats, no kill; the alarm ends when it is fast again.
    client
        .send(Method::Set, "/c_alarm/debug/slow", None, b"300")
        .expect("send slow");
    let alarm = wait_event(
        &mut events,
        &["c_alarm (pid", "loop overran its 150 ms deadline"],
    );
    eprintln!("alarm: {alarm}");
    assert!(alarm.contains("of the last"), "{alarm}");
    let v = common::wait_stats(
        &mut client,
        "c_alarm",
        "the loop alarm in the stats",
        30,
        |v| v["loop_alarm"] == true,
    );
    assert!(v["loop_overruns"].as_u64() >= Some(3), "{v}");
    assert_eq!(v["state"], "alive", "{v}");
    assert_eq!(v["pid"], alarmed.pid(), "{v}");
    client
        .send(Method::Set, "/c_alarm/debug/slow", None, b"0")
        .expect("send fast");
    let over = wait_event(
        &mut events,
        &["c_alarm (pid", "loop back within its limits"],
    );
    eprintln!("over: {over}");
    common::wait_stats(&mut client, "c_alarm", "the alarm to end", 30, |v| {
        v["loop_alarm"] == false
    });

    // "kill": treated like a hang.
    let old = killed.pid();
    client
        .send(Method::Set, "/c_kill/debug/slow", None, b"300")
        .expect("send slow");
    let status = killed
        .wait_timeout(Duration::from_secs(20))
        .expect("cops kills the host with the slow loop");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let fault = wait_event(&mut events, &["c_kill (pid", "; killing with SIGKILL"]);
    eprintln!("fault: {fault}");
    assert!(
        fault.contains(&format!("(pid {old}) loop overran its 150 ms deadline")),
        "{fault}"
    );
    wait_event(
        &mut events,
        &[&format!("c_kill (pid {old}) sent SIGKILL; threads: ")],
    );
    // Restart=always: a new process at the normal pace.
    let again = start_host(&broker, "c_kill", "/c_kill");
    let v = common::wait_stats(
        &mut client,
        "c_kill",
        "alive again with the new PID",
        30,
        |v| v["state"] == "alive" && v["pid"] == again.pid() && v["loop_count"].as_u64() > Some(0),
    );
    assert_eq!(v["cops_restarts"], 1, "{v}");
    assert_eq!(v["loop_alarm"], false, "{v}");
    assert!(v["loop_max_us"].as_u64() < Some(150_000), "healthy: {v}");
    // The alarm host was never signalled.
    assert_eq!(
        common::stats(&mut client, "c_alarm").expect("stats")["pid"],
        alarmed.pid()
    );
}
