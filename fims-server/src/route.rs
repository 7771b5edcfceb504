//! Routing a data message to its receivers, and the queues under their two
//! bounds: each receiver's (`--queue-datagrams`, `--queue-bytes`) and the
//! broker-wide memory budget (`--max-queued-bytes`).
//!
//! Routing writes each message once into the turn's batch (`out.rs`) and
//! notes its receivers; the batch goes out per receiver with one `sendmmsg`
//! when the driver ends the turn. Nothing is allocated on this path once the
//! batch has grown to a turn's size, and a message nobody subscribed to costs
//! nothing beyond the index lookups. Only a receiver whose socket is full gets
//! a copy (in its queue), shared by all such receivers.

use std::rc::Rc;

use fims::codec::{EncodeError, Message, Method, HEADER_LEN};
use fims::DecodeError;

use crate::conn::{Delivery, Link, State};
use crate::core::{cost, Broker};
use crate::index::{ConnId, Entry};
use crate::queue::FROM_BROKER;
use crate::stats::{method_index, DropKind};

impl<L: Link> Broker<L> {
    /// A datagram from a handshaken connection: decode, check, then subscribe or route.
    pub(crate) fn on_message(&mut self, id: ConnId, dg: &[u8]) {
        let checked = Message::decode(dg).and_then(|m| m.check_data().map(|meth| (m, meth)));
        if let Ok((_, method)) = &checked {
            self.stats.by_method[method_index(*method)] += 1;
        }
        match checked {
            Ok((msg, Method::Sub)) => self.subscribe(id, &msg),
            Ok((msg, method)) => self.route(id, &msg, method),
            Err(DecodeError::UnknownMethod) => {
                self.stats.unknown_method += 1;
                let c = self.stats.unknown_method;
                let len = dg.first().map_or(0, |&l| usize::from(l));
                let m =
                    String::from_utf8_lossy(dg.get(HEADER_LEN..HEADER_LEN + len).unwrap_or(&[]))
                        .into_owned();
                self.warn(DropKind::UnknownMethod, c, &format_args!("method {m:?}"));
            }
            Err(e) => {
                self.stats.malformed += 1;
                let c = self.stats.malformed;
                self.warn(DropKind::Malformed, c, &e);
            }
        }
    }

    fn route(&mut self, from: ConnId, msg: &Message<'_>, method: Method) {
        self.gen += 1;
        let gen = self.gen;
        let Some(sender) = self.conns.get_mut(from).and_then(Option::as_mut) else {
            return;
        };
        sender.stamp = gen;
        // Borrowed out of the sender for the routing loop (an empty Box<str>
        // does not allocate; the sender is stamped, so it is never a receiver).
        let name = std::mem::take(&mut sender.name);
        let user = Rc::clone(&sender.user);
        let pname = if msg.process_name.is_empty() {
            &*name
        } else {
            msg.process_name
        };
        let strs = [msg.method, msg.uri, msg.replyto, pname, &*user];
        let out_len = HEADER_LEN + strs.iter().map(|s| s.len()).sum::<usize>() + msg.body.len();
        if out_len > self.lim.max_len as usize {
            // Within 255 bytes of the limit, the stamped user name pushed it over:
            // receivers size their buffers by the handshake number.
            self.stats.oversize += 1;
            let c = self.stats.oversize;
            let detail = format_args!("{out_len} bytes once the user name is written in");
            self.warn(DropKind::Oversize, c, &detail);
        } else {
            self.stats.routed += 1;
            self.fan_out(gen, from, msg, method, strs);
        }
        if let Some(sender) = self.conns.get_mut(from).and_then(Option::as_mut) {
            sender.name = name;
        }
        if self.out.should_flush() {
            self.flush();
        }
    }

    /// Adds the message to the batch for every receiver it has.
    fn fan_out(
        &mut self,
        gen: u64,
        from: ConnId,
        msg: &Message<'_>,
        method: Method,
        strs: [&str; 5],
    ) {
        let Broker {
            index,
            conns,
            out,
            ubuf,
            stats,
            ..
        } = self;
        // Written at the first receiver: a message nobody wants costs no copy.
        let mut written: Option<Result<u32, EncodeError>> = None;
        let mut visit = |e: Entry| {
            if e.pub_only && method != Method::Pub {
                return;
            }
            let Some(conn) = conns.get_mut(e.conn).and_then(Option::as_mut) else {
                return;
            };
            if conn.stamp == gen || conn.closing || conn.state != State::Ready {
                return;
            }
            conn.stamp = gen;
            // Every string is at most 255 bytes (decoded ones by the format,
            // the handshake name and the user name by their checks), so the
            // codec cannot refuse them; if it did, nobody gets the message.
            if let Ok(m) = *written.get_or_insert_with(|| out.add_message(from, strs, msg.body)) {
                out.deliver(e.conn, m);
            }
        };
        if index.for_each_match(msg.uri, &mut visit).is_err() {
            // Empty segments or a trailing '/': matched as collapsed, as the
            // existing broker does (receivers already seen are stamped).
            fims::uri::normalize_into(msg.uri, ubuf);
            let _collapsed = index.for_each_match(ubuf, &mut visit);
        }
        match written {
            None => stats.unrouted += 1,
            Some(Err(e)) => {
                stats.malformed += 1;
                let c = stats.malformed;
                self.warn(DropKind::Malformed, c, &e);
            }
            Some(Ok(_)) => {}
        }
    }

    /// Delivers one datagram of the broker's own to one connection (with the
    /// turn's batch, after what was routed to it before).
    pub(crate) fn deliver_to(&mut self, id: ConnId, dg: &[u8]) {
        if self.conn(id).is_some() {
            let m = self.out.add_raw(FROM_BROKER, dg);
            self.out.deliver(id, m);
        }
    }

    /// Queues `dg` for `id` (sent by `from`), making room under both bounds
    /// first; `shared` is the copy all receivers of this message share.
    pub(crate) fn enqueue(
        &mut self,
        id: ConnId,
        dg: &[u8],
        shared: &mut Option<Rc<[u8]>>,
        from: ConnId,
    ) -> Delivery {
        let len = dg.len();
        if let Some(dropped) = self.room_in_queue(id, from, len) {
            return dropped;
        }
        if let Some(dropped) = self.room_in_budget(id, from, len) {
            return dropped;
        }
        let dg = Rc::clone(shared.get_or_insert_with(|| dg.into()));
        let Some(conn) = self.conn_mut(id) else {
            return Delivery::Gone;
        };
        let first = conn.queue.is_empty();
        conn.queue.push(dg, from);
        self.stats.queued_bytes += cost(len) as u64;
        self.stats.peak_queued_bytes = self.stats.peak_queued_bytes.max(self.stats.queued_bytes);
        if first {
            self.backlog_add(id);
        }
        Delivery::Queued { first }
    }

    /// Makes room in `id`'s own queue: `Some(Overflow)` when the new datagram
    /// is the one to drop.
    fn room_in_queue(&mut self, id: ConnId, from: ConnId, len: usize) -> Option<Delivery> {
        let limit = self.lim.queue;
        loop {
            let conn = self.conn(id)?;
            if conn.queue.fits(len, limit) {
                return None;
            }
            let by_count = conn.queue.len() >= limit.datagrams;
            let victim = conn.queue.victim(from, len, by_count);
            match victim {
                Some(s) if self.evict(id, s, DropKind::Overflow) => {}
                _ => return Some(Delivery::Overflow),
            }
        }
    }

    /// Makes room in the broker-wide budget, taking from the largest queue
    /// first: `Some(Shed)` when `id`'s queue would itself be the largest and
    /// the new datagram is the one to drop.
    fn room_in_budget(&mut self, id: ConnId, from: ConnId, len: usize) -> Option<Delivery> {
        while self.stats.queued_bytes as usize + cost(len) > self.lim.max_queued {
            let mine = self.conn(id).map_or(0, |c| c.queue.bytes()) + len;
            let largest = self
                .backlog
                .iter()
                .filter(|&&y| y != id)
                .filter_map(|&y| {
                    self.conn(y)
                        .map(|c| (y, c.queue.bytes(), c.queue.heaviest()))
                })
                .max_by_key(|&(y, bytes, _)| (bytes, std::cmp::Reverse(y)));
            let evicted = match largest {
                Some((y, bytes, Some(s))) if bytes > mine => self.evict(y, s, DropKind::Shed),
                _ => {
                    let victim = self.conn(id).and_then(|c| c.queue.victim(from, len, false));
                    match victim {
                        Some(s) => self.evict(id, s, DropKind::Shed),
                        None => false,
                    }
                }
            };
            if !evicted {
                return Some(Delivery::Shed);
            }
        }
        None
    }

    /// Drops the newest datagram `sender` has in `id`'s queue, counted as a
    /// `kind` drop for receiver `id`. False when there was none.
    fn evict(&mut self, id: ConnId, sender: ConnId, kind: DropKind) -> bool {
        let Some(conn) = self.conn_mut(id) else {
            return false;
        };
        let Some(len) = conn.queue.evict_newest(sender) else {
            return false;
        };
        let emptied = conn.queue.is_empty().then_some(conn.backlog_pos).flatten();
        self.stats.queued_bytes -= cost(len) as u64;
        if let Some(pos) = emptied {
            self.backlog_remove(pos);
            self.set_want_writable(id, false);
        }
        self.count_drop(id, kind);
        true
    }

    /// Counts (per receiver and in total) and logs, rate-limited, one delivery
    /// to `id` dropped for `kind` (`Overflow` or `Shed`).
    fn count_drop(&mut self, id: ConnId, kind: DropKind) {
        let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let (mine, total) = if kind == DropKind::Shed {
            conn.shed += 1;
            self.stats.shed += 1;
            (conn.shed, self.stats.shed)
        } else {
            conn.overflow += 1;
            self.stats.overflow += 1;
            (conn.overflow, self.stats.overflow)
        };
        let why = if kind == DropKind::Shed {
            "broker-wide queue budget full; dropped from the largest queue"
        } else {
            "outbound queue full; dropped for this receiver"
        };
        let name = self.name_of(id).to_owned();
        let detail = format_args!("{why}: receiver {name} has lost {mine}");
        self.warn(kind, total, &detail);
    }

    /// Counts what [`enqueue`](Self::enqueue) did for `id`.
    pub(crate) fn after_delivery(&mut self, id: ConnId, outcome: Delivery) {
        match outcome {
            Delivery::Queued { first } => {
                self.stats.delivered += 1;
                if first {
                    self.set_want_writable(id, true);
                }
            }
            Delivery::Overflow => self.count_drop(id, DropKind::Overflow),
            Delivery::Shed => self.count_drop(id, DropKind::Shed),
            Delivery::Gone => self.mark_close(id),
        }
    }

    /// `id`'s socket has room again: sends what its queue holds.
    pub(crate) fn writable(&mut self, id: ConnId) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        match conn.flush() {
            Err(()) => self.mark_close(id),
            Ok(f) => {
                let emptied = conn.queue.is_empty();
                let pos = conn.backlog_pos;
                self.stats.send_errors += f.failed;
                self.stats.queued_bytes -= (f.bytes + f.datagrams * cost(0)) as u64;
                if emptied {
                    if let Some(pos) = pos {
                        self.backlog_remove(pos);
                    }
                    self.set_want_writable(id, false);
                }
            }
        }
        self.close_marked();
    }
}
