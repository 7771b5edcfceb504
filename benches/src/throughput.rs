//! Publisher-to-subscriber throughput: the 1-hop floor, the 2-hop relay floor
//! and the broker, in interleaved bursts of the same message so that load from
//! other processes falls on all three alike.

use std::path::Path;

use crate::bus::{BrokerProc, BusThroughput};
use crate::floor::ThroughputFloor;
use crate::{msgs, Result};

/// Bursts per figure (the median is the figure).
pub const ROUNDS: usize = 5;

/// The three throughputs, messages per second (medians of [`ROUNDS`] bursts).
#[derive(Debug, Clone, Copy)]
pub struct Throughputs {
    /// One socket pair, publisher to subscriber (1 hop).
    pub floor: f64,
    /// Publisher -> relay process -> subscriber (2 hops, as the broker).
    pub relay: f64,
    /// Publisher -> `fims_server` -> subscriber.
    pub broker: f64,
    /// Messages published through the broker that the sink did not count.
    pub lost: u64,
    /// Messages published through the broker.
    pub sent: u64,
}

/// Measures the three with bursts of `n` messages after one warm-up burst
/// of `n / 10` each; `peer_exe` runs the broker side's sink.
pub fn measure(broker_exe: &Path, peer_exe: &Path, n: u64) -> Result<Throughputs> {
    let msg = msgs::status_pub();
    // Forks first: the floors' children must not inherit the broker's sockets.
    let mut floor = ThroughputFloor::start()?;
    let mut relay = ThroughputFloor::start_relayed()?;
    let broker = BrokerProc::start(broker_exe)?;
    let mut bus = BusThroughput::start(&broker, peer_exe)?;
    floor.burst(&msg, n / 10)?;
    relay.burst(&msg, n / 10)?;
    bus.burst(&msg, n / 10)?;
    let (mut f, mut r, mut b, mut lost) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
    for _ in 0..ROUNDS {
        f.push(floor.burst(&msg, n)?.mps());
        r.push(relay.burst(&msg, n)?.mps());
        let burst = bus.burst(&msg, n)?;
        lost += n.saturating_sub(burst.delivered);
        b.push(burst.mps());
    }
    Ok(Throughputs {
        floor: median(&mut f),
        relay: median(&mut r),
        broker: median(&mut b),
        lost,
        sent: ROUNDS as u64 * n,
    })
}

/// Median of `v` (sorting it); 0 for no values.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn relay_floor_delivers_every_message() {
        // The relayed floor really forwards: every datagram arrives, twice over.
        let mut relay = ThroughputFloor::start_relayed().unwrap();
        let msg = msgs::status_pub();
        for _ in 0..2 {
            let b = relay.burst(&msg, 1_000).unwrap();
            assert_eq!(b.delivered, 1_000);
        }
    }
}
