//! Medians and percentiles of samples.

use std::time::Duration;

/// The `p`-th percentile (0..=100, nearest rank) of `samples`, sorting them;
/// zero for no samples.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// The median of `samples`.
pub fn median(samples: &mut [Duration]) -> Duration {
    percentile(samples, 50.0)
}

/// Microseconds as f64.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Rounds to `digits` decimals (for printing and JSON).
pub fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}
