//! The reply shapes of `tests/fixtures/replies/` (see its README), parsed.

use super::*;

/// Every fixture: (file, body).
pub(crate) const FIXTURES: &[(&str, &str)] = &[
    (
        "today.json",
        include_str!("../../../tests/fixtures/replies/today.json"),
    ),
    (
        "existing-cpp.json",
        include_str!("../../../tests/fixtures/replies/existing-cpp.json"),
    ),
    (
        "existing-go.json",
        include_str!("../../../tests/fixtures/replies/existing-go.json"),
    ),
    (
        "existing-minimal.json",
        include_str!("../../../tests/fixtures/replies/existing-minimal.json"),
    ),
    (
        "with-loop.json",
        include_str!("../../../tests/fixtures/replies/with-loop.json"),
    ),
    (
        "unknown-keys.json",
        include_str!("../../../tests/fixtures/replies/unknown-keys.json"),
    ),
    (
        "loop-malformed.json",
        include_str!("../../../tests/fixtures/replies/loop-malformed.json"),
    ),
];

/// The figures `with-loop.json` and `unknown-keys.json` carry.
pub(crate) const FIGURES: LoopFigures = LoopFigures {
    count: 10,
    max_us: 104_211,
    p99_us: 102_399,
};

fn fixture(name: &str) -> &'static str {
    FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .expect("fixture")
}

#[test]
fn every_fixture_is_a_reply_with_counter_and_pid() {
    for (name, body) in FIXTURES {
        let r = parse_reply(body.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((r.heartbeat, r.pid), (17, 4242), "{name}");
    }
}

#[test]
fn shapes_without_loop() {
    for name in [
        "today.json",
        "existing-cpp.json",
        "existing-go.json",
        "existing-minimal.json",
    ] {
        let r = parse_reply(fixture(name).as_bytes()).unwrap();
        assert_eq!(r.loop_, LoopField::Absent, "{name}");
    }
    let r = parse_reply(fixture("existing-cpp.json").as_bytes()).unwrap();
    assert_eq!(r.versions[0].as_deref(), Some("2.3.1"));
    let r = parse_reply(fixture("existing-go.json").as_bytes()).unwrap();
    assert_eq!(
        r.versions.clone().map(|v| v.map(|s| s.into_owned())),
        [
            Some("v0.9.2".to_owned()),
            Some(String::new()),
            Some(String::new())
        ]
    );
    let r = parse_reply(fixture("existing-minimal.json").as_bytes()).unwrap();
    assert_eq!(r.versions, [None, None, None]);
}

#[test]
fn shapes_with_loop() {
    for name in ["with-loop.json", "unknown-keys.json"] {
        let r = parse_reply(fixture(name).as_bytes()).unwrap();
        assert_eq!(r.loop_, LoopField::Figures(FIGURES), "{name}");
        assert_eq!(r.versions[2].as_deref(), Some("372"), "{name}");
    }
}

#[test]
fn a_bad_loop_does_not_spoil_the_reply() {
    let r = parse_reply(fixture("loop-malformed.json").as_bytes()).unwrap();
    assert!(matches!(&r.loop_, LoopField::Bad(w) if w.contains("loop is not an object")));
    for (body, why) in [
        (
            r#"{"cops_heartbeat":1,"pid":2,"loop":{"count":1,"max_us":2}}"#,
            "loop.p99_us",
        ),
        (
            r#"{"cops_heartbeat":1,"pid":2,"loop":{"count":-1,"max_us":2,"p99_us":3}}"#,
            "loop.count",
        ),
        (
            r#"{"cops_heartbeat":1,"pid":2,"loop":{"count":1,"max_us":2.5,"p99_us":3}}"#,
            "loop.max_us",
        ),
        (
            r#"{"cops_heartbeat":1,"pid":2,"loop":[1,2,3]}"#,
            "not an object",
        ),
    ] {
        let r = parse_reply(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert!(
            matches!(&r.loop_, LoopField::Bad(w) if w.contains(why)),
            "{body}"
        );
        assert_eq!((r.heartbeat, r.pid), (1, 2));
    }
    let r = parse_reply(br#"{"cops_heartbeat":1,"pid":2,"loop":null}"#).unwrap();
    assert_eq!(r.loop_, LoopField::Absent, "null is no figures");
}

#[test]
fn loop_with_escaped_versions_takes_the_slow_path_alike() {
    let body = r#"{"cops_heartbeat":3,"pid":9,"version_tag":"a\"b","loop":{"count":0,"max_us":0,"p99_us":7}}"#;
    let r = parse_reply(body.as_bytes()).unwrap();
    assert_eq!(r.versions[0].as_deref(), Some("a\"b"));
    assert_eq!(
        r.loop_,
        LoopField::Figures(LoopFigures {
            count: 0,
            max_us: 0,
            p99_us: 7
        })
    );
}

#[test]
fn figures_up_to_u64_max() {
    let body = format!(
        r#"{{"cops_heartbeat":1,"pid":2,"loop":{{"count":{m},"max_us":{m},"p99_us":{m}}}}}"#,
        m = u64::MAX
    );
    let r = parse_reply(body.as_bytes()).unwrap();
    assert!(
        matches!(r.loop_, LoopField::Figures(f) if f.count == u64::MAX && f.p99_us == u64::MAX)
    );
}
