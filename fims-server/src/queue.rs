//! One receiver's outbound queue: datagrams its socket had no room for, in
//! order, each tagged with the connection that sent it.
//!
//! When the queue (or the broker's memory budget) is full, the datagram that
//! goes is one of the *heaviest sender's* (its newest), not the newcomer's,
//! unless the newcomer's sender is itself the heaviest: a flood fills a
//! receiver's queue with its own messages and then loses its own, while a
//! quiet sender's occasional message (a heartbeat reply among `pub` junk)
//! still gets through. Pure data structure, no I/O.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::index::ConnId;

/// The sender of the broker's own answers (`sub` confirmations).
pub(crate) const FROM_BROKER: ConnId = usize::MAX;

/// Limits of one connection's outbound queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimit {
    /// Most datagrams queued.
    pub(crate) datagrams: usize,
    /// Most bytes queued (one datagram always fits an empty queue).
    pub(crate) bytes: usize,
}

/// How much of a queue one sender holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Share {
    datagrams: usize,
    bytes: usize,
}

/// Hashes a connection slot number with one multiplication: the keys are
/// small integers chosen by the broker, not by clients, so SipHash's
/// protection buys nothing on this per-queued-datagram path.
#[derive(Debug, Default)]
struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type SenderMap = HashMap<ConnId, Share, BuildHasherDefault<SlotHasher>>;

/// The queue; see the module doc.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    items: VecDeque<(Rc<[u8]>, ConnId)>,
    bytes: usize,
    senders: SenderMap,
}

impl OutQueue {
    /// Datagrams queued.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes queued (datagram lengths).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a datagram of `len` bytes fits under `limit` now.
    pub(crate) fn fits(&self, len: usize, limit: QueueLimit) -> bool {
        self.items.len() < limit.datagrams
            && (self.items.is_empty() || self.bytes + len <= limit.bytes)
    }

    /// Which sender's newest datagram to drop to make room for `len` bytes from
    /// `from`: `None` means drop the new datagram instead (the queue is empty,
    /// or `from` is, or would be, its heaviest sender). Heaviest counts
    /// datagrams when `by_count`, else bytes.
    pub(crate) fn victim(&self, from: ConnId, len: usize, by_count: bool) -> Option<ConnId> {
        let weight = |s: &Share| if by_count { s.datagrams } else { s.bytes };
        let (&heavy, share) = self
            .senders
            .iter()
            .max_by_key(|(id, s)| (weight(s), std::cmp::Reverse(**id)))?;
        if heavy == from {
            return None;
        }
        let mine = self.senders.get(&from).copied().unwrap_or_default();
        let grown = weight(&mine) + if by_count { 1 } else { len };
        (grown < weight(share)).then_some(heavy)
    }

    /// The sender holding the most bytes, if any.
    pub(crate) fn heaviest(&self) -> Option<ConnId> {
        self.senders
            .iter()
            .max_by_key(|(id, s)| (s.bytes, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// Appends a datagram sent by `from`.
    pub(crate) fn push(&mut self, dg: Rc<[u8]>, from: ConnId) {
        let share = self.senders.entry(from).or_default();
        share.datagrams += 1;
        share.bytes += dg.len();
        self.bytes += dg.len();
        self.items.push_back((dg, from));
    }

    /// The oldest datagram.
    #[cfg(test)]
    pub(crate) fn front(&self) -> Option<&Rc<[u8]>> {
        self.items.front().map(|(dg, _)| dg)
    }

    /// Fills `out` with the oldest datagrams, oldest first; returns how many.
    pub(crate) fn fill_front<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        let mut n = 0;
        for (slot, (dg, _)) in out.iter_mut().zip(&self.items) {
            *slot = dg;
            n += 1;
        }
        n
    }

    /// Removes the oldest datagram; returns its length.
    pub(crate) fn pop_front(&mut self) -> Option<usize> {
        let (dg, from) = self.items.pop_front()?;
        self.forget(from, dg.len());
        if self.items.is_empty() {
            self.give_back();
        }
        Some(dg.len())
    }

    /// Removes the newest datagram of `sender`; returns its length.
    pub(crate) fn evict_newest(&mut self, sender: ConnId) -> Option<usize> {
        let pos = self.items.iter().rposition(|(_, s)| *s == sender)?;
        let (dg, _) = self.items.remove(pos)?;
        self.forget(sender, dg.len());
        if self.items.is_empty() {
            self.give_back();
        }
        Some(dg.len())
    }

    /// Lengths of every queued datagram (to settle accounts at close).
    pub(crate) fn lengths(&self) -> impl Iterator<Item = usize> + '_ {
        self.items.iter().map(|(dg, _)| dg.len())
    }

    fn forget(&mut self, from: ConnId, len: usize) {
        self.bytes -= len;
        if let Some(share) = self.senders.get_mut(&from) {
            share.datagrams -= 1;
            share.bytes -= len;
            if share.datagrams == 0 {
                self.senders.remove(&from);
            }
        }
    }

    /// Gives back what a burst made the queue grow to (idle connections stay small).
    fn give_back(&mut self) {
        if self.items.capacity() > 64 {
            self.items.shrink_to(16);
        }
        if self.senders.capacity() > 64 {
            self.senders.shrink_to(8);
        }
    }

    /// Checks the bookkeeping against the items (tests and the fuzz harness).
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut shares = SenderMap::default();
        for (dg, from) in &self.items {
            let s = shares.entry(*from).or_default();
            s.datagrams += 1;
            s.bytes += dg.len();
        }
        let bytes: usize = self.lengths().sum();
        if bytes != self.bytes || shares != self.senders {
            return Err(format!(
                "queue accounts: {} bytes counted, {bytes} queued; senders {:?} vs {shares:?}",
                self.bytes, self.senders
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg(n: usize) -> Rc<[u8]> {
        vec![0u8; n].into()
    }

    #[test]
    fn the_heaviest_sender_loses_not_the_newcomer() {
        let mut q = OutQueue::default();
        for _ in 0..5 {
            q.push(dg(10), 1);
        }
        q.push(dg(10), 2);
        // Full by count: a datagram from 2 evicts one of 1's.
        assert_eq!(q.victim(2, 10, true), Some(1));
        // From 1 itself: drop the new one.
        assert_eq!(q.victim(1, 10, true), None);
        // A third sender with nothing queued also wins over the flood.
        assert_eq!(q.victim(3, 10, true), Some(1));
        assert_eq!(q.evict_newest(1), Some(10));
        assert_eq!((q.len(), q.bytes()), (5, 50));
        q.check().unwrap();
    }

    #[test]
    fn by_bytes_a_big_newcomer_can_be_the_heaviest() {
        let mut q = OutQueue::default();
        q.push(dg(100), 1);
        q.push(dg(100), 1);
        assert_eq!(q.victim(2, 150, false), Some(1));
        assert_eq!(
            q.victim(2, 200, false),
            None,
            "200 would tie: drop the new one"
        );
        assert_eq!(OutQueue::default().victim(2, 1, false), None);
    }

    #[test]
    fn eviction_takes_the_newest_of_that_sender_and_keeps_order() {
        let mut q = OutQueue::default();
        for (i, from) in [(1u8, 1), (2, 2), (3, 1), (4, 2)] {
            q.push(vec![i].into(), from);
        }
        assert_eq!(q.evict_newest(1), Some(1));
        let order: Vec<u8> = std::iter::from_fn(|| {
            let b = q.front().map(|d| d[0]);
            q.pop_front();
            b
        })
        .collect();
        assert_eq!(order, [1, 2, 4]);
        assert!(q.is_empty());
        q.check().unwrap();
    }

    #[test]
    fn fits_allows_one_datagram_over_the_byte_bound() {
        let limit = QueueLimit {
            datagrams: 2,
            bytes: 10,
        };
        let mut q = OutQueue::default();
        assert!(q.fits(100, limit));
        q.push(dg(100), 1);
        assert!(!q.fits(1, limit));
        assert_eq!(q.heaviest(), Some(1));
    }
}
