//! The bare-socket floors, arranged like the broker measurements.
//!
//! Round trip: the caller (client) -- pair A -- relay process -- pair B --
//! answering process. A request crosses client->relay->answerer and the answer
//! answerer->relay->client: the same 4 hops as through `fims_server`
//! (client->broker->responder->broker->client), in the same number of
//! processes. The relay waits on both sockets with `poll(2)`, as any relay that
//! cannot know which side speaks next must; the answerer decodes the request
//! and sends back a pre-encoded answer of realistic size.
//!
//! Throughput: the caller sends datagrams over one pair to a counting process
//! (1 hop; through the broker it is 2), or, for the relay floor, over pair A
//! to a relay process that forwards them over pair B to the counting process:
//! the broker's 2 hops and 3 processes, with the same `poll` + `recv` + `send`
//! relay as the round trip (one datagram per wakeup, no batching, no routing).
//!
//! CPU under a steady load ([`FanoutFloor`]): the publisher sends over pair A to
//! a relay that copies every datagram to two counting processes (pairs B1, B2):
//! the broker's one-publisher, two-subscriber arrangement, whose relay costs
//! one `poll`, one `recv` and two `send`s per message and nothing else. Its
//! batched variant ([`FanoutFloor::start_batched`]) drains the publisher's
//! socket with one `recvmmsg` per wakeup and sends the batch to each
//! subscriber with one `sendmmsg`: what batching alone can save.
//!
//! Children are forked and run only raw syscalls; they exit when their socket
//! closes, and are reaped (killed after a grace period) on drop.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::sys;
use crate::{err, Result};

/// Largest datagram the floors carry.
const BUF: usize = 64 * 1024;

/// A running 4-hop request/answer floor.
#[derive(Debug)]
pub struct RttFloor {
    client: Option<OwnedFd>,
    children: Vec<libc::pid_t>,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl RttFloor {
    /// Forks the relay and the answerer; `request` is what [`round_trip`](Self::round_trip)
    /// sends, `answer` what comes back.
    pub fn start(request: &[u8], answer: &[u8]) -> Result<RttFloor> {
        let (client, relay_a) = sys::seqpacket_pair()?;
        let (relay_b, answerer) = sys::seqpacket_pair()?;
        let mut children = Vec::new();
        let mut relay_buf = vec![0u8; BUF];
        let (ra, rb) = (relay_a.as_raw_fd(), relay_b.as_raw_fd());
        children.push(sys::fork_child(|| {
            sys::close_except(&mut [ra, rb]);
            relay(ra, rb, &mut relay_buf)
        })?);
        let mut answer_buf = vec![0u8; BUF];
        let aw = answerer.as_raw_fd();
        let answer = answer.to_vec();
        children.push(sys::fork_child(|| {
            sys::close_except(&mut [aw]);
            answer_loop(aw, &answer, &mut answer_buf)
        })?);
        drop((relay_a, relay_b, answerer));
        Ok(RttFloor {
            client: Some(client),
            children,
            request: request.to_vec(),
            buf: vec![0u8; BUF],
        })
    }

    /// One request and its answer.
    pub fn round_trip(&mut self) -> Result<()> {
        let fd = self.fd()?;
        sys::send(fd, &self.request)?;
        match sys::recv(fd, &mut self.buf)? {
            0 => Err(err!("floor relay closed")),
            _ => Ok(()),
        }
    }

    /// `n` timed round trips.
    pub fn samples(&mut self, n: usize) -> Result<Vec<Duration>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            self.round_trip()?;
            out.push(t.elapsed());
        }
        Ok(out)
    }

    fn fd(&self) -> Result<RawFd> {
        self.client
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .ok_or_else(|| err!("floor stopped"))
    }
}

impl Drop for RttFloor {
    fn drop(&mut self) {
        self.client = None;
        for pid in self.children.drain(..) {
            sys::reap(pid, Duration::from_secs(2));
        }
    }
}

fn relay(a: RawFd, b: RawFd, buf: &mut [u8]) -> i32 {
    let fds = [a, b];
    let mut rev = [0i16; 2];
    loop {
        if sys::poll_readable(&fds, &mut rev).is_err() {
            return 1;
        }
        for (i, r) in rev.iter().enumerate() {
            if *r == 0 {
                continue;
            }
            let n = match sys::recv(fds[i], buf) {
                Ok(0) | Err(_) => return 0,
                Ok(n) => n,
            };
            if sys::send(fds[1 - i], &buf[..n]).is_err() {
                return 0;
            }
        }
    }
}

fn answer_loop(fd: RawFd, answer: &[u8], buf: &mut [u8]) -> i32 {
    loop {
        let n = match sys::recv(fd, buf) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => n,
        };
        // Decode like a real receiver would (no allocation).
        if fims::Message::decode(&buf[..n]).is_err() {
            return 2;
        }
        if sys::send(fd, answer).is_err() {
            return 0;
        }
    }
}

/// A running publisher-to-subscriber floor: 1 hop, or 2 through a relay.
#[derive(Debug)]
pub struct ThroughputFloor {
    publisher: Option<OwnedFd>,
    children: Vec<libc::pid_t>,
    buf: Vec<u8>,
}

/// The result of one burst.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    /// Messages the subscriber counted.
    pub delivered: u64,
    /// From the first send to the subscriber's acknowledgement of the end.
    pub elapsed: Duration,
}

impl Burst {
    /// Delivered messages per second.
    pub fn mps(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl ThroughputFloor {
    /// Forks the counting subscriber (1 hop).
    pub fn start() -> Result<ThroughputFloor> {
        let (publisher, sub) = sys::seqpacket_pair()?;
        let child = fork_counter(sub)?;
        Ok(ThroughputFloor {
            publisher: Some(publisher),
            children: vec![child],
            buf: vec![0u8; 64],
        })
    }

    /// Forks a relay and the counting subscriber behind it (2 hops, 3
    /// processes: the broker's arrangement without the broker).
    pub fn start_relayed() -> Result<ThroughputFloor> {
        let (publisher, relay_a) = sys::seqpacket_pair()?;
        let (relay_b, sub) = sys::seqpacket_pair()?;
        // From here on a failed fork drops `floor`, which reaps the counter.
        let mut floor = ThroughputFloor {
            publisher: Some(publisher),
            children: vec![fork_counter(sub)?],
            buf: vec![0u8; 64],
        };
        let mut relay_buf = vec![0u8; BUF];
        let (ra, rb) = (relay_a.as_raw_fd(), relay_b.as_raw_fd());
        let relay_pid = sys::fork_child(|| {
            sys::close_except(&mut [ra, rb]);
            relay(ra, rb, &mut relay_buf)
        });
        drop((relay_a, relay_b));
        floor.children.push(relay_pid?);
        Ok(floor)
    }

    /// Sends `msg` `n` times, then an end marker, and waits for the count.
    pub fn burst(&mut self, msg: &[u8], n: u64) -> Result<Burst> {
        let fd = self
            .publisher
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .ok_or_else(|| err!("floor stopped"))?;
        let t = Instant::now();
        for _ in 0..n {
            sys::send(fd, msg)?;
        }
        sys::send(fd, b"E")?;
        let got = sys::recv(fd, &mut self.buf)?;
        let elapsed = t.elapsed();
        let count: [u8; 8] = self
            .buf
            .get(..got)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| err!("floor subscriber sent {got} bytes, not a count"))?;
        Ok(Burst {
            delivered: u64::from_le_bytes(count),
            elapsed,
        })
    }
}

impl Drop for ThroughputFloor {
    fn drop(&mut self) {
        self.publisher = None;
        for pid in self.children.drain(..) {
            sys::reap(pid, Duration::from_secs(2));
        }
    }
}

/// Forks the counting subscriber on `sub` (closed in this process).
fn fork_counter(sub: OwnedFd) -> Result<libc::pid_t> {
    let mut buf = vec![0u8; BUF];
    let s = sub.as_raw_fd();
    let child = sys::fork_child(|| {
        sys::close_except(&mut [s]);
        count_loop(s, &mut buf)
    })?;
    drop(sub);
    Ok(child)
}

fn count_loop(fd: RawFd, buf: &mut [u8]) -> i32 {
    let mut count: u64 = 0;
    loop {
        let n = match sys::recv(fd, buf) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => n,
        };
        if n == 1 {
            if sys::send(fd, &count.to_le_bytes()).is_err() {
                return 0;
            }
            count = 0;
        } else {
            count += 1;
        }
    }
}

/// Datagrams one batched relay wakeup moves at most.
const BATCH: usize = 64;

/// A relay copying each datagram from one publisher to two counting
/// subscribers: the CPU floor of the steady load.
#[derive(Debug)]
pub struct FanoutFloor {
    /// `relay` or `batched relay`.
    name: &'static str,
    publisher: Option<OwnedFd>,
    /// The two counters, then the relay.
    children: Vec<libc::pid_t>,
    buf: Vec<u8>,
}

impl FanoutFloor {
    /// Forks the two counters and the one-datagram-per-wakeup relay.
    pub fn start() -> Result<FanoutFloor> {
        FanoutFloor::start_with(false)
    }

    /// Forks the two counters and the batched relay (`recvmmsg`, `sendmmsg`).
    pub fn start_batched() -> Result<FanoutFloor> {
        FanoutFloor::start_with(true)
    }

    fn start_with(batched: bool) -> Result<FanoutFloor> {
        let (publisher, ra) = sys::seqpacket_pair()?;
        let (rb1, s1) = sys::seqpacket_pair()?;
        let (rb2, s2) = sys::seqpacket_pair()?;
        // From here on a failed fork drops `floor`, which reaps what was forked.
        let mut floor = FanoutFloor {
            name: if batched { "batched relay" } else { "relay" },
            publisher: Some(publisher),
            children: vec![fork_counter(s1)?],
            buf: vec![0u8; 64],
        };
        floor.children.push(fork_counter(s2)?);
        let mut buf = vec![0u8; BUF];
        let mut batch = sys::Batch::new(if batched { BATCH } else { 1 }, 2048);
        let fds = [ra.as_raw_fd(), rb1.as_raw_fd(), rb2.as_raw_fd()];
        let relay = sys::fork_child(|| {
            sys::close_except(&mut fds.clone());
            match batched {
                true => fanout_batched(fds, &mut batch, &mut buf),
                false => fanout(fds, &mut buf),
            }
        });
        drop((ra, rb1, rb2));
        floor.children.push(relay?);
        Ok(floor)
    }

    /// Sends one datagram to the relay.
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        Ok(sys::send(self.fd()?, msg)?)
    }

    /// Each counter's count since the previous call (in the order they answer).
    pub fn counts(&mut self) -> Result<[u64; 2]> {
        let fd = self.fd()?;
        sys::send(fd, b"E")?;
        let mut out = [0u64; 2];
        for c in &mut out {
            let got = sys::recv(fd, &mut self.buf)?;
            let count: [u8; 8] = self
                .buf
                .get(..got)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| err!("fan-out counter sent {got} bytes, not a count"))?;
            *c = u64::from_le_bytes(count);
        }
        Ok(out)
    }

    /// `relay` or `batched relay`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The relay's PID.
    pub fn relay_pid(&self) -> u32 {
        self.children.get(2).map_or(0, |&p| p as u32)
    }

    /// The counters' PIDs.
    pub fn counter_pids(&self) -> [u32; 2] {
        [0, 1].map(|i| self.children.get(i).map_or(0, |&p| p as u32))
    }

    fn fd(&self) -> Result<RawFd> {
        self.publisher
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .ok_or_else(|| err!("floor stopped"))
    }
}

impl Drop for FanoutFloor {
    fn drop(&mut self) {
        self.publisher = None;
        for pid in self.children.drain(..) {
            sys::reap(pid, Duration::from_secs(2));
        }
    }
}

/// `fds[0]` is the publisher's side: each datagram from it goes to `fds[1]`
/// and `fds[2]`; each datagram from those (a count) goes back to `fds[0]`.
fn fanout(fds: [RawFd; 3], buf: &mut [u8]) -> i32 {
    let mut rev = [0i16; 3];
    loop {
        if sys::poll_readable(&fds, &mut rev).is_err() {
            return 1;
        }
        for (i, r) in rev.iter().enumerate() {
            if *r == 0 {
                continue;
            }
            let n = match sys::recv(fds[i], buf) {
                Ok(0) | Err(_) => return 0,
                Ok(n) => n,
            };
            let to: &[RawFd] = if i == 0 { &fds[1..] } else { &fds[..1] };
            for &fd in to {
                if sys::send(fd, &buf[..n]).is_err() {
                    return 0;
                }
            }
        }
    }
}

/// [`fanout`] with batches: each wakeup drains up to [`BATCH`] datagrams from
/// `fds[0]` with one `recvmmsg` and sends them to `fds[1]` and `fds[2]` with
/// one `sendmmsg` each. The counts coming back are single datagrams.
fn fanout_batched(fds: [RawFd; 3], batch: &mut sys::Batch, buf: &mut [u8]) -> i32 {
    let mut rev = [0i16; 3];
    loop {
        if sys::poll_readable(&fds, &mut rev).is_err() {
            return 1;
        }
        if rev[0] != 0 {
            let n = match batch.recv(fds[0]) {
                Ok(n) => n,
                Err(_) => return 0,
            };
            if (0..n).any(|i| batch.len_of(i) == 0) {
                return 0; // the publisher closed
            }
            for &out in &fds[1..] {
                if n > 0 && batch.send(out, n).is_err() {
                    return 0;
                }
            }
        }
        for i in 1..3 {
            if rev[i] == 0 {
                continue;
            }
            let n = match sys::recv(fds[i], buf) {
                Ok(0) | Err(_) => return 0,
                Ok(n) => n,
            };
            if sys::send(fds[0], &buf[..n]).is_err() {
                return 0;
            }
        }
    }
}
