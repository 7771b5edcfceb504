//! Durations as operators read and write them: `0.4s`, `45s`, `4m12s`, `2h`,
//! `3d` out (compact, like `kubectl get pods`' AGE); `10m`, `1h30m`, `90s`,
//! `500ms` in (with `humantime`).

use std::time::Duration;

/// A compact duration: milliseconds below 0.1 s, tenths of a second below
/// 10 s, then whole seconds,
/// minutes, hours, days, with the next unit down where it still matters.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    match s {
        _ if ms < 100 => format!("{ms}ms"),
        _ if ms < 10_000 => {
            let tenths = (ms + 50) / 100;
            if tenths.is_multiple_of(10) {
                format!("{}s", tenths / 10)
            } else {
                format!("{}.{}s", tenths / 10, tenths % 10)
            }
        }
        0..=119 => format!("{s}s"),
        120..=599 => with_rest(s / 60, "m", s % 60, "s"),
        600..=7199 => format!("{}m", s / 60),
        7200..=35_999 => with_rest(s / 3600, "h", s % 3600 / 60, "m"),
        36_000..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn with_rest(big: u64, bu: &str, small: u64, su: &str) -> String {
    if small == 0 {
        format!("{big}{bu}")
    } else {
        format!("{big}{bu}{small}{su}")
    }
}

/// Parses `10m`, `1h30m`, `1h 30m`, `90s`, `500ms`, `2h`; a bare number is
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{s:?} is not a duration ({e}); e.g. 10m, 1h30m, 90s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        assert_eq!(duration(ms(0)), "0ms");
        assert_eq!(duration(ms(42)), "42ms");
        assert_eq!(duration(ms(420)), "0.4s");
        assert_eq!(duration(ms(9_960)), "10s");
        assert_eq!(duration(ms(12_400)), "12s");
        assert_eq!(duration(s(240)), "4m");
        assert_eq!(duration(s(252)), "4m12s");
        assert_eq!(duration(s(45 * 60)), "45m");
        assert_eq!(duration(s(5 * 3600 + 1800)), "5h30m");
        assert_eq!(duration(s(30 * 3600)), "30h");
        assert_eq!(duration(s(3 * 86_400)), "3d");
    }

    #[test]
    fn parses_what_operators_type() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("ten minutes").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5m").is_err());
    }
}
