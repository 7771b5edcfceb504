//! The message datagram: a 12-byte header, five length-prefixed strings and a body.
//!
//! Decoding borrows from the datagram and never allocates; encoding appends to a
//! caller-owned buffer so a warm client allocates nothing per message.

use crate::error::DecodeError;

/// Size of the fixed header in front of every message datagram.
pub const HEADER_LEN: usize = 12;
/// Longest method, uri, replyto, process name or username (one length byte each).
pub const MAX_STRING_LEN: usize = 255;
/// Bytes of header plus the five strings at their longest.
pub const MAX_OVERHEAD: usize = HEADER_LEN + 5 * MAX_STRING_LEN;
/// The handshake number the existing broker announces: the largest *whole*
/// datagram (header, strings and body) it accepts and delivers.
pub const DEFAULT_MAX_LEN: u32 = 924_288;

/// The methods of FIMS. Data messages are `set`, `get`, `pub`, `post`, `del`;
/// `sub` is a request to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Write a value.
    Set,
    /// Ask for a value (answered on the replyto).
    Get,
    /// Publish: delivered to pub-only subscribers too.
    Pub,
    /// Create.
    Post,
    /// Delete.
    Del,
    /// Subscribe (to the broker only).
    Sub,
}

impl Method {
    /// The wire spelling (lowercase).
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Set => "set",
            Method::Get => "get",
            Method::Pub => "pub",
            Method::Post => "post",
            Method::Del => "del",
            Method::Sub => "sub",
        }
    }

    /// Parses the wire spelling; `None` for an unknown method.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "set" => Method::Set,
            "get" => Method::Get,
            "pub" => Method::Pub,
            "post" => Method::Post,
            "del" => Method::Del,
            "sub" => Method::Sub,
            _ => return None,
        })
    }

    /// True for the methods a pub-only subscription does not receive.
    pub const fn is_request(self) -> bool {
        matches!(self, Method::Set | Method::Get | Method::Post | Method::Del)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::parse(&s.to_ascii_lowercase()).ok_or_else(|| format!("unknown method {s:?}"))
    }
}

/// One message datagram, borrowing its strings and body.
///
/// `method` is kept as text: the broker's own answers have an empty method, and
/// a broker must be able to count unknown methods rather than fail to decode them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Message<'a> {
    /// `set`, `get`, `pub`, `post`, `del`, `sub`, or empty (broker answers).
    pub method: &'a str,
    /// Target URI.
    pub uri: &'a str,
    /// Where the answer should go; empty for none.
    pub replyto: &'a str,
    /// Sender's process name.
    pub process_name: &'a str,
    /// Sender's Unix user, stamped by the broker.
    pub username: &'a str,
    /// Opaque body, by convention UTF-8 JSON.
    pub body: &'a [u8],
}

impl<'a> Message<'a> {
    /// A message with the given method, uri and body and every other string empty.
    pub fn new(method: Method, uri: &'a str, body: &'a [u8]) -> Self {
        Message {
            method: method.as_str(),
            uri,
            body,
            ..Message::default()
        }
    }

    /// Typed method, `None` when unknown or empty.
    pub fn method(&self) -> Option<Method> {
        Method::parse(self.method)
    }

    /// The replyto, `None` when empty.
    pub fn replyto(&self) -> Option<&'a str> {
        (!self.replyto.is_empty()).then_some(self.replyto)
    }

    /// The body as UTF-8 text, if it is.
    pub fn body_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.body).ok()
    }

    /// Exact size of this message on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + self.method.len()
            + self.uri.len()
            + self.replyto.len()
            + self.process_name.len()
            + self.username.len()
            + self.body.len()
    }

    /// Copies into an [`OwnedMessage`].
    pub fn to_owned(&self) -> OwnedMessage {
        OwnedMessage {
            method: self.method.to_owned(),
            uri: self.uri.to_owned(),
            replyto: self.replyto.to_owned(),
            process_name: self.process_name.to_owned(),
            username: self.username.to_owned(),
            body: self.body.to_vec(),
        }
    }

    /// Appends the datagram to `out`. Fails (leaving `out` as it was) when a
    /// string is over 255 bytes or the body over `u32::MAX`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.reserve(self.encoded_len());
        write_header(out, self.strings(), self.body.len())?;
        out.extend_from_slice(self.body);
        Ok(())
    }

    /// The five strings in wire order: method, uri, replyto, process name, username.
    pub fn strings(&self) -> [&'a str; 5] {
        [
            self.method,
            self.uri,
            self.replyto,
            self.process_name,
            self.username,
        ]
    }

    /// Decodes one whole datagram. Checks the structure only (exact length,
    /// UTF-8 strings); see [`Message::check_data`] for the broker's routing rules.
    pub fn decode(buf: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let header: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DecodeError::Short { len: buf.len() })?;
        let data_len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let lens = [header[0], header[1], header[2], header[3], header[4]].map(usize::from);
        let strings_end = HEADER_LEN + lens.iter().sum::<usize>();
        let expected = strings_end + data_len;
        if expected != buf.len() {
            return Err(DecodeError::Length {
                expected,
                actual: buf.len(),
            });
        }
        // In bounds: the total length was checked above.
        let region = &buf[HEADER_LEN..strings_end];
        // One UTF-8 validation for the five strings together (the common case):
        // each is then valid on its own when its ends fall on character
        // boundaries, which `str::get` checks. Otherwise each is validated
        // alone, to name the field that is not UTF-8.
        let strs = match std::str::from_utf8(region) {
            Ok(all) => split_strings(all, lens),
            Err(_) => None,
        };
        let strs = match strs {
            Some(strs) => strs,
            None => validate_strings(region, lens)?,
        };
        let [method, uri, replyto, process_name, username] = strs;
        Ok(Message {
            method,
            uri,
            replyto,
            process_name,
            username,
            body: &buf[strings_end..],
        })
    }

    /// The broker's check of a decoded datagram: a known method, and for data
    /// messages a uri that starts with `/`.
    pub fn check_data(&self) -> Result<Method, DecodeError> {
        let method = self.method().ok_or(DecodeError::UnknownMethod)?;
        if method != Method::Sub && !self.uri.starts_with('/') {
            return Err(DecodeError::BadUri);
        }
        Ok(method)
    }
}

/// The five strings of `all` with lengths `lens`, back to back; `None` when a
/// boundary falls inside a character.
fn split_strings(all: &str, lens: [usize; 5]) -> Option<[&str; 5]> {
    let mut strs = [""; 5];
    let mut pos = 0;
    for (slot, len) in strs.iter_mut().zip(lens) {
        *slot = all.get(pos..pos + len)?;
        pos += len;
    }
    Some(strs)
}

/// The five strings of `region` with lengths `lens`, each validated alone.
fn validate_strings(region: &[u8], lens: [usize; 5]) -> Result<[&str; 5], DecodeError> {
    let mut strs = [""; 5];
    let mut pos = 0;
    for ((slot, len), field) in strs.iter_mut().zip(lens).zip(STRING_NAMES) {
        let bytes = region.get(pos..pos + len).unwrap_or_default();
        *slot = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8 { field })?;
        pos += len;
    }
    Ok(strs)
}

/// Names of the five strings in wire order (for errors).
const STRING_NAMES: [&str; 5] = ["method", "uri", "replyto", "process_name", "username"];

/// Appends everything of a message datagram but its body to `out`: the
/// 12-byte header (the five string lengths, zero padding, `body_len` little
/// endian) and the five strings in wire order (method, uri, replyto, process
/// name, username). The body, written after it by the caller (or sent as a
/// second part of the same datagram), completes the datagram.
///
/// This is the one place the header layout is written: [`Message::encode`]
/// uses it, and so does the broker when it rewrites a message's process
/// name and username on the way through. Fails (leaving `out` as it was) when
/// a string is over 255 bytes or `body_len` over `u32::MAX`.
pub fn write_header(
    out: &mut Vec<u8>,
    strings: [&str; 5],
    body_len: usize,
) -> Result<(), EncodeError> {
    let mut header = [0u8; HEADER_LEN];
    let mut total = HEADER_LEN;
    for (i, s) in strings.iter().enumerate() {
        header[i] = u8::try_from(s.len()).map_err(|_| EncodeError::StringTooLong {
            field: STRING_NAMES[i],
            len: s.len(),
        })?;
        total += s.len();
    }
    let data_len =
        u32::try_from(body_len).map_err(|_| EncodeError::BodyTooLarge { len: body_len })?;
    header[8..].copy_from_slice(&data_len.to_le_bytes());
    out.reserve(total);
    out.extend_from_slice(&header);
    for s in strings {
        out.extend_from_slice(s.as_bytes());
    }
    Ok(())
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string field is over 255 bytes.
    #[error("{field} is {len} bytes, over the 255-byte limit of FIMS")]
    StringTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The body does not fit a u32 length.
    #[error("body of {len} bytes does not fit a FIMS datagram")]
    BodyTooLarge {
        /// Its length.
        len: usize,
    },
}

/// A message that owns its strings and body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedMessage {
    /// See [`Message::method`].
    pub method: String,
    /// Target URI.
    pub uri: String,
    /// Reply URI, empty for none.
    pub replyto: String,
    /// Sender's process name.
    pub process_name: String,
    /// Sender's Unix user.
    pub username: String,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl OwnedMessage {
    /// Borrows as a [`Message`].
    pub fn as_message(&self) -> Message<'_> {
        Message {
            method: &self.method,
            uri: &self.uri,
            replyto: &self.replyto,
            process_name: &self.process_name,
            username: &self.username,
            body: &self.body,
        }
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The 8-byte handshake datagram both sides send first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// Layout version; only 1 exists.
    pub version: u16,
    /// Largest whole datagram (header, strings and body) the broker accepts and
    /// delivers; the existing broker announces 924288.
    pub max_len: u32,
}

/// The only message layout version.
pub const LAYOUT_VERSION: u16 = 1;

impl Handshake {
    /// Length of the handshake datagram.
    pub const LEN: usize = 8;

    /// Encodes with zero padding.
    pub fn encode(&self) -> [u8; 8] {
        let v = self.version.to_le_bytes();
        let m = self.max_len.to_le_bytes();
        [v[0], v[1], 0, 0, m[0], m[1], m[2], m[3]]
    }

    /// Decodes; the padding bytes are ignored (some clients send garbage there).
    pub fn decode(buf: &[u8]) -> Result<Handshake, DecodeError> {
        let b: &[u8; 8] = buf
            .try_into()
            .map_err(|_| DecodeError::Handshake { len: buf.len() })?;
        Ok(Handshake {
            version: u16::from_le_bytes([b[0], b[1]]),
            max_len: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

/// Most URIs one `sub` datagram may carry (the existing broker's limit: the
/// count is one byte).
pub const MAX_SUBS_PER_DATAGRAM: usize = 255;

/// One subscription: a URI prefix and whether only `pub` messages are wanted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    /// URI (segment prefix).
    pub uri: String,
    /// Receive only `pub` messages.
    pub pub_only: bool,
}

impl Subscription {
    /// A subscription to every method.
    pub fn all(uri: impl Into<String>) -> Self {
        Subscription {
            uri: uri.into(),
            pub_only: false,
        }
    }
    /// A pub-only subscription.
    pub fn pub_only(uri: impl Into<String>) -> Self {
        Subscription {
            uri: uri.into(),
            pub_only: true,
        }
    }
}

/// Encodes the body of a `sub` datagram (1..=255 URIs of at most 255 bytes).
pub fn encode_sub_body(subs: &[Subscription], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if subs.is_empty() || subs.len() > MAX_SUBS_PER_DATAGRAM {
        return Err(EncodeError::StringTooLong {
            field: "subscription count",
            len: subs.len(),
        });
    }
    for s in subs {
        if s.uri.len() > MAX_STRING_LEN {
            return Err(EncodeError::StringTooLong {
                field: "subscription uri",
                len: s.uri.len(),
            });
        }
    }
    out.push(subs.len() as u8);
    for s in subs {
        out.push(u8::from(s.pub_only));
        out.push(s.uri.len() as u8);
    }
    for s in subs {
        out.extend_from_slice(s.uri.as_bytes());
    }
    Ok(())
}

/// Decodes the body of a `sub` datagram into `(uri, pub_only)` pairs.
pub fn decode_sub_body(body: &[u8]) -> Result<Vec<(&str, bool)>, DecodeError> {
    let (&count, rest) = body
        .split_first()
        .ok_or(DecodeError::SubBody("empty body"))?;
    let count = usize::from(count);
    if count == 0 {
        // The count is one byte, so 255 (MAX_SUBS_PER_DATAGRAM) is the most it can say.
        return Err(DecodeError::SubBody("count must be 1..=255"));
    }
    let table = rest
        .get(..2 * count)
        .ok_or(DecodeError::SubBody("truncated table"))?;
    let mut uris = &rest[2 * count..];
    let total: usize = table.chunks_exact(2).map(|e| usize::from(e[1])).sum();
    if total != uris.len() {
        return Err(DecodeError::SubBody(
            "uri lengths do not add up to the body",
        ));
    }
    let mut out = Vec::with_capacity(count);
    for entry in table.chunks_exact(2) {
        let pub_only = match entry[0] {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::SubBody("pub_only must be 0 or 1")),
        };
        let (uri, tail) = uris.split_at(usize::from(entry[1]));
        uris = tail;
        let uri = std::str::from_utf8(uri).map_err(|_| DecodeError::NotUtf8 {
            field: "subscription uri",
        })?;
        if !uri.starts_with('/') {
            return Err(DecodeError::SubBody("subscription uri must start with '/'"));
        }
        out.push((uri, pub_only));
    }
    Ok(out)
}
