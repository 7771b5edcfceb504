//! The usual heartbeat reply read in one pass, without serde: a compact
//! object of the protocol's members (`cops_heartbeat`, `pid`, the three
//! `version_*` strings or `null`, `loop` as an object of its three integers or
//! `null`), integers and ASCII strings without escapes. Anything else (white
//! space, unknown or repeated keys, escapes, non-ASCII, floats, clothed
//! values, errors) returns `None` and the reply takes the serde path, which
//! decides it exactly as before: for every body this accepts, the serde path
//! gives the same reply (a test checks it on every fixture and on mutations).
//!
//! serde_json spent about 3,000 instructions per reply here (validating
//! every string as UTF-8 again, matching keys through the derive); this
//! takes a few hundred.

use std::borrow::Cow;

use super::{LoopField, LoopFigures, Reply};

/// Reads `body` when it is the usual compact reply.
pub(super) fn parse(body: &[u8]) -> Option<Reply<'_>> {
    // One branch-free pass the compiler vectorises: printable ASCII and no
    // backslash anywhere, so no string has an escape or a byte to validate.
    let odd = body.iter().fold(false, |odd, &c| {
        odd | !(0x20..0x7f).contains(&c) | (c == b'\\')
    });
    if odd {
        return None;
    }
    let mut c = Cursor { b: body, i: 0 };
    c.eat(b'{')?;
    let (mut heartbeat, mut pid) = (None, None);
    let mut versions: [Option<Option<&str>>; 3] = [None, None, None];
    let mut loop_ = None;
    loop {
        let key = c.raw_string()?;
        c.eat(b':')?;
        match key {
            b"cops_heartbeat" if heartbeat.is_none() => heartbeat = Some(c.unsigned()?),
            b"pid" if pid.is_none() => pid = Some(c.signed()?),
            b"version_tag" if versions[0].is_none() => versions[0] = Some(c.string_or_null()?),
            b"version_commit" if versions[1].is_none() => versions[1] = Some(c.string_or_null()?),
            b"version_build" if versions[2].is_none() => versions[2] = Some(c.string_or_null()?),
            b"loop" if loop_.is_none() => loop_ = Some(c.loop_or_null()?),
            _ => return None,
        }
        match c.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    if c.i != body.len() {
        return None;
    }
    Some(Reply {
        heartbeat: heartbeat?,
        pid: pid?,
        versions: versions.map(|v| v.flatten().map(Cow::Borrowed)),
        loop_: match loop_.flatten() {
            Some(f) => LoopField::Figures(f),
            None => LoopField::Absent,
        },
    })
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The bytes of a string (printable ASCII without escapes: see [`parse`]).
    fn raw_string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = self.b.get(self.i..)?;
        let len = rest.iter().position(|&c| c == b'"')?;
        // Printable ASCII without a backslash: `parse` checked the whole body.
        self.i += len + 1;
        Some(&rest[..len])
    }

    /// A string (printable ASCII, so valid UTF-8).
    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.raw_string()?).ok()
    }

    fn string_or_null(&mut self) -> Option<Option<&'a str>> {
        if self.peek()? == b'"' {
            return Some(Some(self.string()?));
        }
        self.null().map(|()| None)
    }

    fn null(&mut self) -> Option<()> {
        let rest = self.b.get(self.i..self.i + 4)?;
        (rest == b"null").then(|| self.i += 4)
    }

    /// JSON digits of a u64 (no leading zero, no fraction or exponent).
    fn unsigned(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let len = self.i - start;
        let leading_zero = len > 1 && self.b[start] == b'0';
        if len == 0 || leading_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(n)
    }

    fn signed(&mut self) -> Option<i64> {
        let negative = self.peek()? == b'-';
        if negative {
            self.i += 1;
        }
        let n = self.unsigned()?;
        if negative {
            // -0 and i64::MIN go the serde way.
            if n == 0 {
                return None;
            }
            i64::try_from(n).ok().map(|n| -n)
        } else {
            i64::try_from(n).ok()
        }
    }

    /// `null`, or `{"count":N,"max_us":M,"p99_us":P}` in any order, nothing else.
    fn loop_or_null(&mut self) -> Option<Option<LoopFigures>> {
        if self.peek()? != b'{' {
            return self.null().map(|()| None);
        }
        self.i += 1;
        let mut f: [Option<u64>; 3] = [None; 3];
        loop {
            let key = self.raw_string()?;
            self.eat(b':')?;
            let slot = match key {
                b"count" => 0,
                b"max_us" => 1,
                b"p99_us" => 2,
                _ => return None,
            };
            if f[slot].is_some() {
                return None;
            }
            f[slot] = Some(self.unsigned()?);
            match self.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        Some(Some(LoopFigures {
            count: f[0]?,
            max_us: f[1]?,
            p99_us: f[2]?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::FIXTURES;
    use super::super::{parse_reply, serde_path};
    use super::*;

    fn same(a: &Reply<'_>, b: &Reply<'_>) -> bool {
        a.heartbeat == b.heartbeat
            && a.pid == b.pid
            && a.versions == b.versions
            && a.loop_ == b.loop_
    }

    /// Whatever the fast path accepts, the serde path reads alike.
    fn check(body: &[u8]) {
        if let Some(fast) = parse(body) {
            let slow = serde_path(body).unwrap_or_else(|e| {
                panic!(
                    "fast took {:?}, serde refused: {e}",
                    String::from_utf8_lossy(body)
                )
            });
            assert!(same(&fast, &slow), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_usual_replies_take_the_fast_path() {
        let usual = [
            r#"{"cops_heartbeat":17,"pid":4242,"version_tag":"sim","version_commit":"0","version_build":"0"}"#,
            r#"{"cops_heartbeat":17,"pid":4242}"#,
            r#"{"pid":4242,"cops_heartbeat":17,"version_tag":null,"loop":null}"#,
            r#"{"cops_heartbeat":18446744073709551615,"pid":-5,"loop":{"p99_us":3,"count":1,"max_us":2}}"#,
        ];
        for body in usual {
            assert!(parse(body.as_bytes()).is_some(), "{body}");
            check(body.as_bytes());
        }
        let r = parse(usual[3].as_bytes()).unwrap();
        assert_eq!(r.heartbeat, u64::MAX);
        assert_eq!(r.pid, -5);
        assert_eq!(
            r.loop_,
            LoopField::Figures(LoopFigures {
                count: 1,
                max_us: 2,
                p99_us: 3
            })
        );
        // Through parse_reply as well.
        assert_eq!(parse_reply(usual[0].as_bytes()).unwrap().heartbeat, 17);
    }

    #[test]
    fn everything_else_goes_the_serde_way() {
        let other = [
            r#"{"cops_heartbeat":17}"#,
            r#"{"cops_heartbeat":17,"pid":1,"pid":2}"#,
            r#"{"cops_heartbeat":017,"pid":1}"#,
            r#"{"cops_heartbeat":1.0,"pid":1}"#,
            r#"{"cops_heartbeat":18446744073709551616,"pid":1}"#,
            r#"{"cops_heartbeat":-1,"pid":1}"#,
            r#"{"cops_heartbeat":1,"pid":-0}"#,
            r#"{"cops_heartbeat":1,"pid":1,"other":2}"#,
            r#"{"cops_heartbeat":1,"pid":1,"version_tag":"a\"b"}"#,
            r#"{"cops_heartbeat":1,"pid":1,"version_tag":"é"}"#,
            r#"{"cops_heartbeat":1,"pid":1,"loop":{"count":1,"max_us":2}}"#,
            r#"{"cops_heartbeat":1,"pid":1,"loop":[1,2,3]}"#,
            r#"{"cops_heartbeat":{"value":1},"pid":1}"#,
            r#"{ "cops_heartbeat":1,"pid":1}"#,
            r#"{"cops_heartbeat":1,"pid":1} "#,
            r#"{"cops_heartbeat":1,"pid":1}x"#,
            r#"{"cops_heartbeat":1,"pid":1,}"#,
            "",
            "{",
        ];
        for body in other {
            assert!(parse(body.as_bytes()).is_none(), "{body}");
        }
    }

    #[test]
    fn random_bodies_of_reply_pieces_agree_with_serde() {
        // Objects of random members (keys and values replies are made of),
        // sometimes with a stray piece: the same 50,000 bodies every run
        // (a fixed LCG).
        const KEYS: &[&str] = &[
            "cops_heartbeat",
            "pid",
            "version_tag",
            "version_commit",
            "version_build",
            "loop",
            "x",
            "count",
        ];
        const VALUES: &[&str] = &[
            "0",
            "17",
            "-3",
            "-0",
            "007",
            "1.5",
            "1e2",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775808",
            "null",
            "\"sim\"",
            "\"\"",
            "\"a\\\"b\"",
            "true",
            "[1]",
            "{\"value\":5}",
            "{\"count\":1,\"max_us\":2,\"p99_us\":3}",
            "{\"count\":1,\"max_us\":2}",
            "{\"p99_us\":3,\"max_us\":2,\"count\":1,\"count\":1}",
        ];
        const STRAY: &[&str] = &[" ", ",", "}", "{", ":", "\"", "\\", "é"];
        let mut seed: u64 = 0x5eed;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let mut taken = 0;
        for _ in 0..50_000 {
            let mut body = String::from("{\"cops_heartbeat\":5,\"pid\":42");
            for _ in 0..next(5) {
                let (k, v) = (KEYS[next(KEYS.len())], VALUES[next(VALUES.len())]);
                body.push_str(&format!(",\"{k}\":{v}"));
            }
            body.push('}');
            if next(4) == 0 {
                let at = next(body.len() + 1);
                if body.is_char_boundary(at) {
                    body.insert_str(at, STRAY[next(STRAY.len())]);
                }
            }
            check(body.as_bytes());
            taken += usize::from(parse(body.as_bytes()).is_some());
        }
        // Not vacuous: many of them are usual replies.
        assert!(taken > 1_000, "{taken}");
    }

    #[test]
    fn fixtures_and_their_mutations_agree_with_serde() {
        for (_, body) in FIXTURES {
            let b = body.trim().as_bytes();
            check(b);
            // Every truncation, and every byte replaced by a few others.
            for cut in 0..b.len() {
                check(&b[..cut]);
                for x in [b'"', b'0', b'-', b',', b'}', b'{', b' ', b'\\', b'n', 0xc3] {
                    let mut m = b.to_vec();
                    m[cut] = x;
                    check(&m);
                }
            }
        }
    }
}
