//! What operators see, on the fake clock: the operator stats fields, the
//! decision log (`get ourUri/events/<name>`), `get ourUri/status` pages, the
//! maintenance inhibit (exact expiry, refusals), and the metrics snapshot.

use super::*;

/// Sends `method uri` on the serving connection as `user`; returns the answer.
fn ask(h: &mut Harness, method: &str, uri: &str, body: &str, user: &str) -> Value {
    let msg = Message {
        method,
        uri,
        replyto: "/me/reply",
        username: user,
        body: body.as_bytes(),
        ..Message::default()
    };
    let now = h.now;
    h.e.handle_message(now, Via::Serve, &msg, &mut h.os);
    let t = h.e.poll_transmit().expect("an answer");
    assert_eq!(&*t.uri, "/me/reply");
    h.pump();
    serde_json::from_slice(&t.body).unwrap()
}

fn get(h: &mut Harness, uri: &str) -> Value {
    ask(h, "get", uri, "", "")
}

fn control(h: &mut Harness, name: &str, body: &str, user: &str) -> Value {
    ask(h, "set", &format!("/cops/control/{name}"), body, user)
}

fn is_error(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with("Error: "))
}

#[test]
fn operator_fields_of_a_healthy_process() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(2000);
    let s = h.e.stats(0, h.now);
    for f in crate::engine::serve::STAT_FIELDS {
        assert!(s.get(*f).is_some(), "{f} missing in {s}");
    }
    let age = s["last_beat_age_ms"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&age), "{s}");
    // Every reply took 5 ms: both percentiles within a bucket of it.
    for k in ["rtt_p50_ms", "rtt_p99_ms"] {
        let v = s[k].as_f64().unwrap();
        assert!((4.0..=5.0).contains(&v), "{k} {v}");
    }
    assert_eq!(s["rtt_replies_1m"], 20);
    assert_eq!(s["misses_total"], 0);
    assert_eq!(s["miss_allowance"], 3);
    assert_eq!(s["hang_time_allowance_ms"], Value::Null);
    assert_eq!(s["kills_total"], 0);
    assert_eq!(s["last_kill"], Value::Null);
    assert_eq!(s["last_restart"], Value::Null);
    assert_eq!(s["monitored"], true);
    assert_eq!(s["inhibited"], false);
    assert_eq!(s["inhibit_left_ms"], Value::Null);
    let sum = h.summary();
    assert_eq!(sum["kill_budget"], Value::Null);
    assert_eq!(sum["kills_total"], 0);
    assert_eq!(sum["inhibited"], 0);
    assert_eq!(sum["connected"], true);
    assert_eq!(sum["kills_suppressed"]["inhibited"], 0);
}

#[test]
fn rtt_percentiles_cover_the_last_minute_only() {
    let mut h = quick(vec![Fake::answering(4242, 40)], "");
    h.run_ms(30_000);
    h.fakes[0].mode = Mode::Answer(Duration::from_millis(2));
    h.run_ms(120_000);
    // Only 2 ms replies in the last minute.
    let p99 = h.stat(0, "rtt_p99_ms").as_f64().unwrap();
    assert!((1.5..=2.0).contains(&p99), "{p99}");
    let snap = h.e.metrics_snapshot(h.now);
    let rtt = &snap.processes[0].rtt;
    // Since the start: 40 ms ones too (bucket <= 0.05 s), and 2 ms ones (<= 0.0025 s).
    assert!(rtt.counts[8] >= 290 && rtt.counts[4] >= 890, "{rtt:?}");
}

#[test]
fn why_lists_verdict_signal_exit_restart_newest_first() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(500);
    h.fakes[0].hang_at = Some(h.ms(500));
    h.run_ms(1500);
    assert_eq!(h.signals_of(0), [4242]);
    let v = get(&mut h, "/cops/events/p0");
    assert_eq!(v["name"], "p0");
    let ev = v["events"].as_array().unwrap();
    let kinds: Vec<&str> = ev.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // The restart loop brought it back before COPS's first exit check (50 ms).
    assert_eq!(
        kinds,
        [
            "exited",
            "alive_again",
            "restarted",
            "signalled",
            "hung",
            "alive",
            "bus"
        ],
        "{v}"
    );
    assert_eq!(ev[6]["scope"], "site");
    let hung = &ev[4];
    assert_eq!(hung["severity"], 3);
    assert_eq!(hung["pid"], 4242);
    assert_eq!(hung["data"]["missed"], 3);
    assert_eq!(hung["data"]["allowance"], 3);
    assert_eq!(hung["data"]["decision"], "killing");
    assert_eq!(hung["data"]["signal"], "SIGKILL");
    assert!(hung["data"]["since_last_good_ms"].as_u64().unwrap() >= 300);
    assert!(hung["data"]["last_good"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ev[3]["pid"], 4242);
    assert!(ev[3]["message"].as_str().unwrap().contains("sent SIGKILL"));
    let ages: Vec<u64> = ev.iter().map(|e| e["age_ms"].as_u64().unwrap()).collect();
    assert!(ages.windows(2).all(|w| w[0] <= w[1]), "{ages:?}");
    // The stats say so too.
    let s = h.e.stats(0, h.now);
    assert_eq!(s["last_kill"]["signal"], "SIGKILL");
    assert_eq!(s["last_kill"]["reason"], "hung");
    assert_eq!(s["last_kill"]["pid"], 4242);
    assert_eq!(s["kills_total"], 1);
    assert!(s["last_restart_age_ms"].as_u64().unwrap() < 1000);
    assert!(s["misses_total"].as_u64().unwrap() >= 3);
    let err = get(&mut h, "/cops/events/nope");
    assert!(is_error(&err), "{err}");
}

#[test]
fn the_decision_log_keeps_64_entries_and_site_events_of_its_span() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(300);
    // A stall: the broker drops probes (site event, not the process's).
    h.drop_probes = 2;
    h.run_ms(3000);
    let site = get(&mut h, "/cops/events");
    let kinds: Vec<&str> = site["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"stall"), "{site}");
    let mine = get(&mut h, "/cops/events/p0");
    assert!(mine["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["scope"] == "site" && e["kind"] == "stall"));
    // 100 stale replies, one bad-reply line per 10 s: the log holds the last 64.
    for k in 0..100u64 {
        let at = h.ms(3000 + k * 10_000 + 1);
        h.inject_reply(at, 0, reply_body(0, 4242), "");
    }
    h.run_ms(1_003_100);
    let mine = get(&mut h, "/cops/events/p0");
    let own: Vec<&Value> = mine["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["scope"] == "process")
        .collect();
    assert_eq!(own.len(), crate::engine::LOG_LEN);
    assert!(own.iter().all(|e| e["kind"] == "bad_reply"));
    // The stall is older than the oldest entry kept: left out.
    assert!(!mine["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["scope"] == "site"));
}

#[test]
fn inhibited_hang_is_not_killed_until_resumed_then_at_the_next_miss() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(200);
    let a = control(
        &mut h,
        "p0",
        r#"{"inhibit_ms":600000,"reason":"upgrade"}"#,
        "root",
    );
    assert_eq!(a["inhibited"], true, "{a}");
    assert_eq!(a["by"], "root");
    assert_eq!(a["inhibit_left_ms"], 600_000);
    assert_eq!(h.kinds(EventKind::Inhibited).len(), 1);
    h.fakes[0].hang_at = Some(h.ms(300));
    h.run_ms(3000);
    assert_eq!(h.e.state(0), Some(State::Hung));
    assert!(h.signals.is_empty(), "{:?}", h.signals);
    let hung = h.kinds(EventKind::Hung)[0].message.clone();
    assert!(hung.contains("not killed: inhibited until"), "{hung}");
    assert!(hung.contains("by root (upgrade)"), "{hung}");
    assert_eq!(h.summary()["kills_suppressed"]["inhibited"], 1);
    assert_eq!(h.stat(0, "inhibited"), true);
    assert_eq!(h.stat(0, "inhibit_reason"), "upgrade");
    // Heartbeats went on meanwhile: the misses were counted.
    assert!(h.stat(0, "misses_total").as_u64().unwrap() >= 20);
    let a = control(&mut h, "p0", r#"{"resume":true}"#, "root");
    assert_eq!(a["was_inhibited"], true);
    assert_eq!(h.kinds(EventKind::InhibitEnded).len(), 1);
    // Not at the instant of the resume: at the next missed round.
    let resumed = h.now;
    h.run_ms(3001);
    assert!(h.signals.is_empty());
    h.run_ms(3400);
    assert_eq!(h.signals_of(0), [4242]);
    let took = h.signals[0].0 - resumed;
    assert!(
        took > Duration::ZERO && took <= Duration::from_millis(200),
        "{took:?}"
    );
    // A second resume answers, changes nothing.
    let a = control(&mut h, "p0", r#"{"resume":true}"#, "root");
    assert_eq!(a["was_inhibited"], false);
    assert_eq!(h.kinds(EventKind::InhibitEnded).len(), 1);
}

#[test]
fn an_inhibit_expires_by_itself_exactly() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(200);
    control(&mut h, "p0", r#"{"inhibit_ms":1000}"#, "root");
    h.fakes[0].hang_at = Some(h.ms(300));
    let end = h.ms(1200);
    h.run_until(end - Duration::from_nanos(1));
    assert_eq!(h.stat(0, "inhibited"), true);
    assert_eq!(h.stat(0, "inhibit_left_ms"), 0);
    assert!(h.kinds(EventKind::InhibitEnded).is_empty());
    assert!(h.signals.is_empty());
    h.run_until(end);
    assert_eq!(h.stat(0, "inhibited"), false);
    let ended = h.kinds(EventKind::InhibitEnded);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].at, end);
    assert!(
        ended[0].message.contains("expired after 1s"),
        "{}",
        ended[0].message
    );
    assert!(ended[0].post);
    // Still hung: killed at the next missed round.
    h.run_ms(1400);
    assert_eq!(h.signals_of(0), [4242]);
    assert!(h.signals[0].0 > end);
}

#[test]
fn a_changed_inhibit_keeps_only_the_new_end() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(100);
    control(&mut h, "p0", r#"{"inhibit_ms":500}"#, "root");
    h.run_ms(200);
    control(
        &mut h,
        "p0",
        r#"{"inhibit_ms":2000,"reason":"longer"}"#,
        "root",
    );
    assert!(h.kinds(EventKind::Inhibited)[1]
        .message
        .contains("inhibit changed by root"));
    h.run_ms(1000);
    assert_eq!(h.stat(0, "inhibited"), true);
    assert!(h.kinds(EventKind::InhibitEnded).is_empty());
    h.run_ms(2200);
    assert_eq!(h.kinds(EventKind::InhibitEnded).len(), 1);
    assert_eq!(h.kinds(EventKind::InhibitEnded)[0].at, h.ms(2200));
}

#[test]
fn bad_control_requests_are_answered_and_change_nothing() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(200);
    for (name, body, user) in [
        ("p0", "", "root"),
        ("p0", "{}", "root"),
        ("p0", r#"{"inhibit_ms":0}"#, "root"),
        ("p0", r#"{"inhibit_ms":86400001}"#, "root"),
        ("p0", r#"{"inhibit_ms":"10m"}"#, "root"),
        ("p0", r#"{"resume":false}"#, "root"),
        ("p0", r#"{"inhibit_ms":1000,"reason":7}"#, "root"),
        ("nope", r#"{"inhibit_ms":1000}"#, "root"),
        ("p0", r#"{"inhibit_ms":1000}"#, "mallory"),
        ("p0", r#"{"inhibit_ms":1000}"#, ""),
    ] {
        let a = control(&mut h, name, body, user);
        assert!(is_error(&a), "{name} {body} {user}: {a}");
    }
    let a = control(&mut h, "p0", r#"{"inhibit_ms":1000}"#, "mallory");
    assert!(a
        .as_str()
        .unwrap()
        .contains("may not control COPS (allowed: root)"));
    assert_eq!(h.stat(0, "inhibited"), false);
    assert!(h.kinds(EventKind::Inhibited).is_empty());
    assert_eq!(h.kinds(EventKind::ControlRefused).len(), 2);
    // A get on the control URI is not a control request.
    assert!(is_error(&get(&mut h, "/cops/control/p0")));
    // Allowed users are configurable (the runtime resolves names and uids).
    h.e.set_control_users(vec!["site".into(), "1000".into()]);
    assert_eq!(
        control(&mut h, "p0", r#"{"inhibit_ms":1000}"#, "1000")["inhibited"],
        true
    );
    assert!(is_error(&control(
        &mut h,
        "p0",
        r#"{"resume":true}"#,
        "root"
    )));
}

#[test]
fn a_set_without_replyto_still_controls() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(100);
    let msg = Message {
        method: "set",
        uri: "/cops/control/p0",
        username: "root",
        body: br#"{"inhibit_ms":5000}"#,
        ..Message::default()
    };
    let now = h.now;
    h.e.handle_message(now, Via::Serve, &msg, &mut h.os);
    assert!(h.e.poll_transmit().is_none());
    assert_eq!(h.stat(0, "inhibited"), true);
}

#[test]
fn not_monitored_processes_cannot_be_inhibited() {
    let cfg = config(2, r#","heartbeatFreq":100"#, "");
    let mut cfg = cfg;
    cfg.processes[1].required = false;
    let mut h = Harness::new(cfg, vec![Fake::answering(1, 5), Fake::answering(2, 5)]);
    h.run_ms(100);
    let a = control(&mut h, "p1", r#"{"inhibit_ms":1000}"#, "root");
    assert!(a.as_str().unwrap().contains("not monitored"), "{a}");
    let page = get(&mut h, "/cops/status");
    assert_eq!(page["processes"][1]["state"], "not_monitored");
}

#[test]
fn inhibit_during_abrt_holds_the_escalation() {
    let per = r#","killSignal":"SIGABRT","killEscalationMS":500"#;
    let mut h = quick(vec![Fake::answering(4242, 5)], per);
    h.run_ms(500);
    h.fakes[0].mode = Mode::Silent;
    h.fakes[0].unkillable = true;
    h.fakes[0].restart_after = None;
    h.run_until(h.ms(500));
    while h.signals.is_empty() {
        let t = h.now + Duration::from_millis(1);
        h.run_until(t);
    }
    control(&mut h, "p0", r#"{"inhibit_ms":2000}"#, "root");
    let t = h.now + Duration::from_millis(1500);
    h.run_until(t);
    assert_eq!(h.signals.len(), 1, "no SIGKILL while inhibited");
    let esc = h.kinds(EventKind::Escalated);
    assert!(
        esc[0].message.contains("not escalating to SIGKILL"),
        "{}",
        esc[0].message
    );
    // After the inhibit, the still hung incarnation is signalled again.
    let t = h.now + Duration::from_millis(3000);
    h.run_until(t);
    let sigs: Vec<Signal> = h.signals.iter().map(|s| s.3).collect();
    assert_eq!(
        sigs[..3],
        [
            Signal::parse("ABRT").unwrap(),
            Signal::parse("ABRT").unwrap(),
            Signal::KILL
        ]
    );
    let snap = h.e.metrics_snapshot(h.now);
    let kills = &snap.processes[0].kills;
    assert_eq!(
        kills,
        &[
            ("SIGABRT".to_owned(), "hung", 2),
            ("SIGKILL".to_owned(), "escalation", 1)
        ]
    );
    // Before any kill, the series a monitoring will see move are there with 0.
    let h = quick(vec![Fake::answering(1, 5)], per);
    let snap = h.e.metrics_snapshot(h.now);
    assert_eq!(
        snap.processes[0].kills,
        [
            ("SIGABRT".to_owned(), "hung", 0),
            ("SIGKILL".to_owned(), "escalation", 0)
        ]
    );
    // killOnHang false: nothing to count.
    let mut cfg = config(1, r#","heartbeatFreq":100"#, "");
    cfg.processes[0].kill_on_hang = false;
    let h = Harness::new(cfg, vec![Fake::answering(1, 5)]);
    assert!(h.e.metrics_snapshot(h.now).processes[0].kills.is_empty());
}

#[test]
fn status_pages_cover_every_process() {
    let n = 1200;
    let fakes: Vec<Fake> = (0..n)
        .map(|i| Fake::answering(10_000 + i as u32, 3))
        .collect();
    let cfg = config(n, r#","heartbeatFreq":1000,"maxKillsPerWindow":10"#, "");
    let mut h = Harness::new(cfg, fakes);
    h.run_ms(2000);
    let mut names = Vec::new();
    let mut at = Some(0u64);
    while let Some(off) = at {
        let uri = if off == 0 {
            "/cops/status".to_owned()
        } else {
            format!("/cops/status/{off}")
        };
        let page = get(&mut h, &uri);
        assert_eq!(page["total"], n);
        assert_eq!(page["summary"]["alive"], n);
        assert_eq!(page["summary"]["kill_budget"]["left"], 10);
        for row in page["processes"].as_array().unwrap() {
            assert_eq!(row["state"], "alive");
            names.push(row["name"].as_str().unwrap().to_owned());
        }
        at = page["next"].as_u64();
    }
    assert_eq!(names.len(), n);
    assert_eq!(names[n - 1], format!("p{}", n - 1));
    assert!(is_error(&get(&mut h, "/cops/status/5000")));
    assert!(is_error(&get(&mut h, "/cops/status/x")));
}

#[test]
fn stall_time_and_loop_lag_are_counted() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(300);
    let (a, b) = (h.ms(300), h.ms(800));
    h.e.lagged(a, b);
    h.pump();
    h.run_ms(5000);
    let snap = h.e.metrics_snapshot(h.now);
    assert_eq!(snap.stalls, 1);
    assert!(!snap.stalled);
    assert!(
        snap.stall_time >= Duration::from_millis(500),
        "{:?}",
        snap.stall_time
    );
    assert_eq!(snap.loop_lag, Duration::from_millis(500));
    let later = h.ms(40_000);
    h.run_until(later);
    assert_eq!(h.e.metrics_snapshot(h.now).loop_lag, Duration::ZERO);
}

/// What a scrape and a `cops status` cost at 10,000 processes: the snapshot
/// (on COPS's loop), its encoding (on the exporter's thread), the status
/// pages (on COPS's loop). A measurement, not a check: `cargo test --release
/// -p cops-server --lib ten_thousand_scrape -- --ignored --nocapture`.
#[test]
#[ignore]
fn ten_thousand_scrape_and_status_costs() {
    const N: usize = 10_000;
    let fakes: Vec<Fake> = (0..N)
        .map(|i| Fake::answering(10_000 + i as u32, 1 + (i as u64 % 7)))
        .collect();
    let mut h = Harness::new(config(N, r#","heartbeatFreq":1000"#, ""), fakes);
    h.run_ms(5000);
    let t = std::time::Instant::now();
    let snap = std::sync::Arc::new(h.e.metrics_snapshot(h.now));
    let snap_took = t.elapsed();
    let t = std::time::Instant::now();
    let reg = crate::metrics::registry(snap);
    let text = metrics_http::encode(&reg, metrics_http::Format::Prometheus).unwrap();
    let encode_took = t.elapsed();
    let t = std::time::Instant::now();
    let mut bytes = 0;
    for off in (0..N).step_by(crate::engine::STATUS_PAGE) {
        bytes +=
            h.e.status_page(h.now, Some(&off.to_string()))
                .unwrap()
                .len();
    }
    let status_took = t.elapsed();
    eprintln!(
        "{N} processes: snapshot {snap_took:?} (loop), encoding {encode_took:?} for {} lines, {} bytes (exporter), status pages {status_took:?} for {bytes} bytes (loop)",
        text.lines().count(),
        text.len()
    );
}
