//! The figures of `perf-report`: values that may be absent (with the reason),
//! printed as one JSON object or as a table beside their targets.

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
pub const KEYS: [&str; 14] = [
    "rtt_floor_us",
    "rtt_broker_us",
    "rtt_ratio",
    "throughput_floor_mps",
    "throughput_broker_mps",
    "throughput_ratio",
    "handle_ns",
    "cabi_overhead_ns",
    "tick_ns",
    "tick_c_ns",
    "cops_cpu_pct",
    "cops_rss_mb",
    "false_kills",
    "max_detect_ms",
];

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

/// A readable table: key, value, unit, target; absent figures with their reason.
pub fn to_table(figs: &[Figure]) -> String {
    let mut s = format!(
        "{:<22} {:>14} {:<6} {}\n",
        "figure", "value", "unit", "target"
    );
    for f in figs {
        match &f.value {
            Ok(v) => {
                let _ = writeln!(
                    s,
                    "{:<22} {:>14} {:<6} {}",
                    f.key,
                    fmt_num(*v),
                    f.unit,
                    f.target
                );
            }
            Err(why) => {
                let _ = writeln!(
                    s,
                    "{:<22} {:>14} {:<6} {}\n{:<22} ({why})",
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
}
