//! Kill safety on the fake clock (issue 10): replies cannot be vetoed, PIDs
//! are believed only with evidence, stalls are recognised by the probe for any
//! number of processes, floods are bounded, verdicts tell the truth, and the
//! site kill budget defers kills in order.

use super::*;
use crate::identity::Check;

/// The start of the round of a single process at `k` periods after `base` ms.
fn round_at(h: &mut Harness, ms: u64) -> u64 {
    let t = h.ms(ms);
    h.run_until(t);
    h.e.procs[0].h
}

#[test]
fn a_forged_reply_naming_a_missing_pid_in_every_round_vetoes_nothing() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(300);
    assert_eq!(h.stat(0, "pid"), 4242);
    // A forger that knows the counter answers first, every round, naming a
    // PID that does not exist; the real reply comes 4 ms later.
    for k in 0..30 {
        let hb = round_at(&mut h, 300 + k * 100);
        let at = h.now + Duration::from_millis(1);
        h.inject_reply(at, 0, reply_body(hb, 77_777), "site");
    }
    h.run_ms(3400);
    assert!(h.signals.is_empty(), "{:?}", h.signals);
    assert_eq!(h.e.state(0), Some(State::Alive));
    assert_eq!(h.stat(0, "missed_heartbeats"), 0);
    assert_eq!(h.stat(0, "rejected_replies")["refused_pid"], 30);
    assert_eq!(
        h.kinds(EventKind::PidRejected).len(),
        1,
        "one alarm for the one bad PID: {:?}",
        h.kinds(EventKind::PidRejected)
    );
}

#[test]
fn duplicates_and_stale_forgeries_are_counted_not_fatal() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(300);
    for k in 0..10 {
        let hb = round_at(&mut h, 300 + k * 100);
        let now = h.now;
        // A stale counter before the real reply, a copy of it after.
        h.inject_reply(
            now + Duration::from_millis(1),
            0,
            reply_body(hb - 1, 4242),
            "",
        );
        h.inject_reply(now + Duration::from_millis(7), 0, reply_body(hb, 4242), "");
    }
    h.run_ms(1400);
    assert!(h.signals.is_empty());
    assert_eq!(h.e.state(0), Some(State::Alive));
    let r = h.stat(0, "rejected_replies");
    assert_eq!(
        (r["stale"].as_u64(), r["duplicate"].as_u64()),
        (Some(10), Some(10))
    );
    assert_eq!(
        h.kinds(EventKind::BadReply).len(),
        1,
        "logged once per 10 s, the rest counted"
    );
}

#[test]
fn a_pid_pinned_for_another_process_is_never_taken() {
    let fakes = vec![Fake::answering(4000, 5), Fake::answering(4001, 5)];
    let mut h = quick(fakes, "");
    h.run_ms(300);
    assert_eq!(h.stat(1, "pid"), 4001);
    // p0 hangs; a forger keeps p0 "alive" by naming p1's PID in p0's replies.
    let hang = h.ms(303);
    h.fakes[0].hang_at = Some(hang);
    for k in 0..10 {
        let hb = round_at(&mut h, 300 + k * 100);
        let at = h.now + Duration::from_millis(1);
        h.inject_reply(at, 0, reply_body(hb, 4001), "site");
    }
    h.run_ms(1500);
    assert_eq!(h.signals_of(0), [4000], "p0's own PID is killed");
    assert!(h.signals_of(1).is_empty(), "p1 is never killed as p0");
    assert_eq!(h.stat(0, "pid"), 100_001, "p0 restarted");
    let refused = h.kinds(EventKind::PidRejected);
    assert!(
        refused[0].message.contains("pinned for p1"),
        "{}",
        refused[0].message
    );
    let latency = h.signals[0].0 - hang;
    assert!(latency <= Duration::from_millis(390), "{latency:?}");
}

#[test]
fn another_live_pid_is_a_conflict_not_a_restart() {
    let mut f = Fake::answering(4242, 5);
    f.restart_after = None;
    let mut h = quick(vec![f], "");
    h.os.others.insert(5555); // a live process of the same user
    h.run_ms(300);
    let hang = h.ms(603);
    h.fakes[0].hang_at = Some(hang);
    for k in 0..20 {
        let hb = round_at(&mut h, 300 + k * 100);
        let at = h.now + Duration::from_millis(1);
        h.inject_reply(at, 0, reply_body(hb, 5555), "site");
    }
    h.run_ms(2400);
    let conflicts = h.kinds(EventKind::Conflict);
    assert_eq!(conflicts.len(), 1, "one alarm: {conflicts:?}");
    assert_eq!(
        conflicts[0].message,
        "p0: two processes answer as p0: pids 4242 and 5555; keeping 4242 until it is gone"
    );
    // The pinned process hung and was killed, within its bound, although
    // replies naming 5555 kept coming; 5555 was never signalled.
    assert_eq!(h.signals_of(0), [4242]);
    assert!(h.signals[0].0 - hang <= Duration::from_millis(390));
    // Once 4242 is gone, the next reply naming 5555 re-pins: a restart.
    assert_eq!(h.stat(0, "pid"), 5555);
    assert_eq!(h.stat(0, "total_restarts"), 1);
    assert_eq!(h.e.state(0), Some(State::Alive));
}

#[test]
fn a_reply_naming_the_pinned_pid_from_another_user_is_refused() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(300);
    let hang = h.ms(303);
    h.fakes[0].hang_at = Some(hang);
    for k in 0..10 {
        let hb = round_at(&mut h, 300 + k * 100);
        let at = h.now + Duration::from_millis(1);
        h.inject_reply(at, 0, reply_body(hb, 4242), "nobody");
    }
    h.run_ms(1400);
    assert_eq!(h.signals_of(0), [4242], "the forger cannot keep it alive");
    assert!(h.signals[0].0 - hang <= Duration::from_millis(390));
    let refused = h.kinds(EventKind::PidRejected);
    assert!(
        refused[0].message.contains("came from user \"nobody\""),
        "{}",
        refused[0].message
    );
}

#[test]
fn new_pids_checked_per_round_are_bounded() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(300);
    let pins = h.os.pins.len();
    let hb = round_at(&mut h, 300);
    for k in 0..20 {
        let at = h.now + Duration::from_micros(100 + k);
        h.inject_reply(at, 0, reply_body(hb, 80_000 + k as i64), "site");
    }
    h.run_ms(399);
    assert_eq!(
        h.os.pins.len() - pins,
        crate::engine::reply::MAX_CHECKS_PER_ROUND as usize
    );
    assert_eq!(
        h.e.state(0),
        Some(State::Alive),
        "the real reply still counts"
    );
    assert_eq!(h.stat(0, "rejected_replies")["refused_pid"], 20);
}

/// `n` processes; the broker stops at 1000 ms for `ms` milliseconds.
fn broker_pause(n: usize, ms: u64) -> Harness {
    let fakes = (0..n)
        .map(|i| Fake::answering(4000 + i as u32, 5))
        .collect();
    let mut h = quick(fakes, "");
    h.run_ms(1000);
    h.pause = Some((h.ms(1000), h.ms(1000 + ms)));
    h.run_ms(1000 + ms + 2000);
    h
}

#[test]
fn a_broker_pause_longer_than_the_hang_window_kills_nobody_for_any_count() {
    for n in [1, 2, 5] {
        for pause in [150, 1000, 5000] {
            let h = broker_pause(n, pause);
            assert!(h.signals.is_empty(), "n={n} pause={pause}: {:?}", h.signals);
            assert!(h.kinds(EventKind::Hung).is_empty(), "n={n} pause={pause}");
            assert_eq!(
                h.kinds(EventKind::Stall).len(),
                1,
                "n={n} pause={pause}: one alarm: {:?}",
                h.kinds(EventKind::Stall)
            );
            assert_eq!(
                h.kinds(EventKind::StallOver).len(),
                1,
                "n={n} pause={pause}"
            );
            for i in 0..n {
                assert_eq!(h.e.state(i), Some(State::Alive), "n={n} pause={pause}");
            }
            let stall = h.kinds(EventKind::Stall)[0];
            assert!(stall.message.starts_with("bus or host stall"));
            assert!(h.kinds(EventKind::StallOver)[0]
                .message
                .contains("stall over"));
        }
    }
}

#[test]
fn a_real_hang_during_a_broker_pause_is_killed_once_the_bus_is_back() {
    let mut h = quick(vec![Fake::answering(4000, 5), Fake::answering(4001, 5)], "");
    h.run_ms(1000);
    h.fakes[0].hang_at = Some(h.ms(1200));
    h.pause = Some((h.ms(1100), h.ms(2100)));
    h.run_ms(4000);
    assert_eq!(h.signals_of(0), [4000]);
    assert!(h.signals_of(1).is_empty());
    // After the pause (2100), within the bound of a fresh hang.
    let at = h.signals[0].0;
    assert!(at <= h.ms(2100 + 390 + 100), "{:?}", at - h.t0);
}

#[test]
fn replies_dropped_with_a_probe_are_void_not_misses() {
    let mut h = quick(
        vec![Fake::answering(4242, 5)],
        r#","hangTimeAllowanceMS":250"#,
    );
    h.run_ms(1000);
    // The broker sheds everything for COPS for two rounds (1100 and 1200):
    // replies and probes. Without the probe's evidence, 285 ms of silence
    // would be over the 250 ms allowance.
    h.drop_replies = true;
    h.drop_probes = u32::MAX;
    h.run_ms(1280);
    h.drop_replies = false;
    h.drop_probes = 0;
    h.run_ms(2000);
    assert!(h.signals.is_empty(), "{:?}", h.signals);
    assert_eq!(h.stat(0, "missed_heartbeats"), 0);
    assert_eq!(h.summary()["void_rounds"], 2);
    assert_eq!(h.kinds(EventKind::Stall).len(), 1);
}

#[test]
fn many_processes_hanging_together_are_each_killed_within_the_bound() {
    for n in 1..=5u32 {
        for k in 1..=n {
            let fakes = (0..n).map(|i| Fake::answering(4000 + i, 5)).collect();
            let mut h = quick(fakes, "");
            h.run_ms(1000);
            let hang = h.ms(1001);
            for i in 0..k as usize {
                h.fakes[i].hang_at = Some(hang);
            }
            h.run_ms(2500);
            assert_eq!(h.signals.len(), k as usize, "{k} of {n}: {:?}", h.signals);
            for s in &h.signals {
                assert!((s.1 as u32) < k, "{k} of {n}: false kill {s:?}");
                let latency = s.0 - hang;
                assert!(
                    latency <= Duration::from_millis(390),
                    "{k} of {n}: {latency:?}"
                );
            }
            assert!(h.kinds(EventKind::Stall).is_empty(), "{k} of {n}");
        }
    }
}

/// The number before `what` in `msg` ("... 1234 ms since ...").
fn number_before(msg: &str, what: &str) -> u64 {
    msg.split(what)
        .next()
        .and_then(|m| m.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {what:?} in {msg}"))
}

#[test]
fn the_verdict_says_how_long_it_truly_has_been_silent() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(1000);
    h.fakes[0].hang_at = Some(h.ms(1003));
    // A broker pause voids some of its rounds: the verdict comes later, and
    // says the real silence, not allowance x period.
    h.pause = Some((h.ms(1150), h.ms(1600)));
    h.run_ms(3000);
    let hung = h.kinds(EventKind::Hung);
    assert_eq!(hung.len(), 1);
    let ms = number_before(&hung[0].message, " ms since the last good reply");
    let truth = (hung[0].at - h.ms(1005)).as_millis() as u64;
    assert_eq!(ms, truth, "{}", hung[0].message);
    assert!(truth > 390, "the pause delayed it: {truth}");
    assert!(hung[0].message.contains("3 heartbeats missed"));
}

#[test]
fn never_answered_says_so_and_its_first_answer_is_alive() {
    let mut f = Fake::answering(4242, 5);
    f.mode = Mode::Silent;
    let mut h = quick(vec![f], "");
    h.run_ms(1000);
    let hung = h.kinds(EventKind::Hung);
    assert_eq!(hung.len(), 1);
    assert!(
        hung[0]
            .message
            .contains("never answered since COPS started at 1970-01-01T00:00:00.000Z"),
        "{}",
        hung[0].message
    );
    assert!(hung[0].message.contains("not killed: no verified PID"));
    h.fakes[0].mode = Mode::Answer(Duration::from_millis(5));
    h.run_ms(1500);
    assert!(
        h.kinds(EventKind::Resurrected).is_empty(),
        "not 'alive again'"
    );
    let alive = h.kinds(EventKind::Alive);
    assert_eq!(alive.len(), 1);
    assert!(alive[0]
        .message
        .starts_with("p0 (pid 4242) alive, answered in"));
    assert!(alive[0].post, "it clears a posted alarm, so it is posted");
}

#[test]
fn the_site_kill_budget_defers_kills_and_does_them_in_order() {
    let fakes: Vec<Fake> = (0..5)
        .map(|i| {
            let mut f = Fake::answering(4000 + i, 5);
            f.restart_after = None;
            f
        })
        .collect();
    let cfg = config(
        5,
        r#","heartbeatFreq":100,"heartbeatErrorAllowance":3,"maxKillsPerWindow":2"#,
        "",
    );
    let mut h = Harness::new(cfg, fakes);
    h.run_ms(990);
    let hang = h.ms(995);
    for f in &mut h.fakes {
        f.hang_at = Some(hang);
    }
    h.run_ms(3000);
    let order: Vec<usize> = h.signals.iter().map(|s| s.1).collect();
    assert_eq!(order, [0, 1, 2, 3, 4], "in the order they were found hung");
    let deferred = h.kinds(EventKind::KillDeferred);
    assert_eq!(deferred.len(), 3, "{deferred:?}");
    assert!(deferred[0]
        .message
        .contains("kill deferred: site kill budget of 2 per 300 ms spent"));
    assert_eq!(h.summary()["kills_deferred"], 3);
    assert_eq!(h.summary()["kills_waiting"], 0);
    // Never more than 2 in any 300 ms window.
    let t: Vec<Instant> = h.signals.iter().map(|s| s.0).collect();
    for w in t.windows(3) {
        assert!(w[2] - w[0] >= Duration::from_millis(300), "{:?}", t);
    }
    // The first two within the bound; the rest as the budget frees.
    assert!(t[1] - hang <= Duration::from_millis(390));
    assert_eq!(t[2], t[0] + Duration::from_millis(300));
    assert_eq!(t[3], t[1] + Duration::from_millis(300));
    assert_eq!(t[4], t[2] + Duration::from_millis(300));
}

#[test]
fn serving_is_rate_limited_and_counted() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(300);
    let msg = Message {
        method: "get",
        uri: "/cops/stats/p0/pid",
        replyto: "/me/reply",
        ..Message::default()
    };
    let now = h.now;
    for _ in 0..1000 {
        h.e.handle_message(now, Via::Serve, &msg, &mut h.os);
    }
    h.pump();
    let mut answers = 0;
    while h.e.poll_transmit().is_some() {
        answers += 1;
    }
    let _ = answers;
    h.keep_sent = true;
    h.run_ms(301);
    assert_eq!(h.summary()["requests_dropped"], 800);
    assert_eq!(h.kinds(EventKind::ServeLimited).len(), 1);
    // The cycle went on: still alive, nothing missed.
    h.run_ms(1000);
    assert_eq!(h.e.state(0), Some(State::Alive));
    assert_eq!(h.stat(0, "missed_heartbeats"), 0);
}

#[test]
fn messages_on_the_wrong_connection_are_ignored() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(300);
    // A get on the heartbeat connection is not served.
    let get = Message {
        method: "get",
        uri: "/cops/stats",
        replyto: "/me/reply",
        ..Message::default()
    };
    let now = h.now;
    h.e.handle_message(now, Via::Heartbeat, &get, &mut h.os);
    assert!(h.e.poll_transmit().is_none());
    // The serving connection's copy of a reply is not a reply.
    let hb = round_at(&mut h, 400);
    let body = reply_body(hb, 4242);
    let reply = Message {
        method: "set",
        uri: "/cops/heartbeat/p0",
        body: body.as_bytes(),
        ..Message::default()
    };
    let now = h.now;
    h.e.handle_message(now, Via::Serve, &reply, &mut h.os);
    assert_eq!(h.e.procs[0].h, hb, "not taken");
    assert!(h.e.poll_transmit().is_none(), "and not answered either");
}

#[test]
fn checks_that_could_not_be_made_are_named_and_the_pid_kept() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.os.unchecked = vec![Unchecked {
        check: Check::Bus,
        why: "/proc/4242/fd: Permission denied".into(),
    }];
    h.run_ms(300);
    let alive = h.kinds(EventKind::Alive);
    assert!(
        alive[0]
            .message
            .ends_with("; not checked: on the FIMS bus (/proc/4242/fd: Permission denied)"),
        "{}",
        alive[0].message
    );
    assert_eq!(
        h.stat(0, "unchecked")[0],
        "on the FIMS bus (/proc/4242/fd: Permission denied)"
    );
    // It still is killed when it hangs.
    h.fakes[0].hang_at = Some(h.ms(303));
    h.fakes[0].restart_after = None;
    h.run_ms(1000);
    assert_eq!(h.signals_of(0), [4242]);
    assert_eq!(h.stat(0, "pid"), 4242, "the PID stays in the stats");
}

#[test]
fn a_lagging_cops_voids_what_it_overlaps() {
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(1000);
    h.fakes[0].mode = Mode::Silent; // it would look hung...
    let (a, b) = (h.ms(1000), h.ms(1600));
    h.e.lagged(a, b); // ...but COPS itself was stopped meanwhile
    h.pump();
    h.run_ms(1590);
    assert!(h.signals.is_empty(), "{:?}", h.signals);
    assert_eq!(h.stat(0, "missed_heartbeats"), 0);
    assert_eq!(h.kinds(EventKind::Stall).len(), 1);
    // Once COPS is sound again the silence counts.
    h.run_ms(2200);
    assert_eq!(h.signals_of(0), [4242]);
}

#[test]
fn root_speaks_for_any_owner() {
    // A process that connected as root and then dropped to its own user keeps
    // the root stamp on its replies: still believed.
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.run_ms(300);
    for k in 0..5 {
        let hb = round_at(&mut h, 300 + k * 100);
        let at = h.now + Duration::from_millis(1);
        h.inject_reply(at, 0, reply_body(hb, 4242), "root");
    }
    h.run_ms(900);
    assert!(h.kinds(EventKind::PidRejected).is_empty());
    assert_eq!(h.stat(0, "rejected_replies")["refused_pid"], 0);
    assert_eq!(
        h.stat(0, "rejected_replies")["duplicate"],
        5,
        "the real ones came second"
    );
}

#[test]
fn a_pid_that_may_have_been_reused_is_a_target_only_once_it_answers_again() {
    // Its process started in the tick of the round that pinned it, or later:
    // the reply may have been written by an earlier holder of the PID (one
    // that exited before COPS read it), so it is pinned but not a kill target
    // until it answers a later round itself.
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.os.young.insert(4242);
    h.fakes[0].hang_at = Some(h.ms(50));
    h.run_ms(1500);
    assert_eq!(h.stat(0, "pid"), 4242, "pinned from its one answer");
    assert_eq!(h.stat(0, "pid_confirmed"), false);
    assert_eq!(h.e.state(0), Some(State::Hung));
    assert!(h.signals.is_empty(), "{:?}", h.signals);
    let hung = h.kinds(EventKind::Hung);
    assert!(
        hung[0].message.ends_with(
            "not killed: pid 4242 answered one round only, not confirmed as this process's"
        ),
        "{}",
        hung[0].message
    );
    // Answering a second round confirms it: killed when it hangs.
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.os.young.insert(4242);
    h.fakes[0].hang_at = Some(h.ms(150));
    h.run_ms(1500);
    assert_eq!(h.signals_of(0), [4242]);
    // A process that started before the round is confirmed at once.
    let mut h = quick(vec![Fake::answering(4242, 5)], "");
    h.fakes[0].hang_at = Some(h.ms(50));
    h.run_ms(1500);
    assert_eq!(h.signals_of(0), [4242]);
}
