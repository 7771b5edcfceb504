//! `fims_server --metrics-listen`: the exposition passes `promtool check
//! metrics` (where promtool is installed) and its counters follow what the
//! broker sees: connections, subscriptions, messages by method, drops by
//! reason. (Scrapes under a flood: cops-server/tests/ops.rs.)

use std::process::{Command, Stdio};
use std::time::Duration;

use fims::blocking::Client;
use fims::Method;
use testkit::{scrape, ChildGuard};

#[test]
fn counters_follow_the_traffic_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("fims.sock");
    let log = dir.path().join("broker.log");
    let _broker = ChildGuard::spawn(
        Command::new(testkit::bin("fims-server", "fims_server"))
            .arg("--socket")
            .arg(&s)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    assert!(testkit::wait_for(Duration::from_secs(20), || {
        testkit::seqpacket_accepts(&s)
    }));
    let mut addr = None;
    testkit::wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        addr = text
            .split("metrics at http://")
            .nth(1)
            .and_then(|r| r.split("/metrics").next())
            .map(str::to_owned);
        addr.is_some()
    });
    let addr = addr.expect("the metrics address in the log");
    let metrics = || scrape::get(&addr, "/metrics", None).expect("a scrape").body;
    let value = |text: &str, series: &str| scrape::sample(text, series).unwrap_or(-1.0);

    let mut rx = Client::connect_to(&s, "rx").unwrap();
    rx.subscribe(&["/a", "/b"]).unwrap();
    let mut tx = Client::connect_to(&s, "tx").unwrap();
    for _ in 0..5 {
        tx.send(Method::Set, "/a/x", None, b"1").unwrap();
    }
    tx.send(Method::Pub, "/b", None, b"2").unwrap();
    tx.send_raw(&[9, 9, 9]).unwrap(); // not a FIMS datagram
    for _ in 0..6 {
        rx.recv(Some(Duration::from_secs(5)))
            .unwrap()
            .expect("routed");
    }
    let ok = testkit::wait_for(Duration::from_secs(5), || {
        let t = metrics();
        value(&t, r#"fims_messages_dropped_total{reason="malformed"}"#) == 1.0
    });
    let text = metrics();
    assert!(ok, "{text}");
    assert_eq!(value(&text, "fims_connections"), 2.0, "{text}");
    assert_eq!(value(&text, "fims_subscriptions"), 2.0, "{text}");
    assert_eq!(
        value(&text, r#"fims_messages_total{method="set"}"#),
        5.0,
        "{text}"
    );
    assert_eq!(
        value(&text, r#"fims_messages_total{method="pub"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&text, r#"fims_messages_total{method="sub"}"#),
        1.0,
        "{text}"
    );
    // The six messages, and the broker's SUCCESS answer to the sub.
    assert_eq!(value(&text, "fims_deliveries_total"), 7.0, "{text}");
    match scrape::promtool_check(&text) {
        Some(r) => r.unwrap_or_else(|e| panic!("{e}\n{text}")),
        None => eprintln!(
            "promtool check metrics: SKIPPED (promtool not installed; apt-get install prometheus)"
        ),
    }
    drop(rx);
    assert!(testkit::wait_for(Duration::from_secs(5), || {
        value(&metrics(), "fims_connections") == 1.0
    }));
}
