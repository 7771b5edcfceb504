//! The loop in what operators see, on the fake clock: the status rows, the
//! metrics snapshot, the decision log (`cops why`), a loop kill's reason,
//! and the maintenance inhibit holding a loop kill like a hang's.

use std::time::{Duration, Instant};

use fims::Message;
use serde_json::Value;

use crate::engine::tests::fake_loop::FakeLoop;
use crate::engine::tests::{quick, Fake, Harness};
use crate::engine::{EventKind, Via};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// p0 (pid 4242) ticking every 20 ms, with the loop keys `per`.
fn looped(per: &str) -> Harness {
    let mut f = Fake::answering(4242, 1);
    f.ticks = Some(FakeLoop::new(Instant::now(), ms(20)));
    quick(vec![f], per)
}

/// From `at_ms` on, p0's iterations last `iteration`.
fn slow_from(h: &mut Harness, at_ms: u64, iteration: Duration) {
    let at = h.ms(at_ms);
    h.fakes[0]
        .ticks
        .as_mut()
        .expect("ticks")
        .from(at, iteration);
}

/// `method uri` on the serving connection as root; the answer.
fn ask(h: &mut Harness, method: &str, uri: &str, body: &str) -> Value {
    let msg = Message {
        method,
        uri,
        replyto: "/me/reply",
        username: "root",
        body: body.as_bytes(),
        ..Message::default()
    };
    let now = h.now;
    h.e.handle_message(now, Via::Serve, &msg, &mut h.os);
    let t = h.e.poll_transmit().expect("an answer");
    h.pump();
    serde_json::from_slice(&t.body).expect("JSON")
}

const KILL: &str = r#","loopDeadlineMS":50,"loopAction":"kill""#;

#[test]
fn status_rows_and_metrics_carry_the_loop() {
    let mut h = looped(r#","loopDeadlineMS":50"#);
    h.run_ms(1000);
    let row = &ask(&mut h, "get", "/cops/status", "")["processes"][0];
    assert_eq!(row["loop_max_us"], 20_000, "{row}");
    assert_eq!(row["loop_p99_us"], 20_000, "{row}");
    assert_eq!(row["loop_tolerance"], 3, "{row}");
    assert_eq!(row["loop_fault"], Value::Null, "{row}");
    assert_eq!(
        (
            &row["loop_overruns"],
            &row["loop_failing"],
            &row["loop_alarm"]
        ),
        (&Value::from(0), &Value::from(0), &Value::from(false))
    );
    slow_from(&mut h, 1000, ms(80));
    // Beats 1100 and 1200 overran: within the tolerance.
    h.run_ms(1250);
    let row = &ask(&mut h, "get", "/cops/status", "")["processes"][0];
    assert_eq!(
        (&row["loop_failing"], &row["loop_fault"], &row["loop_alarm"]),
        (
            &Value::from(2),
            &Value::from("overrun"),
            &Value::from(false)
        ),
        "{row}"
    );
    h.run_ms(1500);
    let row = &ask(&mut h, "get", "/cops/status", "")["processes"][0];
    assert_eq!(row["loop_alarm"], true, "{row}");
    assert_eq!(row["loop_max_us"], 80_000, "{row}");
    let snap = h.e.metrics_snapshot(h.now);
    let p = &snap.processes[0];
    assert_eq!(p.loops.p99, Some(ms(80)));
    assert_eq!(p.loops.max, Some(ms(80)));
    let c = p.loops.judged.expect("loop keys: counted");
    // Beats 1100 to 1400 overran (1500's reply is still on its way).
    assert_eq!((c.overruns, c.slow_beats, c.fast_beats), (4, 0, 0));
    assert_eq!((c.alarms, c.alarm), (1, true));
    assert_eq!(h.stat(0, "loop_alarms_total"), 1);
    assert!(
        p.kills.iter().all(|k| k.1 != "loop"),
        "no loop kill series under loopAction \"alarm\": {:?}",
        p.kills
    );
    // The exposition: the loop series, and promtool takes it.
    let text = scrape_text(snap);
    let v = |series: &str| testkit::scrape::sample(&text, series);
    assert_eq!(
        v(r#"cops_loop_iteration_p99_seconds{process="p0"}"#),
        Some(0.08),
        "{text}"
    );
    assert_eq!(
        v(r#"cops_loop_iteration_max_seconds{process="p0"}"#),
        Some(0.08)
    );
    assert_eq!(v(r#"cops_loop_overruns_total{process="p0"}"#), Some(4.0));
    assert_eq!(v(r#"cops_loop_slow_beats_total{process="p0"}"#), Some(0.0));
    assert_eq!(v(r#"cops_loop_fast_beats_total{process="p0"}"#), Some(0.0));
    assert_eq!(v(r#"cops_loop_alarms_total{process="p0"}"#), Some(1.0));
    assert_eq!(v(r#"cops_loop_alarm{process="p0"}"#), Some(1.0));
    // Good beats again: the alarm ends, the counters stay.
    slow_from(&mut h, 1500, ms(20));
    h.run_ms(2500);
    let text = scrape_text(h.e.metrics_snapshot(h.now));
    assert_eq!(
        testkit::scrape::sample(&text, r#"cops_loop_alarm{process="p0"}"#),
        Some(0.0)
    );
    assert_eq!(
        testkit::scrape::sample(&text, r#"cops_loop_alarms_total{process="p0"}"#),
        Some(1.0)
    );
}

/// A process that ticks without loop keys has its figures exposed, but no
/// judged series; one that never ticks has no loop series at all.
#[test]
fn loop_series_only_where_they_mean_something() {
    let mut ticking = Fake::answering(4242, 1);
    ticking.ticks = Some(FakeLoop::new(Instant::now(), ms(20)));
    let mut h = quick(vec![ticking, Fake::answering(4343, 1)], "");
    h.run_ms(1000);
    let text = scrape_text(h.e.metrics_snapshot(h.now));
    let v = |series: &str| testkit::scrape::sample(&text, series);
    assert_eq!(
        v(r#"cops_loop_iteration_p99_seconds{process="p0"}"#),
        Some(0.02),
        "{text}"
    );
    assert_eq!(v(r#"cops_loop_iteration_p99_seconds{process="p1"}"#), None);
    assert!(!text.contains("cops_loop_overruns"), "{text}");
    assert!(!text.contains("cops_loop_alarm"), "{text}");
    let rows = &ask(&mut h, "get", "/cops/status", "")["processes"];
    assert_eq!(rows[0]["loop_tolerance"], Value::Null, "{rows}");
    assert_eq!(rows[1]["loop_p99_us"], Value::Null, "{rows}");
}

/// The Prometheus text of a snapshot, checked by promtool where installed.
fn scrape_text(snap: crate::engine::MetricsSnapshot) -> String {
    let reg = crate::metrics::registry(std::sync::Arc::new(snap));
    let text = metrics_http::encode(&reg, metrics_http::Format::Prometheus).expect("encodes");
    match testkit::scrape::promtool_check(&text) {
        Some(r) => r.unwrap_or_else(|e| panic!("{e}\n{text}")),
        None => eprintln!("promtool check metrics: SKIPPED (promtool not installed)"),
    }
    text
}

#[test]
fn a_loop_kill_says_loop_in_stats_metrics_and_the_decision_log() {
    let mut h = looped(KILL);
    h.run_ms(1000);
    let before = h.e.metrics_snapshot(h.now);
    assert!(
        before.processes[0]
            .kills
            .contains(&("SIGKILL".into(), "loop", 0)),
        "the series exists before the first loop kill: {:?}",
        before.processes[0].kills
    );
    slow_from(&mut h, 1000, ms(80));
    h.run_ms(1350);
    assert_eq!(h.signals_of(0), [4242]);
    let last = h.stat(0, "last_kill");
    assert_eq!(
        (&last["signal"], &last["reason"]),
        (&Value::from("SIGKILL"), &Value::from("loop"))
    );
    let snap = h.e.metrics_snapshot(h.now);
    assert!(
        snap.processes[0]
            .kills
            .contains(&("SIGKILL".into(), "loop", 1)),
        "{:?}",
        snap.processes[0].kills
    );
    let log = ask(&mut h, "get", "/cops/events/p0", "");
    let fault = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "loop_fault")
        .expect("the loop verdict is in the log")
        .clone();
    let d = &fault["data"];
    assert_eq!(d["decision"], "killing", "{fault}");
    assert_eq!(
        (&d["failing"], &d["tolerance"]),
        (&Value::from(3), &Value::from(3))
    );
    assert_eq!(d["deadline_ms"], 50);
    assert_eq!(d["loop"]["max_us"], 80_000);
    let text = crate::cli::render_why(&log, crate::cli::Paint(false));
    assert!(
        text.contains("decided by: 3 failing beats in a row (loopToleranceBeats 3, period 100 ms; loopDeadlineMS 50); last beat 1 iteration, longest 80ms, p99 80ms: killing with SIGKILL"),
        "{text}"
    );
}

#[test]
fn an_inhibit_holds_a_loop_kill_and_resume_lets_it_through() {
    let mut h = looped(KILL);
    h.run_ms(500);
    let a = ask(
        &mut h,
        "set",
        "/cops/control/p0",
        r#"{"inhibit_ms":600000,"reason":"tuning"}"#,
    );
    assert_eq!(a["inhibited"], true, "{a}");
    slow_from(&mut h, 1000, ms(80));
    h.run_ms(2000);
    assert!(h.signals.is_empty(), "{:?}", h.signals);
    let fault = &h.kinds(EventKind::LoopFault)[0].message;
    assert!(fault.contains("; not killed: inhibited until"), "{fault}");
    assert_eq!(h.summary()["kills_suppressed"]["inhibited"], 1);
    ask(&mut h, "set", "/cops/control/p0", r#"{"resume":true}"#);
    // The loop still overruns: the next failing beat kills it.
    let resumed = h.now;
    h.run_ms(2200);
    assert_eq!(h.signals_of(0), [4242]);
    assert!(h.signals[0].0 - resumed <= ms(100));
}

/// A loop starved of CPU is not a broken one: under `loopAction: "kill"` the
/// first failing beat of a run takes the scheduler baseline (`Action::Watch`),
/// a signal the kill layer holds as starved is given back (budgets, this
/// incarnation), and the loop's next failing beat decides again.
#[test]
fn a_loop_kill_is_held_while_the_process_is_starved_of_cpu() {
    // Where the kill lands when nothing holds it (the fake clock repeats).
    let mut h = looped(KILL);
    slow_from(&mut h, 1000, ms(80));
    h.run_ms(1500);
    let (kill_at, _, pid, _) = h.signals[0];
    assert_eq!(pid, 4242);
    let kill_ms = (kill_at - h.t0).as_micros();
    // The baseline: once, at the first failing beat (the reply of round 1100).
    assert_eq!(h.watches.len(), 1, "{:?}", h.watches);
    let (at, i, pid) = h.watches[0];
    assert_eq!((i, pid), (0, 4242));
    assert!(at > h.ms(1100) && at < h.ms(1200), "{at:?}");

    let mut h = looped(&format!(r#"{KILL},"maxKills":1,"killWindowMS":60000"#));
    slow_from(&mut h, 1000, ms(80));
    // Starved from just after it wrote the reply that raises the alarm.
    let kill_at = h.t0 + Duration::from_micros(kill_ms as u64);
    h.fakes[0].starved = Some((kill_at - Duration::from_micros(500), kill_at + ms(50)));
    h.run_ms(1500);
    let held = h.kinds(EventKind::Starved);
    assert_eq!(held.len(), 1, "{:?}", h.events);
    assert!(
        held[0].message.contains(
            "NOT sent SIGKILL: runnable but starved of CPU: waited 280 ms for a CPU and ran 1 ms in the last 300 ms; its loop had no CPU to run with, COPS decides again at the loop's next failing beat"
        ),
        "{}",
        held[0].message
    );
    assert_eq!(h.summary()["kills_suppressed"]["starved"], 1);
    // The next failing beat (round 1400) kills: the held one spent no budget.
    assert_eq!(h.signals.len(), 2, "{:?}", h.signals);
    let (again, _, pid, _) = h.signals[1];
    assert_eq!(pid, 4242);
    assert!(again - kill_at <= ms(110), "{:?}", again - kill_at);
    assert!(h.kinds(EventKind::Quarantined).is_empty());
    assert_eq!(h.stat(0, "last_kill")["reason"], "loop");
    h.run_ms(1800);
    assert_eq!(h.stat(0, "cops_restarts"), 1, "{:?}", h.events);
}

/// Under `loopAction: "alarm"` nothing is ever signalled: no baseline taken.
#[test]
fn an_alarm_only_loop_takes_no_cpu_baseline() {
    let mut h = looped(r#","loopDeadlineMS":50"#);
    slow_from(&mut h, 1000, ms(80));
    h.run_ms(2000);
    assert_eq!(h.kinds(EventKind::LoopFault).len(), 1);
    assert!(h.watches.is_empty(), "{:?}", h.watches);
}
