//! 10,000 simulated processes on the fake clock: 1% hang at once; every one is
//! signalled within `allowance x period + deadline`, nobody else is.

use super::tests::{config, Fake, Harness};
use super::*;
use std::time::Duration;

#[test]
fn ten_thousand_processes_one_percent_hang() {
    const N: usize = 10_000;
    let cfg = config(N, r#","heartbeatFreq":1000"#, "");
    let fakes: Vec<Fake> = (0..N)
        .map(|i| {
            let mut f = Fake::answering(10_000 + i as u32, 1 + (i as u64 * 7) % 60);
            f.restart_after = None;
            f
        })
        .collect();
    let wall = Instant::now();
    let mut h = Harness::new(cfg, fakes);
    h.run_ms(3000);
    assert_eq!(h.e.summary(h.now)["alive"], N);
    let hang = h.ms(3000) + Duration::from_micros(500);
    let hung: Vec<usize> = (0..N).step_by(100).collect();
    for &i in &hung {
        h.fakes[i].hang_at = Some(hang);
    }
    // allowance 5 x period 1000 + deadline 900, plus a period of slack to see no late kills.
    h.run_ms(3000 + 5 * 1000 + 900 + 1000);
    let elapsed = wall.elapsed();
    let budget = Duration::from_millis(5 * 1000 + 900);
    let mut signalled = vec![0u32; N];
    let mut worst = Duration::ZERO;
    for &(at, i, pid, _) in &h.signals {
        signalled[i] += 1;
        assert!(hung.contains(&i), "false kill of p{i} (pid {pid})");
        let latency = at - hang;
        assert!(
            latency <= budget,
            "p{i} signalled {latency:?} after the hang"
        );
        worst = worst.max(latency);
    }
    for &i in &hung {
        assert_eq!(signalled[i], 1, "p{i} signalled {} times", signalled[i]);
        assert_eq!(h.e.state(i), Some(State::Hung));
    }
    assert!(h.kinds(EventKind::Stall).is_empty());
    assert_eq!(h.kinds(EventKind::Hung).len(), hung.len());
    eprintln!(
        "10,000 processes, {} hung: worst hang-to-signal {worst:?} (budget {budget:?}); {:.1} simulated s in {elapsed:?} of wall time",
        hung.len(),
        (h.now - h.t0).as_secs_f64()
    );
}
