//! `cops --metrics-listen ADDR:PORT`: COPS's numbers for Prometheus and the
//! monitoring engines that scrape it (docs/cops.md, "Metrics").
//!
//! The HTTP side runs on a thread of its own (`metrics-http`). A scrape asks
//! COPS's loop for a [`MetricsSnapshot`] over a channel ([`Scrapes`]); the
//! loop copies its numbers when it next wakes (it wakes for the request) and
//! the exporter thread encodes them, so the loop never formats text and costs
//! nothing between scrapes. A loop that does not answer within
//! [`SNAPSHOT_TIMEOUT`] gets the scrape a 503, which the monitoring sees.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{LoopCounts, MetricsSnapshot, ProcessMetrics, RTT_BOUNDS};

/// How long a scrape waits for COPS's loop.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);
/// Scrapes waiting for the loop at most (more get a 503 at once).
const QUEUE: usize = 16;

/// One scrape waiting for a snapshot.
pub type Waiting = oneshot::Sender<Arc<MetricsSnapshot>>;

/// The loop's end of the scrape channel: it answers every waiting scrape
/// with one snapshot.
#[derive(Debug)]
pub struct Scrapes {
    rx: mpsc::Receiver<Waiting>,
}

impl Scrapes {
    /// Waits for a scrape (forever once the exporter is gone).
    pub async fn wanted(&mut self) -> Waiting {
        match self.rx.recv().await {
            Some(w) => w,
            None => std::future::pending().await,
        }
    }

    /// The scrapes waiting now, without waiting.
    pub fn waiting(&mut self) -> Vec<Waiting> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

/// Starts the exporter on `addr`; returns the bound address and the loop's end.
pub fn start(addr: &str) -> std::io::Result<(std::net::SocketAddr, Scrapes)> {
    let (tx, rx) = mpsc::channel::<Waiting>(QUEUE);
    let render: metrics_http::Render = Arc::new(move || {
        let tx = tx.clone();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            tx.try_send(reply)
                .map_err(|_| "COPS has too many scrapes waiting".to_owned())?;
            match tokio::time::timeout(SNAPSHOT_TIMEOUT, answer).await {
                Ok(Ok(snap)) => Ok(registry(snap)),
                _ => Err(format!(
                    "COPS's loop did not answer within {} s",
                    SNAPSHOT_TIMEOUT.as_secs()
                )),
            }
        })
    });
    let bound = metrics_http::spawn(addr, "cops-metrics", render)?;
    Ok((bound, Scrapes { rx }))
}

/// The registry of one scrape: every metric, from `snap`.
pub fn registry(snap: Arc<MetricsSnapshot>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Snapshot(snap)));
    r
}

/// Encodes a snapshot (names: docs/cops.md, "Metrics").
#[derive(Debug)]
struct Snapshot(Arc<MetricsSnapshot>);

/// A metric with one series per process, `value` giving each process's value.
fn per_process<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    snap: &MetricsSnapshot,
    (name, help, unit): (&str, &str, Option<&Unit>),
    value: impl Fn(&ProcessMetrics) -> Option<M>,
) -> Result<(), std::fmt::Error> {
    let Some(first) = snap.processes.iter().find_map(&value) else {
        return Ok(()); // no series: no family (promtool refuses an empty one)
    };
    let mut m = enc.encode_descriptor(name, help, unit, first.metric_type())?;
    for p in &snap.processes {
        if let Some(v) = value(p) {
            v.encode(m.encode_family(&[("process", p.name.as_str())])?)?;
        }
    }
    Ok(())
}

/// A metric with one series and no labels.
fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    (name, help, unit): (&str, &str, Option<&Unit>),
    value: M,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, unit, value.metric_type())?;
    value.encode(m)
}

/// A per-process 0/1 gauge or a counter, from one number of the process.
type Of = fn(&ProcessMetrics) -> u64;

/// Per-process gauges that are 0 or 1: (name, help, value).
const FLAGS: [(&str, &str, Of); 2] = [
    (
        "cops_process_up",
        "1 when the process answers its heartbeats (state alive), else 0.",
        |p| u64::from(p.state == "alive"),
    ),
    (
        "cops_process_inhibited",
        "1 while a maintenance inhibit holds COPS off the process (no signals).",
        |p| u64::from(p.inhibited),
    ),
];

/// Per-process counters: (name without `_total`, help, value).
const COUNTERS: [(&str, &str, Of); 3] = [
    (
        "cops_heartbeats_missed",
        "Heartbeat rounds without a good reply (void rounds not counted).",
        |p| p.missed,
    ),
    (
        "cops_restarts",
        "Restarts seen: a new PID answered, for any reason.",
        |p| p.restarts,
    ),
    (
        "cops_restarts_after_kill",
        "Restarts that followed a kill by COPS.",
        |p| p.cops_restarts,
    ),
];

/// One number of what loop supervision counted.
type OfLoop = fn(&LoopCounts) -> u64;

/// Per-process loop counters of processes with loop keys: (name without
/// `_total`, help, value).
const LOOP_COUNTERS: [(&str, &str, OfLoop); 4] = [
    (
        "cops_loop_overruns",
        "Beats in which the work loop overran loopDeadlineMS (its longest iteration, or none ended for that long).",
        |c| c.overruns,
    ),
    (
        "cops_loop_slow_beats",
        "Beats with fewer work loop iterations than minLoopsPerBeat per period.",
        |c| c.slow_beats,
    ),
    (
        "cops_loop_fast_beats",
        "Beats with more work loop iterations than maxLoopsPerBeat per period (spinning).",
        |c| c.fast_beats,
    ),
    (
        "cops_loop_alarms",
        "Loop alarms raised: loopToleranceBeats failing beats in a row.",
        |c| c.alarms,
    ),
];

impl Snapshot {
    fn processes(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        for (name, help, of) in FLAGS {
            per_process(enc, s, (name, help, None), |p| {
                Some(ConstGauge::new(of(p) as i64))
            })?;
        }
        self.states(enc)?;
        self.rtt(enc)?;
        for (name, help, of) in COUNTERS {
            per_process(enc, s, (name, help, None), |p| {
                Some(ConstCounter::new(of(p)))
            })?;
        }
        self.kills(enc)?;
        let help = "Time since the last good heartbeat reply (no series before the first).";
        per_process(
            enc,
            s,
            ("cops_last_beat_age", help, Some(&Unit::Seconds)),
            |p| p.last_beat_age.map(|d| ConstGauge::new(d.as_secs_f64())),
        )?;
        self.loops(enc)
    }

    /// Deadline supervision (docs/cops.md): the work loop's figures of hosts
    /// that tick, and for processes with loop keys what was judged.
    fn loops(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        let secs = Some(&Unit::Seconds);
        let help = "The 99th percentile of the work loop's iterations over the process's last minute, as its last heartbeat reply said (hosts that tick).";
        per_process(enc, s, ("cops_loop_iteration_p99", help, secs), |p| {
            p.loops.p99.map(|d| ConstGauge::new(d.as_secs_f64()))
        })?;
        let help = "The longest iteration of the work loop in the beat of its last heartbeat reply (hosts that tick).";
        per_process(enc, s, ("cops_loop_iteration_max", help, secs), |p| {
            p.loops.max.map(|d| ConstGauge::new(d.as_secs_f64()))
        })?;
        for (name, help, of) in LOOP_COUNTERS {
            per_process(enc, s, (name, help, None), |p| {
                p.loops.judged.map(|c| ConstCounter::new(of(&c)))
            })?;
        }
        let help = "1 while the loop alarm is raised (loopToleranceBeats failing beats in a row, until as many good ones), else 0 (processes with loop keys).";
        per_process(enc, s, ("cops_loop_alarm", help, None), |p| {
            p.loops.judged.map(|c| ConstGauge::new(i64::from(c.alarm)))
        })
    }

    /// `cops_process_state{state}`: 1 for the current state, 0 for the others.
    fn states(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        if s.processes.is_empty() {
            return Ok(());
        }
        let mut m = enc.encode_descriptor(
            "cops_process_state",
            "The process's state: 1 for the current one of unknown, alive, hung, not_monitored.",
            None,
            MetricType::Gauge,
        )?;
        for p in &s.processes {
            for st in ["unknown", "alive", "hung", "not_monitored"] {
                let labels = [("process", p.name.as_str()), ("state", st)];
                ConstGauge::new(i64::from(p.state == st)).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn rtt(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        if s.processes.is_empty() {
            return Ok(());
        }
        let mut m = enc.encode_descriptor(
            "cops_heartbeat_rtt",
            "Time from COPS's heartbeat to the process's good reply.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(RTT_BOUNDS.len() + 1);
        for p in &s.processes {
            buckets.clear();
            let bounds = RTT_BOUNDS.iter().copied().chain([f64::INFINITY]);
            buckets.extend(bounds.zip(p.rtt.counts.iter().copied()));
            let labels = [("process", p.name.as_str())];
            let mut fam = m.encode_family(&labels)?;
            fam.encode_histogram::<NoLabelSet>(p.rtt.sum, p.rtt.count(), &buckets, None)?;
        }
        Ok(())
    }

    fn kills(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        if s.processes.iter().all(|p| p.kills.is_empty()) {
            return Ok(()); // nothing killable: no series
        }
        let mut m = enc.encode_descriptor(
            "cops_kills",
            "Signals COPS delivered, by process, signal and reason (hung, escalation, loop).",
            None,
            MetricType::Counter,
        )?;
        for p in &s.processes {
            for (signal, reason, n) in &p.kills {
                let labels = [
                    ("process", p.name.as_str()),
                    ("signal", signal.as_str()),
                    ("reason", reason),
                ];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn site(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        {
            let help = "Always 1; the controller's name as a label.";
            let mut m = enc.encode_descriptor("cops_controller", help, None, MetricType::Info)?;
            m.encode_info(&[("controller", s.controller.as_str())])?;
        }
        let secs = Some(&Unit::Seconds);
        let time: [(&str, &str, f64); 2] = [
            (
                "cops_uptime",
                "Time since COPS started.",
                s.uptime.as_secs_f64(),
            ),
            (
                "cops_loop_lag",
                "The worst lateness of COPS's own loop over the last 10 to 20 s.",
                s.loop_lag.as_secs_f64(),
            ),
        ];
        for (name, help, v) in time {
            single(enc, (name, help, secs), ConstGauge::new(v))?;
        }
        let flags: [(&str, &str, bool); 2] = [
            (
                "cops_bus_connected",
                "1 while COPS holds its connections to the FIMS broker.",
                s.connected,
            ),
            (
                "cops_stalled",
                "1 while a bus or host stall is in progress (rounds overlapping it are void).",
                s.stalled,
            ),
        ];
        for (name, help, v) in flags {
            single(enc, (name, help, None), ConstGauge::new(i64::from(v)))?;
        }
        let counters: [(&str, &str, u64); 3] = [
            ("cops_stalls", "Bus or host stall episodes.", s.stalls),
            (
                "cops_void_rounds",
                "Heartbeat rounds voided by a stall or a lost bus (not misses).",
                s.void_rounds,
            ),
            (
                "cops_requests_dropped",
                "Requests to COPS's URI dropped by its serving rate limit.",
                s.requests_dropped,
            ),
        ];
        for (name, help, v) in counters {
            single(enc, (name, help, None), ConstCounter::new(v))?;
        }
        let help = "Time spent in bus or host stalls.";
        single(
            enc,
            ("cops_stall", help, secs),
            ConstCounter::new(s.stall_time.as_secs_f64()),
        )?;
        let mut m = enc.encode_descriptor(
            "cops_kills_suppressed",
            "Kills COPS decided on but did not make, by reason (inhibited, quarantined, site_budget, refused, dry_run, starved).",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in &s.kills_suppressed {
            ConstCounter::new(*n).encode(m.encode_family(&[("reason", *reason)])?)?;
        }
        Ok(())
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.site(&mut enc)?;
        self.processes(&mut enc)
    }
}
