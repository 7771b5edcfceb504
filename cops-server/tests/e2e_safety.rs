//! End to end, kill safety (issue 10): forged replies from other clients,
//! another user's forgeries, a broker pause with one process, floods on
//! `ourUri`, and the identity keys. Real broker, real `cops`, real signals;
//! only the test's own children are ever stopped or killed.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use fims::{blocking::Client, Method};
use serde_json::Value;
use testkit::{Broker, ChildGuard};

mod e2e_support;
use e2e_support::*;

fn sleeper() -> ChildGuard {
    ChildGuard::spawn(Command::new("sleep").arg("100"))
}

fn alive(c: &mut ChildGuard) -> bool {
    c.0.try_wait().expect("try_wait").is_none()
}

/// SIGSTOPs the victim and checks COPS kills it (and only it) within `budget`.
fn hang_and_expect_kill(broker: &Broker, victim: &Supervised, budget: Duration) {
    let (pid, hung_wall, latency) = hang_and_wait_kill(broker, victim, budget);
    check_latency(broker, "SIGSTOP", pid, hung_wall, latency, budget);
}

/// SIGSTOPs the victim and waits until it dies by SIGKILL (within three times
/// `budget` and 2 s); returns its PID, when it was stopped, and when it died.
fn hang_and_wait_kill(
    broker: &Broker,
    victim: &Supervised,
    budget: Duration,
) -> (u32, SystemTime, Duration) {
    let before = victim.deaths().len();
    let pid = victim.pid();
    let hung_at = Instant::now();
    let hung_wall = SystemTime::now();
    // SAFETY: our own child.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    assert!(
        testkit::wait_for(budget * 3 + Duration::from_secs(2), || victim
            .deaths()
            .len()
            > before),
        "not killed; log:\n{}",
        cops_log(broker)
    );
    let (dead, died_at, sig) = victim.deaths()[before];
    assert_eq!((dead, sig), (pid, Some(libc::SIGKILL)));
    (pid, hung_wall, died_at - hung_at)
}

#[test]
fn forged_replies_veto_nothing_and_name_no_target() {
    let broker = Broker::start();
    let config = write_config(broker.dir(), &two_process_config("", ""));
    // Answers 20 ms after the get, so the forgers (who answer the set that
    // comes just before it) are first.
    let victim = Supervised::start(broker.socket(), "/victim", 20);
    let slow = Supervised::start(broker.socket(), "/slow", 60);
    let mut decoy = sleeper();
    let _cops = start_cops(&broker, &config, &[]);
    let mut client = Client::connect_to(broker.socket(), "e2e").unwrap();
    let first = wait_stats(&mut client, "victim", Duration::from_secs(20), |v| {
        v["state"] == "alive"
    })["pid"]
        .clone();
    let slow_pid = wait_stats(&mut client, "slow", Duration::from_secs(5), |v| {
        v["state"] == "alive"
    })["pid"]
        .as_u64()
        .unwrap() as u32;
    // Each answers for the victim before it can, every round: a PID that does
    // not exist, a `sleep` that is not on the bus, and the slow process's PID.
    let _f = [4_000_000, decoy.pid(), slow_pid]
        .map(|pid| forger(broker.socket(), "/victim", "victim", pid, None));
    std::thread::sleep(Duration::from_millis(30 * PERIOD_MS));
    let v = stats(&mut client, "victim").expect("stats");
    assert_eq!(v["state"], "alive", "{v}");
    assert_eq!(v["pid"], first, "{v}");
    assert!(
        v["rejected_replies"]["refused_pid"].as_u64().unwrap() >= 20,
        "{v}"
    );
    assert!(victim.deaths().is_empty(), "{:?}", victim.deaths());
    // A real hang is still caught in its bound, and only the victim dies.
    hang_and_expect_kill(&broker, &victim, bound());
    std::thread::sleep(Duration::from_millis(5 * PERIOD_MS));
    assert!(alive(&mut decoy), "the sleep named by a forger lives");
    assert!(slow.deaths().is_empty(), "the slow one lives");
    // Refusals are logged rate-limited (the first one, then one line per
    // 10 s); the kill layer's own tests check each reason.
    assert!(cops_log(&broker).contains("not accepted"));
}

#[test]
fn a_second_process_answering_as_one_is_a_conflict_and_the_hung_one_dies() {
    let broker = Broker::start();
    let config = write_config(broker.dir(), &two_process_config("", ""));
    let victim = Supervised::start(broker.socket(), "/victim", 0);
    let _cops = start_cops(&broker, &config, &[]);
    let events = Events::listen(broker.socket());
    let mut client = Client::connect_to(broker.socket(), "e2e").unwrap();
    let v = wait_stats(&mut client, "victim", Duration::from_secs(20), |v| {
        v["state"] == "alive"
    });
    let pid = v["pid"].as_u64().unwrap();
    // On the bus, same user, its own PID: everything a check can see is right,
    // but the pinned process lives: a conflict.
    let f = forger(broker.socket(), "/victim", "victim", 0, None);
    let needle = format!("two processes answer as victim: pids {pid} and {}", f.pid());
    assert!(
        testkit::wait_for(Duration::from_secs(5), || !events
            .matching(&needle)
            .is_empty()),
        "{:?}",
        events.all()
    );
    std::thread::sleep(Duration::from_millis(10 * PERIOD_MS));
    assert_eq!(
        events.matching("two processes answer as").len(),
        1,
        "one alarm"
    );
    let v = stats(&mut client, "victim").unwrap();
    assert_eq!(v["pid"].as_u64(), Some(pid), "the pinned one is kept: {v}");
    // The real one hangs; the forger's answers do not keep it alive.
    hang_and_expect_kill(&broker, &victim, bound());
    drop(f);
}

#[test]
fn another_users_forgeries_cannot_keep_a_hung_process_alive() {
    if !is_root() {
        eprintln!("skipped: needs root to run the forger as nobody");
        return;
    }
    let broker = open_broker();
    let config = write_config(broker.dir(), &two_process_config("", ""));
    // Slower than the forger, which answers the set before the get.
    let victim = Supervised::start(broker.socket(), "/victim", 20);
    let _cops = start_cops(&broker, &config, &[]);
    let mut client = Client::connect_to(broker.socket(), "e2e").unwrap();
    wait_stats(&mut client, "victim", Duration::from_secs(20), |v| {
        v["state"] == "alive"
    });
    // Names the victim's own PID, from uid 65534 (the broker stamps the user).
    let _f = forger(
        broker.socket(),
        "/victim",
        "victim",
        victim.pid(),
        Some(65534),
    );
    wait_stats(&mut client, "victim", Duration::from_secs(5), |v| {
        v["rejected_replies"]["refused_pid"].as_u64() > Some(3)
    });
    hang_and_expect_kill(&broker, &victim, bound());
    assert!(
        cops_log(&broker).contains("but the reply came from user \"nobody\"")
            || cops_log(&broker).contains("but the reply came from user \"65534\""),
        "{}",
        cops_log(&broker)
    );
}

#[test]
fn one_process_survives_a_broker_pause_and_one_stall_is_one_alarm() {
    let broker = Broker::start();
    let one = format!(
        r#"{{"heartbeatFreq":{PERIOD_MS},"replyToGetDeadline":{DEADLINE_MS},"heartbeatErrorAllowance":{ALLOWANCE},
            "processList":[{{"name":"victim","uri":"/victim","killOnHang":true}}]}}"#
    );
    let config = write_config(broker.dir(), &one);
    let victim = Supervised::start(broker.socket(), "/victim", 0);
    let _cops = start_cops(&broker, &config, &[]);
    let events = Events::listen(broker.socket());
    let mut client = Client::connect_to(broker.socket(), "e2e").unwrap();
    wait_stats(&mut client, "victim", Duration::from_secs(20), |v| {
        v["state"] == "alive"
    });
    drop(client);
    let bpid = broker.pid().expect("broker runs") as i32;
    // Four hang windows long.
    // SAFETY: the test's own broker.
    unsafe { libc::kill(bpid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(
        4 * (ALLOWANCE * PERIOD_MS + DEADLINE_MS),
    ));
    // SAFETY: as above.
    unsafe { libc::kill(bpid, libc::SIGCONT) };
    let over = testkit::wait_for(Duration::from_secs(10), || {
        !events.matching("stall over").is_empty()
    });
    assert!(over, "{:?}\n{}", events.all(), cops_log(&broker));
    std::thread::sleep(Duration::from_millis(10 * PERIOD_MS));
    assert!(victim.deaths().is_empty(), "{:?}", victim.deaths());
    let stalls: Vec<Posted> = events
        .all()
        .into_iter()
        .filter(|e| e.2.starts_with("bus or host stall"))
        .collect();
    let alarms: Vec<&Posted> = stalls.iter().filter(|e| e.1 == 3).collect();
    let overs: Vec<&Posted> = stalls
        .iter()
        .filter(|e| e.1 == 2 && e.2.contains("stall over"))
        .collect();
    assert_eq!((alarms.len(), overs.len()), (1, 1), "{stalls:?}");
    assert!(cops_log(&broker).matches(" hung (").count() == 0);
}

#[test]
fn floods_on_cops_do_not_blind_it() {
    let broker = Broker::start();
    let config = write_config(broker.dir(), &two_process_config("", ""));
    let victim = Supervised::start(broker.socket(), "/victim", 0);
    let slow = Supervised::start(broker.socket(), "/slow", 60);
    let _cops = start_cops(&broker, &config, &[]);
    let mut client = Client::connect_to(broker.socket(), "e2e").unwrap();
    for name in ["victim", "slow"] {
        wait_stats(&mut client, name, Duration::from_secs(20), |v| {
            v["state"] == "alive"
        });
    }
    for (method, uri, replyto) in [
        (Method::Get, "/cops", Some("/e2e/flood")),
        (Method::Pub, "/cops/junk", None),
    ] {
        let flood = Flood::start(broker.socket(), method, uri, replyto);
        std::thread::sleep(Duration::from_millis(5 * PERIOD_MS));
        // Under a flood COPS may act later, never wrongly: within twice the
        // bound, unless the broker itself was seen stalling (its probes came
        // back late: then the rounds are void, and rightly so).
        let stalls = cops_log(&broker)
            .matches("a probe through the broker")
            .count();
        let (pid, hung_wall, latency) = hang_and_wait_kill(&broker, &victim, bound() * 2);
        let stalled = cops_log(&broker)
            .matches("a probe through the broker")
            .count()
            > stalls;
        eprintln!(
            "{method:?} {uri} flood: hang to death {latency:?}, broker stalls seen: {stalled}"
        );
        if !stalled {
            check_latency(
                &broker,
                "SIGSTOP under a flood",
                pid,
                hung_wall,
                latency,
                bound() * 2,
            );
        }
        std::thread::sleep(Duration::from_millis(5 * PERIOD_MS));
        let sent = flood.sent();
        drop(flood);
        eprintln!("{method:?} {uri} flood: {sent} messages sent");
        assert!(sent > 1000, "a flood: {sent}");
        wait_stats(&mut client, "victim", Duration::from_secs(10), |v| {
            v["state"] == "alive"
        });
    }
    assert!(slow.deaths().is_empty(), "{:?}", slow.deaths());
    let s = stats(&mut client, "slow").unwrap();
    assert_eq!(s["total_restarts"], 0, "{s}");
}

#[test]
fn expected_exe_path_and_expected_user_hold_end_to_end() {
    let broker = Broker::start();
    let exe = testkit::example("cops-server", "test_responder");
    let exe = std::fs::canonicalize(exe).unwrap();
    // SAFETY: getuid has no failure mode.
    let uid = unsafe { libc::getuid() };
    let other = if uid == 65534 { 65533 } else { 65534 };
    let text = format!(
        r#"{{"heartbeatFreq":{PERIOD_MS},"replyToGetDeadline":{DEADLINE_MS},"heartbeatErrorAllowance":{ALLOWANCE},
            "processList":[
              {{"name":"victim","uri":"/victim","killOnHang":true,"expectedExe":"{}","expectedUser":"{uid}"}},
              {{"name":"wrong","uri":"/wrong","killOnHang":true,"expectedUser":"{other}"}}
            ]}}"#,
        exe.display()
    );
    let config = write_config(broker.dir(), &text);
    let victim = Supervised::start(broker.socket(), "/victim", 0);
    let wrong = Supervised::start(broker.socket(), "/wrong", 0);
    let _cops = start_cops(&broker, &config, &[]);
    let mut client = Client::connect_to(broker.socket(), "e2e").unwrap();
    wait_stats(&mut client, "victim", Duration::from_secs(20), |v| {
        v["state"] == "alive" && v["unchecked"] == Value::Array(vec![])
    });
    // Never believed, so never pinned, so never killed, however silent it looks.
    let w = wait_stats(&mut client, "wrong", Duration::from_secs(5), |v| {
        v["state"] == "hung"
    });
    assert_eq!(w["pid"], Value::Null, "{w}");
    hang_and_expect_kill(&broker, &victim, bound());
    assert!(wrong.deaths().is_empty());
    assert!(cops_log(&broker).contains("not expectedUser"));
}

#[test]
fn check_refuses_fifos_and_duplicate_keys_and_suggests_a_site_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cops = testkit::bin("cops-server", "cops");
    let fifo = dir.path().join("fifo.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let t = Instant::now();
    let out = Command::new(&cops)
        .arg("--check")
        .arg("--config")
        .arg(&fifo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(t.elapsed() < Duration::from_secs(5), "fails fast");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file (a FIFO)"));

    let dup = dir.path().join("dup.json");
    std::fs::write(
        &dup,
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"killOnHang":false}]}"#,
    )
    .unwrap();
    let out = Command::new(&cops)
        .arg("--check")
        .arg("--config")
        .arg(&dup)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key \"killOnHang\": duplicate key"), "{err}");

    let procs: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"name":"p{i}","uri":"/p{i}","killOnHang":true}}"#))
        .collect();
    let many = dir.path().join("many.json");
    std::fs::write(&many, format!(r#"{{"processList":[{}]}}"#, procs.join(","))).unwrap();
    let out = Command::new(&cops)
        .arg("--check")
        .arg("--config")
        .arg(&many)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cops: suggestion:") && err.contains("\"maxKillsPerWindow\": 3"),
        "{err}"
    );
}

/// The URI lists of the `sub` datagrams in `dgs`.
fn subs_in(dgs: &[Vec<u8>]) -> Vec<Vec<String>> {
    dgs.iter()
        .filter_map(|d| fims::Message::decode(d).ok())
        .filter(|m| m.method == "sub")
        .map(|m| {
            fims::codec::decode_sub_body(m.body)
                .expect("a valid sub body")
                .into_iter()
                .map(|(uri, _)| uri.to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn each_connection_sends_its_whole_set_in_one_sub_again_after_a_reconnect() {
    use testkit::fake_broker::{FakeBroker, SUB_SUCCESS};
    let fake = FakeBroker::start(|dg| match fims::Message::decode(dg) {
        Ok(m) if m.method == "sub" => vec![SUB_SUCCESS.to_vec()],
        _ => Vec::new(),
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &two_process_config("", ""));
    let log = std::fs::File::create(dir.path().join("cops.log")).unwrap();
    let cops = ChildGuard::spawn(
        Command::new(testkit::bin("cops-server", "cops"))
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(fake.socket())
            .stderr(log),
    );
    let probe = format!("/cops/probe/{}", cops.pid());
    let check = |first: usize| {
        let mut seen = Vec::new();
        for conn in first..first + 3 {
            // Every connection sends something soon (rounds, probes, stats).
            let dgs = fake.wait_datagrams(conn, 1, Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(300));
            let subs = subs_in(&fake.datagrams(conn));
            assert!(subs.len() <= 1, "connection {conn}: {subs:?}");
            if let Some(set) = subs.first() {
                let first_dg = fims::Message::decode(&dgs[0]).unwrap();
                assert_eq!(first_dg.method, "sub", "the set comes first");
                seen.push(set.clone());
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                vec!["/cops".to_string()],
                vec!["/cops/heartbeat".to_string(), probe.clone()]
            ],
            "the heartbeat and serving connections, one sub each; the probe connection none"
        );
    };
    assert!(testkit::wait_for(Duration::from_secs(10), || fake
        .connections()
        >= 3));
    check(0);
    fake.disconnect_all();
    assert!(testkit::wait_for(Duration::from_secs(10), || fake
        .connections()
        >= 6));
    check(3);
}
