//! The cycle, verdicts, kills and serving on the fake clock.

use super::*;

#[test]
fn healthy_process_is_alive_with_stats() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.keep_sent = true;
    h.run_ms(1010);
    assert_eq!(h.e.state(0), Some(State::Alive));
    assert_eq!(h.kinds(EventKind::Alive).len(), 1);
    assert!(h.signals.is_empty());
    assert_eq!(h.stat(0, "pid"), 4242);
    assert_eq!(h.stat(0, "last_response_time_ms"), 5.0);
    assert_eq!(h.stat(0, "max_response_time_ms"), 5.0);
    assert_eq!(h.stat(0, "avg_response_time_ms"), 5.0);
    assert_eq!(h.stat(0, "missed_heartbeats"), 0);
    assert_eq!(h.stat(0, "version_tag"), "1.4.0");
    assert_eq!(h.stat(0, "total_restarts"), 0);
    // Rounds at 0, 100, ..., 1000 ms: 11 successes, H from 1 to 12.
    assert_eq!(h.stat(0, "heartbeat"), 12);
    // Step 1 then step 2 with the reply URI.
    assert_eq!(&*h.sent[0].uri, "/p0/cops/cops_heartbeat");
    assert_eq!(h.sent[0].body, b"1");
    assert_eq!(h.sent[0].replyto, None);
    assert_eq!(&*h.sent[1].uri, "/p0/cops");
    assert_eq!(h.sent[1].method, Method::Get);
    assert_eq!(h.sent[1].replyto.as_deref(), Some("/cops/heartbeat/p0"));
    assert_eq!(
        h.stat(0, "last_confirmed_alive"),
        "1970-01-01T00:00:01.005Z"
    );
}

#[test]
fn reply_at_the_deadline_counts_one_tick_late_misses() {
    let mut h = quick(
        vec![Fake::answering(4242, 90), Fake::answering(4243, 91)],
        "",
    );
    h.run_ms(2000);
    assert_eq!(h.e.state(0), Some(State::Alive));
    assert_eq!(h.e.state(1), Some(State::Hung), "{:?}", h.events);
    assert_eq!(h.stat(1, "pid"), Value::Null, "never accepted, so no PID");
    let hung = h.kinds(EventKind::Hung);
    assert_eq!(hung.len(), 1);
    assert!(
        hung[0].message.contains("not killed: no verified PID"),
        "{}",
        hung[0].message
    );
    assert!(h.signals.is_empty());
}

#[test]
fn stale_heartbeat_value_is_a_miss() {
    let mut f = Fake::answering(4242, 5);
    f.hang_at = None;
    let mut h = quick(vec![f], "");
    h.run_ms(500);
    assert_eq!(h.e.state(0), Some(State::Alive));
    h.fakes[0].mode = Mode::Stale;
    h.run_ms(900);
    // Rounds at 600, 700, 800 miss: deadline of the third at 890.
    assert_eq!(h.e.state(0), Some(State::Hung));
    assert_eq!(h.kinds(EventKind::BadReply).len(), 1, "complained once");
    assert_eq!(h.signals.len(), 1);
    assert_eq!(h.signals[0].2, 4242);
}

#[test]
fn never_answered_alarms_without_kill() {
    let mut f = Fake::answering(4242, 5);
    f.mode = Mode::Silent;
    let mut h = quick(vec![f], "");
    h.run_ms(1000);
    assert_eq!(h.e.state(0), Some(State::Hung));
    let hung = h.kinds(EventKind::Hung);
    assert_eq!(hung.len(), 1, "one alarm, not one per round");
    assert_eq!(hung[0].severity, Severity::Alarm);
    assert!(
        hung[0].message.contains("unknown -> hung"),
        "{}",
        hung[0].message
    );
    assert!(h.signals.is_empty());
    assert_eq!(h.stat(0, "state"), "unknown".replace("unknown", "hung"));
}

#[test]
fn hang_detected_within_allowance_killed_once_restart_counted() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(1000);
    let hang = h.ms(1003);
    h.fakes[0].hang_at = Some(hang);
    h.fakes[0].restart_after = Some(Duration::from_millis(150));
    h.run_ms(3000);
    assert_eq!(
        h.signals.len(),
        1,
        "one kill per incarnation: {:?}",
        h.signals
    );
    let (at, i, pid, sig) = h.signals[0];
    assert_eq!((i, pid, sig), (0, 4242, Signal::KILL));
    // allowance 3 x period 100 + deadline 90.
    let latency = at - hang;
    assert!(latency <= Duration::from_millis(390), "{latency:?}");
    let exited = h.kinds(EventKind::Exited);
    assert_eq!(exited.len(), 1, "the exit is seen at an early check");
    assert!(
        exited[0].message.contains("(50 ms)"),
        "reported when seen, not at killEscalationMS: {}",
        exited[0].message
    );
    assert_eq!(h.kinds(EventKind::Restarted).len(), 1);
    assert_eq!(h.kinds(EventKind::Resurrected).len(), 1);
    assert_eq!(h.e.state(0), Some(State::Alive));
    assert_eq!(h.stat(0, "total_restarts"), 1);
    assert_eq!(h.stat(0, "cops_restarts"), 1);
    assert_eq!(h.stat(0, "pid"), 100_001);
    h.run_ms(7000);
    let exited = h.kinds(EventKind::Exited);
    assert_eq!(exited.len(), 1, "one exit event per kill");
    assert_eq!(
        exited[0].pid,
        Some(4242),
        "the event names the killed PID, not the new one"
    );
}

#[test]
fn replies_after_hung_resurrect_without_second_kill() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(500);
    h.fakes[0].unkillable = true; // SIGKILL does not take (state D)
    h.fakes[0].mode = Mode::Silent;
    h.run_ms(1000);
    assert_eq!(h.e.state(0), Some(State::Hung));
    assert_eq!(h.signals.len(), 1);
    h.fakes[0].mode = Mode::Answer(Duration::from_millis(5));
    h.run_ms(8000);
    assert_eq!(h.e.state(0), Some(State::Alive));
    assert_eq!(h.kinds(EventKind::Resurrected).len(), 1);
    assert_eq!(
        h.signals.len(),
        1,
        "same incarnation: never signalled twice"
    );
    let fault = h.kinds(EventKind::DidNotExit);
    assert_eq!(fault.len(), 1);
    assert_eq!(fault[0].severity, Severity::Fault);
    assert!(fault[0].message.contains("D io_schedule"));
}

#[test]
fn pid_change_counts_a_restart_not_a_cops_restart() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(500);
    h.fakes[0].pid = 5000;
    h.run_ms(1000);
    assert_eq!(h.stat(0, "total_restarts"), 1);
    assert_eq!(h.stat(0, "cops_restarts"), 0);
    assert_eq!(h.stat(0, "pid"), 5000);
    assert_eq!(h.e.state(0), Some(State::Alive));
}

#[test]
fn malformed_replies_are_misses_and_bad_pids_never_accepted() {
    for body in [
        "not json".to_string(),
        "17".to_string(),
        r#"{"pid":4242}"#.to_string(),
        r#"{"cops_heartbeat":"1","pid":4242}"#.to_string(),
        r#"{"cops_heartbeat":1}"#.to_string(),
        reply_body(1, 1),
        reply_body(1, 0),
        reply_body(1, -5),
        reply_body(1, i64::from(OWN_PID)),
        reply_body(1, 1 << 40),
    ] {
        let mut f = Fake::answering(4242, 5);
        f.mode = Mode::Body(body.clone());
        let mut h = quick(vec![f], "");
        h.run_ms(1000);
        assert_eq!(h.e.state(0), Some(State::Hung), "{body}");
        assert!(h.signals.is_empty(), "{body}");
        assert_eq!(h.stat(0, "pid"), Value::Null, "{body}");
    }
}

#[test]
fn nonexistent_pid_is_not_accepted() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.os.refuse.insert(4242, PidRefusal::NoSuchProcess);
    h.run_ms(1000);
    assert_eq!(h.e.state(0), Some(State::Hung));
    assert!(h.signals.is_empty());
    assert_eq!(
        h.kinds(EventKind::PidRejected).len(),
        1,
        "one alarm per bad PID"
    );
}

#[test]
fn clothed_reply_fields_accepted() {
    let mut f = Fake::answering(4242, 5);
    f.mode = Mode::Body(r#"{"cops_heartbeat":{"value":1},"pid":{"value":4242}}"#.into());
    let mut h = quick(vec![f], "");
    h.run_ms(50);
    assert_eq!(h.e.state(0), Some(State::Alive));
}

#[test]
fn cops_loop_stalling_three_periods_kills_nobody() {
    let fakes = (0..5).map(|i| Fake::answering(4000 + i, 5)).collect();
    let mut h = quick(fakes, "");
    h.run_ms(1000);
    // COPS's loop stops for 3 periods (plus): nothing is handled meanwhile.
    let resume = h.ms(1000 + 350);
    h.now = resume;
    h.e.handle_timeout(resume);
    h.pump();
    h.run_ms(3000);
    assert!(h.signals.is_empty(), "{:?}", h.signals);
    assert!(h.kinds(EventKind::Hung).is_empty());
    assert_eq!(h.kinds(EventKind::Stall).len(), 1, "{:?}", h.events);
    assert_eq!(h.kinds(EventKind::StallOver).len(), 1);
    for i in 0..5 {
        assert_eq!(h.e.state(i), Some(State::Alive));
    }
}

#[test]
fn disconnected_bus_misses_do_not_count() {
    let fakes = (0..2).map(|i| Fake::answering(4000 + i, 5)).collect();
    let mut h = quick(fakes, "");
    h.run_ms(1000);
    let t = h.ms(1001);
    h.e.set_connected(t, false);
    h.run_ms(2000);
    let t = h.ms(2000);
    h.e.set_connected(t, true);
    h.run_ms(3000);
    assert!(h.signals.is_empty());
    assert!(h.kinds(EventKind::Hung).is_empty());
    assert_eq!(h.kinds(EventKind::Bus).len(), 3);
}

#[test]
fn kill_budget_quarantines() {
    let per = r#","maxKills":2,"killWindowMS":10000"#;
    let mut h = quick(vec![Fake::answering(4242, 5)], per);
    // It hangs again right after every restart.
    for k in 0..3u64 {
        h.run_ms(1000 + k * 1000);
        let t = h.now;
        h.fakes[0].hang_at = Some(t);
    }
    h.run_ms(5000);
    assert_eq!(h.signals.len(), 2, "{:?}", h.signals);
    let q = h.kinds(EventKind::Quarantined);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].severity, Severity::Fault);
    assert_eq!(h.e.state(0), Some(State::Hung));
    // After the window, killing resumes.
    h.run_ms(12_000);
    assert_eq!(h.signals.len(), 3);
    assert_eq!(h.kinds(EventKind::QuarantineOver).len(), 1);
}

#[test]
fn abrt_escalates_to_kill_then_checks_exit() {
    let per = r#","killSignal":"SIGABRT","killEscalationMS":200"#;
    let mut h = quick(vec![Fake::answering(4242, 5)], per);
    h.run_ms(500);
    h.fakes[0].mode = Mode::Silent;
    h.fakes[0].unkillable = true;
    h.fakes[0].restart_after = None;
    h.run_ms(2000);
    let sigs: Vec<Signal> = h.signals.iter().map(|s| s.3).collect();
    assert_eq!(sigs, [Signal::parse("ABRT").unwrap(), Signal::KILL]);
    assert_eq!(h.signals[1].0 - h.signals[0].0, Duration::from_millis(200));
    assert_eq!(h.kinds(EventKind::Escalated).len(), 1);
    assert_eq!(h.kinds(EventKind::DidNotExit).len(), 1);
}

#[test]
fn abrt_that_works_is_not_escalated() {
    let per = r#","killSignal":"SIGABRT","killEscalationMS":200"#;
    let mut h = quick(vec![Fake::answering(4242, 5)], per);
    h.run_ms(500);
    h.fakes[0].mode = Mode::Silent;
    h.fakes[0].restart_after = None;
    h.run_ms(2000);
    assert_eq!(h.signals.len(), 1);
    assert_eq!(h.kinds(EventKind::Exited).len(), 1);
}

#[test]
fn dry_run_reports_would_signal_once() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.dry_run = true;
    h.run_ms(500);
    h.fakes[0].mode = Mode::Silent;
    h.run_ms(3000);
    assert_eq!(h.kinds(EventKind::WouldSignal).len(), 1);
    assert!(h.kinds(EventKind::Signalled).is_empty());
}

#[test]
fn kill_on_hang_false_never_signals() {
    let cfg = config(1, r#","heartbeatFreq":100"#, "").processes[0].clone();
    let mut c = config(1, r#","heartbeatFreq":100,"heartbeatErrorAllowance":3"#, "");
    c.processes[0] = ProcessConfig {
        kill_on_hang: false,
        ..cfg
    };
    let mut h = Harness::new(c, vec![Fake::answering(4242, 5)]);
    h.run_ms(500);
    h.fakes[0].mode = Mode::Silent;
    h.run_ms(2000);
    assert!(h.signals.is_empty());
    let hung = h.kinds(EventKind::Hung);
    assert!(hung[0].message.contains("killOnHang is false"));
}

#[test]
fn hang_time_allowance_instead_of_miss_count() {
    let per = r#","hangTimeAllowanceMS":500"#;
    let mut h = quick(vec![Fake::answering(4242, 5)], per);
    h.run_ms(1000);
    let hang = h.ms(1006);
    h.fakes[0].hang_at = Some(hang);
    h.run_ms(3000);
    assert_eq!(h.signals.len(), 1);
    let latency = h.signals[0].0 - hang;
    // Last success at 1005; hung at the first deadline >= 1505 (1590).
    assert_eq!(latency, Duration::from_millis(584));
}

#[test]
fn not_required_is_listed_not_heartbeated() {
    let mut c = config(2, r#","heartbeatFreq":100"#, "");
    c.processes[1].required = false;
    let mut h = Harness::new(c, vec![Fake::answering(1, 5), Fake::answering(4243, 5)]);
    h.fakes[0].pid = 4242;
    h.keep_sent = true;
    h.run_ms(1000);
    assert!(h.sent.iter().all(|t| !t.uri.starts_with("/p1")));
    assert_eq!(h.e.state(1), Some(State::Unknown));
    assert_eq!(h.e.summary(h.now)["status"], "healthy");
}

#[test]
fn rounds_are_spread_over_the_period() {
    let fakes: Vec<Fake> = (0..4).map(|i| Fake::answering(4000 + i, 5)).collect();
    let mut h = quick(fakes, "");
    h.keep_sent = true;
    h.run_ms(99);
    let rounds = h.sent.iter().filter(|t| t.via == Via::Heartbeat).count();
    assert_eq!(rounds, 8);
    let mut starts: Vec<u64> =
        h.e.procs
            .iter()
            .map(|p| (p.stats.last_alive.unwrap() - h.t0).as_millis() as u64)
            .collect();
    starts.sort();
    assert_eq!(starts, [5, 30, 55, 80]);
}

fn get(h: &mut Harness, uri: &str) -> Value {
    let msg = Message {
        method: "get",
        uri,
        replyto: "/me/reply",
        ..Message::default()
    };
    let now = h.now;
    h.e.handle_message(now, Via::Serve, &msg, &mut h.os);
    let t = h.e.poll_transmit().expect("an answer");
    assert_eq!(&*t.uri, "/me/reply");
    assert_eq!(t.method, Method::Set);
    serde_json::from_slice(&t.body).unwrap()
}

#[test]
fn serves_gets_on_our_uri() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(300);
    assert_eq!(get(&mut h, "/cops/stats/p0/pid"), 4242);
    assert_eq!(get(&mut h, "/cops/stats/p0/state"), "alive");
    assert_eq!(get(&mut h, "/cops/stats/p0")["name"], "p0");
    assert_eq!(get(&mut h, "/cops/stats")["p0"]["uri"], "/p0");
    let all = get(&mut h, "/cops");
    assert_eq!(all["summary"]["status"], "healthy");
    assert_eq!(all["summary"]["alive"], 1);
    assert_eq!(all["stats"]["p0"]["kill_on_hang"], true);
    for f in crate::engine::serve::STAT_FIELDS {
        assert!(all["stats"]["p0"].get(*f).is_some(), "{f}");
    }
    assert_eq!(get(&mut h, "/cops/summary")["controller_name"], "test");
    let err = get(&mut h, "/cops/stats/nope");
    assert!(err.as_str().unwrap().starts_with("Error: "), "{err}");
    let err = get(&mut h, "/cops/stats/p0/bogus");
    assert!(err.as_str().unwrap().starts_with("Error: "));
    // A get without replyto is not answered.
    let msg = Message {
        method: "get",
        uri: "/cops",
        ..Message::default()
    };
    let now = h.now;
    h.e.handle_message(now, Via::Serve, &msg, &mut h.os);
    assert!(h.e.poll_transmit().is_none());
}

#[test]
fn publishes_summary_and_stats_every_briefing() {
    let fakes: Vec<Fake> = (0..3).map(|i| Fake::answering(4000 + i, 5)).collect();
    let cfg = config(3, r#","heartbeatFreq":100,"briefingFrequencyMS":1000"#, "");
    let mut h = Harness::new(cfg, fakes);
    h.keep_sent = true;
    h.run_ms(2100);
    let pubs: Vec<&str> = h
        .sent
        .iter()
        .filter(|t| t.method == Method::Pub)
        .map(|t| &*t.uri)
        .collect();
    assert_eq!(pubs.iter().filter(|u| **u == "/cops/summary").count(), 2);
    assert_eq!(pubs.iter().filter(|u| **u == "/cops/stats/p2").count(), 2);
}

#[test]
fn event_body_is_the_events_format() {
    let mut f = Fake::answering(4242, 5);
    f.mode = Mode::Silent;
    let mut h = quick(vec![f], "");
    h.run_ms(1000);
    let ev = h.kinds(EventKind::Hung)[0];
    let v: Value = serde_json::from_slice(&ev.body()).unwrap();
    assert_eq!(v["source"], "COPS");
    assert_eq!(v["severity"], 3);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("p0 (no pid known) hung"));
}

#[test]
fn stats_text_escapes_strings() {
    let mut f = Fake::answering(4242, 5);
    f.mode = Mode::Body(r#"{"cops_heartbeat":1,"pid":4242,"version_tag":"1.4 \"rc\"\n"}"#.into());
    let mut h = quick(vec![f], "");
    h.run_ms(50);
    assert_eq!(h.e.state(0), Some(State::Alive));
    assert_eq!(h.stat(0, "version_tag"), "1.4 \"rc\"\n");
    assert_eq!(h.stat(0, "last_response_time_ms"), 1.0);
    assert_eq!(h.stat(0, "version_commit"), "");
}

#[test]
fn late_timer_ticks_lose_no_round() {
    // Timers handled only every 14 ms: rounds go out up to 14 ms late, so a
    // round can still be open at the next start (deadline 90 of period 100).
    // That start follows the deadline instead of being lost.
    let mut h = quick(vec![Fake::answering(4242, 1)], "");
    h.tick = Some(Duration::from_millis(14));
    h.keep_sent = true;
    h.run_ms(1000);
    let gets = h
        .sent
        .iter()
        .filter(|t| t.method == Method::Get && t.via == Via::Heartbeat)
        .count();
    assert_eq!(gets, 10, "one round per period");
    let hang = h.ms(1002);
    h.fakes[0].hang_at = Some(hang);
    h.run_ms(2000);
    assert_eq!(h.signals.len(), 1);
    let latency = h.signals[0].0 - hang;
    // The verdict's start and deadline are urgent: no tick is added.
    assert!(latency <= Duration::from_millis(390), "{latency:?}");
    let msg = &h.kinds(EventKind::Hung)[0].message;
    let since: u64 = msg
        .split(" ms since")
        .next()
        .and_then(|m| m.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("ms since the last good reply");
    assert!(since <= 390 + 14, "{msg}");
}

#[test]
fn coalesced_ticks_do_not_delay_verdicts() {
    // Whatever the phase of the hang, the verdict comes within allowance x
    // period + deadline even when timers are otherwise handled every 14 ms.
    let mut worst = Duration::ZERO;
    for k in 0..100u64 {
        let mut h = quick(vec![Fake::answering(4242, 1)], "");
        h.tick = Some(Duration::from_millis(14));
        h.run_ms(1000);
        let hang = h.ms(1000 + k);
        h.fakes[0].hang_at = Some(hang);
        h.run_ms(2000);
        assert_eq!(h.signals.len(), 1);
        worst = worst.max(h.signals[0].0 - hang);
    }
    assert!(worst <= Duration::from_millis(390), "{worst:?}");
}

#[test]
fn versions_follow_the_replies() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(310);
    assert_eq!(h.stat(0, "version_tag"), "1.4.0");
    let next =
        r#"{"cops_heartbeat":H,"pid":4242,"version_tag":"1.5.0","version_commit":"a1b2c3d"}"#;
    let hb = h.stat(0, "heartbeat").as_u64().unwrap();
    h.fakes[0].mode = Mode::Body(next.replace('H', &hb.to_string()));
    h.run_ms(450);
    assert_eq!(h.e.state(0), Some(State::Alive));
    assert_eq!(h.stat(0, "missed_heartbeats"), 0);
    assert_eq!(h.stat(0, "version_tag"), "1.5.0");
    assert_eq!(h.stat(0, "version_commit"), "a1b2c3d");
    assert_eq!(
        h.stat(0, "version_build"),
        "372",
        "absent fields keep their value"
    );
}

#[test]
fn starved_process_is_not_killed_and_keeps_its_budget() {
    // One kill in the window: a held kill must not spend it.
    let per = r#","maxKills":1,"killWindowMS":60000"#;
    let mut h = quick(vec![Fake::answering(4242, 5)], per);
    h.run_ms(1000);
    // Runnable but not scheduled for 1.5 s (five times the hang window).
    h.fakes[0].starved = Some((h.ms(1003), h.ms(2500)));
    h.run_ms(3000);
    assert!(
        !h.fakes[0].dead,
        "a starved process was killed: {:?}",
        h.events
    );
    // The baseline is taken once, at the first miss of the series.
    assert_eq!(h.watches.len(), 1, "{:?}", h.watches);
    let (at, i, pid) = h.watches[0];
    assert_eq!((i, pid), (0, 4242));
    assert!(at > h.ms(1003) && at < h.ms(1200), "{at:?}");
    // The verdict, then one held signal per missed heartbeat until it answers.
    assert_eq!(h.kinds(EventKind::Hung).len(), 1);
    let held = h.kinds(EventKind::Starved);
    assert!(held.len() >= 5, "{held:?}");
    assert_eq!(held.len(), h.signals.len(), "every attempt was held");
    assert!(
        held[0]
            .message
            .contains("NOT sent SIGKILL: runnable but starved of CPU"),
        "{}",
        held[0].message
    );
    assert_eq!(h.e.state(0), Some(State::Alive), "answering again");
    assert_eq!(h.stat(0, "cops_restarts"), 0);
    assert_eq!(h.summary()["kills_suppressed"]["starved"], held.len());
    // A real hang afterwards is killed on time: nothing of the budget was spent.
    let attempts = h.signals.len();
    let hang = h.ms(3003);
    h.fakes[0].hang_at = Some(hang);
    h.run_ms(4000);
    assert_eq!(h.signals.len(), attempts + 1, "{:?}", h.signals);
    let (at, _, pid, sig) = h.signals[attempts];
    assert_eq!((pid, sig), (4242, Signal::KILL));
    assert!(at - hang <= Duration::from_millis(390), "{:?}", at - hang);
    assert_ne!(h.fakes[0].pid, 4242, "killed and restarted");
    assert!(h.kinds(EventKind::Quarantined).is_empty());
    assert_eq!(h.watches.len(), 2, "a new baseline for the new series");
}
