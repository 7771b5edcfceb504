//! Batched datagram I/O on a FIMS socket: `sendmmsg(2)` for many messages at
//! once, `recvmmsg(2)` to drain what waits in the socket, each datagram with
//! its kernel arrival time when asked for.
//!
//! For hosts that move thousands of datagrams a second on one connection
//! (COPS at 10,000 processes sends 20,000 and receives 10,000 a second): one
//! syscall per datagram would cost more than the rest of such a host. The
//! datagrams are the bytes [`Message::encode`] writes. Every call here is
//! non-blocking (`MSG_DONTWAIT`, whatever the socket's mode) and raises no
//! `SIGPIPE`; none allocates once its buffers exist.
//!
//! A host takes the socket from a connected client whole, with
//! [`Client::into_parts`](crate::blocking::Client::into_parts), so the socket
//! has one owner.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, SystemTime};

use crate::codec::Message;
use crate::error::EncodeError;

/// Most datagrams one `sendmmsg` takes (its headers live on the stack,
/// 20 KiB): COPS's turn sends thousands of small heartbeats.
pub const SEND_MAX: usize = 256;

/// `SO_TIMESTAMPNS` (= `SCM_TIMESTAMPNS`) on x86-64 and aarch64, the targets
/// of FIMS (libc does not export it for linux-gnu).
const SO_TIMESTAMPNS: libc::c_int = 35;
/// Control space per received datagram (one `SCM_TIMESTAMPNS` timespec fits in 32).
const CTRL: usize = 64;

/// Asks the kernel to stamp every datagram arriving on `fd` with its arrival
/// time, so datagrams drained in a batch keep their own receive times
/// ([`RecvBatch::recv`] hands them out).
pub fn enable_timestamps(fd: BorrowedFd<'_>) -> io::Result<()> {
    crate::sys::setsockopt_int(fd, SO_TIMESTAMPNS, 1)
}

/// Sends each of `dgs` as its own datagram, in order, with one `sendmmsg` per
/// [`SEND_MAX`] of them (a lone one with one `send`). Returns how many went
/// out, a prefix of `dgs`: fewer than all when the socket filled up or a
/// datagram failed; `Err` only when the first one failed (a retry from the
/// first unsent one tells why the others did not go).
#[inline]
pub fn send_many(fd: BorrowedFd<'_>, dgs: &[&[u8]]) -> io::Result<usize> {
    send_each(fd, dgs.len(), dgs.iter().copied())
}

/// [`send_many`] over the `n` datagrams `dgs` yields.
fn send_each<'a>(
    fd: BorrowedFd<'_>,
    n: usize,
    mut dgs: impl Iterator<Item = &'a [u8]>,
) -> io::Result<usize> {
    const FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    if n == 1 {
        let one = dgs.next().unwrap_or_default();
        return crate::sys::send_flags(fd, one, FLAGS).map(|()| 1);
    }
    let mut sent = 0;
    while sent < n {
        let len = (n - sent).min(SEND_MAX);
        let mut iov = [MaybeUninit::<libc::iovec>::uninit(); SEND_MAX];
        let mut hdrs = [MaybeUninit::<libc::mmsghdr>::uninit(); SEND_MAX];
        for ((v, h), d) in iov[..len]
            .iter_mut()
            .zip(&mut hdrs[..len])
            .zip(dgs.by_ref())
        {
            let v = v.write(libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            });
            // SAFETY: msghdr is plain old data; zeroed is a valid value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = v;
            msg.msg_iovlen = 1;
            h.write(libc::mmsghdr {
                msg_hdr: msg,
                msg_len: 0,
            });
        }
        let rc = loop {
            // SAFETY: the first `len` headers are initialised and point at
            // initialised iovecs over slices that live across the call.
            let rc = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    hdrs.as_mut_ptr().cast(),
                    len as libc::c_uint,
                    FLAGS,
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                _ if sent > 0 => return Ok(sent),
                _ => return Err(e),
            }
        };
        sent += rc;
        if rc < len {
            break;
        }
    }
    Ok(sent)
}

/// Encoded datagrams waiting to be sent, back to back in one buffer.
#[derive(Debug, Default)]
pub struct SendBatch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl SendBatch {
    /// Appends one encoded message.
    pub fn push(&mut self, msg: &Message<'_>) -> Result<(), EncodeError> {
        msg.encode(&mut self.buf)?;
        self.ends.push(self.buf.len());
        Ok(())
    }

    /// Number of datagrams held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Datagram `i` (panics when `i >= len()`, as slices do).
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }

    /// Drops the first `n` datagrams (sent), keeping the rest in order.
    pub fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if n >= self.len() {
            return self.clear();
        }
        let cut = self.ends[n - 1];
        self.buf.drain(..cut);
        self.ends.drain(..n);
        for e in &mut self.ends {
            *e -= cut;
        }
    }

    /// Sends datagrams `from..` as [`send_many`] does: how many went out
    /// (fewer when the socket buffer filled up: `WouldBlock` only if none did).
    pub fn send_from(&self, fd: BorrowedFd<'_>, from: usize) -> io::Result<usize> {
        let n = self.len().saturating_sub(from);
        if n == 0 {
            return Ok(0);
        }
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        let spans = starts.zip(self.ends.iter().copied()).skip(from);
        send_each(fd, n, spans.map(|(a, b)| &self.buf[a..b]))
    }
}

/// What one [`RecvBatch::recv`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// This many datagrams were taken (0: nothing was waiting).
    Datagrams(usize),
    /// The peer closed the connection.
    Closed,
}

/// Buffers for receiving up to `slots` datagrams of up to `slot` bytes with
/// one `recvmmsg`, optionally each with room for its arrival time. The
/// kernel's headers point into the buffers once, when the batch is made
/// (setting 64 of them per call cost the broker a fifth of a lone message's
/// routing). Memory is calloc'd: slot pages cost nothing until a datagram
/// that long arrives, and [`trim`](Self::trim) gives them back.
pub struct RecvBatch {
    buf: Vec<u8>,
    /// Control space per slot (empty without timestamps), `u64` for the
    /// alignment `cmsghdr` needs; only written by the kernel and read
    /// through `hdrs`.
    ctrl: Vec<u64>,
    /// One iovec per slot; only read by the kernel, through `hdrs`.
    _iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    slot: usize,
    /// Datagrams the last receive took.
    got: usize,
}

// SAFETY: the raw pointers in `_iov` and `hdrs` point only into `buf`, `_iov`
// and `ctrl`, heap blocks this value owns and never reallocates; moving the
// value to another thread moves their only users along.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slot", &self.slot)
            .field("slots", &self.hdrs.len())
            .field("timestamps", &!self.ctrl.is_empty())
            .field("got", &self.got)
            .finish()
    }
}

impl RecvBatch {
    /// Room for `slots` (at least 1) datagrams of up to `slot` bytes each.
    pub fn new(slot: usize, slots: usize) -> RecvBatch {
        RecvBatch::build(slot, slots, false)
    }

    /// As [`new`](Self::new), with room for each datagram's kernel arrival
    /// time (see [`enable_timestamps`]).
    pub fn with_timestamps(slot: usize, slots: usize) -> RecvBatch {
        RecvBatch::build(slot, slots, true)
    }

    fn build(slot: usize, slots: usize, stamps: bool) -> RecvBatch {
        let (slot, slots) = (slot.max(1), slots.max(1));
        // Zeroed (calloc): untouched pages cost no memory.
        let mut buf = vec![0u8; slot * slots];
        let mut ctrl = vec![0u64; if stamps { CTRL / 8 * slots } else { 0 }];
        let (base, ctrl_base) = (buf.as_mut_ptr(), ctrl.as_mut_ptr().cast::<u8>());
        let mut iov: Vec<libc::iovec> = (0..slots)
            .map(|i| libc::iovec {
                // In bounds: buf holds slots * slot bytes.
                iov_base: base.wrapping_add(i * slot).cast(),
                iov_len: slot,
            })
            .collect();
        let iov_base = iov.as_mut_ptr();
        let hdrs = (0..slots)
            .map(|i| {
                // SAFETY: msghdr is plain old data; zeroed is a valid value.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = iov_base.wrapping_add(i);
                msg.msg_iovlen = 1;
                if stamps {
                    // In bounds: ctrl holds slots * CTRL bytes.
                    msg.msg_control = ctrl_base.wrapping_add(i * CTRL).cast();
                }
                libc::mmsghdr {
                    msg_hdr: msg,
                    msg_len: 0,
                }
            })
            .collect();
        // The pointers are set once: `buf`, `ctrl` and `iov` are never
        // resized (their heap blocks stay put when the batch moves),
        // `as_mut_ptr` makes no reference that a later read of `buf` could
        // invalidate, and `recvmmsg` writes back only lengths and flags.
        RecvBatch {
            buf,
            ctrl,
            _iov: iov,
            hdrs,
            slot,
            got: 0,
        }
    }

    /// Slots in the batch: the most one receive takes.
    #[inline]
    pub fn slots(&self) -> usize {
        self.hdrs.len()
    }

    /// Receives up to `max` datagrams (at most [`slots`](Self::slots)) without
    /// blocking, with one `recvmmsg`; with a `slice`, it stops taking more
    /// once that long has passed (a sender streaming big datagrams cannot
    /// hold the caller). Returns how many, and whether more may be waiting
    /// (the batch filled up or the slice ran out). `WouldBlock` when none was
    /// waiting. Read them with [`get`](Self::get).
    #[inline]
    pub fn recv_raw(
        &mut self,
        fd: BorrowedFd<'_>,
        max: usize,
        slice: Option<Duration>,
    ) -> io::Result<(usize, bool)> {
        let vlen = max.clamp(1, self.slots());
        self.got = 0;
        if !self.ctrl.is_empty() {
            for h in &mut self.hdrs[..vlen] {
                // The kernel shrinks it to what it wrote: give the room back.
                h.msg_hdr.msg_controllen = CTRL as _;
            }
        }
        loop {
            let mut left = libc::timespec {
                tv_sec: 0,
                tv_nsec: slice.map_or(0, |d| d.as_nanos().min(999_999_999) as libc::c_long),
            };
            let timeout = match slice {
                Some(_) => &mut left as *mut libc::timespec,
                None => std::ptr::null_mut(),
            };
            // SAFETY: the first vlen headers point at iovecs over disjoint
            // slots of `buf` (and disjoint control slots of `ctrl`), all set
            // up in `build`, owned by self and never reallocated; `timeout`
            // is null or `left`, valid for reading and writing. MSG_TRUNC
            // makes msg_len the datagram's real length.
            let n = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    vlen as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    timeout,
                )
            };
            if n >= 0 {
                self.got = n as usize;
                // The kernel wrote back the time left: none means it stopped
                // for the time, not for want of datagrams.
                let timed_out = slice.is_some() && left.tv_sec == 0 && left.tv_nsec == 0;
                return Ok((self.got, self.got == vlen || timed_out));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Datagram `i` of the last receive: its whole slot and its real length,
    /// which is larger than the slot when the datagram did not fit (and 0
    /// for an empty datagram, or end of stream on a seqpacket socket).
    #[inline]
    pub fn get(&self, i: usize) -> (&[u8], usize) {
        let len = self.hdrs.get(i).map_or(0, |h| h.msg_len as usize);
        let start = i * self.slot;
        (&self.buf[start..start + self.slot], len)
    }

    /// The kernel arrival time of datagram `i` of the last receive, when the
    /// batch has timestamps and the socket stamps ([`enable_timestamps`]).
    pub fn arrival(&self, i: usize) -> Option<SystemTime> {
        match self.ctrl.is_empty() {
            true => None,
            false => self.hdrs.get(i).and_then(|h| timestamp(&h.msg_hdr)),
        }
    }

    /// Gives back the pages the last receive's datagrams touched beyond the
    /// first `keep` bytes of their slot (only a datagram longer than that
    /// costs one `madvise`).
    #[inline]
    pub fn trim(&mut self, keep: usize) {
        let page = 4096;
        for i in 0..self.got {
            let len = self.hdrs[i].msg_len as usize;
            if len <= keep + page {
                continue;
            }
            let slot_start = self.buf.as_ptr() as usize + i * self.slot;
            let from = (slot_start + keep).next_multiple_of(page);
            let to = (slot_start + len.min(self.slot)) / page * page;
            if to > from {
                // SAFETY: [from, to) lies inside this slot of self.buf, which
                // we own; no reference into it is alive (&mut self). The
                // pages read back as zeros, a valid value for u8.
                unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED) };
            }
        }
        self.got = 0;
    }

    /// Receives the datagrams already waiting, up to `max`, without blocking,
    /// and hands each whole one to `f` with its kernel arrival time (see
    /// [`arrival`](Self::arrival)); cut ones are skipped. An empty datagram,
    /// or an error that says the peer is gone
    /// ([`is_disconnect`](crate::is_disconnect)), is [`Received::Closed`].
    pub fn recv(
        &mut self,
        fd: BorrowedFd<'_>,
        max: usize,
        mut f: impl FnMut(&[u8], Option<SystemTime>),
    ) -> io::Result<Received> {
        let n = match self.recv_raw(fd, max, None) {
            Ok((n, _)) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::Datagrams(0)),
            Err(e) if crate::is_disconnect(&e) => return Ok(Received::Closed),
            Err(e) => return Err(e),
        };
        for i in 0..n {
            let (slot, len) = self.get(i);
            if len == 0 {
                // A seqpacket peer that closed reads as an empty datagram.
                return Ok(Received::Closed);
            }
            if len <= slot.len() {
                f(&slot[..len], self.arrival(i));
            }
        }
        Ok(Received::Datagrams(n))
    }
}

/// The `SCM_TIMESTAMPNS` of a received message, if any.
fn timestamp(m: &libc::msghdr) -> Option<SystemTime> {
    // SAFETY: walking the control messages the kernel wrote into our buffer,
    // with the libc CMSG macros and within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == SO_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                let d = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
                return SystemTime::UNIX_EPOCH.checked_add(d);
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Method;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    /// A connected pair of `SOCK_SEQPACKET` sockets, as FIMS uses.
    fn pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        let ty = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
        // SAFETY: fds is valid for two descriptors.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        // SAFETY: two fresh descriptors, owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn round_trip_over_a_socketpair() {
        let (a, b) = pair();
        enable_timestamps(b.as_fd()).unwrap();
        let mut batch = SendBatch::default();
        let bodies: Vec<String> = (0..600).map(|i| i.to_string()).collect();
        for body in &bodies {
            let msg = Message::new(Method::Set, "/site/cops/cops_heartbeat", body.as_bytes());
            batch.push(&msg).unwrap();
        }
        let mut got = Vec::new();
        let mut rx = RecvBatch::with_timestamps(8192, 256);
        let mut from = 0;
        while from < batch.len() {
            match batch.send_from(a.as_fd(), from) {
                Ok(n) => from += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            let take = |d: &[u8], t: Option<SystemTime>| {
                assert!(t.is_some(), "kernel timestamp");
                got.push(Message::decode(d).unwrap().body_str().unwrap().to_owned())
            };
            let mut take = take;
            while let Received::Datagrams(1..) = rx.recv(b.as_fd(), 256, &mut take).unwrap() {}
        }
        assert_eq!(got, bodies);
        assert_eq!(
            rx.recv(b.as_fd(), 256, |_, _| ()).unwrap(),
            Received::Datagrams(0)
        );
        drop(a);
        assert_eq!(
            rx.recv(b.as_fd(), 256, |_, _| ()).unwrap(),
            Received::Closed
        );
    }

    #[test]
    fn consume_keeps_the_rest_in_order() {
        let mut kept = SendBatch::default();
        for body in ["a", "bb", "ccc"] {
            kept.push(&Message::new(Method::Pub, "/x", body.as_bytes()))
                .unwrap();
        }
        let third = kept.get(2).to_vec();
        kept.consume(2);
        assert_eq!((kept.len(), kept.get(0)), (1, &third[..]));
        kept.consume(5);
        assert!(kept.is_empty());
    }

    #[test]
    fn a_cut_datagram_is_skipped_and_a_lone_one_goes_alone() {
        let (a, b) = pair();
        let big = vec![b'x'; 100];
        assert_eq!(send_many(a.as_fd(), &[&big, b"small"]).unwrap(), 2);
        assert_eq!(send_many(a.as_fd(), &[b"lone"]).unwrap(), 1);
        let mut rx = RecvBatch::new(16, 4);
        let mut got = Vec::new();
        let r = rx.recv(b.as_fd(), 4, |d, t| got.push((d.to_vec(), t)));
        assert_eq!(r.unwrap(), Received::Datagrams(3));
        let want: Vec<(Vec<u8>, Option<SystemTime>)> =
            vec![(b"small".to_vec(), None), (b"lone".to_vec(), None)];
        assert_eq!(got, want);
    }

    #[test]
    fn a_full_socket_sends_a_prefix_then_would_block() {
        let (a, _b) = pair();
        let dg = vec![0u8; 1024];
        let dgs: Vec<&[u8]> = (0..4096).map(|_| &dg[..]).collect();
        let n = send_many(a.as_fd(), &dgs).unwrap();
        assert!(n > 0 && n < dgs.len(), "{n}");
        let e = send_many(a.as_fd(), &dgs[n..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
