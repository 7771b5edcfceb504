//! CPU time and resident memory of a process, from `/proc/<pid>/stat` and
//! `/proc/<pid>/status`.

use crate::{err, Result};

/// CPU time (user + system, all threads) of `pid` in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| err!("reading /proc/{pid}/stat: {e}"))?;
    parse_cpu_ticks(&stat).ok_or_else(|| err!("unexpected /proc/{pid}/stat format"))
}

/// utime + stime from the text of a `/proc/<pid>/stat` file.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Field 3 (state) is the first after ')'; utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| err!("reading /proc/{pid}/status: {e}"))?;
    parse_rss_kib(&status).ok_or_else(|| err!("no VmRSS in /proc/{pid}/status"))
}

/// Peak resident set size of `pid` in KiB (`VmHWM`).
pub fn hwm_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| err!("reading /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err!("no VmHWM in /proc/{pid}/status"))
}

/// `VmRSS` in KiB from the text of a `/proc/<pid>/status` file.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Nanoseconds `pid` has run on a CPU, all its live threads together: the
/// first field of each `/proc/<pid>/task/<tid>/schedstat` (the scheduler's own
/// count, at nanosecond resolution where `stat` counts clock ticks).
pub fn sched_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|e| err!("reading {dir}: {e}"))?;
    let mut total = 0u64;
    for t in tasks {
        let path = t?.path().join("schedstat");
        // A thread may exit between the listing and the read: skip it.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += parse_sched_ns(&text)
            .ok_or_else(|| err!("unexpected {} format: {text:?}", path.display()))?;
    }
    Ok(total)
}

/// Voluntary context switches of `pid`, all its live threads together: each
/// is the process going to sleep (in `epoll_wait`, `recv`, ...) and so, for
/// an event loop, one wakeup.
pub fn voluntary_switches(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|e| err!("reading {dir}: {e}"))?;
    let mut total = 0u64;
    for t in tasks {
        let path = t?.path().join("status");
        // A thread may exit between the listing and the read: skip it.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += parse_voluntary_switches(&text)
            .ok_or_else(|| err!("no voluntary_ctxt_switches in {}", path.display()))?;
    }
    Ok(total)
}

/// `voluntary_ctxt_switches` from the text of a `status` file.
pub fn parse_voluntary_switches(status: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The on-CPU nanoseconds (first field) of a `schedstat` file's text.
pub fn parse_sched_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// A CPU-time reading to difference against a later one.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    ticks: u64,
    sched_ns: Option<u64>,
    switches: Option<u64>,
    at: std::time::Instant,
}

/// CPU used between a [`CpuMark`] and now.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// utime + stime from `/proc/<pid>/stat`, seconds (clock-tick resolution).
    pub cpu_s: f64,
    /// The same from `schedstat` (ns resolution), when the kernel has it.
    pub sched_s: Option<f64>,
    /// Wall-clock seconds since the mark.
    pub wall_s: f64,
    /// Voluntary context switches (wakeups) since the mark, when readable.
    pub wakeups: Option<u64>,
}

impl CpuUse {
    /// `cpu_s` in percent of one core over the wall time.
    pub fn pct(&self) -> f64 {
        pct(self.cpu_s, self.wall_s)
    }

    /// `sched_s` in percent of one core over the wall time.
    pub fn sched_pct(&self) -> Option<f64> {
        self.sched_s.map(|s| pct(s, self.wall_s))
    }
}

fn pct(cpu: f64, wall: f64) -> f64 {
    if wall > 0.0 {
        100.0 * cpu / wall
    } else {
        0.0
    }
}

impl CpuMark {
    /// Reads `pid`'s CPU time now.
    pub fn now(pid: u32) -> Result<CpuMark> {
        Ok(CpuMark {
            ticks: cpu_ticks(pid)?,
            sched_ns: sched_ns(pid).ok(),
            switches: voluntary_switches(pid).ok(),
            at: std::time::Instant::now(),
        })
    }

    /// CPU `pid` used since this mark.
    pub fn since(&self, pid: u32) -> Result<CpuUse> {
        let ticks = cpu_ticks(pid)?;
        let sched = sched_ns(pid).ok();
        let switches = voluntary_switches(pid).ok();
        let wall_s = self.at.elapsed().as_secs_f64();
        Ok(CpuUse {
            cpu_s: ticks.saturating_sub(self.ticks) as f64 / crate::sys::clock_ticks() as f64,
            sched_s: match (self.sched_ns, sched) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
                _ => None,
            },
            wall_s,
            wakeups: match (self.switches, switches) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
        })
    }

    /// Percent of one core `pid` used since this mark (utime + stime).
    pub fn pct_since(&self, pid: u32) -> Result<f64> {
        Ok(self.since(pid)?.pct())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_name() {
        let s = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 100 200";
        assert_eq!(parse_cpu_ticks(s), Some(10));
    }

    #[test]
    fn parses_rss() {
        let s = "Name:\tx\nVmRSS:\t   1234 kB\nThreads: 1\n";
        assert_eq!(parse_rss_kib(s), Some(1234));
    }

    #[test]
    fn parses_switches() {
        let s = "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_voluntary_switches(s), Some(12));
        assert_eq!(parse_voluntary_switches("Name:\tx\n"), None);
    }

    #[test]
    fn parses_schedstat() {
        assert_eq!(parse_sched_ns("249300 10116582 2\n"), Some(249300));
        assert_eq!(parse_sched_ns(""), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        cpu_ticks(pid).unwrap();
        let mark = CpuMark::now(pid).unwrap();
        // Burn a little CPU so the scheduler's count moves.
        let end = std::time::Instant::now() + std::time::Duration::from_millis(30);
        let mut x = 0u64;
        while std::time::Instant::now() < end {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let used = mark.since(pid).unwrap();
        assert!(used.wall_s >= 0.03);
        assert!(used.wakeups.is_some_and(|w| w >= 1), "{used:?}");
        if let Some(s) = used.sched_s {
            assert!(s > 0.0, "schedstat did not move");
        }
    }
}
