//! `sub`: a connection's whole subscription set is replaced by the one the
//! datagram carries, as the existing broker does (there is no unsub; a program
//! drops URIs by subscribing again without them).
//!
//! The set is checked whole before anything changes: a refused `sub` (bad
//! body, more distinct URIs than `--max-subs-per-conn`) is answered
//! `FAILURE: <reason>` and leaves the connection's set as it was.

use fims::codec::{decode_sub_body, Message};

use crate::conn::Link;
use crate::core::Broker;
use crate::index::ConnId;
use crate::stats::DropKind;

/// Why a `sub` was refused.
enum Refusal {
    /// The body does not parse.
    Body(String),
    /// More distinct URIs than the per-connection limit.
    TooMany { count: usize, limit: usize },
}

impl<L: Link> Broker<L> {
    /// Answers a `sub` from `id`: replaces its set and says `SUCCESS`, or
    /// refuses and says `FAILURE: <reason>`.
    pub(crate) fn subscribe(&mut self, id: ConnId, msg: &Message<'_>) {
        let answer = match self.new_set(msg.body) {
            Ok(set) => {
                self.replace_set(id, set);
                "SUCCESS".to_owned()
            }
            Err(Refusal::Body(reason)) => {
                self.stats.sub_refused += 1;
                tracing::debug!(reason, "subscribe refused");
                format!("FAILURE: {reason}")
            }
            Err(Refusal::TooMany { count, limit }) => {
                self.stats.sub_refused += 1;
                self.stats.too_many_subs += 1;
                let total = self.stats.too_many_subs;
                let detail = format_args!(
                    "{} asked for {count} subscriptions, the limit is {limit}; its set is unchanged",
                    self.name_of(id)
                )
                .to_string();
                self.warn(DropKind::TooManySubs, total, &detail);
                format!("FAILURE: too many subscriptions ({count}; the limit is {limit} per connection)")
            }
        };
        let reply = Message {
            process_name: "fims_server",
            body: answer.as_bytes(),
            ..Message::default()
        };
        let mut out = Vec::with_capacity(reply.encoded_len());
        // Cannot fail: every string is short and the body small.
        if reply.encode(&mut out).is_ok() {
            self.deliver_to(id, &out);
        }
    }

    /// The collapsed, de-duplicated set a `sub` body asks for (a URI given
    /// twice is pub-only only when every request was).
    fn new_set(&self, body: &[u8]) -> Result<Vec<(Box<str>, bool)>, Refusal> {
        let list = decode_sub_body(body).map_err(|e| Refusal::Body(e.to_string()))?;
        let mut set: Vec<(Box<str>, bool)> = list
            .into_iter()
            .map(|(uri, pub_only)| (fims::uri::normalize(uri).into(), pub_only))
            .collect();
        set.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        // Sorted with `false` first: the kept entry of a run is pub-only only
        // when all of the run are.
        set.dedup_by(|later, kept| later.0 == kept.0);
        if set.len() > self.lim.max_subs {
            return Err(Refusal::TooMany {
                count: set.len(),
                limit: self.lim.max_subs,
            });
        }
        Ok(set)
    }

    fn replace_set(&mut self, id: ConnId, set: Vec<(Box<str>, bool)>) {
        let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        for key in &conn.subs {
            self.index.remove(id, key);
        }
        self.stats.subscriptions -= conn.subs.len() as u64;
        conn.subs.clear();
        for (key, pub_only) in set {
            self.index.insert(id, &key, pub_only);
            conn.subs.push(key);
        }
        self.stats.subscriptions += conn.subs.len() as u64;
        tracing::debug!(name = %conn.name, subs = conn.subs.len(), "subscribed");
    }
}
