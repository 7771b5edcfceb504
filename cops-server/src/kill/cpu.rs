//! Starvation: whether a process that stopped answering had the CPU to answer
//! with. A healthy process that is runnable but not scheduled (a saturated
//! host, a low priority, a CPU quota) misses heartbeats exactly like a hung
//! one; killing it kills a healthy process. The kernel keeps, per thread, the
//! time spent running, the time spent runnable but waiting for a CPU, and the
//! number of times it got a CPU (`/proc/<pid>/task/<tid>/schedstat`,
//! world-readable); the wait is added when the thread gets the CPU, so a
//! thread still waiting shows none of it: a thread runnable (`R`) at both
//! samples that got no CPU in between waited the whole interval. COPS samples
//! at a process's first missed heartbeat and again before it signals.
//!
//! The rule ([`starved`]): between the two samples, the process's threads
//! together waited for a CPU at least half the time and ran less than 5% of
//! it. A hung process is never held by it: a thread blocked on a lock or in
//! the kernel is not runnable and does not wait for a CPU; a thread spinning
//! in a loop runs (it gets its share of a CPU, far more than 5% unless twenty
//! runnable threads share each core).

use std::time::{Duration, Instant};

use super::procfs::{parse_stat, read_small};
use crate::identity::CpuUse;

/// At most this many threads are sampled (a process with more is judged by these).
const MAX_THREADS: usize = 256;

/// Below this interval between samples the rule says nothing.
const MIN_INTERVAL: Duration = Duration::from_millis(20);

/// A process that ran at least this share of the interval had the CPU to answer.
const MAX_RUN_SHARE: f64 = 0.05;

/// A process that waited for a CPU at least this share of the interval was starved
/// (summed over its threads).
const MIN_WAIT_SHARE: f64 = 0.5;

/// One thread's scheduler times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thread {
    /// Thread id.
    pub tid: u32,
    /// Nanoseconds running.
    pub ran: u64,
    /// Nanoseconds runnable, waiting for a CPU (waits that ended).
    pub waited: u64,
    /// Times it got a CPU.
    pub slices: u64,
    /// Runnable now (state `R`).
    pub runnable: bool,
}

/// One reading of a process's threads' scheduler times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSample {
    /// When it was read.
    pub at: Instant,
    /// The threads, by thread id.
    pub threads: Vec<Thread>,
}

/// Reads `/proc/<pid>/task/*/schedstat`; `None` when it cannot be read (the
/// process is gone, or the kernel keeps no such times).
pub fn sample(pid: u32) -> Option<CpuSample> {
    let at = Instant::now();
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut threads: Vec<Thread> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .take(MAX_THREADS)
        .filter_map(|tid: u32| {
            let base = format!("/proc/{pid}/task/{tid}");
            let s = read_small(&format!("{base}/schedstat")).ok()?;
            let (ran, waited, slices) = parse_schedstat(&s)?;
            let stat = read_small(&format!("{base}/stat")).ok()?;
            let runnable = parse_stat(&stat)?.state == 'R';
            Some(Thread {
                tid,
                ran,
                waited,
                slices,
                runnable,
            })
        })
        .collect();
    if threads.is_empty() {
        return None;
    }
    threads.sort_unstable_by_key(|t| t.tid);
    Some(CpuSample { at, threads })
}

/// `schedstat`: "<ns on a CPU> <ns waiting on a runqueue> <timeslices>".
pub fn parse_schedstat(s: &str) -> Option<(u64, u64, u64)> {
    let mut f = s.split_ascii_whitespace();
    let mut next = || f.next()?.parse().ok();
    Some((next()?, next()?, next()?))
}

/// What the process did between `before` and `after` (threads present in
/// both count); `None` when `after` is not later than `before`.
pub fn measure(before: &CpuSample, after: &CpuSample) -> Option<CpuUse> {
    let over = after.at.checked_duration_since(before.at)?;
    let over_ns = u64::try_from(over.as_nanos()).unwrap_or(u64::MAX);
    let (mut ran, mut waited) = (0u64, 0u64);
    for t in &after.threads {
        let Ok(k) = before.threads.binary_search_by_key(&t.tid, |b| b.tid) else {
            continue;
        };
        let b = before.threads[k];
        ran = ran.saturating_add(t.ran.saturating_sub(b.ran));
        let w = if b.runnable && t.runnable && t.slices == b.slices {
            over_ns // runnable throughout and never got a CPU
        } else {
            t.waited.saturating_sub(b.waited)
        };
        waited = waited.saturating_add(w);
    }
    Some(CpuUse {
        waited: Duration::from_nanos(waited),
        ran: Duration::from_nanos(ran),
        over,
    })
}

/// Whether `u` says the process was starved (see the module documentation).
pub fn starved(u: &CpuUse) -> bool {
    if u.over < MIN_INTERVAL {
        return false;
    }
    let over = u.over.as_secs_f64();
    u.waited.as_secs_f64() >= MIN_WAIT_SHARE * over && u.ran.as_secs_f64() < MAX_RUN_SHARE * over
}

/// [`measure`], when [`starved`].
pub fn starvation(before: &CpuSample, after: &CpuSample) -> Option<CpuUse> {
    measure(before, after).filter(starved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A thread: (tid, ms ran, ms waited, slices, runnable).
    fn at(base: Instant, ms: u64, threads: &[(u32, u64, u64, u64, bool)]) -> CpuSample {
        CpuSample {
            at: base + Duration::from_millis(ms),
            threads: threads
                .iter()
                .map(|&(tid, ran, waited, slices, runnable)| Thread {
                    tid,
                    ran: ran * MS,
                    waited: waited * MS,
                    slices,
                    runnable,
                })
                .collect(),
        }
    }

    #[test]
    fn schedstat_lines() {
        assert_eq!(
            parse_schedstat("84500993 10223431 159\n"),
            Some((84500993, 10223431, 159))
        );
        assert_eq!(parse_schedstat("0 0 1"), Some((0, 0, 1)));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("12 3"), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn waits_that_ended_count() {
        let t = Instant::now();
        let a = at(t, 0, &[(10, 5, 0, 7, false)]);
        let b = at(t, 1000, &[(10, 7, 990, 9, false)]);
        let s = starvation(&a, &b).expect("starved");
        assert_eq!(s.ran, Duration::from_millis(2));
        assert_eq!(s.waited, Duration::from_millis(990));
        assert_eq!(s.over, Duration::from_secs(1));
        assert_eq!(
            s.to_string(),
            "waited 990 ms for a CPU and ran 2 ms in the last 1000 ms"
        );
    }

    #[test]
    fn runnable_throughout_without_a_cpu_waited_it_all() {
        // The kernel adds a wait when it ends: none shows yet.
        let t = Instant::now();
        let a = at(t, 0, &[(10, 5, 3, 7, true)]);
        let b = at(t, 300, &[(10, 5, 3, 7, true)]);
        let s = starvation(&a, &b).expect("starved");
        assert_eq!(s.waited, Duration::from_millis(300));
        assert_eq!(s.ran, Duration::ZERO);
        // Runnable at both ends but it ran in between: only the ended waits count.
        let c = at(t, 600, &[(10, 6, 3, 8, true)]);
        assert_eq!(starvation(&b, &c), None);
    }

    #[test]
    fn blocked_hang_is_not_starved() {
        // A deadlock: nothing runs, nothing waits for a CPU.
        let t = Instant::now();
        let a = at(t, 0, &[(10, 5, 3, 7, false), (11, 1, 1, 2, false)]);
        let b = at(t, 2000, &[(10, 5, 3, 7, false), (11, 1, 1, 2, false)]);
        assert_eq!(starvation(&a, &b), None);
        // Stopped (SIGSTOP, state T) is no wait for a CPU either.
        assert_eq!(measure(&a, &b).map(|u| u.waited), Some(Duration::ZERO));
    }

    #[test]
    fn spinning_hang_on_a_busy_host_is_not_starved() {
        // A busy loop sharing a core with three others: runs a quarter of the time.
        let t = Instant::now();
        let a = at(t, 0, &[(10, 0, 0, 0, true)]);
        let b = at(t, 1000, &[(10, 250, 750, 250, true)]);
        assert_eq!(starvation(&a, &b), None);
    }

    #[test]
    fn only_threads_in_both_samples_count() {
        let t = Instant::now();
        // Thread 11 is new: its (large) totals since it started are not this interval's.
        let a = at(t, 0, &[(10, 0, 0, 0, false)]);
        let b = at(t, 1000, &[(10, 1, 900, 1, false), (11, 900, 0, 9, false)]);
        assert!(starvation(&a, &b).is_some());
        // A counter that went backwards (a reused thread id) counts as zero.
        let c = at(t, 2000, &[(10, 0, 0, 0, false)]);
        assert_eq!(starvation(&b, &c), None);
    }

    #[test]
    fn too_short_an_interval_says_nothing() {
        let t = Instant::now();
        let a = at(t, 0, &[(10, 0, 0, 0, true)]);
        let b = at(t, 10, &[(10, 0, 0, 0, true)]);
        assert_eq!(starvation(&a, &b), None);
        assert_eq!(starvation(&b, &a), None, "samples out of order");
    }

    #[test]
    fn own_threads_can_be_sampled() {
        let s = sample(std::process::id()).expect("schedstat of this process");
        assert!(!s.threads.is_empty());
        assert!(s.threads.windows(2).all(|w| w[0].tid < w[1].tid));
        // The sampling thread is running.
        assert!(s.threads.iter().any(|t| t.runnable));
        assert_eq!(sample(0), None);
    }
}
