//! The floor of `cops_cpu_pct`: a bare program that puts exactly COPS's
//! datagrams on the same broker for the same `cops-sim` processes, with no
//! engine: what the protocol's datagrams cost by themselves.
//!
//! Run as `perf-report --peer cops-floor --socket S --processes N
//! --connections C --period-ms P` (a child process, so its CPU is its own).
//! Per process per period it sends the two datagrams of a round, the sizes
//! COPS sends (`set <uri>/cops/cops_heartbeat H` and `get <uri>/cops` with
//! replyto `/cops/heartbeat/<name>`, process name `cops`), and reads the
//! answers `cops-sim` sends, with their kernel timestamps; every 5 s
//! (`briefingFrequencyMS`'s default) it publishes one stats body of 1,030
//! bytes per process on a second connection, in parts every 10 ms over half
//! the period, as COPS does. It batches the way COPS does: it wakes once per
//! tick (a tenth of the period, 1-10 ms), drains the replies with `recvmmsg`
//! (256 at a time) and sends the rounds that came due with `sendmmsg` (256 at
//! a time). Left out: COPS's probes (one datagram per few ticks) and
//! `ourUri/summary` (one per briefing), and the copy of every reply that
//! COPS's serving connection receives (its subscription to `ourUri` covers
//! `ourUri/heartbeat`): `COPS_FLOOR_COPIES=1` in the environment adds a
//! connection subscribed to `/cops` that drains them. Nothing is decoded,
//! judged or formatted beyond the FIMS encoding of each datagram.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fims::blocking::Client;
use fims::Message;

use crate::bus::{stop_child, BrokerProc};
use crate::cops::Plan;
use crate::procstat::CpuMark;
use crate::sys::{self, SendQueue, StampedRecv};
use crate::{err, Result};

/// `briefingFrequencyMS` of the configuration `cops-sim` writes (the default).
const BRIEFING: Duration = Duration::from_millis(5000);
/// COPS publishes a briefing in parts, one every 10 ms.
const BRIEFING_TICK: Duration = Duration::from_millis(10);
/// The size of one `pub /cops/stats/<name>` body of COPS for a `cops-sim`
/// process (measured: 1,027-1,032 bytes).
const STATS_BYTES: usize = 1030;

/// COPS's loop tick for a heartbeat period: a tenth of it, 1..=10 ms.
fn tick(period: Duration) -> Duration {
    (period / 10).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

/// The URIs of one simulated process, as COPS names them.
struct Uris {
    set: String,
    get: String,
    reply: String,
    stats: String,
}

fn uris(n: usize, connections: usize) -> Vec<Uris> {
    (0..n)
        .map(|i| {
            let uri = format!("/sim/c{}/p{i}", i % connections);
            Uris {
                set: format!("{uri}/cops/cops_heartbeat"),
                get: format!("{uri}/cops"),
                reply: format!("/cops/heartbeat/sim{i}"),
                stats: format!("/cops/stats/sim{i}"),
            }
        })
        .collect()
}

/// A stats body of [`STATS_BYTES`]: JSON, padded.
fn stats_body() -> Vec<u8> {
    let mut s = String::from(r#"{"name":"sim","state":"alive","pad":""#);
    while s.len() < STATS_BYTES - 2 {
        s.push('x');
    }
    s.push_str("\"}");
    s.into_bytes()
}

/// Appends one encoded message to `q`.
fn push(q: &mut SendQueue, method: &str, uri: &str, replyto: &str, body: &[u8]) -> Result<()> {
    let msg = Message {
        method,
        uri,
        replyto,
        process_name: "cops",
        username: "",
        body,
    };
    msg.encode(q.buf())
        .map_err(|e| err!("encoding {method} {uri}: {e}"))?;
    q.end();
    Ok(())
}

/// The floor's loop (the `cops-floor` peer role): runs until the broker
/// closes the connection; `ready` is called once both connections are up.
pub fn serve(
    socket: &Path,
    n: usize,
    connections: usize,
    period: Duration,
    ready: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let n = n.max(1);
    let mut hb = Client::connect_to(socket, "cops")?;
    hb.subscribe(&["/cops/heartbeat"])?;
    let out = Client::connect_to(socket, "cops")?;
    sys::enable_timestamps(hb.as_raw_fd())?;
    // COPS_FLOOR_COPIES=1: also a connection subscribed to `/cops`, drained
    // every tick, as COPS's serving connection receives a copy of every reply.
    let copies = match std::env::var_os("COPS_FLOOR_COPIES") {
        Some(v) if v == "1" => {
            let mut c = Client::connect_to(socket, "cops")?;
            c.subscribe(&["/cops"])?;
            sys::enable_timestamps(c.as_raw_fd())?;
            Some(c)
        }
        _ => None,
    };
    let names = uris(n, connections.max(1));
    let stats = stats_body();
    let tick = tick(period);
    let parts = (BRIEFING.as_millis() / BRIEFING_TICK.as_millis() / 2).max(1) as usize;
    let chunk = n.div_ceil(parts);
    let (mut rounds, mut pubs) = (SendQueue::default(), SendQueue::default());
    let mut rx = StampedRecv::new(8192);
    let mut counters = vec![1u64; n];
    let mut digits = String::with_capacity(24);
    ready()?;
    let t0 = sys::mono_ns();
    let (period_ns, tick_ns) = (period.as_nanos() as u64, tick.as_nanos() as u64);
    let (mut next, mut stats_done, mut seen) = (0u64, 0u64, 0u64);
    let mut wake = t0;
    loop {
        // Replies first, as COPS reads them.
        loop {
            match rx.recv(hb.as_raw_fd())? {
                None => return Ok(()),
                Some((0, _)) => break,
                Some((_, stamps)) => seen = seen.wrapping_add(stamps),
            }
        }
        while let Some(c) = &copies {
            match rx.recv(c.as_raw_fd())? {
                None => return Ok(()),
                Some((0, _)) => break,
                Some((_, stamps)) => seen = seen.wrapping_add(stamps),
            }
        }
        let now = sys::mono_ns() - t0;
        // Rounds whose start on the grid came: process i at period * i / n.
        while next / n as u64 * period_ns + period_ns * (next % n as u64) / n as u64 <= now {
            let i = (next % n as u64) as usize;
            digits.clear();
            use std::fmt::Write;
            let _ = write!(digits, "{}", counters[i]);
            counters[i] += 1;
            push(&mut rounds, "set", &names[i].set, "", digits.as_bytes())?;
            push(&mut rounds, "get", &names[i].get, &names[i].reply, b"")?;
            next += 1;
        }
        // Stats: every process once per briefing, in parts over half of it.
        let briefing = now / BRIEFING.as_nanos() as u64;
        let into = now % BRIEFING.as_nanos() as u64;
        let parts_due = (into / BRIEFING_TICK.as_nanos() as u64 + 1).min(parts as u64);
        let due = briefing * n as u64 + (parts_due * chunk as u64).min(n as u64);
        while stats_done < due {
            let i = (stats_done % n as u64) as usize;
            push(&mut pubs, "pub", &names[i].stats, "", &stats)?;
            stats_done += 1;
        }
        if !rounds.is_empty() {
            rounds.flush(hb.as_raw_fd())?;
        }
        if !pubs.is_empty() {
            pubs.flush(out.as_raw_fd())?;
        }
        std::hint::black_box(seen);
        wake += tick_ns;
        let now = sys::mono_ns();
        if wake < now {
            wake = now; // late: no burst of catch-up ticks
        }
        sys::sleep_until_ns(wake);
    }
}

/// What the floor run measured.
#[derive(Debug, Clone)]
pub struct FloorFigures {
    /// The floor program's CPU over the window, % of one core.
    pub cpu_pct: f64,
    /// The broker's CPU over the same window, % of one core.
    pub broker_cpu_pct: f64,
    /// One line for the report's notes.
    pub note: String,
}

/// Runs the floor for `plan` on its own broker and `cops-sim` (no process
/// hangs): the same warm-up as the COPS run, then the same window.
pub fn measure(plan: &Plan, broker_exe: &Path, sim: &Path, me: &Path) -> Result<FloorFigures> {
    let n = plan.processes.max(1);
    let broker = BrokerProc::start(broker_exe)?;
    let warm = plan.hang_at();
    let sim_ms = (warm + plan.window + Duration::from_secs(2)).as_millis();
    let mut simp = Kill(
        Command::new(sim)
            .args(["--count", &n.to_string()])
            .args(["--connections", &plan.connections.to_string()])
            .arg("--socket")
            .arg(broker.socket())
            .args(["--duration-ms", &sim_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| err!("starting cops-sim: {e}"))?,
    );
    let started = Instant::now();
    let mut floor = Kill(
        Command::new(me)
            .args(["--peer", "cops-floor", "--socket"])
            .arg(broker.socket())
            .args(["--processes", &n.to_string()])
            .args(["--connections", &plan.connections.to_string()])
            .args(["--period-ms", &plan.period_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| err!("starting the cops floor: {e}"))?,
    );
    let mut line = String::new();
    if let Some(out) = floor.0.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    if line.trim() != "ready" {
        return Err(err!("the cops floor did not start ({line:?})"));
    }
    std::thread::sleep((started + warm).saturating_duration_since(Instant::now()));
    let pids = [floor.0.id(), broker.pid(), simp.0.id()];
    let marks = pids.map(CpuMark::now);
    std::thread::sleep(plan.window);
    let mut used = [0.0; 3];
    let mut wakeups = 0.0;
    for (k, (m, pid)) in marks.into_iter().zip(pids).enumerate() {
        let u = m?.since(pid)?;
        used[k] = u.pct();
        if k == 0 {
            // Nanoseconds where the kernel counts them: the floor is small.
            used[k] = u.sched_pct().unwrap_or(used[k]);
            wakeups = u.wakeups.unwrap_or(0) as f64 / u.wall_s.max(1e-9);
        }
    }
    let answered = sim_answered(
        &mut simp.0,
        started + warm + plan.window + Duration::from_secs(20),
    )?;
    let [cpu_pct, broker_cpu_pct, sim_pct] = used;
    let note = format!(
        "cops floor (the protocol's datagrams alone, no engine): {n} processes, period {} ms: \
         CPU {cpu_pct:.2}% of one core ({wakeups:.0} wakeups/s; + broker {broker_cpu_pct:.2}% = {:.2}%; \
         cops-sim {sim_pct:.2}%); {answered} answers from cops-sim over its run",
        plan.period_ms,
        cpu_pct + broker_cpu_pct,
    );
    Ok(FloorFigures {
        cpu_pct,
        broker_cpu_pct,
        note,
    })
}

/// The `answered` count of the sim's JSON report, once it has finished.
fn sim_answered(sim: &mut Child, deadline: Instant) -> Result<u64> {
    loop {
        if let Some(status) = sim.try_wait()? {
            let mut out = String::new();
            if let Some(mut o) = sim.stdout.take() {
                o.read_to_string(&mut out)?;
            }
            if !status.success() {
                return Err(err!("cops-sim failed ({status})"));
            }
            let line = out.lines().last().unwrap_or("");
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| err!("cops-sim report {line:?}: {e}"))?;
            return Ok(v.get("answered").and_then(|a| a.as_u64()).unwrap_or(0));
        }
        if Instant::now() > deadline {
            return Err(err!("cops-sim did not finish in time"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child stopped on drop.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_have_cops_sizes() {
        assert_eq!(stats_body().len(), STATS_BYTES);
        assert!(serde_json::from_slice::<serde_json::Value>(&stats_body()).is_ok());
        let u = &uris(10, 4)[9];
        assert_eq!(u.set, "/sim/c1/p9/cops/cops_heartbeat");
        assert_eq!(u.get, "/sim/c1/p9/cops");
        assert_eq!(u.reply, "/cops/heartbeat/sim9");
        assert_eq!(tick(Duration::from_secs(1)), Duration::from_millis(10));
        assert_eq!(tick(Duration::from_millis(5)), Duration::from_millis(1));
    }
}
