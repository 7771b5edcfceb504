use super::*;

/// The protocol's example configurations, carried in the repository.
const SPEC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol/examples");

fn spec_file(name: &str) -> std::path::PathBuf {
    Path::new(SPEC_DIR).join(name)
}

/// [`super::parse`] with a fixed host name.
fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    super::parse(file, text, "testhost")
}

/// One process with the required keys plus `extra` (a JSON fragment).
fn one(extra: &str) -> String {
    format!(r#"{{"processList":[{{"name":"site","uri":"/site","killOnHang":true{extra}}}]}}"#)
}

#[test]
fn spec_examples_load() {
    let c =
        load(&spec_file("design-review-example.json"), "testhost").expect("design review example");
    assert_eq!(c.our_uri, "/cops");
    assert_eq!(c.heartbeat, Duration::from_millis(1000));
    assert_eq!(c.reply_deadline, Duration::from_millis(900));
    assert_eq!(c.processes.len(), 2);
    assert!(c.warnings.is_empty());

    let d = load(&spec_file("deployed-example.json"), "testhost").expect("deployed example");
    assert_eq!(d.controller_name, "site controller 1");
    assert_eq!(d.heartbeat, Duration::from_millis(1000));
    assert_eq!(
        d.processes[0].hang_time_allowance,
        Some(Duration::from_millis(3000))
    );
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    for k in [
        "allowActions",
        "c2cMsgFrequencyMS",
        "configRestart",
        "patrolFrequencyMS",
        "writeOutC2C",
    ] {
        assert!(
            d.warnings[0].contains(k),
            "{k} missing in {}",
            d.warnings[0]
        );
    }
}

#[test]
fn defaults() {
    let c = parse("f.json", &one("")).unwrap();
    assert_eq!(c.our_uri, "/cops");
    assert_eq!(c.heartbeat, Duration::from_millis(1000));
    assert_eq!(c.reply_deadline, Duration::from_millis(900));
    assert_eq!(c.error_allowance, 5);
    assert_eq!(c.briefing, Duration::from_millis(5000));
    assert_eq!(
        c.controller_name, "testhost",
        "the host name given to parse"
    );
    let p = &c.processes[0];
    assert!(p.required);
    assert_eq!(p.kill_signal, Signal::KILL);
    assert_eq!(p.kill_escalation, Duration::from_millis(5000));
    assert_eq!(p.hang_time_allowance, None);
    assert_eq!(p.kill_budget, None);
    assert_eq!(p.expected_exe, None);
}

#[test]
fn both_spellings_of_the_period() {
    let a = parse("f", r#"{"heartbeatFreq":200,"processList":[]}"#).unwrap();
    let b = parse("f", r#"{"heartbeatFrequencyMS":200,"processList":[]}"#).unwrap();
    assert_eq!(a.heartbeat, Duration::from_millis(200));
    assert_eq!(b.heartbeat, a.heartbeat);
    assert_eq!(b.reply_deadline, Duration::from_millis(180));
    parse(
        "f",
        r#"{"heartbeatFreq":200,"heartbeatFrequencyMS":200,"processList":[]}"#,
    )
    .unwrap();
}

#[test]
fn signals_parse() {
    for (s, n) in [
        ("SIGKILL", libc::SIGKILL),
        ("SIGABRT", libc::SIGABRT),
        ("ABRT", libc::SIGABRT),
        ("sigterm", libc::SIGTERM),
        ("TERM", libc::SIGTERM),
        ("SIGQUIT", libc::SIGQUIT),
    ] {
        assert_eq!(Signal::parse(s).map(|s| s.number), Some(n), "{s}");
    }
    assert_eq!(Signal::parse("SIGSTOP"), None);
    assert_eq!(Signal::parse("NOPE"), None);
    let c = parse("f", &one(r#","killSignal":"SIGABRT""#)).unwrap();
    assert_eq!(c.processes[0].kill_signal.to_string(), "SIGABRT");
}

#[test]
fn did_you_mean_finds_typos() {
    assert_eq!(did_you_mean("killOnHnag", PROC_KEYS), Some("killOnHang"));
    assert_eq!(did_you_mean("killonhang", PROC_KEYS), Some("killOnHang"));
    assert_eq!(
        did_you_mean("heartbeatFrequencyMs", TOP_KEYS),
        Some("heartbeatFrequencyMS")
    );
    assert_eq!(did_you_mean("zzzzzz", PROC_KEYS), None);
}

/// (config text, expected process, expected key, a fragment of the message)
const ERRORS: &[(&str, Option<&str>, Option<&str>, &str)] = &[
    ("not json", None, None, "not valid JSON"),
    ("[]", None, None, "must be a JSON object"),
    (r#"{}"#, None, Some("processList"), "missing"),
    (
        r#"{"processList":{}}"#,
        None,
        Some("processList"),
        "must be an array",
    ),
    (
        r#"{"heartbeatFreq":5,"processList":[]}"#,
        None,
        Some("heartbeatFreq"),
        "10..=3600000 ms",
    ),
    (
        r#"{"heartbeatFreq":3600001,"processList":[]}"#,
        None,
        Some("heartbeatFreq"),
        "10..=3600000 ms",
    ),
    (
        r#"{"heartbeatErrorAllowance":1001,"processList":[]}"#,
        None,
        Some("heartbeatErrorAllowance"),
        "1..=1000",
    ),
    (
        r#"{"briefingFrequencyMS":3600001,"processList":[]}"#,
        None,
        Some("briefingFrequencyMS"),
        "10..=3600000",
    ),
    (
        r#"{"maxKillsPerWindow":0,"processList":[]}"#,
        None,
        Some("maxKillsPerWindow"),
        "1..=1000000",
    ),
    (
        r#"{"maxKillsPerWindow":"3","processList":[]}"#,
        None,
        Some("maxKillsPerWindow"),
        "integer",
    ),
    (
        r#"{"ourUri":"/","processList":[]}"#,
        None,
        Some("ourUri"),
        "every URI on the bus",
    ),
    (
        r#"{"ourUri":"/co\u0000ps","processList":[]}"#,
        None,
        Some("ourUri"),
        "control characters",
    ),
    (
        r#"{"controllerName":"a\u0007b","processList":[]}"#,
        None,
        Some("controllerName"),
        "control characters",
    ),
    (
        r#"{"processList":[],"processList":[]}"#,
        None,
        Some("processList"),
        "duplicate key (line 1, column",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"killOnHang":false}]}"#,
        None,
        Some("killOnHang"),
        "duplicate key",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/","killOnHang":true}]}"#,
        Some("\"a\""),
        Some("uri"),
        "every URI on the bus",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/cops","killOnHang":true}]}"#,
        Some("\"a\""),
        Some("uri"),
        "overlap",
    ),
    (
        r#"{"ourUri":"/site/cops","processList":[{"name":"a","uri":"/site","killOnHang":true}]}"#,
        Some("\"a\""),
        Some("uri"),
        "overlap",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/cops/x","killOnHang":false,"requiredForHealthyStatus":false}]}"#,
        Some("\"a\""),
        Some("uri"),
        "overlap",
    ),
    (
        r#"{"processList":[{"name":"a\u0000b","uri":"/a","killOnHang":true}]}"#,
        Some("\"a\u{0}b\""),
        Some("name"),
        "control characters",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a\u001b","killOnHang":true}]}"#,
        Some("\"a\""),
        Some("uri"),
        "control characters",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"hangTimeAllowanceMS":86400001}]}"#,
        Some("\"a\""),
        Some("hangTimeAllowanceMS"),
        "1..=86400000",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"killEscalationMS":600001}]}"#,
        Some("\"a\""),
        Some("killEscalationMS"),
        "1..=600000",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"maxKills":2,"killWindowMS":604800001}]}"#,
        Some("\"a\""),
        Some("killWindowMS"),
        "1..=604800000",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"expectedUser":""}]}"#,
        Some("\"a\""),
        Some("expectedUser"),
        "user name or a numeric uid",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"expectedExe":"bin/a"}]}"#,
        Some("\"a\""),
        Some("expectedExe"),
        "full path",
    ),
    (
        r#"{"heartbeatFrequencyMS":"1000","processList":[]}"#,
        None,
        Some("heartbeatFrequencyMS"),
        "integer",
    ),
    (
        r#"{"heartbeatFreq":100,"heartbeatFrequencyMS":200,"processList":[]}"#,
        None,
        Some("heartbeatFrequencyMS"),
        "conflicts",
    ),
    (
        r#"{"replyToGetDeadline":0,"processList":[]}"#,
        None,
        Some("replyToGetDeadline"),
        "> 0",
    ),
    (
        r#"{"replyToGetDeadline":1001,"processList":[]}"#,
        None,
        Some("replyToGetDeadline"),
        "<= the heartbeat period",
    ),
    (
        r#"{"heartbeatErrorAllowance":0,"processList":[]}"#,
        None,
        Some("heartbeatErrorAllowance"),
        "1..=1000",
    ),
    (
        r#"{"briefingFrequencyMS":1,"processList":[]}"#,
        None,
        Some("briefingFrequencyMS"),
        "10..=3600000",
    ),
    (
        r#"{"ourUri":"cops","processList":[]}"#,
        None,
        Some("ourUri"),
        "start with",
    ),
    (
        r#"{"controllerName":3,"processList":[]}"#,
        None,
        Some("controllerName"),
        "string",
    ),
    (
        r#"{"enableRedundantFailover":true,"processList":[]}"#,
        None,
        Some("enableRedundantFailover"),
        "not supported",
    ),
    (
        r#"{"enableRedundantFailover":"no","processList":[]}"#,
        None,
        Some("enableRedundantFailover"),
        "true or false",
    ),
    (
        r#"{"heartbeatFreqq":1000,"processList":[]}"#,
        None,
        Some("heartbeatFreqq"),
        "did you mean \"heartbeatFreq\"",
    ),
    (
        r#"{"bogus":1,"processList":[]}"#,
        None,
        Some("bogus"),
        "unknown key",
    ),
    (
        r#"{"processList":[3]}"#,
        Some("processList[0]"),
        None,
        "JSON object",
    ),
    (
        r#"{"processList":[{"uri":"/a","killOnHang":true}]}"#,
        Some("processList[0]"),
        Some("name"),
        "missing",
    ),
    (
        r#"{"processList":[{"name":"a/b","uri":"/a","killOnHang":true}]}"#,
        Some("\"a/b\""),
        Some("name"),
        "without '/'",
    ),
    (
        r#"{"processList":[{"name":"a","killOnHang":true}]}"#,
        Some("\"a\""),
        Some("uri"),
        "missing",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"a","killOnHang":true}]}"#,
        Some("\"a\""),
        Some("uri"),
        "start with",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a"}]}"#,
        Some("\"a\""),
        Some("killOnHang"),
        "missing",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":1}]}"#,
        Some("\"a\""),
        Some("killOnHang"),
        "true or false",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHnag":true}]}"#,
        Some("\"a\""),
        Some("killOnHnag"),
        "did you mean \"killOnHang\"",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"requiredForHealthyStatus":"yes"}]}"#,
        Some("\"a\""),
        Some("requiredForHealthyStatus"),
        "true or false",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"hangTimeAllowanceMS":0}]}"#,
        Some("\"a\""),
        Some("hangTimeAllowanceMS"),
        "1..=86400000",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"hangTimeAllowanceMS":-5}]}"#,
        Some("\"a\""),
        Some("hangTimeAllowanceMS"),
        "non-negative integer",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"killSignal":"SIGSTOP"}]}"#,
        Some("\"a\""),
        Some("killSignal"),
        "unsupported signal",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"killSignal":9}]}"#,
        Some("\"a\""),
        Some("killSignal"),
        "signal name",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"killEscalationMS":0}]}"#,
        Some("\"a\""),
        Some("killEscalationMS"),
        "1..=600000",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"maxKills":3}]}"#,
        Some("\"a\""),
        Some("killWindowMS"),
        "missing",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"killWindowMS":3}]}"#,
        Some("\"a\""),
        Some("maxKills"),
        "missing",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"maxKills":0,"killWindowMS":3}]}"#,
        Some("\"a\""),
        Some("maxKills"),
        "1..=1000000",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true,"maxKills":2,"killWindowMS":0}]}"#,
        Some("\"a\""),
        Some("killWindowMS"),
        "1..=604800000",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true},{"name":"a","uri":"/b","killOnHang":true}]}"#,
        Some("\"a\""),
        Some("name"),
        "duplicate",
    ),
    (
        r#"{"processList":[{"name":"a","uri":"/a","killOnHang":true},{"name":"b","uri":"/a","killOnHang":true}]}"#,
        Some("\"b\""),
        Some("uri"),
        "another process",
    ),
];

#[test]
fn every_error_names_file_process_and_key() {
    for (text, process, key, fragment) in ERRORS {
        let e = parse("conf/cops.json", text).expect_err(text);
        assert_eq!(e.file, "conf/cops.json", "{text}");
        assert_eq!(e.process.as_deref(), *process, "{text}: {e}");
        assert_eq!(e.key.as_deref(), *key, "{text}: {e}");
        let shown = e.to_string();
        assert!(
            shown.contains(fragment),
            "{text}: {shown:?} lacks {fragment:?}"
        );
        assert!(shown.starts_with("conf/cops.json: "), "{shown}");
        if let Some(k) = key {
            assert!(shown.contains(&format!("key \"{k}\"")), "{shown}");
        }
    }
}

#[test]
fn error_display_is_one_readable_line() {
    let e = parse(
        "cops.json",
        r#"{"processList":[{"name":"site","uri":"/site","killOnHnag":true}]}"#,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cops.json: process \"site\": key \"killOnHnag\": unknown key (did you mean \"killOnHang\"?)"
    );
}

#[test]
fn redundant_failover_false_and_ignored_keys_accepted() {
    let c = parse("f",
        r#"{"enableRedundantFailover":false,"syswatch":{},"processList":[{"name":"a","uri":"/a","killOnHang":false,"configRestart":true,"allowActions":true}]}"#,
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].contains("allowActions, configRestart, syswatch"),
        "{}",
        c.warnings[0]
    );
}

#[test]
fn check_output_round_trips() {
    let c = parse(
        "f",
        &one(r#","killSignal":"ABRT","maxKills":2,"killWindowMS":60000,"expectedExe":"site""#),
    )
    .unwrap();
    let text = c.to_json().to_string();
    let again = parse("f", &text).unwrap();
    assert_eq!(again.processes, c.processes);
    assert_eq!(again.heartbeat, c.heartbeat);
}

#[test]
fn new_keys_round_trip_and_warn_where_weak() {
    let c = parse(
        "f",
        r#"{"heartbeatFreq":200,"maxKillsPerWindow":3,"processList":[
            {"name":"a","uri":"/a","killOnHang":true,"expectedExe":"/usr/bin/a","expectedUser":"site"},
            {"name":"b","uri":"/b","killOnHang":true,"expectedExe":"b","hangTimeAllowanceMS":150}]}"#,
    )
    .unwrap();
    assert_eq!(c.max_kills_per_window, Some(3));
    assert_eq!(c.kill_window(), Duration::from_millis(1000), "5 x 200 ms");
    assert_eq!(c.processes[0].expected_exe.as_deref(), Some("/usr/bin/a"));
    assert_eq!(c.processes[0].expected_user.as_deref(), Some("site"));
    let again = parse("f", &c.to_json().to_string()).unwrap();
    assert_eq!(again.processes, c.processes);
    assert_eq!(again.max_kills_per_window, Some(3));
    // A full path draws no warning; a bare name and a short hang time do.
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c
        .warnings
        .iter()
        .any(|w| w.contains("process \"b\": expectedExe \"b\" is a bare file name")));
    assert!(c.warnings.iter().any(|w| w.contains(
        "process \"b\": hangTimeAllowanceMS 150 is shorter than the heartbeat period (200 ms)"
    )));
    assert!(c.suggestions.is_empty());
}

#[test]
fn check_suggests_a_site_budget_for_many_processes() {
    let procs: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"name":"p{i}","uri":"/p{i}","killOnHang":true}}"#))
        .collect();
    let text = format!(r#"{{"processList":[{}]}}"#, procs.join(","));
    let c = parse("f", &text).unwrap();
    assert_eq!(c.suggestions.len(), 1);
    assert!(
        c.suggestions[0].contains("12 processes may be killed")
            && c.suggestions[0]
                .contains("\"maxKillsPerWindow\": 3 (a quarter of them per 5000 ms)"),
        "{}",
        c.suggestions[0]
    );
    let few = parse("f", &one("")).unwrap();
    assert!(few.suggestions.is_empty());
}

#[test]
fn load_reads_only_regular_files_and_fails_fast_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let t = std::time::Instant::now();
    let e = load(&fifo, "h").unwrap_err();
    assert!(e.message.contains("not a regular file (a FIFO)"), "{e}");
    let e = load(Path::new("/dev/zero"), "h").unwrap_err();
    assert!(e.message.contains("a character device"), "{e}");
    let e = load(dir.path(), "h").unwrap_err();
    assert!(e.message.contains("a directory"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "no waiting for a writer"
    );
    let good = dir.path().join("cops.json");
    std::fs::write(&good, one("")).unwrap();
    assert_eq!(load(&good, "h").unwrap().controller_name, "h");
}

#[test]
fn control_users_parse_and_round_trip() {
    let top = |v: &str| {
        format!(
            r#"{{"controlUsers":{v},"processList":[{{"name":"a","uri":"/a","killOnHang":true}}]}}"#
        )
    };
    assert_eq!(parse("f", &one("")).unwrap().control_users, None);
    let c = parse("f", &top(r#"["root","site","1001"]"#)).unwrap();
    assert_eq!(
        c.control_users.as_deref(),
        Some(&["root".to_owned(), "site".into(), "1001".into()][..])
    );
    assert_eq!(c.to_json()["controlUsers"][1], "site");
    let again = parse("f", &c.to_json().to_string()).unwrap();
    assert_eq!(again.control_users, c.control_users);
    assert_eq!(parse("f", &top("[]")).unwrap().control_users, Some(vec![]));
    for bad in [
        r#""root""#,
        "[1]",
        r#"[""]"#,
        r#"["a:b"]"#,
        r#"["a/b"]"#,
        r#"["a\u0000"]"#,
        "{}",
    ] {
        let e = parse("f", &top(bad)).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("controlUsers"), "{bad}: {e}");
    }
    let many: Vec<String> = (0..65).map(|i| format!("\"u{i}\"")).collect();
    let e = parse("f", &top(&format!("[{}]", many.join(",")))).unwrap_err();
    assert!(e.message.contains("at most 64"), "{e}");
}
