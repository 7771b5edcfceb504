//! 10,000 processes that tick, on the fake clock: 1% slow their loops down
//! past the deadline while still answering; exactly those are killed
//! (`loopAction: "kill"`), each once, within the tolerance, and nobody else.

use std::time::{Duration, Instant};

use crate::engine::tests::fake_loop::FakeLoop;
use crate::engine::tests::{config, Fake, Harness};
use crate::engine::{EventKind, State};

#[test]
fn ten_thousand_ticking_processes_one_percent_overrun() {
    const N: usize = 10_000;
    let cfg = config(
        N,
        r#","heartbeatFreq":1000"#,
        r#","loopDeadlineMS":250,"minLoopsPerBeat":5,"maxLoopsPerBeat":30,"loopAction":"kill""#,
    );
    let start = Instant::now();
    let fakes: Vec<Fake> = (0..N)
        .map(|i| {
            let mut f = Fake::answering(10_000 + i as u32, 1 + (i as u64 * 7) % 60);
            f.restart_after = None;
            // 100 ms iterations, each process in its own phase.
            let phase = Duration::from_micros((i as u64 * 7919) % 100_000);
            f.ticks = Some(FakeLoop::new(start + phase, Duration::from_millis(100)));
            f
        })
        .collect();
    let wall = Instant::now();
    let mut h = Harness::new(cfg, fakes);
    h.run_ms(3000);
    assert_eq!(h.e.summary(h.now)["alive"], N);
    let slow_at = h.ms(3000);
    let slow: Vec<usize> = (0..N).step_by(100).collect();
    for &i in &slow {
        let l = h.fakes[i].ticks.as_mut().expect("ticks");
        l.from(slow_at, Duration::from_millis(400));
    }
    // Tolerance 3 beats of 1 s, plus the beat in progress and a second of slack.
    h.run_ms(3000 + 5000 + 1000);
    let elapsed = wall.elapsed();
    let budget = Duration::from_millis(5000);
    let mut signalled = vec![0u32; N];
    let mut worst = Duration::ZERO;
    for &(at, i, pid, _) in &h.signals {
        signalled[i] += 1;
        assert!(slow.contains(&i), "false kill of p{i} (pid {pid})");
        let latency = at - slow_at;
        assert!(
            latency <= budget,
            "p{i} signalled {latency:?} after the slowdown"
        );
        worst = worst.max(latency);
    }
    for &i in &slow {
        assert_eq!(signalled[i], 1, "p{i} signalled {} times", signalled[i]);
        assert_eq!(h.e.state(i), Some(State::Alive), "it answered throughout");
    }
    assert_eq!(h.kinds(EventKind::LoopFault).len(), slow.len());
    assert!(h.kinds(EventKind::Hung).is_empty());
    assert!(h.kinds(EventKind::Stall).is_empty());
    eprintln!(
        "10,000 ticking processes, {} slowed: worst slowdown-to-signal {worst:?} (budget {budget:?}); {:.1} simulated s in {elapsed:?} of wall time",
        slow.len(),
        (h.now - h.t0).as_secs_f64()
    );
}
