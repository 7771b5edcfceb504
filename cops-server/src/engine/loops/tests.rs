//! Loop verdicts on the fake clock: a fake host ticks its work loop on a
//! schedule (`FakeLoop`) and answers each beat's figures; 100 ms period,
//! 90 ms reply deadline, 1 ms response time, rounds at 0, 100, 200, ... ms.

use std::time::Duration;

use serde_json::Value;

use super::{judge, periods, Beat, Overrun};
use crate::config::{LoopAction, LoopConfig};
use crate::engine::parse::tests::FIXTURES;
use crate::engine::parse::LoopFigures;
use crate::engine::tests::fake_loop::{FakeLoop, STUCK};
use crate::engine::tests::{config, quick, Fake, Harness, Mode};
use crate::engine::{EventKind, Severity, State};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Process p0 (pid 4242) whose loop ticks every `iteration_ms`, with the
/// per-process keys `per`.
fn looped(per: &str, iteration_ms: u64) -> Harness {
    let mut f = Fake::answering(4242, 1);
    f.ticks = Some(FakeLoop::new(std::time::Instant::now(), ms(iteration_ms)));
    quick(vec![f], per)
}

/// From `at_ms` on, p`i`'s iterations last `iteration`.
fn pace(h: &mut Harness, i: usize, at_ms: u64, iteration: Duration) {
    let at = h.ms(at_ms);
    h.fakes[i]
        .ticks
        .as_mut()
        .expect("ticks")
        .from(at, iteration);
}

fn messages(h: &Harness, kind: EventKind) -> Vec<String> {
    h.kinds(kind).iter().map(|e| e.message.clone()).collect()
}

/// Every loop event so far, for assertion messages.
fn loop_events(h: &Harness) -> String {
    let kinds = [
        EventKind::LoopFault,
        EventKind::LoopTolerated,
        EventKind::LoopOver,
        EventKind::LoopUnmeasured,
    ];
    h.events
        .iter()
        .filter(|e| kinds.contains(&e.kind))
        .map(|e| format!("{:?} {:?}\n", e.kind, e.message))
        .collect()
}

const DEADLINE_50: &str = r#","loopDeadlineMS":50"#;

#[test]
fn healthy_loop_is_measured_and_never_faulted() {
    let mut h = looped(DEADLINE_50, 20);
    h.run_ms(2000);
    assert!(loop_events(&h).is_empty(), "{}", loop_events(&h));
    assert_eq!(
        h.stat(0, "loop_count"),
        5,
        "five 20 ms iterations per 100 ms beat"
    );
    assert_eq!(h.stat(0, "loop_max_us"), 20_000);
    assert_eq!(h.stat(0, "loop_p99_us"), 20_000);
    assert_eq!(h.stat(0, "loop_overruns"), 0);
    assert_eq!(h.stat(0, "loop_alarm"), false);
    assert_eq!(h.summary()["loop_alarms"], 0);
}

#[test]
fn overrun_within_tolerance_takes_no_action() {
    let mut h = looped(DEADLINE_50, 20);
    h.run_ms(1000);
    // Iterations of 60 ms from 1000 to 1150: two failing beats, tolerance 3.
    pace(&mut h, 0, 1000, ms(60));
    pace(&mut h, 0, 1150, ms(20));
    h.run_ms(3000);
    assert!(
        h.kinds(EventKind::LoopFault).is_empty(),
        "{}",
        loop_events(&h)
    );
    assert!(h.signals.is_empty());
    assert_eq!(h.stat(0, "loop_overruns"), 2);
    assert_eq!(h.stat(0, "loop_alarm"), false);
    assert_eq!(h.stat(0, "loop_failing_beats"), 0);
    let tolerated = h.kinds(EventKind::LoopTolerated);
    assert_eq!(tolerated.len(), 1, "rate-limited: {}", loop_events(&h));
    assert!(!tolerated[0].post, "a log line, not an event on /events");
    assert_eq!(
        tolerated[0].message,
        "p0 (pid 4242) loop overran its 50 ms deadline: 60 ms (1 of the last 5 beats); tolerated: 1 of 3 failing beats in a row"
    );
}

#[test]
fn overrun_beyond_tolerance_alarms_once_and_recovery_ends_it_once() {
    let mut h = looped(DEADLINE_50, 20);
    h.run_ms(1000);
    pace(&mut h, 0, 1000, ms(80));
    h.run_ms(1250);
    assert!(h.kinds(EventKind::LoopFault).is_empty(), "two beats so far");
    h.run_ms(1350);
    let faults = h.kinds(EventKind::LoopFault);
    assert_eq!(faults.len(), 1, "{}", loop_events(&h));
    assert_eq!(
        faults[0].at,
        h.ms(1301),
        "at the third failing beat's reply"
    );
    assert_eq!(
        faults[0].message,
        "p0 (pid 4242) loop overran its 50 ms deadline: 80 ms (3 of the last 5 beats)"
    );
    assert_eq!(
        (faults[0].severity, faults[0].post),
        (Severity::Alarm, true)
    );
    assert_eq!(h.stat(0, "loop_alarm"), true);
    assert_eq!(h.summary()["loop_alarms"], 1);
    assert_eq!(h.summary()["status"], "healthy", "it still answers: alive");
    // Still slow for a while: no second alarm, no kill (loopAction "alarm").
    pace(&mut h, 0, 2000, ms(20));
    h.run_ms(2250);
    assert_eq!(h.kinds(EventKind::LoopFault).len(), 1);
    assert!(
        h.kinds(EventKind::LoopOver).is_empty(),
        "{}",
        loop_events(&h)
    );
    h.run_ms(4000);
    let over = messages(&h, EventKind::LoopOver);
    assert_eq!(over.len(), 1, "{}", loop_events(&h));
    assert_eq!(
        over[0],
        "p0 (pid 4242) loop back within its limits (3 good beats in a row): last beat 5 iterations, longest 20 ms, p99 over the last minute 80 ms"
    );
    assert!(h.signals.is_empty());
    assert_eq!(h.e.state(0), Some(State::Alive));
    assert_eq!(h.stat(0, "loop_alarm"), false);
    // The beats from 1000 to 2000, and the next: the iteration started at
    // 1960 lasts 80 ms.
    assert_eq!(h.stat(0, "loop_overruns"), 11);
    assert_eq!(h.summary()["loop_alarms"], 0);
}

#[test]
fn loop_action_kill_kills_through_the_hang_path_and_the_restart_is_healthy() {
    let per = r#","loopDeadlineMS":50,"loopAction":"kill""#;
    let mut h = looped(per, 20);
    h.run_ms(1000);
    pace(&mut h, 0, 1000, ms(80));
    h.run_ms(1400);
    let faults = messages(&h, EventKind::LoopFault);
    assert_eq!(
        faults,
        ["p0 (pid 4242) loop overran its 50 ms deadline: 80 ms (3 of the last 5 beats); killing with SIGKILL"]
    );
    assert_eq!(h.signals.len(), 1);
    assert_eq!((h.signals[0].1, h.signals[0].2), (0, 4242));
    // The kill path's own events: the evidence, then the exit it checks.
    let sent = messages(&h, EventKind::Signalled);
    assert_eq!(
        sent,
        ["p0 (pid 4242) sent SIGKILL; threads: tid 4242 S futex_wait_queue"]
    );
    assert_eq!(h.kinds(EventKind::Exited).len(), 1);
    h.run_ms(1500);
    let new = h.fakes[0].pid;
    assert_ne!(new, 4242);
    assert_eq!(
        messages(&h, EventKind::LoopOver),
        [format!(
            "p0 loop alarm over: pid 4242 was replaced by pid {new}"
        )]
    );
    h.run_ms(3000);
    assert_eq!(h.signals.len(), 1, "the restart runs at its normal pace");
    assert_eq!(h.e.state(0), Some(State::Alive));
    assert_eq!(h.stat(0, "pid"), new);
    assert_eq!(h.stat(0, "cops_restarts"), 1);
    assert_eq!(h.stat(0, "loop_alarm"), false);
    assert_eq!(h.stat(0, "loop_max_us"), 20_000);
    assert!(
        h.kinds(EventKind::Hung).is_empty(),
        "it never stopped answering"
    );
}

#[test]
fn loop_kill_respects_dry_run_and_the_process_kill_budget() {
    let per = r#","loopDeadlineMS":50,"loopAction":"kill","maxKills":1,"killWindowMS":60000"#;
    let mut h = looped(per, 20);
    h.run_ms(1000);
    pace(&mut h, 0, 1000, ms(80));
    h.run_ms(2000);
    assert_eq!(h.signals.len(), 1);
    // The restarted process slows down too: its budget is spent.
    pace(&mut h, 0, 2000, ms(80));
    h.run_ms(4000);
    assert_eq!(h.signals.len(), 1, "quarantined: {}", loop_events(&h));
    assert_eq!(h.kinds(EventKind::Quarantined).len(), 1);
    let faults = messages(&h, EventKind::LoopFault);
    assert_eq!(faults.len(), 2, "{faults:?}");
    assert!(
        faults[1].ends_with("; not killed: quarantined (kill budget of 1 spent)"),
        "{}",
        faults[1]
    );

    let mut h = looped(r#","loopDeadlineMS":50,"loopAction":"kill""#, 20);
    h.dry_run = true;
    h.run_ms(1000);
    pace(&mut h, 0, 1000, ms(80));
    h.run_ms(3000);
    assert_eq!(
        h.kinds(EventKind::WouldSignal).len(),
        1,
        "one per incarnation"
    );
    assert_eq!(h.fakes[0].pid, 4242, "nothing killed");
}

#[test]
fn loop_kill_waits_for_the_site_kill_budget() {
    let cfg = config(
        2,
        r#","heartbeatFreq":100,"heartbeatErrorAllowance":3,"maxKillsPerWindow":1"#,
        r#","loopDeadlineMS":50,"loopAction":"kill""#,
    );
    let mut fakes = Vec::new();
    for pid in [4242, 4343] {
        let mut f = Fake::answering(pid, 1);
        f.ticks = Some(FakeLoop::new(std::time::Instant::now(), ms(20)));
        fakes.push(f);
    }
    let mut h = Harness::new(cfg, fakes);
    h.run_ms(1000);
    pace(&mut h, 0, 1000, ms(80));
    pace(&mut h, 1, 1000, ms(80));
    h.run_ms(1400);
    assert_eq!(h.signals.len(), 1, "{}", loop_events(&h));
    let deferred = h.kinds(EventKind::KillDeferred);
    assert_eq!(deferred.len(), 1);
    // The window is allowance x period = 300 ms: the second kill follows.
    h.run_ms(2000);
    let pids: Vec<u32> = h.signals.iter().map(|s| s.2).collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(h.signals[1].0 >= h.signals[0].0 + ms(300));
}

#[test]
fn too_few_loops_per_beat() {
    let mut h = looped(r#","minLoopsPerBeat":3,"loopToleranceBeats":2"#, 20);
    h.run_ms(1000);
    assert!(loop_events(&h).is_empty(), "{}", loop_events(&h));
    pace(&mut h, 0, 1000, ms(60));
    h.run_ms(1500);
    let faults = messages(&h, EventKind::LoopFault);
    assert_eq!(faults.len(), 1, "{}", loop_events(&h));
    assert!(
        faults[0].starts_with("p0 (pid 4242) loop too slow: ")
            && faults[0].contains(" in 100 ms, at least 3 expected (2 of the last 5 beats)"),
        "{}",
        faults[0]
    );
    assert!(h.stat(0, "loop_slow_beats").as_u64() >= Some(2));
    assert_eq!(h.stat(0, "loop_overruns"), 0, "no deadline configured");
}

#[test]
fn too_many_loops_per_beat() {
    let mut h = looped(r#","maxLoopsPerBeat":10,"loopToleranceBeats":2"#, 20);
    h.run_ms(1000);
    pace(&mut h, 0, 1000, ms(1)); // spinning
    h.run_ms(1500);
    let faults = messages(&h, EventKind::LoopFault);
    assert_eq!(
        faults,
        ["p0 (pid 4242) loop too fast (spinning?): 100 iterations in 100 ms, at most 10 expected (2 of the last 5 beats)"]
    );
    assert_eq!(h.stat(0, "loop_count"), 100);
}

#[test]
fn an_iteration_that_never_ends_is_an_overrun_once_past_the_deadline() {
    let mut h = looped(r#","loopDeadlineMS":250"#, 20);
    h.run_ms(1000);
    pace(&mut h, 0, 1000, STUCK);
    h.run_ms(1450);
    assert!(
        h.kinds(EventKind::LoopFault).is_empty(),
        "{}",
        loop_events(&h)
    );
    h.run_ms(2000);
    let faults = messages(&h, EventKind::LoopFault);
    assert_eq!(faults.len(), 1, "{}", loop_events(&h));
    // Beats at 1301, 1401 and 1501 saw no iteration end for 299, 399, 499 ms.
    assert_eq!(
        faults[0],
        "p0 (pid 4242) loop overran its 250 ms deadline: no iteration ended for 499 ms (3 of the last 5 beats)"
    );
    assert_eq!(h.stat(0, "loop_count"), 0);
    assert_eq!(h.e.state(0), Some(State::Alive));
}

#[test]
fn counts_are_not_judged_across_a_round_without_reply() {
    // Five iterations per beat, at most 7 allowed. A round the process does
    // not answer makes the next beat twice as long (10 iterations): that is
    // no spinning, and COPS must not say so.
    let mut h = looped(
        r#","maxLoopsPerBeat":7,"minLoopsPerBeat":4,"loopToleranceBeats":1"#,
        20,
    );
    h.run_ms(1050);
    h.drop_replies = true;
    h.run_ms(1150);
    h.drop_replies = false;
    h.run_ms(2000);
    assert!(loop_events(&h).is_empty(), "{}", loop_events(&h));
    assert_eq!(h.stat(0, "loop_fast_beats"), 0);
    assert_eq!(h.stat(0, "loop_slow_beats"), 0);
    assert_eq!(h.stat(0, "missed_heartbeats"), 0);
}

#[test]
fn a_host_that_never_ticks_is_never_judged_on_loops() {
    let per = r#","loopDeadlineMS":50,"minLoopsPerBeat":1,"loopAction":"kill""#;
    let mut h = quick(vec![Fake::answering(4242, 1)], per);
    h.run_ms(5000);
    assert!(h.signals.is_empty());
    assert_eq!(h.e.state(0), Some(State::Alive));
    for k in [
        EventKind::LoopFault,
        EventKind::LoopTolerated,
        EventKind::LoopOver,
    ] {
        assert!(h.kinds(k).is_empty(), "{}", loop_events(&h));
    }
    let notes = h.kinds(EventKind::LoopUnmeasured);
    assert_eq!(notes.len(), 1, "once per incarnation");
    assert!(notes[0].post);
    assert_eq!(
        notes[0].message,
        "p0 (pid 4242) reports no loop figures (its host does not call loop_tick or cops_responder_tick): its loop supervision cannot apply"
    );
    assert_eq!(h.stat(0, "loop_count"), Value::Null);
    assert_eq!(h.stat(0, "loop_p99_us"), Value::Null);
}

#[test]
fn figures_are_kept_without_loop_supervision() {
    let mut h = looped("", 25);
    h.run_ms(1000);
    assert_eq!(h.stat(0, "loop_count"), 4);
    assert_eq!(h.stat(0, "loop_p99_us"), 25_000);
    assert!(loop_events(&h).is_empty(), "{}", loop_events(&h));
    assert!(h.kinds(EventKind::LoopUnmeasured).is_empty());
}

/// Replaces the counter 17 of a fixture by `h` (its layout kept).
fn with_counter(body: &str, h: u64) -> String {
    let at = body.find("\"cops_heartbeat\"").expect("counter") + 16;
    let digits = at + body[at..].find("17").expect("17");
    format!("{}{h}{}", &body[..digits], &body[digits + 2..])
}

#[test]
fn every_reply_shape_is_a_good_heartbeat() {
    for (name, body) in FIXTURES {
        let mut f = Fake::answering(4242, 1);
        f.mode = Mode::Body(with_counter(body, 1));
        let mut h = quick(vec![f], DEADLINE_50);
        h.run_ms(50);
        assert_eq!(h.e.state(0), Some(State::Alive), "{name}");
        assert_eq!(h.stat(0, "heartbeat"), 2, "{name}: the round succeeded");
        let rejected = h.stat(0, "rejected_replies");
        assert_eq!(rejected["malformed"], 0, "{name}");
        let count = h.stat(0, "loop_count");
        let bad = h.kinds(EventKind::BadReply);
        match *name {
            "with-loop.json" | "unknown-keys.json" => {
                assert_eq!(count, 10, "{name}");
                assert_eq!(h.stat(0, "loop_max_us"), 104_211, "{name}");
                assert_eq!(h.stat(0, "loop_p99_us"), 102_399, "{name}");
                assert_eq!(h.stat(0, "loop_overruns"), 1, "{name}: 104 ms > 50 ms");
            }
            "loop-malformed.json" => {
                assert_eq!(count, Value::Null, "{name}");
                assert_eq!(bad.len(), 1, "{name}");
                assert!(bad[0].message.contains("bad loop figures"), "{name}");
            }
            _ => {
                assert_eq!(count, Value::Null, "{name}");
                assert!(bad.is_empty(), "{name}");
            }
        }
    }
}

#[test]
fn alive_bounds_scale_with_the_beat_span() {
    assert_eq!(periods(ms(100), ms(100)), 1);
    assert_eq!(periods(ms(149), ms(100)), 1);
    assert_eq!(periods(ms(150), ms(100)), 2);
    assert_eq!(periods(ms(20), ms(100)), 1, "at least one");
    let cfg = LoopConfig {
        deadline: None,
        min_per_beat: Some(3),
        max_per_beat: Some(7),
        tolerance: 1,
        action: LoopAction::Alarm,
    };
    let t = std::time::Instant::now();
    let fig = |count| LoopFigures {
        count,
        max_us: 20_000,
        p99_us: 20_000,
    };
    // A round started a period late: the beat spans two periods.
    let chain = Some((t, t + ms(1)));
    let b = judge(&cfg, &fig(10), chain, None, t + ms(200), ms(100));
    assert_eq!(
        b,
        Beat {
            judged: true,
            ..Beat::default()
        }
    );
    let b = judge(&cfg, &fig(5), chain, None, t + ms(200), ms(100));
    assert_eq!(b.slow, Some((5, 6, ms(200))));
    // Without the beat before it, a count proves nothing.
    let b = judge(&cfg, &fig(100), None, None, t + ms(200), ms(100));
    assert_eq!(b, Beat::default());
    // The longest iteration proves an overrun whatever came before.
    let cfg = LoopConfig {
        deadline: Some(ms(50)),
        ..cfg
    };
    let b = judge(&cfg, &fig(1), None, None, t, ms(100));
    assert_eq!(b.overrun, None);
    let slow = LoopFigures {
        max_us: 50_001,
        ..fig(1)
    };
    let b = judge(&cfg, &slow, None, None, t, ms(100));
    assert_eq!(b.overrun, Some(Overrun::Longest(50_001)));
}

#[test]
fn the_alarm_quotes_the_worst_beat_of_the_run() {
    let mut h = looped(DEADLINE_50, 20);
    h.run_ms(1000);
    // One 150 ms iteration (from 1020, when the 20 ms one running at 1000
    // ends), then 60 ms ones: three failing beats (1201, 1301, 1401), the
    // worst the one that saw the 150 ms iteration end.
    pace(&mut h, 0, 1000, ms(150));
    pace(&mut h, 0, 1150, ms(60));
    h.run_ms(1450);
    assert_eq!(
        messages(&h, EventKind::LoopFault),
        ["p0 (pid 4242) loop overran its 50 ms deadline: 150 ms (3 of the last 5 beats)"]
    );
}

#[test]
fn iterations_longer_than_the_period_fail_every_beat_that_can_tell() {
    // 300 ms iterations, 100 ms beats, 150 ms deadline: two beats in three
    // see no iteration end; the one right after a tick (100 ms quiet) proves
    // nothing and must not break the run of failing beats.
    let mut h = looped(r#","loopDeadlineMS":150"#, 20);
    h.run_ms(1000);
    pace(&mut h, 0, 1000, ms(300));
    h.run_ms(2500);
    let faults = messages(&h, EventKind::LoopFault);
    assert_eq!(faults.len(), 1, "{}", loop_events(&h));
    assert!(
        faults[0].contains("loop overran its 150 ms deadline: 300 ms"),
        "{}",
        faults[0]
    );
    assert_eq!(h.stat(0, "loop_alarm"), true);

    // A loop that is slower than the period by design, within its deadline.
    let mut h = looped(r#","loopDeadlineMS":200"#, 150);
    h.run_ms(3000);
    assert!(loop_events(&h).is_empty(), "{}", loop_events(&h));
    assert_eq!(h.stat(0, "loop_overruns"), 0);
}
