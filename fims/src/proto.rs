//! Client-side protocol steps shared by the blocking and tokio clients.

use crate::codec::{
    encode_sub_body, Handshake, Message, Method, Subscription, HEADER_LEN, LAYOUT_VERSION,
    MAX_STRING_LEN, MAX_SUBS_PER_DATAGRAM,
};
use crate::error::{Error, Result};

/// How long a client waits for the broker's handshake and subscribe answers.
pub(crate) const BROKER_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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

/// Encodes the `sub` datagrams for `subs` (64 per datagram).
pub(crate) fn encode_subs(name: &str, subs: &[Subscription]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for chunk in subs.chunks(MAX_SUBS_PER_DATAGRAM) {
        for s in chunk {
            crate::uri::validate(crate::uri::normalize_sub(&s.uri)).map_err(|reason| {
                Error::InvalidUri {
                    uri: s.uri.clone(),
                    reason,
                }
            })?;
        }
        let mut body = Vec::new();
        encode_sub_body(chunk, &mut body)?;
        let msg = Message {
            method: "sub",
            process_name: name,
            body: &body,
            ..Message::default()
        };
        let mut dg = Vec::with_capacity(msg.encoded_len());
        msg.encode(&mut dg)?;
        out.push(dg);
    }
    Ok(out)
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
