//! The ranges COPS accepts, in one place (docs/cops.md, "Configuration
//! reference", quotes them). Outside them a value is an error: a period of a
//! week or an allowance of a million is a typo, not a setting.

/// `heartbeatFreq`, ms: 10 ms to 1 hour.
pub const PERIOD_MS: (u64, u64) = (10, 3_600_000);
/// `heartbeatErrorAllowance`: 1 to 1,000 consecutive misses.
pub const ALLOWANCE: (u64, u64) = (1, 1_000);
/// `briefingFrequencyMS`, ms: 10 ms to 1 hour.
pub const BRIEFING_MS: (u64, u64) = (10, 3_600_000);
/// `hangTimeAllowanceMS`, ms: 1 ms to 24 hours.
pub const HANG_TIME_MS: (u64, u64) = (1, 86_400_000);
/// `killEscalationMS`, ms: 1 ms to 10 minutes.
pub const ESCALATION_MS: (u64, u64) = (1, 600_000);
/// `maxKills`: 1 to 1,000,000.
pub const MAX_KILLS: (u64, u64) = (1, 1_000_000);
/// `killWindowMS`, ms: 1 ms to 7 days.
pub const KILL_WINDOW_MS: (u64, u64) = (1, 604_800_000);
/// `maxKillsPerWindow`: 1 to 1,000,000.
pub const SITE_KILLS: (u64, u64) = (1, 1_000_000);
/// From this many processes with `killOnHang`, `--check` suggests a
/// `maxKillsPerWindow` when none is set.
pub const SUGGEST_SITE_BUDGET_FROM: usize = 8;
/// `loopDeadlineMS`, ms: 1 ms to 1 hour.
pub const LOOP_DEADLINE_MS: (u64, u64) = (1, 3_600_000);
/// `minLoopsPerBeat` and `maxLoopsPerBeat`: 1 to 100,000,000 iterations per
/// heartbeat period (0 would judge nothing).
pub const LOOPS_PER_BEAT: (u64, u64) = (1, 100_000_000);
/// `loopToleranceBeats`: 1 to 1,000 consecutive beats.
pub const LOOP_TOLERANCE: (u64, u64) = (1, 1_000);
