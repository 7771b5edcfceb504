//! What COPS reads from `/proc`, and which of it needs a privilege:
//! `/proc/<pid>/stat` and `/proc/<pid>/status` are world-readable;
//! `/proc/<pid>/exe` and the links in `/proc/<pid>/fd` of a process of
//! another user need ptrace-read access (the same user, or `CAP_SYS_PTRACE`),
//! and listing `/proc/<pid>/fd` needs `CAP_DAC_READ_SEARCH` besides; `wchan`
//! reads as `0` without ptrace-read access.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// Reads a small `/proc` file with one `open`, one `read` and one `close`
/// (`read_to_string` adds a `statx` and a second `read`; pins read three of
/// these files, so it shows).
pub(crate) fn read_small(path: &str) -> io::Result<String> {
    let c = CString::new(path).map_err(io::Error::other)?;
    // SAFETY: open with a valid C string; the descriptor is closed below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 4096];
    // SAFETY: read into our buffer, within its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    let err = io::Error::last_os_error();
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    if n < 0 {
        return Err(err);
    }
    buf.truncate(n as usize);
    String::from_utf8(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

/// The fields of `/proc/<pid>/stat` COPS uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Field 2: the command name (`comm`, at most 15 bytes).
    pub comm: String,
    /// Field 3: `R`, `S`, `D`, `Z`, `T`, ...
    pub state: char,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so the fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut fields = text.get(close + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), field 22 is the 19th.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        start_time,
    })
}

/// `/proc/<pid>/stat` (world-readable).
pub fn read_stat(pid: u32) -> io::Result<Stat> {
    let text = read_small(&format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable stat"))
}

/// The fields of `/proc/<pid>/status` COPS uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Thread group id: the process's PID (differs when `pid` names a thread).
    pub tgid: u32,
    /// Real and effective uid.
    pub uids: (u32, u32),
}

/// Parses the text of `/proc/<pid>/status`.
pub fn parse_status(status: &str) -> Option<Status> {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
    let tgid = field("Tgid:")?.trim().parse().ok()?;
    let mut ids = field("Uid:")?.split_whitespace().map(str::parse::<u32>);
    let uids = (ids.next()?.ok()?, ids.next()?.ok()?);
    Some(Status { tgid, uids })
}

/// `/proc/<pid>/status` (world-readable).
pub fn read_status(pid: u32) -> io::Result<Status> {
    let text = read_small(&format!("/proc/{pid}/status"))?;
    parse_status(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Tgid or Uid line"))
}

/// The full path of the executable of `pid` (`/proc/<pid>/exe`, " (deleted)"
/// stripped); needs ptrace-read access for another user's process.
pub fn exe_path(pid: u32) -> io::Result<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let path = target.to_string_lossy().into_owned();
    Ok(path.strip_suffix(" (deleted)").unwrap_or(&path).to_owned())
}

/// How `expectedExe` compares: a path whole, a bare name with the last component.
pub fn exe_matches(expected: &str, actual_path: &str) -> bool {
    if expected.contains('/') {
        actual_path == expected
    } else {
        actual_path.rsplit('/').next() == Some(expected)
    }
}

/// The fallback when `/proc/<pid>/exe` cannot be read: the command name, which
/// the kernel sets from the executable's file name cut to 15 bytes (a process
/// can change it, so this is weaker, and the event says so).
pub fn comm_matches(expected: &str, comm: &str) -> bool {
    let base = expected.rsplit('/').next().unwrap_or(expected).as_bytes();
    let cut = &base[..base.len().min(15)];
    comm.as_bytes() == cut
}

/// The socket inodes among the descriptors of `pid` (`/proc/<pid>/fd`).
///
/// For another user's process two privileges are at stake, and either can be
/// missing: listing the directory (its owner's, mode 0500: the same user, or
/// `CAP_DAC_READ_SEARCH`) and reading its links (ptrace-read access: the same
/// user, or `CAP_SYS_PTRACE`). Either refusal is an error of kind
/// `PermissionDenied` that says which one was refused: a link that cannot be
/// read must not pass for a descriptor that is not a socket (the process would
/// then look off the bus and its PID be refused for want of a privilege).
pub fn socket_inodes(pid: u32) -> io::Result<Vec<u64>> {
    use std::os::unix::ffi::OsStrExt;
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        let note = if e.kind() == io::ErrorKind::PermissionDenied {
            "; listing it needs the same user, or CAP_DAC_READ_SEARCH"
        } else {
            ""
        };
        io::Error::new(e.kind(), format!("{dir}: {e}{note}"))
    })?;
    let c = CString::new(dir.as_str()).map_err(io::Error::other)?;
    // SAFETY: open with a valid C string. The links are read relative to it
    // (readlinkat), without walking /proc/<pid>/fd each time.
    let dfd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own (closed when dropped).
    let dfd = unsafe { OwnedFd::from_raw_fd(dfd) };
    let mut out = Vec::new();
    let mut link = [0u8; 64];
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let Ok(name) = CString::new(entry.file_name().as_bytes()) else {
            continue;
        };
        // SAFETY: readlinkat into our buffer, within its length.
        let n = unsafe {
            libc::readlinkat(
                dfd.as_raw_fd(),
                name.as_ptr(),
                link.as_mut_ptr() as *mut libc::c_char,
                link.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::PermissionDenied {
                let msg = format!(
                    "{dir}/{}: {e}; reading it needs ptrace-read access: the same user, or CAP_SYS_PTRACE",
                    entry.file_name().to_string_lossy()
                );
                return Err(io::Error::new(e.kind(), msg));
            }
            continue; // closed meanwhile
        }
        let t = &link[..n.unsigned_abs()];
        if let Some(ino) = t
            .strip_prefix(b"socket:[")
            .and_then(|r| r.strip_suffix(b"]"))
            .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
        {
            out.push(ino);
        }
    }
    Ok(out)
}

/// What the kernel says about each thread of `pid`: `tid 4242 S futex_wait_queue, ...`.
pub fn evidence(pid: u32) -> String {
    const MAX_THREADS: usize = 32;
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("pid {pid} gone from /proc");
    };
    let mut tids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    let mut parts: Vec<String> = tids
        .iter()
        .take(MAX_THREADS)
        .map(|tid| {
            let base = format!("/proc/{pid}/task/{tid}");
            let state = std::fs::read_to_string(format!("{base}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .map_or('?', |s| s.state);
            let wchan = std::fs::read_to_string(format!("{base}/wchan")).unwrap_or_default();
            let wchan = match wchan.trim() {
                "" | "0" => "-",
                w => w,
            };
            format!("tid {tid} {state} {wchan}")
        })
        .collect();
    if tids.len() > MAX_THREADS {
        parts.push(format!("... {} more threads", tids.len() - MAX_THREADS));
    }
    parts.join(", ")
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// The instant `at` in the clock of `/proc/<pid>/stat`'s start time: clock
/// ticks since boot (`CLOCK_BOOTTIME`), rounded down.
pub fn boot_ticks(at: Instant) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return None;
    }
    let now = Instant::now();
    let boot_now = u128::try_from(ts.tv_sec).ok()? * 1_000_000_000 + ts.tv_nsec as u128;
    let boot_at = boot_now.checked_sub(now.saturating_duration_since(at).as_nanos())?;
    u64::try_from(boot_at * u128::from(clock_ticks()) / 1_000_000_000).ok()
}
