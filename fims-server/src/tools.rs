//! Shared pieces of the `fims_send` and `fims_listen` tools: output formats
//! and timestamps (pure functions, tested here).

use std::time::{SystemTime, UNIX_EPOCH};

use fims::Message;

/// Environment variable that, when set and non-empty, asks for the existing
/// system's AES body encryption, which these tools refuse.
pub const ENCRYPTION_ENV: &str = "FIMS_ENCRYPTION_KEY";

/// Whether the environment asks for body encryption.
pub fn encryption_requested() -> bool {
    std::env::var_os(ENCRYPTION_ENV).is_some_and(|v| !v.is_empty())
}

/// `time` as RFC 3339 UTC with microseconds: `2026-11-26T13:35:51.093655Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The body as JSON: the parsed value when it is JSON, else the text (lossy UTF-8).
pub fn body_value(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Whether an answer body is an error by the FIMS convention: a JSON string
/// whose text starts with `Error:` (e.g. `"Error: cops_heartbeat must be a
/// non-negative integer"`). `fims_send` prints it and exits 1.
pub fn is_error_answer(body: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<serde_json::Value>(body),
        Ok(serde_json::Value::String(s)) if s.starts_with("Error:")
    )
}

/// One `fims_listen --json` line (without the newline). `replyto` is `null`
/// when the message has none.
pub fn json_line(msg: &Message<'_>, time: SystemTime) -> String {
    let v = serde_json::json!({
        "method": msg.method,
        "uri": msg.uri,
        "replyto": msg.replyto(),
        "process_name": msg.process_name,
        "username": msg.username,
        "body": body_value(msg.body),
        "timestamp": rfc3339(time),
    });
    v.to_string()
}

/// The human-readable block `fims_listen` prints for one message.
pub fn text_block(msg: &Message<'_>, time: SystemTime) -> String {
    format!(
        "Method:       {}\nUri:          {}\nReplyTo:      {}\nProcess Name: {}\nUsername:     {}\nBody:         {}\nTimestamp:    {}\n",
        msg.method,
        msg.uri,
        msg.replyto().unwrap_or("(null)"),
        msg.process_name,
        msg.username,
        String::from_utf8_lossy(msg.body),
        rfc3339(time),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 123_456_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(t), "2099-12-31T23:59:59.000000Z");
    }

    #[test]
    fn json_lines() {
        let msg = Message {
            method: "set",
            uri: "/a",
            process_name: "p",
            username: "root",
            body: br#"{"x":1}"#,
            ..Message::default()
        };
        let line = json_line(&msg, UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["body"]["x"], 1);
        assert_eq!(v["replyto"], serde_json::Value::Null);
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000Z");
        let text = Message {
            body: b"not json",
            replyto: "/r",
            ..msg
        };
        let v: serde_json::Value = serde_json::from_str(&json_line(&text, UNIX_EPOCH)).unwrap();
        assert_eq!(v["body"], "not json");
        assert_eq!(v["replyto"], "/r");
        assert!(!json_line(&text, UNIX_EPOCH).contains('\n'));
    }

    #[test]
    fn error_answers() {
        assert!(is_error_answer(
            br#""Error: cops_heartbeat must be a non-negative integer""#
        ));
        assert!(is_error_answer(b" \"Error:x\"\n"));
        assert!(!is_error_answer(
            br#""error: lowercase is not the convention""#
        ));
        assert!(!is_error_answer(br#""Errors: 0""#));
        assert!(!is_error_answer(br#"{"Error":"in an object"}"#));
        assert!(!is_error_answer(b"Error: not JSON"));
        assert!(!is_error_answer(b"5"));
        assert!(!is_error_answer(b""));
    }

    #[test]
    fn text_blocks() {
        let msg = Message {
            method: "pub",
            uri: "/a",
            process_name: "p",
            username: "u",
            body: b"5",
            ..Message::default()
        };
        let t = text_block(&msg, UNIX_EPOCH);
        assert!(t.contains("Method:       pub\n"));
        assert!(t.contains("ReplyTo:      (null)\n"));
        assert!(t.contains("Body:         5\n"));
    }
}
