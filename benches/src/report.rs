//! The figures of `perf-report`: values that may be absent (with the reason),
//! printed as one JSON object or as a table beside their targets; the parts
//! (`--only`) and their keys; the machine and its load average.

use std::fmt::Write;

/// One headline figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// JSON key.
    pub key: &'static str,
    /// Unit shown in the table.
    pub unit: &'static str,
    /// The target, in words, shown in the table.
    pub target: &'static str,
    /// The measured value, or why it is absent.
    pub value: std::result::Result<f64, String>,
}

/// The keys of the JSON object, in order.
pub const KEYS: [&str; 24] = [
    "rtt_floor_us",
    "rtt_broker_us",
    "rtt_ratio",
    "rtt_floor_p99_us",
    "rtt_broker_p99_us",
    "throughput_floor_mps",
    "throughput_broker_mps",
    "throughput_ratio",
    "throughput_relay_floor_mps",
    "throughput_relay_ratio",
    "broker_cpu_pct_20k",
    "broker_us_per_msg",
    "relay_cpu_pct_20k",
    "handle_ns",
    "cabi_overhead_ns",
    "tick_ns",
    "tick_c_ns",
    "cops_cpu_pct",
    "supervision_cpu_pct",
    "cops_floor_cpu_pct",
    "cops_cpu_ratio",
    "cops_rss_mb",
    "false_kills",
    "max_detect_ms",
];

/// The parts of a report (`perf-report --only NAME,...`) and their keys, in
/// [`KEYS`] order.
pub const SECTIONS: [(&str, &[&str]); 5] = [
    (
        "rtt",
        &[
            "rtt_floor_us",
            "rtt_broker_us",
            "rtt_ratio",
            "rtt_floor_p99_us",
            "rtt_broker_p99_us",
        ],
    ),
    (
        "throughput",
        &[
            "throughput_floor_mps",
            "throughput_broker_mps",
            "throughput_ratio",
            "throughput_relay_floor_mps",
            "throughput_relay_ratio",
        ],
    ),
    (
        "load",
        &[
            "broker_cpu_pct_20k",
            "broker_us_per_msg",
            "relay_cpu_pct_20k",
        ],
    ),
    (
        "responder",
        &["handle_ns", "cabi_overhead_ns", "tick_ns", "tick_c_ns"],
    ),
    (
        "cops",
        &[
            "cops_cpu_pct",
            "supervision_cpu_pct",
            "cops_floor_cpu_pct",
            "cops_cpu_ratio",
            "cops_rss_mb",
            "false_kills",
            "max_detect_ms",
        ],
    ),
];

/// The keys of section `name`, when there is one.
pub fn section_keys(name: &str) -> Option<&'static [&'static str]> {
    SECTIONS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

/// One JSON object, keys in [`KEYS`] order; an absent figure is `null`.
pub fn to_json(figs: &[Figure]) -> String {
    let mut s = String::from("{");
    for (i, f) in figs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = match &f.value {
            // Counts print as integers.
            Ok(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 => {
                format!("{}", *v as i64)
            }
            Ok(v) if v.is_finite() => serde_json::Number::from_f64(crate::stats::round(*v, 3))
                .map(|n| n.to_string())
                .unwrap_or_else(|| "null".into()),
            _ => "null".into(),
        };
        let _ = write!(s, "\"{}\":{}", f.key, v);
    }
    s.push('}');
    s
}

/// Width of the table's key column (the longest key).
const W: usize = 26;

/// A readable table: key, value, unit, target; absent figures with their reason.
pub fn to_table(figs: &[Figure]) -> String {
    let mut s = format!(
        "{:<W$} {:>14} {:<6} {}\n",
        "figure", "value", "unit", "target"
    );
    for f in figs {
        match &f.value {
            Ok(v) => {
                let _ = writeln!(
                    s,
                    "{:<W$} {:>14} {:<6} {}",
                    f.key,
                    fmt_num(*v),
                    f.unit,
                    f.target
                );
            }
            Err(why) => {
                let _ = writeln!(
                    s,
                    "{:<W$} {:>14} {:<6} {}\n{:<W$} ({why})",
                    f.key, "absent", f.unit, f.target, ""
                );
            }
        }
    }
    s
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The machine and its load average (1, 5, 15 min), which every figure depends on.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cores} cores, {cpu}, Linux {kernel}, load average {} at the end",
        load_average()
    )
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(key: &'static str, value: std::result::Result<f64, String>) -> Figure {
        Figure {
            key,
            unit: "",
            target: "",
            value,
        }
    }

    #[test]
    fn json_has_numbers_and_null() {
        let figs = [
            f("a", Ok(1.23456)),
            f("b", Ok(0.0)),
            f("c", Err("why".into())),
        ];
        assert_eq!(to_json(&figs), r#"{"a":1.235,"b":0,"c":null}"#);
        assert!(to_table(&figs).contains("absent"));
    }

    #[test]
    fn sections_cover_the_keys_in_order() {
        let all: Vec<&str> = SECTIONS
            .iter()
            .flat_map(|(_, k)| k.iter().copied())
            .collect();
        assert_eq!(all, KEYS);
        assert_eq!(section_keys("load"), Some(&KEYS[10..13]));
        assert_eq!(section_keys("nope"), None);
    }

    #[test]
    fn keys_are_unique_and_fit_the_table() {
        let mut k = KEYS.to_vec();
        k.sort_unstable();
        k.dedup();
        assert_eq!(k.len(), KEYS.len());
        assert!(KEYS.iter().all(|k| k.len() <= W));
    }
}
