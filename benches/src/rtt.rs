//! Heartbeat round trips: the 4-hop socket-pair floor, the broker to the real
//! responder and the broker to a fixed-answer echo peer, in interleaved blocks.

use std::path::Path;

use crate::bus::{BrokerProc, BusRtt};
use crate::floor::RttFloor;
use crate::{msgs, stats, sys, Result};

/// Round-trip figures, microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Rtt {
    /// Median of the floor.
    pub floor_us: f64,
    /// Median through the broker to the real responder.
    pub broker_us: f64,
    /// 99th percentile of the floor.
    pub floor_p99: f64,
    /// 99th percentile through the broker.
    pub broker_p99: f64,
    /// Median through the broker to the echo peer.
    pub echo_us: f64,
    /// How much slower the responder's round trip is than the echo's, percent.
    pub responder_share_pct: f64,
}

/// `n` round trips of each kind (after 500 of warm-up), in 10 interleaved
/// blocks, so drift hits all three alike. With `pin`, this process and every
/// child run on one CPU (no cross-CPU wakeups: see docs/PERFORMANCE.md).
pub fn measure(broker_exe: &Path, peer_exe: &Path, n: usize, pin: bool) -> Result<Rtt> {
    let _pinned = if pin {
        Some(sys::Pinned::first_cpu()?)
    } else {
        None
    };
    // Floor first: forked children must not inherit the broker's sockets.
    let mut fl = RttFloor::start(&msgs::heartbeat_get(), &msgs::heartbeat_answer())?;
    let broker = BrokerProc::start(broker_exe)?;
    let mut real = BusRtt::start(&broker, peer_exe, "responder")?;
    let mut echo = BusRtt::start(&broker, peer_exe, "echo")?;
    fl.samples(500)?;
    real.samples(500)?;
    echo.samples(500)?;
    let rounds = 10;
    let per = n.div_ceil(rounds);
    let (mut f, mut b, mut e) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        f.extend(fl.samples(per)?);
        b.extend(real.samples(per)?);
        e.extend(echo.samples(per)?);
    }
    let floor_us = stats::us(stats::median(&mut f));
    let broker_us = stats::us(stats::median(&mut b));
    let echo_us = stats::us(stats::median(&mut e));
    Ok(Rtt {
        floor_us,
        broker_us,
        floor_p99: stats::us(stats::percentile(&mut f, 99.0)),
        broker_p99: stats::us(stats::percentile(&mut b, 99.0)),
        echo_us,
        responder_share_pct: 100.0 * (broker_us - echo_us) / echo_us.max(1e-9),
    })
}
