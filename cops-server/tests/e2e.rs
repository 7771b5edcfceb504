//! End to end: a real broker, the real `cops` binary, and monitored test
//! processes under a restart loop run by the test. Only the test's own children
//! are ever stopped or killed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fims::{blocking::Client, Method};
use serde_json::Value;
use testkit::{Broker, ChildGuard};

mod e2e_support;
use e2e_support::*;

fn config_text() -> String {
    format!(
        r#"{{"heartbeatFreq":{PERIOD_MS},"replyToGetDeadline":{DEADLINE_MS},"heartbeatErrorAllowance":{ALLOWANCE},
            "briefingFrequencyMS":1000,"controllerName":"e2e",
            "processList":[
              {{"name":"victim","uri":"/victim","killOnHang":true,"expectedExe":"test_responder"}},
              {{"name":"slow","uri":"/slow","killOnHang":true}}
            ]}}"#
    )
}

/// SIGSTOPs the victim; COPS kills it within the bound.
fn hang_1_sigstop(broker: &Broker, victim: &Supervised, first_pid: u32) {
    let hung_at = Instant::now();
    let hung_wall = SystemTime::now();
    // SAFETY: the test's own child.
    unsafe { libc::kill(first_pid as i32, libc::SIGSTOP) };
    assert!(testkit::wait_for(Duration::from_secs(5), || victim
        .deaths()
        .len()
        == 1));
    let (pid, died_at, sig) = victim.deaths()[0];
    assert_eq!((pid, sig), (first_pid, Some(libc::SIGKILL)));
    check_latency(
        broker,
        "SIGSTOP",
        first_pid,
        hung_wall,
        died_at - hung_at,
        bound(),
    );
}

#[test]
fn hung_process_is_killed_restarted_and_alive_again_slow_one_never_killed() {
    let broker = Broker::start();
    let config = write_config(broker.dir(), &config_text());
    let victim = Supervised::start(broker.socket(), "/victim", 0);
    // Answers 60 ms after the get: slow, but inside the 90 ms deadline.
    let slow = Supervised::start(broker.socket(), "/slow", 60);
    let mut cops = start_cops(&broker, &config, &[]);
    let mut client = Client::connect_to(broker.socket(), "e2e").unwrap();

    // Hung at once after its first answer, a process is a kill target only
    // once COPS knows its PID is the one that answered (`pid_confirmed`).
    let first = wait_stats(&mut client, "victim", Duration::from_secs(20), |v| {
        v["state"] == "alive" && v["pid"] != Value::Null && v["pid_confirmed"] == true
    });
    let first_pid = first["pid"].as_u64().unwrap() as u32;
    assert_eq!(first_pid, victim.pid());
    let slow_pid = wait_stats(&mut client, "slow", Duration::from_secs(5), |v| {
        v["state"] == "alive"
    })["pid"]
        .clone();

    // Hang 1: SIGSTOP (the test's own child).
    hang_1_sigstop(&broker, &victim, first_pid);

    let again = wait_stats(&mut client, "victim", Duration::from_secs(5), |v| {
        v["state"] == "alive"
            && v["pid"].as_u64() != Some(u64::from(first_pid))
            && v["pid_confirmed"] == true
    });
    assert_eq!(again["pid"].as_u64(), Some(u64::from(victim.pid())));
    assert_eq!(again["total_restarts"], 1);
    assert_eq!(again["cops_restarts"], 1);

    // Hang 2: the hang hook (spins on its main thread).
    let second_pid = victim.pid();
    let hung_at = Instant::now();
    let hung_wall = SystemTime::now();
    client
        .send(Method::Set, "/victim/debug/hang", None, b"true")
        .unwrap();
    assert!(testkit::wait_for(Duration::from_secs(5), || victim
        .deaths()
        .len()
        == 2));
    let (pid, died_at, sig) = victim.deaths()[1];
    assert_eq!((pid, sig), (second_pid, Some(libc::SIGKILL)));
    check_latency(
        &broker,
        "hang hook",
        second_pid,
        hung_wall,
        died_at - hung_at,
        bound(),
    );
    let again = wait_stats(&mut client, "victim", Duration::from_secs(5), |v| {
        v["state"] == "alive" && v["total_restarts"] == 2
    });
    assert_eq!(again["cops_restarts"], 2);

    // The slow one was never touched.
    let s = stats(&mut client, "slow").unwrap();
    assert_eq!(s["pid"], slow_pid);
    assert_eq!(s["state"], "alive");
    assert_eq!(s["total_restarts"], 0);
    assert!(s["max_response_time_ms"].as_f64().unwrap() >= 60.0, "{s}");
    assert!(slow.deaths().is_empty());

    let log = cops_log(&broker);
    assert!(log.contains("victim"), "{log}");
    assert!(
        log.contains("sent SIGKILL; threads: tid"),
        "evidence in the log: {log}"
    );
    cops.signal(libc::SIGTERM);
    let status = cops
        .wait_timeout(Duration::from_secs(5))
        .expect("cops stops on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn broker_restart_kills_nobody() {
    let mut broker = Broker::start();
    let config = write_config(broker.dir(), &config_text());
    let victim = Supervised::start(broker.socket(), "/victim", 0);
    let slow = Supervised::start(broker.socket(), "/slow", 60);
    let _cops = start_cops(&broker, &config, &[]);
    let mut client = Client::connect_to(broker.socket(), "e2e").unwrap();
    wait_stats(&mut client, "victim", Duration::from_secs(20), |v| {
        v["state"] == "alive"
    });
    wait_stats(&mut client, "slow", Duration::from_secs(5), |v| {
        v["state"] == "alive"
    });
    drop(client);

    // Down for 10 periods, then back.
    broker.kill();
    std::thread::sleep(Duration::from_millis(10 * PERIOD_MS));
    broker.restart();
    let mut client = Client::connect_to(broker.socket(), "e2e").unwrap();
    for name in ["victim", "slow"] {
        wait_stats(&mut client, name, Duration::from_secs(10), |v| {
            v["state"] == "alive" && v["missed_heartbeats"] == 0
        });
    }
    // A few more periods of normal running.
    std::thread::sleep(Duration::from_millis(5 * PERIOD_MS));
    assert!(victim.deaths().is_empty(), "{:?}", victim.deaths());
    assert!(slow.deaths().is_empty());
    let log = cops_log(&broker);
    assert!(!log.contains(" hung "), "{log}");
}

#[test]
fn dry_run_signals_nothing() {
    let broker = Broker::start();
    let config = write_config(broker.dir(), &config_text());
    let victim = Supervised::start(broker.socket(), "/victim", 0);
    let _cops = start_cops(&broker, &config, &["--dry-run"]);
    let mut client = Client::connect_to(broker.socket(), "e2e").unwrap();
    let v = wait_stats(&mut client, "victim", Duration::from_secs(20), |v| {
        v["state"] == "alive"
    });
    let pid = v["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) takes plain integers; pid is the victim's, read from cops.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    wait_stats(&mut client, "victim", Duration::from_secs(5), |v| {
        v["state"] == "hung"
    });
    let seen = testkit::wait_for(Duration::from_secs(2), || {
        cops_log(&broker).contains("would be sent SIGKILL")
    });
    assert!(seen, "{}", cops_log(&broker));
    std::thread::sleep(Duration::from_millis(200));
    assert!(victim.deaths().is_empty());
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
}

#[test]
fn check_validates_and_prints_effective_settings() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), &config_text());
    let out = Command::new(testkit::bin("cops-server", "cops"))
        .arg("--check")
        .arg("--config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["processList"][1]["killSignal"], "SIGKILL");
    assert_eq!(v["ourUri"], "/cops");

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"processList":[{"name":"site","uri":"/site","killOnHnag":true}]}"#,
    )
    .unwrap();
    let out = Command::new(testkit::bin("cops-server", "cops"))
        .arg("--check")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json: process \"site\": key \"killOnHnag\": unknown key (did you mean \"killOnHang\"?)"), "{err}");
}

#[test]
fn systemd_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let broker = Broker::start();
    let config = write_config(broker.dir(), &config_text());
    let notify_path = broker.dir().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // WATCHDOG_PID must be cops's own PID: the shell exports its $$ and execs cops.
    let mut cops = ChildGuard::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(r#"export WATCHDOG_PID=$$; exec "$0" "$@""#)
            .arg(testkit::bin("cops-server", "cops"))
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(broker.socket())
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "200000")
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    let mut buf = [0u8; 256];
    let mut recv = || {
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1\n");
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(recv(), "WATCHDOG=1\n");
    }
    // Every WatchdogSec/2 = 100 ms: 5 pings take about 400-500 ms.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    cops.signal(libc::SIGTERM);
    let mut last = recv();
    while last == "WATCHDOG=1\n" {
        last = recv();
    }
    assert_eq!(last, "STOPPING=1\n");
    assert!(cops
        .wait_timeout(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
}

#[test]
fn cops_started_before_the_broker_connects_when_it_comes() {
    let mut broker = Broker::start();
    let config = write_config(broker.dir(), &config_text());
    broker.kill();
    let _cops = start_cops(&broker, &config, &[]);
    std::thread::sleep(Duration::from_millis(300));
    broker.restart();
    let victim = Supervised::start(broker.socket(), "/victim", 0);
    let mut client = Client::connect_to(broker.socket(), "e2e").unwrap();
    wait_stats(&mut client, "victim", Duration::from_secs(20), |v| {
        v["state"] == "alive"
    });
    assert!(victim.deaths().is_empty());
    let log = cops_log(&broker);
    assert_eq!(
        log.matches("cannot reach the FIMS broker").count(),
        1,
        "warned once: {log}"
    );
}
