//! The sans-IO core: no sockets, no clock reads, no threads.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::json::{self, Out};
use crate::meter::{Beat, LoopStats, Meter};
use crate::pet::PetHandle;

/// Longest echo of a wire-supplied name or method inside an error answer.
const MAX_ECHO: usize = 64;

/// What [`Responder::handle`] did with a message.
#[must_use = "a Reply must be sent as `set <replyto>` with the reply body"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not under `<base_uri>/cops`: the host handles the message as usual.
    NotMine,
    /// The responder's message, and nothing to send (no replyto, or the
    /// liveness gate is closed).
    Handled,
    /// The responder's message: send `set <replyto>` with the reply body.
    Reply,
}

impl Outcome {
    /// True unless [`Outcome::NotMine`].
    pub fn is_mine(self) -> bool {
        self != Outcome::NotMine
    }
}

/// A bad configuration given to [`Responder::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The process name is empty or over 255 bytes (FIMS limits).
    InvalidName {
        /// Its length in bytes.
        len: usize,
    },
    /// The base URI cannot carry a responder.
    InvalidUri {
        /// The URI given.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidName { len } => {
                write!(f, "process name is {len} bytes; FIMS allows 1..=255")
            }
            ConfigError::InvalidUri { uri, reason } => write!(f, "base uri {uri:?} {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The fields under `<base_uri>/cops`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Heartbeat,
    Pid,
    Tag,
    Commit,
    Build,
    Loop,
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "cops_heartbeat" => Field::Heartbeat,
            "pid" => Field::Pid,
            "version_tag" => Field::Tag,
            "version_commit" => Field::Commit,
            "version_build" => Field::Build,
            "loop" => Field::Loop,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::Heartbeat => "cops_heartbeat",
            Field::Pid => "pid",
            Field::Tag => "version_tag",
            Field::Commit => "version_commit",
            Field::Build => "version_build",
            Field::Loop => "loop",
        }
    }

    fn version_index(self) -> Option<usize> {
        match self {
            Field::Tag => Some(0),
            Field::Commit => Some(1),
            Field::Build => Some(2),
            _ => None,
        }
    }
}

/// The COPS heartbeat responder of one process (see the crate docs).
///
/// Method kinds: getters ([`heartbeat`](Self::heartbeat), [`cops_uri`](Self::cops_uri),
/// ...), configuration ([`set_version`](Self::set_version),
/// [`set_liveness_window`](Self::set_liveness_window)), the work loop's inputs
/// [`pet`](Self::pet) and [`loop_tick`](Self::loop_tick) (also through a
/// [`PetHandle`] from another thread), and the one message input
/// [`handle`](Self::handle) / [`handle_message`](Self::handle_message), which
/// writes the answer into a caller-owned buffer.
///
/// Clones share the liveness signal and the loop meter (pets and ticks reach
/// every clone, and one clone's heartbeat answer starts the next beat for all).
#[derive(Debug, Clone)]
pub struct Responder {
    process_name: String,
    base_uri: String,
    /// `<base_uri>/cops`.
    cops_uri: String,
    heartbeat: u64,
    /// Tag, commit, build; empty means unset (answered as `""`).
    version: [String; 3],
    /// `,"version_tag":"..","version_commit":"..","version_build":".."`,
    /// escaped once at configuration.
    version_json: Vec<u8>,
    window: Option<Duration>,
    /// Pets, ticks and the loop histogram, shared with [`PetHandle`]s.
    meter: Arc<Meter>,
    /// What the last heartbeat answer took from the meter, until the next
    /// message (so a C host whose buffer was too small can ask again).
    last_beat: Option<Beat>,
}

impl Responder {
    /// A responder for process `process_name` (1..=255 bytes, the name it
    /// connects to FIMS with) at `base_uri` (e.g. `/site`: starts with `/`, no
    /// empty segments, no trailing `/`, not `/` itself, short enough that
    /// `<base_uri>/cops/version_commit` fits FIMS's 255-byte URIs).
    pub fn new(process_name: &str, base_uri: &str) -> Result<Responder, ConfigError> {
        if process_name.is_empty() || process_name.len() > fims::codec::MAX_STRING_LEN {
            return Err(ConfigError::InvalidName {
                len: process_name.len(),
            });
        }
        let bad = |reason| ConfigError::InvalidUri {
            uri: base_uri.to_owned(),
            reason,
        };
        fims::uri::validate(base_uri).map_err(bad)?;
        if base_uri == "/" {
            return Err(bad("is the root; a process needs a base uri of its own"));
        }
        if base_uri.len() + "/cops/version_commit".len() > fims::codec::MAX_STRING_LEN {
            return Err(bad(
                "is too long for <uri>/cops/version_commit to fit in 255 bytes",
            ));
        }
        Ok(Responder {
            process_name: process_name.to_owned(),
            base_uri: base_uri.to_owned(),
            cops_uri: format!("{base_uri}/cops"),
            heartbeat: 0,
            version: Default::default(),
            version_json: version_json(["", "", ""]),
            window: None,
            meter: Arc::new(Meter::new()),
            last_beat: None,
        })
    }

    /// Sets the version strings answered in the object and by
    /// `get <uri>/cops/version_*`. All three are always in the object: an
    /// empty string is answered as `""` (the existing COPS logs an error for
    /// every reply that lacks one).
    pub fn set_version(&mut self, tag: &str, commit: &str, build: &str) {
        self.version = [tag.to_owned(), commit.to_owned(), build.to_owned()];
        self.version_json = version_json([tag, commit, build]);
    }

    /// Turns the liveness gate on (`Some(window)`) or off (`None`, the default).
    /// With a window the responder answers only while the last [`pet`](Self::pet)
    /// or [`loop_tick`](Self::loop_tick) is at most `window` old; never petted
    /// counts as stale.
    pub fn set_liveness_window(&mut self, window: Option<Duration>) {
        self.window = window;
    }

    /// Tells the responder the work loop is alive at `now`. Call it from the
    /// loop that does the process's real work. An older instant than the
    /// latest pet does not move it back.
    pub fn pet(&self, now: Instant) {
        self.meter.pet(now);
    }

    /// Marks the end of one iteration of the work loop at `now` (it pets too).
    ///
    /// From the first tick on, the heartbeat answer carries
    /// `"loop":{"count":N,"max_us":M,"p99_us":P}`: the iterations since the
    /// previous answer, the longest of them, and the 99th percentile over the
    /// rolling minute (see [`LoopStats`]). The first tick only starts the
    /// clock. A few relaxed atomic operations, no allocation, no lock; call it
    /// from one thread (the work loop's), through a [`PetHandle`] when the
    /// responder lives on another.
    #[inline]
    pub fn loop_tick(&self, now: Instant) {
        self.meter.tick(now);
    }

    /// A handle for pets and ticks from another thread or task.
    pub fn pet_handle(&self) -> PetHandle {
        PetHandle::new(Arc::clone(&self.meter))
    }

    /// The loop figures now (`None` until the first tick). Reading them does
    /// not start a new beat; only the heartbeat answer does.
    pub fn loop_stats(&self) -> Option<LoopStats> {
        self.meter.stats()
    }

    /// Whether the responder would answer at `now` (always, without a window).
    pub fn is_live(&self, now: Instant) -> bool {
        match self.window {
            None => true,
            Some(w) => self.meter.alive_within(now, w),
        }
    }

    /// The last heartbeat value stored (0 until the first good `set`).
    pub fn heartbeat(&self) -> u64 {
        self.heartbeat
    }

    /// `<base_uri>/cops`: the URI to subscribe to.
    pub fn cops_uri(&self) -> &str {
        &self.cops_uri
    }

    /// The base URI given to [`new`](Self::new).
    pub fn base_uri(&self) -> &str {
        &self.base_uri
    }

    /// The process name given to [`new`](Self::new).
    pub fn process_name(&self) -> &str {
        &self.process_name
    }

    /// The liveness window, if the gate is on.
    pub fn liveness_window(&self) -> Option<Duration> {
        self.window
    }

    /// Whether `uri` is the responder's: `<base_uri>/cops` or below it, by
    /// the broker's routing rule (empty segments do not count).
    pub fn owns(&self, uri: &str) -> bool {
        fims::uri::routes(&self.cops_uri, uri)
    }

    /// Handles one received message.
    ///
    /// `reply` is cleared first. [`Outcome::Reply`]: `reply` holds the body to
    /// send as `set <replyto>`. [`Outcome::Handled`]: nothing to send.
    /// [`Outcome::NotMine`]: the message is outside `<base_uri>/cops`; it is
    /// the host's. `replyto` may be `None` or empty for "no replyto".
    /// Once `reply` has grown to fit, this does not allocate for any `get`
    /// nor for a naked-integer `set`.
    pub fn handle(
        &mut self,
        now: Instant,
        method: &str,
        uri: &str,
        replyto: Option<&str>,
        body: &[u8],
        reply: &mut Vec<u8>,
    ) -> Outcome {
        reply.clear();
        self.handle_into(now, method, uri, replyto, body, reply)
    }

    /// The longest answer [`handle`](Self::handle) can write for a message
    /// whose method and URI are this long: error answers echo both (escaped,
    /// at most 6 bytes per byte), the object carries the version strings.
    pub(crate) fn answer_bound(&self, method_len: usize, uri_len: usize) -> usize {
        256 + self.version_json.len() + 6 * (method_len.min(MAX_ECHO) + uri_len)
    }

    /// [`handle`](Self::handle) writing into any [`Out`] (empty on entry).
    pub(crate) fn handle_into<O: Out>(
        &mut self,
        now: Instant,
        method: &str,
        uri: &str,
        replyto: Option<&str>,
        body: &[u8],
        reply: &mut O,
    ) -> Outcome {
        self.last_beat = None;
        // The broker's rule decides what is ours (empty segments collapse:
        // `/site//cops/x` is `/site/cops/x`), so what it routes here is answered.
        let Some(rest) = fims::uri::route_rest(&self.cops_uri, uri) else {
            return Outcome::NotMine;
        };
        let rest = rest.trim_matches('/');
        let field = (!rest.is_empty()).then_some(rest);
        if method == "set" && field == Some("cops_heartbeat") {
            // The value is stored even while the gate is closed: the gate
            // silences answers, it does not lose COPS's counter.
            let parsed = json::parse_heartbeat(body);
            if let Ok(n) = parsed {
                self.heartbeat = n;
            }
            if !self.may_answer(now, replyto) {
                return Outcome::Handled;
            }
            match parsed {
                Ok(_) => json::push_u64(reply, self.heartbeat),
                Err(e) => reply.put(e.answer().as_bytes()),
            }
            return Outcome::Reply;
        }
        if !self.may_answer(now, replyto) {
            return Outcome::Handled;
        }
        match (method, field) {
            ("get", None) => self.write_object(reply),
            (_, Some(name)) if Field::parse(name).is_none() => {
                write_unknown(reply, &self.cops_uri, name)
            }
            ("get", Some(name)) => match Field::parse(name) {
                Some(f) => self.write_field(f, reply),
                None => write_unknown(reply, &self.cops_uri, name),
            },
            _ => {
                reply.put(b"\"Error: method '");
                json::push_escaped(reply, truncate(method, MAX_ECHO));
                reply.put(b"' is not supported on ");
                json::push_escaped(reply, uri);
                reply.byte(b'"');
            }
        }
        Outcome::Reply
    }

    /// [`handle`](Self::handle) for a decoded FIMS message.
    pub fn handle_message(
        &mut self,
        now: Instant,
        msg: &fims::Message<'_>,
        reply: &mut Vec<u8>,
    ) -> Outcome {
        self.handle(now, msg.method, msg.uri, msg.replyto(), msg.body, reply)
    }

    fn may_answer(&self, now: Instant, replyto: Option<&str>) -> bool {
        replyto.is_some_and(|r| !r.is_empty()) && self.is_live(now)
    }

    /// `{"cops_heartbeat":N,"pid":P,"version_tag":..}`, the answer to `get
    /// <uri>/cops`, with `"loop":{..}` once the host ticks. It starts a new beat.
    fn write_object<O: Out>(&mut self, out: &mut O) {
        out.put(b"{\"cops_heartbeat\":");
        json::push_u64(out, self.heartbeat);
        out.put(b",\"pid\":");
        json::push_u64(out, u64::from(crate::pid::current()));
        out.put(&self.version_json);
        if self.meter.ticks() > 0 {
            let beat = self.meter.take_beat();
            out.put(b",\"loop\":{\"count\":");
            json::push_u64(out, beat.count);
            out.put(b",\"max_us\":");
            json::push_u64(out, beat.max_us);
            out.put(b",\"p99_us\":");
            json::push_u64(out, self.meter.p99());
            out.byte(b'}');
            self.last_beat = Some(beat);
        }
        out.byte(b'}');
    }

    /// Gives back to the meter what the last message's heartbeat answer took,
    /// when that answer was not delivered (a C host's buffer was too small and
    /// it asks again): the next answer then covers the same iterations.
    pub(crate) fn answer_not_sent(&mut self) {
        if let Some(beat) = self.last_beat.take() {
            self.meter.restore_beat(&beat);
        }
    }

    /// The meter, for the C ABI's tick from another thread.
    pub(crate) fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    fn write_field<O: Out>(&self, f: Field, out: &mut O) {
        match f {
            Field::Heartbeat => json::push_u64(out, self.heartbeat),
            Field::Pid => json::push_u64(out, u64::from(crate::pid::current())),
            Field::Loop => match self.meter.stats() {
                Some(s) => write_stats(out, &s),
                None => write_error(out, &["loop is not measured: the host never ticks"]),
            },
            _ => {
                let i = f.version_index().unwrap_or(0);
                json::push_str(out, &self.version[i]);
            }
        }
    }
}

/// `,"version_tag":"..","version_commit":"..","version_build":".."`.
fn version_json(values: [&str; 3]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for (field, value) in [Field::Tag, Field::Commit, Field::Build]
        .into_iter()
        .zip(values)
    {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(field.name().as_bytes());
        out.extend_from_slice(b"\":");
        json::push_str(&mut out, value);
    }
    out
}

/// The answer to `get <uri>/cops/loop`: every figure, nothing reset.
fn write_stats<O: Out>(out: &mut O, s: &LoopStats) {
    let fields = [
        ("{\"ticks\":", s.ticks),
        (",\"count\":", s.count),
        (",\"max_us\":", s.max_us),
        (",\"minute_count\":", s.minute_count),
        (",\"p50_us\":", s.p50_us),
        (",\"p99_us\":", s.p99_us),
        (",\"minute_max_us\":", s.minute_max_us),
    ];
    for (key, value) in fields {
        out.put(key.as_bytes());
        json::push_u64(out, value);
    }
    out.byte(b'}');
}

/// Writes `"Error: <parts...>"` (the parts are trusted text, escaped anyway).
fn write_error<O: Out>(out: &mut O, parts: &[&str]) {
    out.put(b"\"Error: ");
    for p in parts {
        json::push_escaped(out, p);
    }
    out.byte(b'"');
}

fn write_unknown<O: Out>(out: &mut O, cops_uri: &str, name: &str) {
    out.put(b"\"Error: no field '");
    json::push_escaped(out, truncate(name, MAX_ECHO));
    out.put(b"' under ");
    json::push_escaped(out, cops_uri);
    out.put(b"; known: cops_heartbeat, pid, version_tag, version_commit, version_build, loop\"");
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
