//! Batched datagram I/O on the FIMS socket: `sendmmsg(2)` for the many small
//! messages of a tick, `recvmmsg(2)` to drain the replies waiting in the socket.
//!
//! At 10,000 processes COPS sends 20,000 and receives 10,000 datagrams a second;
//! one syscall per datagram would cost more than the rest of COPS together. The
//! fims client has no batch calls, so this works on its descriptor directly
//! (`Client::as_raw_fd`); the datagrams are the same bytes `fims::codec` encodes.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime};

use fims::Message;

/// Most datagrams one `sendmmsg`/`recvmmsg` call carries.
const MAX_BATCH: usize = 256;
/// Receive slot size: heartbeat replies and requests to COPS are small; a
/// larger datagram is truncated and dropped (it is nothing COPS acts on).
const SLOT: usize = 8192;

/// Control space per received datagram (one `SCM_TIMESTAMPNS` timespec fits in 32).
const CTRL: usize = 64;
/// `SO_TIMESTAMPNS` (= `SCM_TIMESTAMPNS`) on x86-64 and aarch64, the targets of
/// FIMS (libc does not export it for linux-gnu).
const SO_TIMESTAMPNS: libc::c_int = 35;

/// Asks the kernel to stamp every datagram arriving on `fd` with its arrival
/// time, so replies drained in a batch keep their own receive times.
pub fn enable_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_TIMESTAMPNS,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Encoded datagrams waiting to be sent.
#[derive(Debug, Default)]
pub struct SendBatch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl SendBatch {
    /// Appends one encoded message.
    pub fn push(&mut self, msg: &Message<'_>) -> Result<(), fims::codec::EncodeError> {
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

    /// Datagram `i`.
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

    /// Sends datagrams `from..` without blocking; returns how many went out
    /// (fewer when the socket buffer is full: `WouldBlock` only if none did).
    pub fn send_from(&self, fd: RawFd, from: usize) -> io::Result<usize> {
        let mut sent = from;
        while sent < self.len() {
            let n = (self.len() - sent).min(MAX_BATCH);
            let mut iovs: Vec<libc::iovec> = (sent..sent + n)
                .map(|i| {
                    let d = self.get(i);
                    libc::iovec {
                        iov_base: d.as_ptr() as *mut libc::c_void,
                        iov_len: d.len(),
                    }
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .map(|iov| {
                    // SAFETY: an all-zero msghdr is valid (no name, no control).
                    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            // SAFETY: hdrs and the iovecs and buffers they point to live across the call.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if sent > from && e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                return Err(e);
            }
            sent += rc as usize;
            if (rc as usize) < n {
                break;
            }
        }
        Ok(sent - from)
    }
}

/// Buffers for [`recv_batch`].
#[derive(Debug)]
pub struct RecvBufs {
    buf: Vec<u8>,
    ctrl: Vec<u64>,
    /// The headers and iovecs of the last call (rebuilt per call, never reallocated).
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Default for RecvBufs {
    fn default() -> Self {
        RecvBufs {
            buf: vec![0; SLOT * MAX_BATCH],
            // u64 for the alignment cmsghdr needs.
            ctrl: vec![0; CTRL / 8 * MAX_BATCH],
            iovs: Vec::with_capacity(MAX_BATCH),
            hdrs: Vec::with_capacity(MAX_BATCH),
        }
    }
}

/// What one [`recv_batch`] call found.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// This many datagrams were handed to the callback (0: nothing waiting).
    Datagrams(usize),
    /// The broker closed the connection.
    Closed,
}

/// Receives the datagrams already waiting (up to one batch) without blocking and
/// hands each whole one to `f` with its kernel arrival time (when
/// [`enable_timestamps`] was called); truncated ones are skipped.
pub fn recv_batch(
    fd: RawFd,
    bufs: &mut RecvBufs,
    f: impl FnMut(&[u8], Option<SystemTime>),
) -> io::Result<Received> {
    recv_up_to(fd, bufs, MAX_BATCH, f)
}

/// As [`recv_batch`], at most `max` datagrams (1..=256).
pub fn recv_up_to(
    fd: RawFd,
    bufs: &mut RecvBufs,
    max: usize,
    mut f: impl FnMut(&[u8], Option<SystemTime>),
) -> io::Result<Received> {
    let max = max.clamp(1, MAX_BATCH);
    let ctrl_base = bufs.ctrl.as_mut_ptr() as *mut u8;
    // Only the `max` headers this call can fill, in vectors kept between
    // calls (no allocation per call).
    bufs.iovs.clear();
    bufs.iovs.extend(
        bufs.buf
            .chunks_exact_mut(SLOT)
            .take(max)
            .map(|c| libc::iovec {
                iov_base: c.as_mut_ptr() as *mut libc::c_void,
                iov_len: SLOT,
            }),
    );
    bufs.hdrs.clear();
    for (i, iov) in bufs.iovs.iter_mut().enumerate() {
        // SAFETY: an all-zero msghdr is valid.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        // SAFETY: slot i of the control buffer (MAX_BATCH slots of CTRL bytes).
        h.msg_hdr.msg_control = unsafe { ctrl_base.add(i * CTRL) } as *mut libc::c_void;
        h.msg_hdr.msg_controllen = CTRL as _;
        bufs.hdrs.push(h);
    }
    let hdrs = &mut bufs.hdrs;
    // SAFETY: hdrs, iovecs and the slots they point to live across the call.
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            max as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock => Ok(Received::Datagrams(0)),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Ok(Received::Closed),
            _ => Err(e),
        };
    }
    let n = rc as usize;
    for (i, h) in hdrs.iter().take(n).enumerate() {
        let len = h.msg_len as usize;
        if len == 0 {
            // A seqpacket peer that closed reads as an empty datagram.
            return Ok(Received::Closed);
        }
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            continue;
        }
        let stamp = timestamp(&h.msg_hdr);
        f(&bufs.buf[i * SLOT..i * SLOT + len], stamp);
    }
    Ok(Received::Datagrams(n))
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
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn round_trip_over_a_socketpair() {
        let (a, b) = UnixDatagram::pair().unwrap();
        enable_timestamps(b.as_raw_fd()).unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut batch = SendBatch::default();
        let bodies: Vec<String> = (0..600).map(|i| i.to_string()).collect();
        for body in &bodies {
            batch
                .push(&Message::new(
                    fims::Method::Set,
                    "/site/cops/cops_heartbeat",
                    body.as_bytes(),
                ))
                .unwrap();
        }
        let mut got = Vec::new();
        let mut bufs = RecvBufs::default();
        let mut from = 0;
        while from < batch.len() {
            match batch.send_from(a.as_raw_fd(), from) {
                Ok(n) => from += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            while let Received::Datagrams(n @ 1..) = recv_batch(b.as_raw_fd(), &mut bufs, |d, t| {
                assert!(t.is_some(), "kernel timestamp");
                got.push(Message::decode(d).unwrap().body_str().unwrap().to_owned())
            })
            .unwrap()
            {
                let _ = n;
            }
        }
        assert_eq!(got, bodies);
        let mut kept = SendBatch::default();
        for body in ["a", "bb", "ccc"] {
            kept.push(&Message::new(fims::Method::Pub, "/x", body.as_bytes()))
                .unwrap();
        }
        let third = kept.get(2).to_vec();
        kept.consume(2);
        assert_eq!((kept.len(), kept.get(0)), (1, &third[..]));
        kept.consume(5);
        assert!(kept.is_empty());
        assert_eq!(
            recv_batch(b.as_raw_fd(), &mut bufs, |_, _| ()).unwrap(),
            Received::Datagrams(0)
        );
        drop(a);
    }
}
