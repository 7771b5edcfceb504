//! `examples/fims_host.cpp` (mode A in a program shaped like the existing C++
//! FIMS client's) under the real supervisor and broker: COPS sees it alive with
//! its PID, versions and loop figures while its own URI is still served (one
//! `sub` carries both); after `set <uri>/debug/hang` COPS kills it; the test,
//! playing systemd, restarts it, and COPS counts the restart and sees the new
//! PID alive.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use common::{compile, spawn_ready, Link};
use fims::blocking::Client;
use fims::Method;
use serde_json::Value;
use testkit::{Broker, ChildGuard};

const NAME: &str = "fims_host";
const URI: &str = "/fh_site";

fn start_host(broker: &Broker) -> ChildGuard {
    let (child, line) = spawn_ready(
        Command::new(compile("examples/fims_host.cpp", Link::Static))
            .args(["--name", NAME, "--uri", URI, "--socket"])
            .arg(broker.socket()),
    );
    assert!(line.contains("ready"), "{line:?}");
    child
}

/// The heartbeat answer, asked directly: all three versions, and the loop.
fn check_answer(client: &mut Client, pid: u32) {
    let mut last = Value::Null;
    let ticked = testkit::wait_for(Duration::from_secs(10), || {
        if let Ok(m) = client.request(
            Method::Get,
            &format!("{URI}/cops"),
            b"",
            Duration::from_secs(1),
        ) {
            last = serde_json::from_slice(&m.body).unwrap_or(Value::Null);
        }
        last["loop"]["count"].is_u64()
    });
    assert!(ticked, "no loop figures in {last}");
    assert_eq!(last["pid"], pid, "{last}");
    for f in ["version_tag", "version_commit", "version_build"] {
        assert!(
            last[f].as_str().is_some_and(|s| !s.is_empty()),
            "{f}: {last}"
        );
    }
    // Its own URI, from the same `sub`: the work loop's iteration count.
    let ticks = client
        .request(
            Method::Get,
            &format!("/fims_host/{NAME}/ticks"),
            b"",
            Duration::from_secs(2),
        )
        .expect("the host's own URI answers");
    let n: u64 = ticks.body_text().parse().expect("a count");
    assert!(n > 0, "{n}");
}

#[test]
fn cops_kills_the_hung_fims_host_and_sees_its_restart() {
    let broker = Broker::start();
    let config = broker.dir().join("cops.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"heartbeatFreq":100,"replyToGetDeadline":80,"heartbeatErrorAllowance":3,
                "briefingFrequencyMS":1000,"controllerName":"fims-host-e2e",
                "processList":[{{"name":"{NAME}","uri":"{URI}","killOnHang":true}}]}}"#
        ),
    )
    .expect("write config");
    let mut host = start_host(&broker);
    let _cops = common::start_cops(&broker, &config);
    let mut client = Client::connect_to(broker.socket(), "fh_e2e").expect("connect");
    // COPS accepts answers that carry the loop object: alive, our PID, versions.
    let v = common::wait_stats(&mut client, NAME, "alive", 30, |v| {
        v["state"] == "alive" && v["heartbeat"].as_u64().is_some_and(|h| h >= 3)
    });
    assert_eq!(v["pid"], host.pid(), "{v}");
    assert_eq!(v["version_tag"], "0.1.0", "{v}");
    check_answer(&mut client, host.pid());

    client
        .send(Method::Set, &format!("{URI}/debug/hang"), None, b"true")
        .expect("send hang");
    let status = host
        .wait_timeout(Duration::from_secs(15))
        .expect("cops kills the hung host");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    common::wait_stats(&mut client, NAME, "hung", 30, |v| v["state"] == "hung");

    // Restart=always: a new process, a new PID.
    let old_pid = v["pid"].clone();
    let again = start_host(&broker);
    let v = common::wait_stats(&mut client, NAME, "alive again with the new PID", 30, |v| {
        v["state"] == "alive" && v["pid"] == again.pid()
    });
    assert_ne!(v["pid"], old_pid);
    assert!(
        v["total_restarts"].as_u64().is_some_and(|n| n >= 1),
        "the restart is counted: {v}"
    );
    check_answer(&mut client, again.pid());
}
