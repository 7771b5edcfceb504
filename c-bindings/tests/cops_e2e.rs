//! The C and C++ hosts against the real supervisor: `cops` heartbeats the C++
//! controller (mode A) and the C mode-B example; after `set <uri>/debug/hang`
//! the controller stops answering and `cops` kills it, while the other stays alive.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{compile, spawn_ready, Link};
use fims::blocking::Client;
use fims::Method;
use testkit::{Broker, ChildGuard};

fn host(example: &str, broker: &Broker, name: &str, uri: &str) -> ChildGuard {
    spawn_ready(
        Command::new(compile(example, Link::Static))
            .args(["--name", name, "--uri", uri, "--socket"])
            .arg(broker.socket()),
    )
    .0
}

#[test]
fn cops_kills_the_hung_cpp_controller_and_spares_the_c_host() {
    let broker = Broker::start();
    let config = broker.dir().join("cops.json");
    std::fs::write(
        &config,
        r#"{"heartbeatFreq":100,"replyToGetDeadline":80,"heartbeatErrorAllowance":3,
            "briefingFrequencyMS":1000,"controllerName":"c-e2e",
            "processList":[
              {"name":"ctl","uri":"/site","killOnHang":true},
              {"name":"modbus","uri":"/components/modbus","killOnHang":true}
            ]}"#,
    )
    .expect("write config");
    let mut ctl = host("examples/controller.cpp", &broker, "ctl", "/site");
    let modbus = host(
        "examples/own_connection.c",
        &broker,
        "modbus",
        "/components/modbus",
    );
    let _cops = common::start_cops(&broker, &config);
    let mut client = Client::connect_to(broker.socket(), "c_e2e").expect("connect");
    for (name, pid) in [("ctl", ctl.pid()), ("modbus", modbus.pid())] {
        let v = common::wait_stats(&mut client, name, "alive, heartbeat >= 3", 20, |v| {
            v["state"] == "alive" && v["heartbeat"].as_u64().is_some_and(|h| h >= 3)
        });
        assert_eq!(v["pid"], pid, "{v}");
        assert_eq!(
            v["version_tag"].as_str().map(str::is_empty),
            Some(false),
            "{v}"
        );
    }

    client
        .send(Method::Set, "/site/debug/hang", None, b"true")
        .expect("send hang");
    let status = ctl
        .wait_timeout(Duration::from_secs(10))
        .expect("cops kills the hung controller");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    common::wait_stats(&mut client, "ctl", "hung", 20, |v| v["state"] == "hung");
    let v = common::stats(&mut client, "modbus").expect("modbus stats");
    assert_eq!(v["state"], "alive", "{v}");
    assert_eq!(v["pid"], modbus.pid(), "{v}");
}
