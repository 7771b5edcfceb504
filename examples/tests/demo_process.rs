//! `demo_process` answers COPS's heartbeat on its main loop, stops answering
//! when hung, exits 3 when crashed, and comes back after a broker restart.

use std::process::{Command, Stdio};
use std::time::Duration;

use fims::{blocking::Client, Method};
use testkit::{Broker, ChildGuard};

fn start(broker: &Broker, name: &str, uri: &str) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_demo_process"))
            .args(["--name", name, "--uri", uri, "--work-ms", "10"])
            .arg("--socket")
            .arg(broker.socket())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null()),
    )
}

fn client(broker: &Broker) -> Client {
    let mut c = Client::connect_to(broker.socket(), "test_cops").expect("connect");
    c.subscribe(&["/cops"]).expect("subscribe");
    c
}

/// One heartbeat cycle as COPS runs it; the reply's JSON, or None when no reply.
fn heartbeat(c: &mut Client, name: &str, uri: &str, h: u64) -> Option<serde_json::Value> {
    let set = format!("{uri}/cops/cops_heartbeat");
    c.send(Method::Set, &set, None, h.to_string().as_bytes())
        .expect("send");
    let replyto = format!("/cops/heartbeat/{name}");
    let get = format!("{uri}/cops");
    match c.request_on(Method::Get, &get, &replyto, b"", Duration::from_millis(300)) {
        Ok(m) => Some(serde_json::from_slice(&m.body).expect("JSON reply")),
        Err(fims::Error::Timeout(_)) => None,
        Err(e) => panic!("request: {e}"),
    }
}

/// Heartbeats until one is answered (the process may still be connecting).
fn first_answer(c: &mut Client, name: &str, uri: &str) -> serde_json::Value {
    for h in 1..100 {
        if let Some(v) = heartbeat(c, name, uri, h) {
            return v;
        }
    }
    panic!("{name} never answered");
}

#[test]
fn answers_heartbeats_with_its_pid_then_stops_when_hung() {
    let broker = Broker::start();
    let mut p = start(&broker, "hybridos_controller", "/site");
    let mut c = client(&broker);
    let v = first_answer(&mut c, "hybridos_controller", "/site");
    assert_eq!(v["pid"].as_u64(), Some(u64::from(p.pid())));
    let v = heartbeat(&mut c, "hybridos_controller", "/site", 4242).expect("answer");
    assert_eq!(v["cops_heartbeat"].as_u64(), Some(4242));
    assert!(v["version_tag"].is_string());

    c.send(Method::Set, "/site/debug/hang", None, b"true")
        .expect("send");
    // The hang is processed in order before the next get: no answer from now on.
    for h in 0..3 {
        assert!(heartbeat(&mut c, "hybridos_controller", "/site", h).is_none());
    }
    assert!(p.wait_timeout(Duration::ZERO).is_none(), "hung, not dead");
}

#[test]
fn crash_exits_with_status_3() {
    let broker = Broker::start();
    let mut p = start(&broker, "modbus_client", "/components/modbus_test_client");
    let mut c = client(&broker);
    first_answer(&mut c, "modbus_client", "/components/modbus_test_client");
    c.send(
        Method::Set,
        "/components/modbus_test_client/debug/crash",
        None,
        b"true",
    )
    .expect("send");
    let status = p.wait_timeout(Duration::from_secs(5)).expect("exited");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn reconnects_after_the_broker_restarts() {
    let mut broker = Broker::start();
    let _p = start(&broker, "hybridos_controller", "/site");
    let mut c = client(&broker);
    first_answer(&mut c, "hybridos_controller", "/site");
    broker.kill();
    broker.restart();
    let mut c = client(&broker);
    let v = first_answer(&mut c, "hybridos_controller", "/site");
    assert!(v["pid"].as_u64().is_some());
}

#[test]
fn ticks_its_loop_and_slows_down_on_request_while_still_answering() {
    let broker = Broker::start();
    let _p = start(&broker, "modbus_client", "/modbus");
    let mut c = client(&broker);
    let v = first_answer(&mut c, "modbus_client", "/modbus");
    assert!(
        v["loop"]["count"].is_u64(),
        "the answer carries the loop: {v}"
    );
    // 10 ms iterations: the longest of a beat stays well under 150 ms.
    std::thread::sleep(Duration::from_millis(100));
    let v = heartbeat(&mut c, "modbus_client", "/modbus", 1).expect("answer");
    assert!(v["loop"]["count"].as_u64() > Some(1), "{v}");
    assert!(v["loop"]["max_us"].as_u64() < Some(150_000), "{v}");

    c.send(Method::Set, "/modbus/debug/slow", None, b"200")
        .expect("send");
    // Every answer comes at once (the loop serves FIMS between iterations);
    // within a few beats one carries a 200 ms iteration.
    let mut longest = 0;
    for h in 2..40 {
        let v = heartbeat(&mut c, "modbus_client", "/modbus", h).expect("still answering");
        longest = longest.max(v["loop"]["max_us"].as_u64().unwrap_or(0));
        if longest >= 200_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!((200_000..1_000_000).contains(&longest), "{longest}");

    c.send(Method::Set, "/modbus/debug/slow", None, b"false")
        .expect("send");
    std::thread::sleep(Duration::from_millis(300)); // the slow iteration ends
    heartbeat(&mut c, "modbus_client", "/modbus", 100).expect("answer");
    std::thread::sleep(Duration::from_millis(100));
    let v = heartbeat(&mut c, "modbus_client", "/modbus", 101).expect("answer");
    assert!(
        v["loop"]["max_us"].as_u64() < Some(150_000),
        "back to 10 ms: {v}"
    );
}
