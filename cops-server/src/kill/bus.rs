//! "Is this process on the FIMS bus?": does it hold a socket connected to the
//! broker's listening socket. Asked with the kernel's `sock_diag` netlink
//! interface (`NETLINK_SOCK_DIAG`, `UNIX_DIAG_PEER`), which needs no privilege
//! for Unix sockets; only listing a process's descriptors (`/proc/<pid>/fd`)
//! needs ptrace-read access when the process belongs to another user.
//!
//! The broker's socket is recognised by the peer of COPS's own connection: the
//! socket file it is bound to (device and inode, `UNIX_DIAG_VFS`), or its name
//! for an abstract socket. A connection accepted by the broker carries the
//! listener's address, so the peer of any client of that broker matches.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_VFS: u32 = 0x2;
const UDIAG_SHOW_PEER: u32 = 0x4;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
/// Length of `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;
/// Length of `struct unix_diag_req`.
const REQ_LEN: usize = 24;
/// Length of `struct unix_diag_msg`.
const MSG_LEN: usize = 16;
/// Most socket descriptors of one process looked at.
pub const MAX_SOCKETS: usize = 1024;

/// What the kernel says about one Unix socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixInfo {
    /// `SOCK_STREAM`, `SOCK_SEQPACKET`, ...
    pub kind: u8,
    /// The address it is bound to (a path, or `\0name` for an abstract one).
    pub name: Option<Vec<u8>>,
    /// Inode and device of the socket file it is bound to.
    pub vfs: Option<(u32, u32)>,
    /// The inode of the socket it is connected to.
    pub peer: Option<u32>,
}

/// The broker's socket: the file it is bound to, or its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusId {
    vfs: Option<(u32, u32)>,
    name: Option<Vec<u8>>,
}

impl BusId {
    /// Whether `peer` (the other end of a connection) is the broker's.
    pub fn is(&self, peer: &UnixInfo) -> bool {
        match (self.vfs, peer.vfs) {
            (Some(a), Some(b)) => a == b,
            _ => self.name.is_some() && self.name == peer.name,
        }
    }
}

/// A `NETLINK_SOCK_DIAG` socket.
#[derive(Debug)]
pub struct SockDiag {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

impl SockDiag {
    /// Opens the netlink socket.
    pub fn open() -> io::Result<SockDiag> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(last_err());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a valid timeval; the kernel answers at once,
        // the timeout only guards against a kernel that never does.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(SockDiag {
            fd,
            seq: 0,
            buf: vec![0; 8192],
        })
    }

    /// The Unix socket with inode `ino`; `None` when there is none.
    pub fn query(&mut self, ino: u32, show: u32) -> io::Result<Option<UnixInfo>> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = [0u8; NLMSG_HDR + REQ_LEN];
        req[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        let r = &mut req[NLMSG_HDR..];
        r[0] = libc::AF_UNIX as u8;
        r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
        r[8..12].copy_from_slice(&ino.to_ne_bytes());
        r[12..16].copy_from_slice(&show.to_ne_bytes());
        r[16..24].copy_from_slice(&[0xff; 8]); // no cookie
                                               // SAFETY: an all-zero sockaddr_nl is valid; nl_pid 0 is the kernel.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: sendto with our buffer and a valid sockaddr_nl.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                req.as_ptr() as *const libc::c_void,
                req.len(),
                0,
                &to as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(last_err());
        }
        loop {
            // SAFETY: recv into our buffer, within its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(last_err());
            }
            if let Some(answer) = parse_answer(&self.buf[..n as usize], self.seq)? {
                return Ok(answer);
            }
        }
    }

    /// The broker's socket, from COPS's own connection `fd` to it.
    pub fn bus_of(&mut self, fd: RawFd) -> io::Result<BusId> {
        let own = socket_inode(fd)?;
        let me = self
            .query(own, UDIAG_SHOW_PEER)?
            .ok_or_else(|| io::Error::other("own socket not found by sock_diag"))?;
        let peer = me
            .peer
            .ok_or_else(|| io::Error::other("own socket has no peer"))?;
        let broker = self
            .query(peer, UDIAG_SHOW_NAME | UDIAG_SHOW_VFS)?
            .ok_or_else(|| io::Error::other("the broker's socket not found by sock_diag"))?;
        if broker.vfs.is_none() && broker.name.is_none() {
            return Err(io::Error::other("the broker's socket has no address"));
        }
        Ok(BusId {
            vfs: broker.vfs,
            name: broker.name,
        })
    }

    /// Whether one of the sockets `inodes` is connected to the broker `bus`.
    pub fn connected_to(&mut self, bus: &BusId, inodes: &[u64]) -> io::Result<bool> {
        for &ino in inodes.iter().take(MAX_SOCKETS) {
            let Ok(ino) = u32::try_from(ino) else {
                continue; // not a Unix socket (their inodes fit 32 bits)
            };
            let Some(me) = self.query(ino, UDIAG_SHOW_PEER)? else {
                continue; // not a Unix socket, or closed meanwhile
            };
            if me.kind != libc::SOCK_SEQPACKET as u8 {
                continue;
            }
            let Some(peer) = me.peer else { continue };
            let Some(info) = self.query(peer, UDIAG_SHOW_NAME | UDIAG_SHOW_VFS)? else {
                continue;
            };
            if bus.is(&info) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The inode of the socket `fd`.
pub fn socket_inode(fd: RawFd) -> io::Result<u32> {
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor the caller holds, into our struct.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(last_err());
    }
    u32::try_from(st.st_ino).map_err(|_| io::Error::other("socket inode out of range"))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// One netlink datagram: `Some(answer)` when it holds the answer to `seq`
/// (`Some(None)`: no such socket), `None` to read on.
fn parse_answer(mut b: &[u8], seq: u32) -> io::Result<Option<Option<UnixInfo>>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag answer");
    while b.len() >= NLMSG_HDR {
        let len = u32_at(b, 0).ok_or_else(bad)? as usize;
        let kind = u16_at(b, 4).ok_or_else(bad)?;
        let mseq = u32_at(b, 8).ok_or_else(bad)?;
        if len < NLMSG_HDR || len > b.len() {
            return Err(bad());
        }
        let payload = &b[NLMSG_HDR..len];
        if mseq == seq {
            if kind == libc::NLMSG_ERROR as u16 {
                let err = i32::from_ne_bytes(
                    payload
                        .get(0..4)
                        .ok_or_else(bad)?
                        .try_into()
                        .map_err(|_| bad())?,
                );
                return match -err {
                    0 | libc::ENOENT => Ok(Some(None)),
                    e => Err(io::Error::from_raw_os_error(e)),
                };
            }
            if kind == SOCK_DIAG_BY_FAMILY {
                return Ok(Some(Some(parse_unix(payload).ok_or_else(bad)?)));
            }
        }
        let next = (len + 3) & !3;
        b = b.get(next..).unwrap_or(&[]);
    }
    Ok(None)
}

/// A `unix_diag_msg` and its attributes.
fn parse_unix(p: &[u8]) -> Option<UnixInfo> {
    let mut info = UnixInfo {
        kind: *p.get(1)?,
        ..UnixInfo::default()
    };
    let mut a = p.get(MSG_LEN..)?;
    while a.len() >= 4 {
        let len = u16_at(a, 0)? as usize;
        let kind = u16_at(a, 2)?;
        if len < 4 || len > a.len() {
            return None;
        }
        let data = &a[4..len];
        match kind {
            UNIX_DIAG_NAME => info.name = Some(data.to_vec()),
            UNIX_DIAG_VFS => info.vfs = Some((u32_at(data, 0)?, u32_at(data, 4)?)),
            UNIX_DIAG_PEER => info.peer = Some(u32_at(data, 0)?),
            _ => {}
        }
        a = a.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_answer_with_attributes() {
        let mut b = Vec::new();
        let mut payload = vec![libc::AF_UNIX as u8, libc::SOCK_SEQPACKET as u8, 1, 0];
        payload.extend_from_slice(&77u32.to_ne_bytes());
        payload.extend_from_slice(&[0xff; 8]);
        // UNIX_DIAG_NAME "/tmp/s" (6 bytes: rta_len 10, padded to 12).
        payload.extend_from_slice(&10u16.to_ne_bytes());
        payload.extend_from_slice(&UNIX_DIAG_NAME.to_ne_bytes());
        payload.extend_from_slice(b"/tmp/s\0\0");
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&UNIX_DIAG_PEER.to_ne_bytes());
        payload.extend_from_slice(&99u32.to_ne_bytes());
        let len = (NLMSG_HDR + payload.len()) as u32;
        b.extend_from_slice(&len.to_ne_bytes());
        b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&5u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&payload);
        let info = parse_answer(&b, 5).unwrap().unwrap().unwrap();
        assert_eq!(info.kind, libc::SOCK_SEQPACKET as u8);
        assert_eq!(info.name.as_deref(), Some(&b"/tmp/s"[..]));
        assert_eq!(info.peer, Some(99));
        assert_eq!(parse_answer(&b, 6).unwrap(), None, "another seq: read on");
        assert!(parse_answer(&b[..20], 5).is_err(), "truncated");
    }
}
