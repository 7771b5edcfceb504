//! The few bits of JSON the responder writes and reads, by hand so the hot path
//! never allocates: integers, escaped strings, and the naked-integer fast path.

/// Where an answer is written: a growing `Vec`, or a fixed buffer (the C
/// host's own, so the C ABI needs no copy).
pub(crate) trait Out {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
    /// Appends one byte.
    fn byte(&mut self, b: u8);
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    #[inline]
    fn byte(&mut self, b: u8) {
        self.push(b);
    }
}

/// A fixed buffer that takes what fits and counts everything: `len()` is the
/// size the whole answer needs, which may exceed the buffer.
pub(crate) struct SliceOut<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SliceOut<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> SliceOut<'a> {
        SliceOut { buf, len: 0 }
    }

    /// Bytes the answer needs (written only when `len() <= capacity`).
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Out for SliceOut<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
        }
        self.len = end;
    }
    #[inline]
    fn byte(&mut self, b: u8) {
        if let Some(dst) = self.buf.get_mut(self.len) {
            *dst = b;
        }
        self.len += 1;
    }
}

/// Appends the decimal digits of `n` (what `itoa` does, without the dependency).
pub(crate) fn push_u64<O: Out + ?Sized>(out: &mut O, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put(&buf[i..]);
}

/// Appends `s` as a JSON string literal, quotes included.
pub(crate) fn push_str<O: Out + ?Sized>(out: &mut O, s: &str) {
    out.byte(b'"');
    push_escaped(out, s);
    out.byte(b'"');
}

/// Appends the JSON escaping of `s` without quotes.
pub(crate) fn push_escaped<O: Out + ?Sized>(out: &mut O, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.put(&bytes[start..i]);
        if esc.is_empty() {
            out.put(b"\\u00");
            out.byte(HEX[usize::from(b >> 4)]);
            out.byte(HEX[usize::from(b & 0xf)]);
        } else {
            out.put(esc);
        }
        start = i + 1;
    }
    out.put(&bytes[start..]);
}

/// Why a heartbeat body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadValue {
    /// Empty or whitespace only.
    Empty,
    /// Not UTF-8.
    NotUtf8,
    /// An integer above `u64::MAX`.
    TooLarge,
    /// Anything else: string, negative, fraction, null, object without a good `value`, bad JSON.
    NotAnInteger,
}

impl BadValue {
    /// The answer body: a JSON string starting with `Error: `.
    pub(crate) fn answer(self) -> &'static str {
        match self {
            BadValue::Empty => {
                "\"Error: empty body; cops_heartbeat must be a non-negative integer\""
            }
            BadValue::NotUtf8 => {
                "\"Error: body is not UTF-8; cops_heartbeat must be a non-negative integer\""
            }
            BadValue::TooLarge => "\"Error: cops_heartbeat must be at most 18446744073709551615\"",
            BadValue::NotAnInteger => "\"Error: cops_heartbeat must be a non-negative integer\"",
        }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Parses a heartbeat body: a naked JSON integer in `0..=u64::MAX` (surrounding
/// JSON whitespace allowed), or a clothed `{"value":N}` (other keys ignored).
pub(crate) fn parse_heartbeat(body: &[u8]) -> Result<u64, BadValue> {
    let start = body.iter().position(|&b| !is_ws(b));
    let end = body.iter().rposition(|&b| !is_ws(b));
    let trimmed = match (start, end) {
        (Some(s), Some(e)) => &body[s..=e],
        _ => return Err(BadValue::Empty),
    };
    if let Some(r) = parse_digits(trimmed) {
        return r;
    }
    let text = std::str::from_utf8(trimmed).map_err(|_| BadValue::NotUtf8)?;
    if !text.starts_with('{') {
        // Any other naked value (string, negative, fraction, exponent, null, bad JSON).
        return Err(BadValue::NotAnInteger);
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| BadValue::NotAnInteger)?;
    match v.get("value") {
        Some(serde_json::Value::Number(n)) => n.as_u64().ok_or(BadValue::NotAnInteger),
        _ => Err(BadValue::NotAnInteger),
    }
}

/// The fast path: `Some` when `s` is all ASCII digits (a JSON integer, or one
/// with a forbidden leading zero, or one too large); `None` to fall back.
fn parse_digits(s: &[u8]) -> Option<Result<u64, BadValue>> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if s.len() > 1 && s[0] == b'0' {
        return Some(Err(BadValue::NotAnInteger));
    }
    let mut n: u64 = 0;
    for &d in s {
        n = match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
        {
            Some(n) => n,
            None => return Some(Err(BadValue::TooLarge)),
        };
    }
    Some(Ok(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        for n in [0, 1, 9, 10, 99, 12345, u64::MAX] {
            let mut v = Vec::new();
            push_u64(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
    }

    #[test]
    fn escaping_matches_serde() {
        for s in [
            "",
            "plain",
            "a\"b\\c",
            "tab\there\nnl\r",
            "\u{1}\u{1f}\u{7f}",
            "é✓",
        ] {
            let mut v = Vec::new();
            push_str(&mut v, s);
            let back: String = serde_json::from_slice(&v).expect("valid JSON string");
            assert_eq!(back, s);
        }
    }

    #[test]
    fn error_answers_are_json_strings() {
        for b in [
            BadValue::Empty,
            BadValue::NotUtf8,
            BadValue::TooLarge,
            BadValue::NotAnInteger,
        ] {
            let s: String = serde_json::from_str(b.answer()).expect("JSON string");
            assert!(s.starts_with("Error: "), "{s}");
        }
    }
}
