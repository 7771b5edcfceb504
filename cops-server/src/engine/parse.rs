//! Parsing heartbeat replies (no judgement), and the hash of the reply-URI map.

use std::borrow::Cow;

use serde_json::Value;

mod fast;

/// A parsed heartbeat reply.
pub(super) struct Reply<'a> {
    pub(super) heartbeat: u64,
    pub(super) pid: i64,
    pub(super) versions: [Option<Cow<'a, str>>; 3],
    /// The work loop's figures (second edition), when the host ticks.
    pub(super) loop_: LoopField,
}

/// The work loop's figures of one beat:
/// `"loop":{"count":N,"max_us":M,"p99_us":P}` (keys it does not know are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LoopFigures {
    /// Iterations ended since the previous heartbeat answer.
    pub(super) count: u64,
    /// The longest of them, microseconds (0 when `count` is 0).
    pub(super) max_us: u64,
    /// 99th percentile of the iterations of the last minute, microseconds.
    pub(super) p99_us: u64,
}

/// Only a JSON object is the protocol's `loop` (serde's derive would also
/// take an array by position); keys are borrowed, so one with an escape sends
/// the reply to the slow path, which reads it alike.
impl<'de> serde::Deserialize<'de> for LoopFigures {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FiguresVisitor)
    }
}

struct FiguresVisitor;

impl<'de> serde::de::Visitor<'de> for FiguresVisitor {
    type Value = LoopFigures;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with count, max_us and p99_us")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<LoopFigures, A::Error> {
        let (mut count, mut max_us, mut p99_us) = (None, None, None);
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "count" => count = Some(map.next_value::<u64>()?),
                "max_us" => max_us = Some(map.next_value::<u64>()?),
                "p99_us" => p99_us = Some(map.next_value::<u64>()?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        match (count, max_us, p99_us) {
            (Some(count), Some(max_us), Some(p99_us)) => Ok(LoopFigures {
                count,
                max_us,
                p99_us,
            }),
            _ => Err(serde::de::Error::custom(
                "loop lacks count, max_us or p99_us",
            )),
        }
    }
}

/// The `loop` member of a reply. A bad one does not spoil the heartbeat:
/// the pulse is judged as always, the loop is not judged on that reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LoopField {
    /// No `loop` (a host that never ticks, or any existing process), or `null`.
    Absent,
    /// The figures.
    Figures(LoopFigures),
    /// Present but not the object of the protocol, and why.
    Bad(String),
}

/// The usual reply, parsed without building a JSON tree.
#[derive(serde::Deserialize)]
struct PlainReply<'a> {
    cops_heartbeat: u64,
    pid: i64,
    #[serde(borrow, default)]
    version_tag: Option<&'a str>,
    #[serde(borrow, default)]
    version_commit: Option<&'a str>,
    #[serde(borrow, default)]
    version_build: Option<&'a str>,
    #[serde(default, rename = "loop")]
    loop_: Option<LoopFigures>,
}

/// Parses `{"cops_heartbeat":17,"pid":4242,"version_tag":...}` (clothed
/// `{"value":..}` fields accepted too). The usual compact reply is read in
/// one pass ([`fast`]); anything else takes the serde path.
pub(super) fn parse_reply(body: &[u8]) -> Result<Reply<'_>, String> {
    match fast::parse(body) {
        Some(r) => Ok(r),
        None => serde_path(body),
    }
}

/// [`parse_reply`] through serde: derive first, then a JSON tree.
pub(super) fn serde_path(body: &[u8]) -> Result<Reply<'_>, String> {
    if let Ok(r) = serde_json::from_slice::<PlainReply<'_>>(body) {
        return Ok(Reply {
            heartbeat: r.cops_heartbeat,
            pid: r.pid,
            versions: [r.version_tag, r.version_commit, r.version_build]
                .map(|v| v.map(Cow::Borrowed)),
            loop_: r.loop_.map_or(LoopField::Absent, LoopField::Figures),
        });
    }
    // Anything else (clothed values, escapes, errors) the slow way.
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let field = |k: &str| {
        obj.get(k)
            .map(|v| v.as_object().and_then(|o| o.get("value")).unwrap_or(v))
    };
    let heartbeat = field("cops_heartbeat")
        .ok_or("no cops_heartbeat")?
        .as_u64()
        .ok_or("cops_heartbeat is not a non-negative integer")?;
    let pid = field("pid")
        .ok_or("no pid")?
        .as_i64()
        .ok_or("pid is not an integer")?;
    let version = |k: &str| {
        field(k)
            .and_then(Value::as_str)
            .map(|s| Cow::Owned(s.to_owned()))
    };
    Ok(Reply {
        heartbeat,
        pid,
        versions: [
            version("version_tag"),
            version("version_commit"),
            version("version_build"),
        ],
        loop_: loop_field(obj.get("loop")),
    })
}

/// The `loop` member read the slow way (the fast path refused the reply).
fn loop_field(v: Option<&Value>) -> LoopField {
    let obj = match v {
        None | Some(Value::Null) => return LoopField::Absent,
        Some(Value::Object(o)) => o,
        Some(other) => return LoopField::Bad(format!("loop is not an object: {other}")),
    };
    let get = |k: &str| {
        obj.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("loop.{k} is missing or not a non-negative integer"))
    };
    match (get("count"), get("max_us"), get("p99_us")) {
        (Ok(count), Ok(max_us), Ok(p99_us)) => LoopField::Figures(LoopFigures {
            count,
            max_us,
            p99_us,
        }),
        (Err(why), ..) | (_, Err(why), _) | (.., Err(why)) => LoopField::Bad(why),
    }
}

/// A hash of a reply's three version fields (absent and empty differ).
pub(super) fn versions_hash(v: &[Option<Cow<'_, str>>; 3]) -> u64 {
    use std::hash::Hasher;
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for f in v {
        match f {
            Some(s) => {
                h.write(s.as_bytes());
                h.write(&[0xff]);
            }
            None => h.write(&[0xfe]),
        }
    }
    h.finish()
}

/// FNV-1a for the reply-URI map: the keys are our own configured names (no
/// untrusted input chooses them), so a fast non-keyed hash is fine.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BuildFnv;

#[derive(Debug)]
pub(super) struct Fnv(u64);

impl std::hash::BuildHasher for BuildFnv {
    type Hasher = Fnv;
    fn build_hasher(&self) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
