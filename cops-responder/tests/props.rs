//! Property tests: arbitrary input never panics, every answer is valid JSON,
//! and the heartbeat changes only on a valid value.

use std::time::Instant;

use cops_responder::{Outcome, Responder};
use proptest::prelude::*;

fn responder() -> Responder {
    let mut r = Responder::new("p", "/site").expect("valid");
    r.set_version("t\u{0}\"", "ü", "");
    r
}

proptest! {
    #[test]
    fn any_u64_round_trips(n: u64, ws_before in "[ \t\r\n]{0,3}", ws_after in "[ \t\r\n]{0,3}", clothed: bool) {
        let mut r = responder();
        let body = if clothed { format!("{ws_before}{{\"value\":{n}}}{ws_after}") } else { format!("{ws_before}{n}{ws_after}") };
        let mut reply = Vec::new();
        let o = r.handle(Instant::now(), "set", "/site/cops/cops_heartbeat", Some("/r"), body.as_bytes(), &mut reply);
        prop_assert_eq!(o, Outcome::Reply);
        prop_assert_eq!(r.heartbeat(), n);
        prop_assert_eq!(reply, n.to_string().into_bytes());
    }

    #[test]
    fn arbitrary_input_never_panics(
        method in prop::sample::select(vec!["get", "set", "pub", "post", "del", "sub", "", "GET", "x\"y"]),
        suffix in prop::option::of("(/[a-z_\"\\\\é]{0,16}){0,3}"),
        replyto in prop::option::of("[ -~]{0,20}"),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut r = responder();
        let _ = r.handle(Instant::now(), "set", "/site/cops/cops_heartbeat", None, b"42", &mut Vec::new());
        let uri = match &suffix { Some(s) => format!("/site/cops{s}"), None => "/site".into() };
        let mut reply = Vec::new();
        let o = r.handle(Instant::now(), method, &uri, replyto.as_deref(), &body, &mut reply);
        match o {
            Outcome::Reply => {
                let v: serde_json::Value = serde_json::from_slice(&reply).map_err(|e| TestCaseError::fail(format!("{e}: {:?}", String::from_utf8_lossy(&reply))))?;
                prop_assert!(!v.is_null());
            }
            _ => prop_assert!(reply.is_empty()),
        }
        if method != "set" || uri != "/site/cops/cops_heartbeat" {
            prop_assert_eq!(r.heartbeat(), 42);
        }
    }

    #[test]
    fn arbitrary_heartbeat_bodies(body in prop::collection::vec(any::<u8>(), 0..40)) {
        let mut r = responder();
        let _ = r.handle(Instant::now(), "set", "/site/cops/cops_heartbeat", None, b"42", &mut Vec::new());
        let mut reply = Vec::new();
        let _ = r.handle(Instant::now(), "set", "/site/cops/cops_heartbeat", Some("/r"), &body, &mut reply);
        // Stored only when serde_json agrees the body is a u64 or {"value": u64}.
        let expect = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Number(n)) if !body.iter().any(|b| matches!(b, b'.' | b'e' | b'E' | b'-')) => n.as_u64(),
            Ok(v @ serde_json::Value::Object(_)) => match v.get("value") {
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                _ => None,
            },
            _ => None,
        };
        prop_assert_eq!(r.heartbeat(), expect.unwrap_or(42), "body {:?}", String::from_utf8_lossy(&body));
    }
}
