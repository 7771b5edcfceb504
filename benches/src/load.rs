//! The broker's CPU under a steady, paced load (`broker_cpu_pct_20k`,
//! `broker_us_per_msg` and the 5k / 20k / 80k scaling rows).
//!
//! One `fims_server` child; two subscribers (`perf-report --peer sink --peer-id
//! 1|2`, each its own process and connection, both subscribed to `/bench/tp`);
//! this process publishes 150-byte `pub /bench/tp/data` datagrams at a fixed
//! rate with [`pace`](crate::pace) (absolute deadlines, one batch per tick).
//! Each window is closed by an end marker that both subscribers answer with
//! the count they received since the previous marker, so every window knows
//! exactly what was sent and what each subscriber got; the marker comes behind
//! the data in every queue, so the answers also mean the broker has delivered
//! everything. The broker's CPU (utime + stime of `/proc/<pid>/stat`, and the
//! scheduler's ns count from `schedstat` as a cross-check) is read at the
//! window's first send and after both answers.
//!
//! The floor runs the same windows through [`FanoutFloor`]: a bare relay
//! process that copies each datagram to two counting processes over socket
//! pairs (one `poll`, one `recv`, two `send`s per message), so its CPU is what
//! the broker's arrangement costs without any broker logic. Both are a
//! [`Router`], and [`run`] paces either.

use std::path::Path;
use std::time::{Duration, Instant};

use fims::blocking::Client;

use crate::bus::{BrokerProc, Peer};
use crate::floor::FanoutFloor;
use crate::pace::{self, MonoClock, Schedule};
use crate::procstat::{CpuMark, CpuUse};
use crate::{err, msgs, peer, sys, Result};

/// Subscribers of the load.
pub const SINKS: usize = 2;

/// One window of steady load.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Messages per second asked for.
    pub rate: f64,
    /// Length of the measured window.
    pub duration: Duration,
    /// Batch interval of the publisher.
    pub tick: Duration,
}

/// What one window measured.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// What routed it (`fims_server`, `relay`).
    pub router: &'static str,
    /// The plan it ran.
    pub plan: Plan,
    /// What the publisher really did.
    pub paced: pace::Paced,
    /// Messages each subscriber received in the window.
    pub received: [u64; SINKS],
    /// The router's CPU over the window.
    pub broker: CpuUse,
    /// Each subscriber's CPU over the window, percent of one core.
    pub sink_pct: [f64; SINKS],
    /// The publisher's (this process's) CPU over the window, percent of one core.
    pub publisher_pct: f64,
}

impl Window {
    /// Broker CPU in percent of one core (utime + stime).
    pub fn broker_pct(&self) -> f64 {
        self.broker.pct()
    }

    /// Broker CPU time per published message, microseconds (utime + stime).
    pub fn us_per_msg(&self) -> f64 {
        1e6 * self.broker.cpu_s / self.paced.sent.max(1) as f64
    }

    /// The router's wakeups (voluntary context switches) per published message.
    pub fn wakeups_per_msg(&self) -> Option<f64> {
        self.broker
            .wakeups
            .map(|w| w as f64 / self.paced.sent.max(1) as f64)
    }

    /// The same from the scheduler's nanosecond count, when available.
    pub fn sched_us_per_msg(&self) -> Option<f64> {
        self.broker
            .sched_s
            .map(|s| 1e6 * s / self.paced.sent.max(1) as f64)
    }

    /// Deliveries that did not arrive (sent x subscribers - received).
    pub fn lost(&self) -> u64 {
        let want = self.paced.sent * SINKS as u64;
        want.saturating_sub(self.received.iter().sum())
    }

    /// Whether the publisher reached the asked rate within 2%.
    pub fn on_rate(&self) -> bool {
        self.paced.achieved_rate() >= 0.98 * self.plan.rate
    }

    /// One line for the report's notes.
    pub fn note(&self) -> String {
        let p = &self.paced;
        let sched = match (self.broker.sched_pct(), self.sched_us_per_msg()) {
            (Some(pct), Some(us)) => format!(" (schedstat: {pct:.2}%, {us:.2} us)"),
            _ => String::new(),
        };
        let wakeups = self
            .wakeups_per_msg()
            .map_or(String::new(), |w| format!(", {w:.2} wakeups per message"));
        let lost = match self.lost() {
            0 => "none lost".to_string(),
            n => format!("{n} deliveries LOST"),
        };
        let rate_warn = if self.on_rate() {
            ""
        } else {
            " [publisher fell behind: not the asked rate]"
        };
        format!(
            "load through {} {:.0} msg/s asked, {:.0} achieved{rate_warn} ({} x {} bytes in \
             {:.2} s, batches of {} every {} us, {} late by over a tick, worst {:.2} ms late); \
             subscribers got {} and {}: {lost}; {0} {:.2}% of one core, \
             {:.2} us per published message{sched}{wakeups}; publisher {:.1}%, subscribers {:.1}% \
             and {:.1}%",
            self.router,
            self.plan.rate,
            p.achieved_rate(),
            p.sent,
            msgs::LOAD_PUB_BYTES,
            p.elapsed.as_secs_f64(),
            batch_size(self.plan.rate * self.plan.tick.as_secs_f64()),
            self.plan.tick.as_micros(),
            p.late_batches,
            p.max_late.as_secs_f64() * 1e3,
            self.received[0],
            self.received[1],
            self.broker_pct(),
            self.us_per_msg(),
            self.publisher_pct,
            self.sink_pct[0],
            self.sink_pct[1],
        )
    }
}

/// A batch size as printed: whole when it is, else one decimal.
fn batch_size(b: f64) -> String {
    if b.fract() == 0.0 {
        format!("{b:.0}")
    } else {
        format!("{b:.1}")
    }
}

/// One line comparing windows of one router at several rates (the scaling rows).
pub fn scaling_line(windows: &[Window]) -> String {
    let rows: Vec<String> = windows
        .iter()
        .map(|w| {
            format!(
                "{:.0}k msg/s {:.2}% ({:.2} us/msg{})",
                w.plan.rate / 1000.0,
                w.broker_pct(),
                w.us_per_msg(),
                match w.lost() {
                    0 => String::new(),
                    n => format!(", {n} lost"),
                }
            )
        })
        .collect();
    let name = windows.first().map_or("router", |w| w.router);
    format!("{name} CPU by rate: {}", rows.join("; "))
}

/// What carries the paced load from the publisher (this process) to
/// [`SINKS`] counting subscribers.
pub trait Router {
    /// Its name in the report.
    fn name(&self) -> &'static str;
    /// Sends one message (blocking).
    fn send(&mut self, msg: &[u8]) -> Result<()>;
    /// Ends a window: each subscriber's count since the previous end, once
    /// everything sent before has arrived.
    fn counts(&mut self) -> Result<[u64; SINKS]>;
    /// The routing process, whose CPU is the figure.
    fn router_pid(&self) -> u32;
    /// The subscribers' processes.
    fn sink_pids(&self) -> [u32; SINKS];
}

/// Publishes `msg` at `plan.rate` through `router` for `warmup` unmeasured
/// (caches, socket buffers, the subscribers' first wakeups), then for
/// `plan.duration` measured.
pub fn run(router: &mut impl Router, msg: &[u8], plan: Plan, warmup: Duration) -> Result<Window> {
    if !warmup.is_zero() {
        publish(router, msg, &Schedule::new(plan.rate, warmup, plan.tick))?;
        router.counts()?;
    }
    let schedule = Schedule::new(plan.rate, plan.duration, plan.tick);
    let (pid, me, sinks) = (router.router_pid(), std::process::id(), router.sink_pids());
    let sink_marks = sinks.map(CpuMark::now);
    let own = CpuMark::now(me)?;
    let mark = CpuMark::now(pid)?;
    let paced = publish(router, msg, &schedule)?;
    let received = router.counts()?;
    let broker = mark.since(pid)?;
    let publisher_pct = own.pct_since(me)?;
    let mut sink_pct = [0.0; SINKS];
    for (i, (m, pid)) in sink_marks.into_iter().zip(sinks).enumerate() {
        sink_pct[i] = m?.pct_since(pid)?;
    }
    Ok(Window {
        router: router.name(),
        plan,
        paced,
        received,
        broker,
        sink_pct,
        publisher_pct,
    })
}

fn publish(router: &mut impl Router, msg: &[u8], schedule: &Schedule) -> Result<pace::Paced> {
    let _tight = sys::TightTimers::new();
    pace::run(schedule, &mut MonoClock, |n| {
        for _ in 0..n {
            router.send(msg)?;
        }
        Ok(())
    })
}

impl Router for FanoutFloor {
    fn name(&self) -> &'static str {
        FanoutFloor::name(self)
    }
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        FanoutFloor::send(self, msg)
    }
    fn counts(&mut self) -> Result<[u64; SINKS]> {
        FanoutFloor::counts(self)
    }
    fn router_pid(&self) -> u32 {
        self.relay_pid()
    }
    fn sink_pids(&self) -> [u32; SINKS] {
        self.counter_pids()
    }
}

/// A broker, its two subscribers and the publisher's connection.
#[derive(Debug)]
pub struct SteadyLoad {
    // Dropped in this order: the publisher, the sinks, then the broker.
    publisher: Client,
    sinks: Vec<Peer>,
    broker: BrokerProc,
    seq: u64,
}

impl SteadyLoad {
    /// Starts `fims_server` and the two sink peers (`peer_exe --peer sink`).
    pub fn start(broker_exe: &Path, peer_exe: &Path) -> Result<SteadyLoad> {
        let broker = BrokerProc::start(broker_exe)?;
        let mut publisher = Client::connect_to(broker.socket(), "bench_publisher")?;
        publisher.subscribe(&[msgs::TP_ACK_URI])?;
        let mut sinks = Vec::with_capacity(SINKS);
        for id in 1..=SINKS as u32 {
            let extra = ["--peer-id".to_string(), id.to_string()];
            sinks.push(Peer::spawn_with(
                peer_exe,
                "sink",
                broker.socket(),
                &extra,
                false,
            )?);
        }
        Ok(SteadyLoad {
            publisher,
            sinks,
            broker,
            seq: 0,
        })
    }
}

impl Router for SteadyLoad {
    fn name(&self) -> &'static str {
        "fims_server"
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        Ok(self.publisher.send_raw(msg)?)
    }

    /// An end marker (repeated every 200 ms) until both sinks have answered.
    fn counts(&mut self) -> Result<[u64; SINKS]> {
        self.seq += 1;
        let seq = self.seq.to_string();
        let names: Vec<String> = (1..=SINKS as u32)
            .map(|i| peer::sink_name(Some(i)))
            .collect();
        let mut got: [Option<u64>; SINKS] = [None; SINKS];
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            self.publisher.send(
                fims::Method::Pub,
                msgs::TP_END_URI,
                Some(msgs::TP_ACK_URI),
                seq.as_bytes(),
            )?;
            let wait = Instant::now() + Duration::from_millis(200);
            while let Some(m) = self
                .publisher
                .recv(Some(wait.saturating_duration_since(Instant::now())))?
            {
                let Some(i) = names.iter().position(|n| n == m.process_name) else {
                    continue;
                };
                if let Some(count) = crate::bus::parse_ack(m.body, &seq) {
                    got[i] = Some(count);
                }
                if let [Some(a), Some(b)] = got {
                    return Ok([a, b]);
                }
            }
        }
        Err(err!(
            "the subscribers did not all acknowledge window {seq} within 30 s (got {got:?})"
        ))
    }

    fn router_pid(&self) -> u32 {
        self.broker.pid()
    }

    fn sink_pids(&self) -> [u32; SINKS] {
        [0, 1].map(|i| self.sinks.get(i).map_or(0, Peer::pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(sent: u64, received: [u64; 2], cpu_s: f64) -> Window {
        Window {
            router: "fims_server",
            plan: Plan {
                rate: 20_000.0,
                duration: Duration::from_secs(10),
                tick: Duration::from_millis(1),
            },
            paced: pace::Paced {
                sent,
                elapsed: Duration::from_secs(10),
                batches: 10_000,
                late_batches: 0,
                max_late: Duration::ZERO,
            },
            received,
            broker: CpuUse {
                cpu_s,
                sched_s: Some(cpu_s),
                wall_s: 10.0,
                wakeups: Some(sent / 4),
            },
            sink_pct: [1.0, 1.0],
            publisher_pct: 3.0,
        }
    }

    #[test]
    fn relay_floor_carries_a_paced_window_to_both_counters() {
        let mut relay = FanoutFloor::start().unwrap();
        let plan = Plan {
            rate: 5_000.0,
            duration: Duration::from_millis(300),
            tick: Duration::from_millis(1),
        };
        let msg = msgs::load_pub();
        let w = run(&mut relay, &msg, plan, Duration::from_millis(100)).unwrap();
        assert_eq!(w.paced.sent, 1_500, "{}", w.note());
        assert_eq!(w.received, [1_500, 1_500], "{}", w.note());
        assert_eq!(w.lost(), 0);
        assert!(w.broker.wall_s >= 0.3);
        assert_eq!(w.router, "relay");
    }

    #[test]
    fn batched_relay_floor_carries_a_paced_window_to_both_counters() {
        let mut relay = FanoutFloor::start_batched().unwrap();
        let plan = Plan {
            rate: 20_000.0,
            duration: Duration::from_millis(300),
            tick: Duration::from_millis(1),
        };
        let msg = msgs::load_pub();
        for _ in 0..2 {
            let w = run(&mut relay, &msg, plan, Duration::ZERO).unwrap();
            assert_eq!(w.received, [6_000, 6_000], "{}", w.note());
            assert_eq!(w.router, "batched relay");
        }
    }

    #[test]
    fn figures_of_a_window() {
        let w = window(200_000, [200_000, 199_990], 0.8);
        assert!((w.broker_pct() - 8.0).abs() < 1e-9);
        assert!((w.us_per_msg() - 4.0).abs() < 1e-9);
        assert_eq!(w.lost(), 10);
        assert!(w.on_rate());
        assert_eq!(w.wakeups_per_msg(), Some(0.25));
        assert!(
            w.note().contains("0.25 wakeups per message"),
            "{}",
            w.note()
        );
        assert!(w.note().contains("10 deliveries LOST"), "{}", w.note());
        let ok = window(200_000, [200_000, 200_000], 0.8);
        assert!(ok.note().contains("none lost"));
        let slow = window(150_000, [150_000, 150_000], 0.8);
        assert!(!slow.on_rate());
        assert!(slow.note().contains("fell behind"));
        assert_eq!(
            scaling_line(&[ok, w]),
            "fims_server CPU by rate: 20k msg/s 8.00% (4.00 us/msg); \
             20k msg/s 8.00% (4.00 us/msg, 10 lost)"
        );
        assert_eq!(batch_size(20.0), "20");
        assert_eq!(batch_size(0.25), "0.2");
    }
}
