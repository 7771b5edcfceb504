//! The datagrams routed during one loop turn, waiting to go out.
//!
//! Routing does not send: it writes each outgoing datagram once (the
//! rewritten header and strings by [`fims::codec::write_header`], then the
//! body) into an arena and notes which receivers get it. When the driver ends
//! its turn ([`Broker::flush`]), each receiver's datagrams go out in routing
//! order with one [`Link::send_many`] (one `sendmmsg` for up to 64), instead
//! of one `sendmsg` per message and receiver: at a steady 20,000 messages/s
//! in 1 ms batches that is one system call per subscriber per batch instead
//! of twenty. What a receiver's socket has no room for goes to its queue
//! (`route.rs`), as before.
//!
//! The arena is flushed early when it passes [`ARENA_FLUSH`] bytes (and after
//! any datagram over [`BIG`] bytes), so it stays small and the queue budget
//! (`--max-queued-bytes`) still bounds what the broker holds. Nothing here
//! allocates once the arena and the lists have grown to a turn's size.

use std::io;
use std::rc::Rc;

use fims::codec::{EncodeError, HEADER_LEN};

use crate::conn::Link;
use crate::core::Broker;
use crate::index::ConnId;
use crate::stats::DropKind;
use crate::sys::SEND_CHUNK;

/// Arena size past which the batch is sent at once, before the turn ends.
pub(crate) const ARENA_FLUSH: usize = 256 << 10;
/// A datagram this long is sent at once (with what is before it): a few of
/// them would pass [`ARENA_FLUSH`] anyway, and one syscall per receiver is
/// nothing beside copying it.
pub(crate) const BIG: usize = 16 << 10;
/// Capacity the arena and lists keep between turns; a burst of big datagrams
/// that grew them past this gives the memory back.
const KEEP: usize = 2 * ARENA_FLUSH;

/// One datagram in the arena.
#[derive(Debug)]
struct Pending {
    start: usize,
    end: usize,
    /// The connection that sent it (the queues' fairness rule needs it).
    from: ConnId,
    /// Its copy shared by the receivers that had to queue it, made when the
    /// first of them does.
    shared: Option<Rc<[u8]>>,
}

/// See the module doc.
#[derive(Debug, Default)]
pub(crate) struct OutBatch {
    /// Whole outgoing datagrams, back to back.
    arena: Vec<u8>,
    msgs: Vec<Pending>,
    /// `(receiver, index into msgs)`, in routing order.
    deliveries: Vec<(ConnId, u32)>,
}

impl OutBatch {
    /// Writes a message datagram (header and `strings` by the codec, then
    /// `body`) sent by `from`; returns its number for [`deliver`](Self::deliver).
    pub(crate) fn add_message(
        &mut self,
        from: ConnId,
        strings: [&str; 5],
        body: &[u8],
    ) -> Result<u32, EncodeError> {
        let start = self.arena.len();
        let len = HEADER_LEN + strings.iter().map(|s| s.len()).sum::<usize>() + body.len();
        self.arena.reserve(len);
        fims::codec::write_header(&mut self.arena, strings, body.len())?;
        self.arena.extend_from_slice(body);
        Ok(self.push(start, from))
    }

    /// Adds a datagram that is already whole (the broker's own answers).
    pub(crate) fn add_raw(&mut self, from: ConnId, dg: &[u8]) -> u32 {
        let start = self.arena.len();
        self.arena.extend_from_slice(dg);
        self.push(start, from)
    }

    fn push(&mut self, start: usize, from: ConnId) -> u32 {
        self.msgs.push(Pending {
            start,
            end: self.arena.len(),
            from,
            shared: None,
        });
        // At most ARENA_FLUSH + BIG bytes, so far fewer than u32::MAX datagrams.
        (self.msgs.len() - 1) as u32
    }

    /// Datagram `m` goes to `to`.
    pub(crate) fn deliver(&mut self, to: ConnId, m: u32) {
        self.deliveries.push((to, m));
    }

    /// Whether the batch should go out now rather than at the end of the turn.
    pub(crate) fn should_flush(&self) -> bool {
        self.arena.len() > ARENA_FLUSH
            || self
                .msgs
                .last()
                .is_some_and(|m| m.end - m.start > BIG && !self.deliveries.is_empty())
    }

    /// Whether nothing waits to go out.
    pub(crate) fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }

    /// Forgets what waits for `id` (its connection is closing; the slot may
    /// be reused by the next one).
    pub(crate) fn forget(&mut self, id: ConnId) {
        self.deliveries.retain(|d| d.0 != id);
    }

    /// Checks that every delivery names a datagram in the arena (the fuzz
    /// harness); the broker checks the receivers.
    pub(crate) fn check(&self) -> Result<(), String> {
        let len = self.arena.len();
        let bad = self.deliveries.iter().find(|&&(_, m)| {
            let p = self.msgs.get(m as usize);
            !p.is_some_and(|p| p.start <= p.end && p.end <= len)
        });
        match bad {
            Some(d) => Err(format!("delivery {d:?} names no datagram in the arena")),
            None => Ok(()),
        }
    }

    /// The receivers with something waiting (the fuzz harness's checks).
    pub(crate) fn receivers(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.deliveries.iter().map(|d| d.0)
    }
}

/// How one receiver's share of a batch went.
enum Sent {
    /// Everything from the index on is still to be queued.
    Rest(usize),
    /// The peer is gone.
    Gone,
}

impl<L: Link> Broker<L> {
    /// Sends what routing left in the batch: each receiver's datagrams with
    /// as few `send_many` calls as its socket takes, the rest queued.
    pub(crate) fn flush(&mut self) {
        if self.out.deliveries.is_empty() {
            self.out.arena.clear();
            self.out.msgs.clear();
            return;
        }
        let mut batch = std::mem::take(&mut self.out);
        // By receiver, each receiver's in routing order (the pairs are unique).
        batch.deliveries.sort_unstable();
        for group in batch.deliveries.chunk_by(|a, b| a.0 == b.0) {
            self.flush_to(group, &batch.arena, &mut batch.msgs);
        }
        batch.deliveries.clear();
        batch.arena.clear();
        batch.msgs.clear();
        if batch.arena.capacity() > KEEP {
            batch.arena.shrink_to(ARENA_FLUSH);
        }
        if batch.msgs.capacity() > KEEP / 64 {
            batch.msgs.shrink_to(1024);
            batch.deliveries.shrink_to(1024);
        }
        self.out = batch;
        self.close_marked();
    }

    /// One receiver's datagrams (`group`, all for the same connection).
    fn flush_to(&mut self, group: &[(ConnId, u32)], arena: &[u8], msgs: &mut [Pending]) {
        let id = group[0].0;
        let dg = |m: u32| {
            let p = &msgs[m as usize];
            &arena[p.start..p.end]
        };
        let first_queued = match self.send_now(id, group, &dg) {
            Sent::Gone => return self.mark_close(id),
            Sent::Rest(i) => i,
        };
        for &(_, m) in &group[first_queued..] {
            let p = &mut msgs[m as usize];
            let d = self.enqueue(id, &arena[p.start..p.end], &mut p.shared, p.from);
            self.after_delivery(id, d);
        }
    }

    /// Sends `group` to `id` while its socket takes them (nothing when a
    /// queue already waits: those go first). Returns where queuing starts.
    fn send_now<'a>(
        &mut self,
        id: ConnId,
        group: &[(ConnId, u32)],
        dg: &impl Fn(u32) -> &'a [u8],
    ) -> Sent {
        let mut next = 0;
        while next < group.len() {
            let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
                return Sent::Rest(group.len());
            };
            if conn.closing {
                return Sent::Rest(group.len());
            }
            if !conn.queue.is_empty() {
                return Sent::Rest(next);
            }
            let n = (group.len() - next).min(SEND_CHUNK);
            let result = if n == 1 {
                // A lone datagram (the usual case at a low rate, and every
                // round trip): no 64-entry list to fill.
                conn.link.send_many(&[dg(group[next].1)])
            } else {
                let mut chunk: [&[u8]; SEND_CHUNK] = [&[]; SEND_CHUNK];
                for (slot, &(_, m)) in chunk.iter_mut().zip(&group[next..next + n]) {
                    *slot = dg(m);
                }
                conn.link.send_many(&chunk[..n])
            };
            match result {
                Ok(sent) => {
                    self.stats.delivered += sent as u64;
                    next += sent;
                    // Fewer than asked: the next call says why (full or failed).
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Rest(next),
                Err(e) if fims::is_disconnect(&e) => return Sent::Gone,
                Err(e) => {
                    // That one datagram failed (e.g. too large for the peer's
                    // buffer): dropped, the rest still go.
                    self.stats.send_errors += 1;
                    let c = self.stats.send_errors;
                    self.warn(DropKind::SendError, c, &format_args!("send failed: {e}"));
                    next += 1;
                }
            }
        }
        Sent::Rest(next)
    }
}
