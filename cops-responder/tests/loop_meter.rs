//! The work-loop measurement (issue 13): ticks on an injected clock, the
//! `loop` object in the heartbeat answer, byte for byte, and the answer of a
//! host that never ticks, unchanged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cops_responder::{LoopStats, Outcome, Responder};

const R: Option<&str> = Some("/cops/heartbeat/ctl");

fn responder() -> Responder {
    let mut r = Responder::new("ctl", "/site").expect("valid config");
    r.set_version("1.4.0", "a1b2c3d", "372");
    r
}

fn get(r: &mut Responder, now: Instant, uri: &str) -> (Outcome, String) {
    let mut reply = Vec::new();
    let o = r.handle(now, "get", uri, R, b"", &mut reply);
    (o, String::from_utf8(reply).expect("UTF-8"))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The answer before issue 13, with the three version fields.
fn plain_answer(hb: u64) -> String {
    format!(
        r#"{{"cops_heartbeat":{hb},"pid":{},"version_tag":"1.4.0","version_commit":"a1b2c3d","version_build":"372"}}"#,
        std::process::id()
    )
}

#[test]
fn a_host_that_never_ticks_sends_exactly_the_old_answer() {
    let mut r = responder();
    let t0 = Instant::now();
    let mut reply = Vec::new();
    let _ = r.handle(
        t0,
        "set",
        "/site/cops/cops_heartbeat",
        None,
        b"17",
        &mut reply,
    );
    // Pets are not ticks: still the old answer.
    r.pet(t0);
    r.set_liveness_window(Some(ms(100)));
    r.pet_handle().pet_at(t0);
    for _ in 0..3 {
        assert_eq!(
            get(&mut r, t0, "/site/cops"),
            (Outcome::Reply, plain_answer(17))
        );
    }
    assert_eq!(r.loop_stats(), None);
    let (o, text) = get(&mut r, t0, "/site/cops/loop");
    assert_eq!(o, Outcome::Reply);
    assert!(text.starts_with("\"Error: loop is not measured"), "{text}");
}

#[test]
fn the_answer_carries_the_loop_after_the_existing_fields() {
    let mut r = responder();
    let t0 = Instant::now();
    // Iterations of 10, 10 and 15 ms; the first tick only starts the clock.
    for at in [0, 10, 20, 35] {
        r.loop_tick(t0 + ms(at));
    }
    let old = plain_answer(0);
    let want = format!(
        r#"{},"loop":{{"count":4,"max_us":15000,"p99_us":15000}}}}"#,
        &old[..old.len() - 1]
    );
    assert_eq!(
        get(&mut r, t0 + ms(40), "/site/cops"),
        (Outcome::Reply, want)
    );
    // A new beat: nothing since the answer; the minute's p99 stays.
    let old_tail = r#""loop":{"count":0,"max_us":0,"p99_us":15000}}"#;
    let (_, text) = get(&mut r, t0 + ms(50), "/site/cops");
    assert!(text.ends_with(old_tail), "{text}");
    // Two more iterations of 5 ms: count 2, max 5 ms.
    r.loop_tick(t0 + ms(40));
    r.loop_tick(t0 + ms(45));
    let (_, text) = get(&mut r, t0 + ms(50), "/site/cops");
    assert!(
        text.ends_with(r#""loop":{"count":2,"max_us":5000,"p99_us":15000}}"#),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["cops_heartbeat"], 0);
    assert_eq!(v["version_build"], "372");
}

#[test]
fn only_the_heartbeat_answer_starts_a_new_beat() {
    let mut r = responder();
    let t0 = Instant::now();
    for at in [0, 20, 40] {
        r.loop_tick(t0 + ms(at));
    }
    // Single fields and the stats answer do not take the beat.
    let _ = get(&mut r, t0, "/site/cops/pid");
    let (o, text) = get(&mut r, t0, "/site/cops/loop");
    assert_eq!(o, Outcome::Reply);
    assert_eq!(
        text,
        r#"{"ticks":3,"count":3,"max_us":20000,"minute_count":2,"p50_us":20000,"p99_us":20000,"minute_max_us":20000}"#
    );
    let _ = get(&mut r, t0, "/site/cops/loop");
    // Without a replyto nothing is answered, so nothing is taken either.
    let mut reply = Vec::new();
    assert_eq!(
        r.handle(t0, "get", "/site/cops", None, b"", &mut reply),
        Outcome::Handled
    );
    let (_, text) = get(&mut r, t0, "/site/cops");
    assert!(
        text.contains(r#""loop":{"count":3,"max_us":20000,"#),
        "{text}"
    );
    let s = r.loop_stats().expect("ticked");
    assert_eq!((s.ticks, s.count, s.max_us), (3, 0, 0));
}

#[test]
fn a_closed_gate_answers_nothing_and_keeps_the_beat() {
    let mut r = responder();
    let t0 = Instant::now();
    r.set_liveness_window(Some(ms(100)));
    // Never ticked nor petted: silent.
    assert_eq!(get(&mut r, t0, "/site/cops").0, Outcome::Handled);
    // A tick pets the gate.
    r.loop_tick(t0);
    r.loop_tick(t0 + ms(30));
    assert_eq!(get(&mut r, t0 + ms(130), "/site/cops").0, Outcome::Reply);
    r.loop_tick(t0 + ms(80));
    // The loop stopped ticking: silent after the window, beat kept.
    assert_eq!(get(&mut r, t0 + ms(181), "/site/cops").0, Outcome::Handled);
    r.loop_tick(t0 + ms(400)); // a 320 ms iteration: the loop came back
    let (o, text) = get(&mut r, t0 + ms(410), "/site/cops");
    assert_eq!(o, Outcome::Reply);
    assert!(
        text.ends_with(r#""loop":{"count":2,"max_us":320000,"p99_us":320000}}"#),
        "{text}"
    );
}

#[test]
fn stats_of_a_steady_loop_with_a_slow_tail() {
    let r = responder();
    let handle = r.pet_handle();
    let mut t = Instant::now();
    handle.tick_at(t);
    // 100 ms iterations, every 50th one 340 ms: 2 % slow, so p99 is slow.
    for i in 1..=500u32 {
        t += if i % 50 == 0 { ms(340) } else { ms(100) };
        handle.tick_at(t);
    }
    let s: LoopStats = r.loop_stats().expect("ticked");
    assert_eq!(s.ticks, 501);
    assert_eq!(s.minute_max_us, 340_000);
    assert!((100_000..=112_500).contains(&s.p50_us), "{s:?}");
    assert_eq!(s.p99_us, 340_000, "{s:?}");
    // Only the last 50-60 s are in the minute: 500 iterations took 59.2 s.
    assert!((400..=500).contains(&s.minute_count), "{s:?}");
    assert_eq!(handle.loop_stats(), Some(s));
    assert_eq!(handle.last_pet(), Some(t));
}

/// Ticks from the work thread while this thread answers: every tick is
/// counted exactly once across the answers.
#[test]
fn ticks_from_another_thread_are_counted_once() {
    let mut r = responder();
    let handle = r.pet_handle();
    let stop = Arc::new(AtomicBool::new(false));
    const TICKS: u64 = 200_000;
    let worker = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            for _ in 0..TICKS {
                handle.tick();
            }
            stop.store(true, Ordering::Release);
        }
    });
    let mut counted = 0;
    let mut reply = Vec::with_capacity(256);
    let mut last = false;
    while !last {
        last = stop.load(Ordering::Acquire);
        let o = r.handle(Instant::now(), "get", "/site/cops", R, b"", &mut reply);
        assert_eq!(o, Outcome::Reply);
        let v: serde_json::Value = serde_json::from_slice(&reply).expect("JSON");
        if let Some(n) = v["loop"]["count"].as_u64() {
            counted += n;
        }
    }
    worker.join().expect("worker");
    assert_eq!(counted, TICKS);
}
