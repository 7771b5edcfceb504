//! The sans-IO core, table-driven over every case of docs/protocol/cops.md "The responder".

use std::time::{Duration, Instant};

use cops_responder::{ConfigError, Outcome, Responder};

const R: Option<&str> = Some("/cops/heartbeat/ctl");

fn responder() -> Responder {
    let mut r = Responder::new("ctl", "/site").expect("valid config");
    r.set_version("1.4.0", "a1b2c3d", "372");
    r
}

fn run(
    r: &mut Responder,
    method: &str,
    uri: &str,
    replyto: Option<&str>,
    body: &[u8],
) -> (Outcome, String) {
    let mut reply = b"stale".to_vec();
    let o = r.handle(Instant::now(), method, uri, replyto, body, &mut reply);
    let text = String::from_utf8(reply).expect("answers are UTF-8");
    if o != Outcome::Reply {
        assert!(
            text.is_empty(),
            "{o:?} must leave reply empty, got {text:?}"
        );
    }
    (o, text)
}

/// The answer is a JSON string starting with "Error: ".
fn assert_error(text: &str) {
    let s: String =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?} is not a JSON string: {e}"));
    assert!(s.starts_with("Error: "), "{s:?}");
}

#[test]
fn heartbeat_set_bodies() {
    // (body, Some(stored value) or None for refused)
    let cases: &[(&[u8], Option<u64>)] = &[
        (b"17", Some(17)),
        (b"0", Some(0)),
        (b"  42 \n", Some(42)),
        (b"\t7\r\n", Some(7)),
        (b"18446744073709551615", Some(u64::MAX)),
        (br#"{"value":5}"#, Some(5)),
        (br#" { "value" : 6 , "other": "x", "n": [1,2] } "#, Some(6)),
        (
            br#"{"other":1,"value":18446744073709551615}"#,
            Some(u64::MAX),
        ),
        (b"\"5\"", None),
        (b"-1", None),
        (b"5.5", None),
        (b"5.0", None),
        (b"1e30", None),
        (b"1e3", None),
        (b"18446744073709551616", None),
        (b"99999999999999999999999", None),
        (b"null", None),
        (b"true", None),
        (b"{}", None),
        (b"[]", None),
        (b"[5]", None),
        (br#"{"value":-3}"#, None),
        (br#"{"value":"5"}"#, None),
        (br#"{"value":5.5}"#, None),
        (br#"{"value":null}"#, None),
        (br#"{"value":{"value":5}}"#, None),
        (br#"{"cops_heartbeat":5}"#, None),
        (br#"{"value":5"#, None),
        (b"\xff\xfe", None),
        (b"1\xff", None),
        (b"", None),
        (b"   ", None),
        (b"007", None),
        (b"12 34", None),
        (b"0x10", None),
        (b"+5", None),
    ];
    for &(body, expect) in cases {
        let mut r = responder();
        // A known previous value that must survive a refused body.
        assert_eq!(
            run(&mut r, "set", "/site/cops/cops_heartbeat", None, b"1000").0,
            Outcome::Handled
        );
        let (o, text) = run(&mut r, "set", "/site/cops/cops_heartbeat", R, body);
        assert_eq!(
            o,
            Outcome::Reply,
            "body {:?}",
            String::from_utf8_lossy(body)
        );
        match expect {
            Some(n) => {
                assert_eq!(r.heartbeat(), n, "body {:?}", String::from_utf8_lossy(body));
                assert_eq!(text, n.to_string());
            }
            None => {
                assert_eq!(
                    r.heartbeat(),
                    1000,
                    "body {:?} must not change the value",
                    String::from_utf8_lossy(body)
                );
                assert_error(&text);
            }
        }
        // Without a replyto: same storing rule, nothing to send.
        let mut r2 = responder();
        let (o, _) = run(&mut r2, "set", "/site/cops/cops_heartbeat", None, body);
        assert_eq!(o, Outcome::Handled);
        assert_eq!(r2.heartbeat(), expect.unwrap_or(0));
    }
}

#[test]
fn get_object_and_fields() {
    let mut r = responder();
    let _ = run(&mut r, "set", "/site/cops/cops_heartbeat", None, b"17");
    let pid = std::process::id();
    let (o, text) = run(&mut r, "get", "/site/cops", R, b"");
    assert_eq!(o, Outcome::Reply);
    assert_eq!(
        text,
        format!(
            r#"{{"cops_heartbeat":17,"pid":{pid},"version_tag":"1.4.0","version_commit":"a1b2c3d","version_build":"372"}}"#
        )
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["pid"], pid);
    let fields = [
        ("cops_heartbeat", "17".to_string()),
        ("pid", pid.to_string()),
        ("version_tag", "\"1.4.0\"".into()),
        ("version_commit", "\"a1b2c3d\"".into()),
        ("version_build", "\"372\"".into()),
    ];
    for (name, want) in fields {
        let (o, text) = run(&mut r, "get", &format!("/site/cops/{name}"), R, b"");
        assert_eq!((o, text), (Outcome::Reply, want), "{name}");
    }
    // A body on a get is ignored.
    assert_eq!(
        run(&mut r, "get", "/site/cops/cops_heartbeat", R, b"99").1,
        "17"
    );
}

/// docs/protocol/cops.md: the three version strings are always present, `""`
/// when unknown (the existing COPS logs an error for every reply lacking one).
#[test]
fn unset_versions_are_answered_empty() {
    let mut r = Responder::new("ctl", "/site").expect("valid");
    let pid = std::process::id();
    assert_eq!(
        run(&mut r, "get", "/site/cops", R, b"").1,
        format!(
            r#"{{"cops_heartbeat":0,"pid":{pid},"version_tag":"","version_commit":"","version_build":""}}"#
        )
    );
    for f in ["version_tag", "version_commit", "version_build"] {
        assert_eq!(
            run(&mut r, "get", &format!("/site/cops/{f}"), R, b"").1,
            r#""""#
        );
    }
    r.set_version("v\"1\"\n", "", "b\\7");
    let text = run(&mut r, "get", "/site/cops", R, b"").1;
    let v: serde_json::Value = serde_json::from_str(&text).expect("escaped JSON");
    assert_eq!(v["version_tag"], "v\"1\"\n");
    assert_eq!(v["version_commit"], "");
    assert_eq!(v["version_build"], "b\\7");
    let mut keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cops_heartbeat",
            "pid",
            "version_build",
            "version_commit",
            "version_tag"
        ],
        "every field, nothing else"
    );
    assert_eq!(
        run(&mut r, "get", "/site/cops/version_commit", R, b"").1,
        r#""""#
    );
    assert_eq!(
        run(&mut r, "get", "/site/cops/version_tag", R, b"").1,
        r#""v\"1\"\n""#
    );
}

#[test]
fn no_replyto_means_nothing_to_send() {
    let mut r = responder();
    for (m, u) in [
        ("get", "/site/cops"),
        ("get", "/site/cops/pid"),
        ("post", "/site/cops"),
        ("get", "/site/cops/nope"),
    ] {
        assert_eq!(run(&mut r, m, u, None, b"").0, Outcome::Handled, "{m} {u}");
        assert_eq!(
            run(&mut r, m, u, Some(""), b"").0,
            Outcome::Handled,
            "{m} {u} empty replyto"
        );
    }
}

#[test]
fn other_methods_and_unknown_names_answer_errors() {
    let mut r = responder();
    let cases = [
        ("set", "/site/cops"),
        ("post", "/site/cops"),
        ("del", "/site/cops"),
        ("pub", "/site/cops"),
        ("sub", "/site/cops"),
        ("GET", "/site/cops"),
        ("", "/site/cops"),
        ("weird\"method", "/site/cops"),
        ("set", "/site/cops/pid"),
        ("set", "/site/cops/version_tag"),
        ("del", "/site/cops/cops_heartbeat"),
        ("post", "/site/cops/cops_heartbeat"),
        ("get", "/site/cops/nope"),
        ("get", "/site/cops/pid/x"),
        ("get", "/site/cops/cops_heartbeat/value"),
        ("set", "/site/cops/\"quoted\\name"),
        ("get", "/site/cops/ünïcødé"),
    ];
    for (m, u) in cases {
        r.set_version("1", "2", "3");
        let before = r.heartbeat();
        let (o, text) = run(&mut r, m, u, R, b"5");
        assert_eq!(o, Outcome::Reply, "{m} {u}");
        assert_error(&text);
        assert_eq!(r.heartbeat(), before);
    }
    let long = format!("/site/cops/{}", "é".repeat(120));
    assert_error(&run(&mut r, "get", &long, R, b"").1);
}

#[test]
fn outside_the_cops_uri_is_not_mine() {
    let mut r = responder();
    for u in [
        "/site",
        "/sitex/cops",
        "/site/copsx",
        "/site/cop",
        "/sit",
        "/",
        "",
        "/cops",
        "/cops/heartbeat/ctl",
        "/other/site/cops",
        "site/cops",
        "/site/x/cops",
    ] {
        for m in ["get", "set", "pub"] {
            assert_eq!(run(&mut r, m, u, R, b"5").0, Outcome::NotMine, "{m} {u}");
        }
        assert!(!r.owns(u), "{u}");
    }
    assert_eq!(r.heartbeat(), 0);
    assert!(r.owns("/site/cops") && r.owns("/site/cops/pid"));
}

#[test]
fn empty_segments_collapse_as_the_broker_routes() {
    // The broker routes `/site//cops` to a subscription on `/site` (empty
    // segments do not count): the responder answers it as `/site/cops`.
    let mut plain = responder();
    let (o, want) = run(&mut plain, "get", "/site/cops/pid", R, b"");
    assert_eq!(o, Outcome::Reply);
    let mut r = responder();
    for u in [
        "/site//cops/pid",
        "//site/cops/pid",
        "/site/cops//pid",
        "/site/cops/pid/",
    ] {
        assert!(r.owns(u), "{u}");
        assert_eq!(
            run(&mut r, "get", u, R, b""),
            (Outcome::Reply, want.clone()),
            "{u}"
        );
    }
    for u in ["/site//cops", "/site/cops/", "//site//cops//"] {
        let (o, text) = run(&mut r, "get", u, R, b"");
        assert_eq!(o, Outcome::Reply, "{u}");
        assert!(text.starts_with("{\"cops_heartbeat\":"), "{u}: {text}");
    }
    assert_eq!(
        run(&mut r, "set", "/site//cops//cops_heartbeat", R, b"41").0,
        Outcome::Reply
    );
    assert_eq!(r.heartbeat(), 41);
    for u in ["/site//copsx", "/site//", "//cops", "site//cops"] {
        assert_eq!(run(&mut r, "get", u, R, b"").0, Outcome::NotMine, "{u}");
        assert!(!r.owns(u), "{u}");
    }
}

#[test]
fn config_validation() {
    assert!(matches!(
        Responder::new("", "/site"),
        Err(ConfigError::InvalidName { len: 0 })
    ));
    assert!(matches!(
        Responder::new(&"n".repeat(256), "/site"),
        Err(ConfigError::InvalidName { .. })
    ));
    for bad in [
        "site",
        "",
        "/",
        "/site/",
        "/a//b",
        &format!("/{}", "x".repeat(240)),
    ] {
        let e = Responder::new("ctl", bad).expect_err(bad);
        assert!(matches!(e, ConfigError::InvalidUri { .. }), "{bad}: {e}");
        assert!(e.to_string().contains("base uri"), "{e}");
    }
    let r = Responder::new("ctl", "/components/modbus_client").expect("valid");
    assert_eq!(r.cops_uri(), "/components/modbus_client/cops");
    assert_eq!(r.base_uri(), "/components/modbus_client");
    assert_eq!(r.process_name(), "ctl");
}

#[test]
fn liveness_gate() {
    let t0 = Instant::now();
    let w = Duration::from_millis(500);
    let mut r = responder();
    let mut reply = Vec::new();
    let mut get =
        |r: &mut Responder, at: Instant| r.handle(at, "get", "/site/cops", R, b"", &mut reply);
    // No window: always answers.
    assert_eq!(get(&mut r, t0), Outcome::Reply);
    r.set_liveness_window(Some(w));
    assert_eq!(r.liveness_window(), Some(w));
    // Never petted: silent.
    assert!(!r.is_live(t0));
    assert_eq!(get(&mut r, t0), Outcome::Handled);
    r.pet(t0);
    assert_eq!(get(&mut r, t0), Outcome::Reply);
    assert_eq!(
        get(&mut r, t0 + w),
        Outcome::Reply,
        "exactly the window is still live"
    );
    assert_eq!(
        get(&mut r, t0 + w + Duration::from_millis(1)),
        Outcome::Handled
    );
    // Errors are silenced too; a good set is stored but not answered.
    let late = t0 + 2 * w;
    let mut reply = Vec::new();
    assert_eq!(
        r.handle(late, "get", "/site/cops/nope", R, b"", &mut reply),
        Outcome::Handled
    );
    assert_eq!(
        r.handle(
            late,
            "set",
            "/site/cops/cops_heartbeat",
            R,
            b"77",
            &mut reply
        ),
        Outcome::Handled
    );
    assert!(reply.is_empty());
    assert_eq!(r.heartbeat(), 77);
    assert_eq!(
        r.handle(late, "get", "/sitex/cops", R, b"", &mut reply),
        Outcome::NotMine
    );
    // Pets resume: answers resume, with the value stored while silent.
    r.pet(late);
    assert_eq!(
        r.handle(late, "get", "/site/cops/cops_heartbeat", R, b"", &mut reply),
        Outcome::Reply
    );
    assert_eq!(reply, b"77");
    // An out-of-order older pet does not move the last pet back.
    r.pet(t0);
    assert!(r.is_live(late + w));
    // Gate off again.
    r.set_liveness_window(None);
    assert!(r.is_live(late + 10 * w));
}

#[test]
fn handle_message_matches_handle() {
    let mut r = responder();
    let mut reply = Vec::new();
    let msg = fims::Message {
        method: "get",
        uri: "/site/cops/cops_heartbeat",
        replyto: "/cops/heartbeat/ctl",
        process_name: "cops",
        username: "root",
        body: b"",
    };
    assert_eq!(
        r.handle_message(Instant::now(), &msg, &mut reply),
        Outcome::Reply
    );
    assert_eq!(reply, b"0");
    let no_reply = fims::Message { replyto: "", ..msg };
    assert_eq!(
        r.handle_message(Instant::now(), &no_reply, &mut reply),
        Outcome::Handled
    );
    assert!(Outcome::Handled.is_mine() && Outcome::Reply.is_mine() && !Outcome::NotMine.is_mine());
}

#[test]
fn pid_is_read_at_answer_time_after_fork() {
    let mut r = responder();
    // Sized before the fork so the child does not need the allocator.
    let mut reply = Vec::with_capacity(64);
    // Answer once in the parent first, so a cached PID would be there to go stale.
    let _ = r.handle(Instant::now(), "get", "/site/cops/pid", R, b"", &mut reply);
    assert_eq!(reply, std::process::id().to_string().as_bytes());
    let mut pipe = [0i32; 2];
    // SAFETY: pipe writes two fds into the array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child only computes an answer and writes it to a pipe, then _exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        let _ = r.handle(Instant::now(), "get", "/site/cops/pid", R, b"", &mut reply);
        // SAFETY: writing our own buffer to our own pipe, then leaving without unwinding.
        unsafe {
            libc::write(pipe[1], reply.as_ptr().cast(), reply.len());
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end, reading into a local buffer, reaping our child.
    let got = unsafe {
        libc::close(pipe[1]);
        let mut buf = [0u8; 32];
        let n = libc::read(pipe[0], buf.as_mut_ptr().cast(), buf.len());
        libc::close(pipe[0]);
        libc::waitpid(child, std::ptr::null_mut(), 0);
        String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned()
    };
    assert_eq!(got, child.to_string());
    assert_ne!(got, std::process::id().to_string());
}
