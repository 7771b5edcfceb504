//! Parsing heartbeat replies (no judgement), and the hash of the reply-URI map.

use std::borrow::Cow;

use serde_json::Value;

/// A parsed heartbeat reply.
pub(super) struct Reply<'a> {
    pub(super) heartbeat: u64,
    pub(super) pid: i64,
    pub(super) versions: [Option<Cow<'a, str>>; 3],
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
}

/// Parses `{"cops_heartbeat":17,"pid":4242,"version_tag":...}` (clothed
/// `{"value":..}` fields accepted too).
pub(super) fn parse_reply(body: &[u8]) -> Result<Reply<'_>, String> {
    if let Ok(r) = serde_json::from_slice::<PlainReply<'_>>(body) {
        return Ok(Reply {
            heartbeat: r.cops_heartbeat,
            pid: r.pid,
            versions: [r.version_tag, r.version_commit, r.version_build]
                .map(|v| v.map(Cow::Borrowed)),
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
    })
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
