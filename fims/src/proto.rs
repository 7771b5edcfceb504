//! Client-side protocol steps shared by the blocking and tokio clients.

use crate::codec::{
    encode_sub_body, Handshake, Message, Method, Subscription, HEADER_LEN, LAYOUT_VERSION,
    MAX_STRING_LEN, MAX_SUBS_PER_DATAGRAM,
};
use crate::error::{Error, Result};

/// How long a client waits for the broker's handshake and subscribe answers
/// when the caller gives no deadline of its own.
pub(crate) const BROKER_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Pause before connecting again when the broker's listen backlog is full (a
/// nonblocking Unix connect then fails with `EAGAIN` and there is nothing to poll).
pub(crate) const CONNECT_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// Checks a process name for the handshake.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_STRING_LEN {
        return Err(Error::NameLength {
            field: "process name",
            len: name.len(),
        });
    }
    Ok(())
}

/// Reads the broker's handshake and returns the one to send back.
pub(crate) fn answer_handshake(buf: &[u8]) -> Result<Handshake> {
    let hs = Handshake::decode(buf).map_err(Error::BadHandshake)?;
    if hs.version != LAYOUT_VERSION {
        return Err(Error::VersionMismatch(hs.version));
    }
    Ok(hs)
}

/// The 8-byte handshake a client answers with: layout version 1 and the
/// broker's own `max_len` echoed (the existing broker requires the echo).
pub(crate) fn our_handshake(broker: &Handshake) -> [u8; Handshake::LEN] {
    Handshake {
        version: LAYOUT_VERSION,
        max_len: broker.max_len,
    }
    .encode()
}

/// The error for a connect that failed at once: nothing listens, or another
/// socket error.
pub(crate) fn connect_error(path: &std::path::Path, source: std::io::Error) -> Error {
    match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            Error::BrokerNotRunning {
                path: path.to_path_buf(),
                source,
            }
        }
        _ => Error::Io(source),
    }
}

/// Receive buffer capacity for a broker's handshake number (a whole-datagram limit).
pub(crate) fn recv_capacity(max_len: u32) -> usize {
    (max_len as usize).max(HEADER_LEN)
}

/// The length `msg` may have at most on a broker announcing `max_len`: the
/// broker writes the sender's user name into the username field, so a client
/// keeps room for the longest one (255 bytes) and a message it accepts is never
/// dropped or cut on the way, by our broker or the existing one.
pub(crate) fn fits(msg: &Message<'_>, max_len: u32) -> Result<()> {
    let len = msg.encoded_len();
    let stamped = len - msg.username.len() + MAX_STRING_LEN;
    if stamped > max_len as usize {
        return Err(Error::TooLarge { len, max: max_len });
    }
    Ok(())
}

/// Encodes a data message from this client into `wbuf` (cleared), checking the
/// broker's datagram limit.
pub(crate) fn encode_data(
    wbuf: &mut Vec<u8>,
    name: &str,
    max_len: u32,
    method: Method,
    uri: &str,
    replyto: Option<&str>,
    body: &[u8],
) -> Result<()> {
    let msg = Message {
        method: method.as_str(),
        uri,
        replyto: replyto.unwrap_or(""),
        process_name: name,
        username: "",
        body,
    };
    encode_checked(wbuf, &msg, max_len)
}

/// Encodes any message into `wbuf` (cleared), checking the broker's datagram limit.
pub(crate) fn encode_checked(wbuf: &mut Vec<u8>, msg: &Message<'_>, max: u32) -> Result<()> {
    fits(msg, max)?;
    if method_needs_uri(msg.method) && !msg.uri.starts_with('/') {
        return Err(Error::InvalidUri {
            uri: msg.uri.to_owned(),
            reason: "must start with '/'",
        });
    }
    wbuf.clear();
    msg.encode(wbuf)?;
    Ok(())
}

fn method_needs_uri(method: &str) -> bool {
    Method::parse(method).is_some_and(|m| m != Method::Sub)
}

/// The subscription set after adding `add` to `current`: `current` in its
/// order, then each new URI in the order given. URIs are compared without a
/// trailing `/`; a URI already in the set stays pub-only only when the new
/// request is pub-only too (a set never loses messages it received before).
pub(crate) fn merged(current: &[Subscription], add: &[Subscription]) -> Vec<Subscription> {
    let mut out = current.to_vec();
    let mut index: std::collections::HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, s)| (crate::uri::normalize_sub(&s.uri).to_owned(), i))
        .collect();
    for s in add {
        let key = crate::uri::normalize_sub(&s.uri);
        match index.get(key) {
            Some(&i) => out[i].pub_only &= s.pub_only,
            None => {
                index.insert(key.to_owned(), out.len());
                out.push(s.clone());
            }
        }
    }
    out
}

/// Encodes the connection's complete subscription set as one `sub` datagram,
/// or says why it cannot be sent (before anything is sent): no URI, more than
/// [`MAX_SUBS_PER_DATAGRAM`] (255), or a URI that is not a valid base URI.
pub(crate) fn encode_sub(name: &str, set: &[Subscription]) -> Result<Vec<u8>> {
    if set.is_empty() {
        return Err(Error::NoSubscriptions);
    }
    if set.len() > MAX_SUBS_PER_DATAGRAM {
        return Err(Error::TooManySubscriptions {
            count: set.len(),
            max: MAX_SUBS_PER_DATAGRAM,
        });
    }
    for s in set {
        crate::uri::validate(crate::uri::normalize_sub(&s.uri)).map_err(|reason| {
            Error::InvalidUri {
                uri: s.uri.clone(),
                reason,
            }
        })?;
    }
    let mut body = Vec::new();
    encode_sub_body(set, &mut body)?;
    let msg = Message {
        method: "sub",
        process_name: name,
        body: &body,
        ..Message::default()
    };
    let mut dg = Vec::with_capacity(msg.encoded_len());
    msg.encode(&mut dg)?;
    Ok(dg)
}

/// Whether `msg` is the broker's answer to a `sub`, and if so what it said.
pub(crate) fn sub_answer(msg: &Message<'_>) -> Option<Result<()>> {
    if !msg.method.is_empty() || msg.process_name != "fims_server" {
        return None;
    }
    Some(if msg.body == b"SUCCESS" {
        Ok(())
    } else {
        Err(Error::SubscribeRefused(
            String::from_utf8_lossy(msg.body).into_owned(),
        ))
    })
}

/// The unique reply URIs of one client's `request` calls: `<prefix>/<seq>`, where
/// one subscription to the prefix covers them all.
#[derive(Debug, Default)]
pub(crate) struct ReplyUris {
    prefix: Option<String>,
    seq: u64,
}

impl ReplyUris {
    /// The prefix, and whether it still has to be subscribed to (first use).
    pub(crate) fn prefix(&mut self) -> (String, bool) {
        match &self.prefix {
            Some(p) => (p.clone(), false),
            None => (reply_prefix(), true),
        }
    }

    /// Records that `prefix` is now subscribed.
    pub(crate) fn subscribed(&mut self, prefix: String) {
        self.prefix = Some(prefix);
    }

    /// The next reply URI under the subscribed prefix.
    pub(crate) fn next(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}/{}", self.seq)
    }
}

/// A reply-URI prefix unique to this process and connection.
fn reply_prefix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "/_fims_reply/{}_{}_{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Whether the subscriptions already cover `uri` for a `set` answer.
pub(crate) fn covered(subs: &[Subscription], uri: &str) -> bool {
    subs.iter()
        .any(|s| !s.pub_only && crate::uri::matches(&s.uri, uri))
}
