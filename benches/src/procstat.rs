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

/// A CPU-time reading to difference against a later one.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    ticks: u64,
    at: std::time::Instant,
}

impl CpuMark {
    /// Reads `pid`'s CPU time now.
    pub fn now(pid: u32) -> Result<CpuMark> {
        Ok(CpuMark {
            ticks: cpu_ticks(pid)?,
            at: std::time::Instant::now(),
        })
    }

    /// Percent of one core `pid` used since this mark.
    pub fn pct_since(&self, pid: u32) -> Result<f64> {
        let ticks = cpu_ticks(pid)?;
        let wall = self.at.elapsed().as_secs_f64();
        let cpu = ticks.saturating_sub(self.ticks) as f64 / crate::sys::clock_ticks() as f64;
        Ok(if wall > 0.0 { 100.0 * cpu / wall } else { 0.0 })
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
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        cpu_ticks(pid).unwrap();
    }
}
