//! How broker costs grow with idle connections.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use crate::bus::{BrokerProc, BusRtt};
use crate::{err, procstat, stats, sys, Result};

/// Opens `n` idle FIMS connections to the broker at `socket` (raw handshakes,
/// no client buffers on this side).
pub fn idle_connections(socket: &Path, n: usize) -> Result<Vec<OwnedFd>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let fd = connect_raw(socket).map_err(|e| err!("connection {i}: {e}"))?;
        let mut hs = [0u8; 64];
        let got = sys::recv(fd.as_raw_fd(), &mut hs)?;
        if got != 8 {
            return Err(err!("connection {i}: handshake of {got} bytes"));
        }
        sys::send(fd.as_raw_fd(), &hs[..8])?;
        sys::send(fd.as_raw_fd(), format!("idle_{i}").as_bytes())?;
        out.push(fd);
    }
    Ok(out)
}

fn connect_raw(path: &Path) -> std::io::Result<OwnedFd> {
    // std has no SOCK_SEQPACKET client: connect with libc on a fresh socket.
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; zeroed is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::other("socket path too long"));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain syscall; checked below.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // SAFETY: addr is a valid sockaddr_un.
    let rc = unsafe {
        libc::connect(
            raw,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Broker RSS and heartbeat RTT (echo peer, all processes on one CPU) with `n`
/// idle connections, as one line.
pub fn broker_idle(broker_exe: &Path, peer_exe: &Path, n: usize) -> Result<String> {
    // Same arrangement as the headline RTT: every process on one CPU.
    let _pinned = sys::Pinned::first_cpu()?;
    let broker = BrokerProc::start(broker_exe)?;
    let base_kib = procstat::rss_kib(broker.pid())?;
    let mut rtt = BusRtt::start(&broker, peer_exe, "echo")?;
    let conns = idle_connections(broker.socket(), n)?;
    // One round trip after the last handshake: the broker has read them all.
    rtt.samples(100)?;
    std::thread::sleep(Duration::from_millis(100));
    let kib = procstat::rss_kib(broker.pid())?;
    let mut s = rtt.samples(2_000)?;
    let med = stats::us(stats::median(&mut s));
    drop(conns);
    Ok(format!(
        "broker with {n} idle connections: RSS {:.1} MB (empty {:.1} MB, {:.1} KB per connection), heartbeat RTT (echo peer, one CPU) {med:.1} us",
        kib as f64 / 1024.0,
        base_kib as f64 / 1024.0,
        (kib.saturating_sub(base_kib)) as f64 / n.max(1) as f64,
    ))
}
