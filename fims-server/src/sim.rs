//! A sans-IO driver of the broker's core, for the fuzz targets (`fuzz/`) and
//! deterministic tests: fake connections whose "socket" holds a chosen number
//! of datagrams, a virtual clock, and a check of the broker's bookkeeping
//! after every step. Not a stable API.
//!
//! [`Sim::run`] turns arbitrary bytes into a sequence of [`Op`]s (connect,
//! handshake, raw datagrams, `sub`, messages, reads, full sockets, hang-ups,
//! time passing) and fails on the first broken invariant; it never panics on
//! any input unless the broker has a bug.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::conn::{Link, State};
use crate::core::{cost, Broker};
use crate::index::ConnId;
use crate::{Config, Stats};

mod ops;
pub use ops::{encode_ops, seed_inputs, Op, SPEC_VECTORS};

/// What a fake client's socket holds and whether it is still connected.
#[derive(Debug, Default)]
struct Socket {
    inbox: VecDeque<Vec<u8>>,
    /// Datagrams the socket takes before `send` says `WouldBlock`.
    room: usize,
    /// The client hung up: sends fail with `EPIPE`.
    peer_gone: bool,
    /// The broker closed this connection.
    closed: bool,
}

/// The broker's side of a fake connection.
#[derive(Debug)]
pub(crate) struct SimLink(Rc<RefCell<Socket>>);

impl Link for SimLink {
    fn send(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let mut s = self.0.borrow_mut();
        if s.peer_gone {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        if s.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        s.room -= 1;
        s.inbox.push_back(parts.concat());
        Ok(())
    }

    fn send_many(&mut self, dgs: &[&[u8]]) -> io::Result<usize> {
        let mut sent = 0;
        for dg in dgs {
            match self.send(&[dg]) {
                Ok(()) => sent += 1,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }
}

#[derive(Debug)]
struct Client {
    socket: Rc<RefCell<Socket>>,
    conn: Option<ConnId>,
}

/// The simulated broker and its clients.
#[derive(Debug)]
pub struct Sim {
    core: Broker<SimLink>,
    clients: Vec<Client>,
    now: Instant,
    /// While set, what clients send is routed but not flushed (as the
    /// datagrams of one loop turn of the server): see [`Sim::cork`].
    corked: bool,
}

/// Datagrams a fake socket holds unless told otherwise.
const DEFAULT_ROOM: usize = 64;

impl Sim {
    /// A broker core with the limits of `cfg` (its socket path is not used).
    pub fn new(cfg: &Config) -> Sim {
        Sim {
            core: Broker::new(cfg),
            clients: Vec::new(),
            now: Instant::now(),
            corked: false,
        }
    }

    /// Connects a client of Unix user `uid` (its user name is `u<uid>`); returns
    /// the client's number, whether or not the broker kept the connection.
    pub fn connect(&mut self, uid: u32) -> usize {
        let socket = Rc::new(RefCell::new(Socket {
            room: DEFAULT_ROOM,
            ..Socket::default()
        }));
        let link = SimLink(Rc::clone(&socket));
        let conn = self
            .core
            .open(link, uid, format!("u{uid}").into(), self.now)
            .ok();
        if conn.is_none() {
            socket.borrow_mut().closed = true;
        }
        self.clients.push(Client { socket, conn });
        self.clients.len() - 1
    }

    fn conn_of(&self, client: usize) -> Option<ConnId> {
        self.clients.get(client).and_then(|c| c.conn)
    }

    /// Client `client` sends one datagram (ignored once it is closed).
    pub fn send(&mut self, client: usize, dg: &[u8]) {
        if let Some(id) = self.conn_of(client) {
            self.core.datagram(id, dg, dg.len());
            self.settle();
        }
    }

    /// Client `client` sends a datagram of `len` bytes that does not fit the
    /// broker's receive buffer (the broker sees only its length).
    pub fn send_oversize(&mut self, client: usize, len: usize) {
        if let Some(id) = self.conn_of(client) {
            self.core.datagram(id, &[], len.max(1));
            self.settle();
        }
    }

    /// Client `client` answers the handshake and sends its name.
    pub fn handshake(&mut self, client: usize, name: &str) {
        let hs = fims::Handshake {
            version: fims::codec::LAYOUT_VERSION,
            max_len: self.core.lim.max_len,
        }
        .encode();
        self.send(client, &hs);
        self.send(client, name.as_bytes());
    }

    /// Client `client` reads up to `max` datagrams (freeing that much room in
    /// its socket, so the broker flushes its queue).
    pub fn read(&mut self, client: usize, max: usize) -> Vec<Vec<u8>> {
        let Some(c) = self.clients.get(client) else {
            return Vec::new();
        };
        let got: Vec<Vec<u8>> = {
            let mut s = c.socket.borrow_mut();
            let n = max.min(s.inbox.len());
            s.room += n;
            s.inbox.drain(..n).collect()
        };
        self.writable(client);
        got
    }

    /// Sets how many more datagrams client `client`'s socket takes.
    pub fn set_room(&mut self, client: usize, room: usize) {
        if let Some(c) = self.clients.get(client) {
            c.socket.borrow_mut().room = room;
            self.writable(client);
        }
    }

    fn writable(&mut self, client: usize) {
        if let Some(id) = self.conn_of(client) {
            if self.core.conn(id).is_some_and(|c| c.want_writable) {
                self.core.writable(id);
                self.settle();
            }
        }
    }

    /// Client `client` closes its end: the broker's next send fails and the
    /// broker sees the hang-up.
    pub fn hangup(&mut self, client: usize) {
        let Some(c) = self.clients.get(client) else {
            return;
        };
        c.socket.borrow_mut().peer_gone = true;
        if let Some(id) = c.conn {
            self.core.hangup(id);
            self.settle();
        }
    }

    /// Client `client` is gone but the broker has not seen the hang-up yet
    /// (its next send to it fails).
    pub fn vanish(&mut self, client: usize) {
        if let Some(c) = self.clients.get(client) {
            c.socket.borrow_mut().peer_gone = true;
        }
    }

    /// Lets `d` pass on the broker's clock (handshake deadlines fire).
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.core.expire(self.now);
        self.settle();
    }

    /// Whether the broker still holds client `client`'s connection.
    pub fn is_open(&self, client: usize) -> bool {
        self.conn_of(client).is_some()
    }

    /// Datagrams waiting in client `client`'s socket.
    pub fn pending(&self, client: usize) -> usize {
        self.clients
            .get(client)
            .map_or(0, |c| c.socket.borrow().inbox.len())
    }

    /// The broker's counters.
    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    /// Per-receiver drops of client `client`: `(overflow, shed)`.
    pub fn drops(&self, client: usize) -> (u64, u64) {
        self.conn_of(client)
            .and_then(|id| self.core.conn(id))
            .map_or((0, 0), |c| (c.overflow, c.shed))
    }

    /// While `on`, what clients send is routed into the broker's batch but
    /// not sent, as the datagrams of one turn of the server's loop; turning
    /// it off sends the batch.
    pub fn cork(&mut self, on: bool) {
        self.corked = on;
        self.settle();
    }

    /// Applies what the core did: sends the batch (unless corked); closed
    /// connections lose their client link.
    fn settle(&mut self) {
        if !self.corked {
            self.core.flush();
        }
        let closed: Vec<SimLink> = self.core.take_closed().collect();
        for link in closed {
            link.0.borrow_mut().closed = true;
        }
        for c in &mut self.clients {
            if c.socket.borrow().closed {
                c.conn = None;
            }
        }
        let mut interest = Vec::new();
        self.core.take_interest(&mut interest);
    }

    /// Checks the broker's bookkeeping and every datagram clients received.
    pub fn check(&self) -> Result<(), String> {
        self.core.check()?;
        for (n, c) in self.clients.iter().enumerate() {
            let s = c.socket.borrow();
            for dg in &s.inbox {
                if dg.len() == fims::Handshake::LEN {
                    continue;
                }
                let m = fims::Message::decode(dg)
                    .map_err(|e| format!("client {n} received a bad datagram: {e}"))?;
                let ok_user = m.username.is_empty() || m.username.starts_with('u');
                if !ok_user || dg.len() > self.core.lim.max_len as usize {
                    return Err(format!("client {n} received {m:?}"));
                }
            }
        }
        Ok(())
    }

    /// Runs the operations `bytes` encode (see [`Op`]) on a broker with small
    /// limits, checking after each; the first broken invariant is the error.
    pub fn run(bytes: &[u8]) -> Result<Stats, String> {
        let (cfg, ops) = ops::decode(bytes);
        let mut sim = Sim::new(&cfg);
        for op in ops {
            sim.apply(&op);
            sim.check().map_err(|e| format!("after {op:?}: {e}"))?;
        }
        Ok(sim.stats())
    }
}

impl<L: Link> Broker<L> {
    /// Checks that every count the broker keeps agrees with what it holds.
    pub(crate) fn check(&self) -> Result<(), String> {
        self.out.check()?;
        self.index.check()?;
        if let Some(id) = self.out.receivers().find(|&id| self.conn(id).is_none()) {
            return Err(format!("a delivery waits for closed connection {id}"));
        }
        let (mut conns, mut subs, mut queued) = (0u64, 0u64, 0usize);
        let mut uids = std::collections::HashMap::<u32, usize>::new();
        for (id, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            conns += 1;
            subs += c.subs.len() as u64;
            *uids.entry(c.uid).or_default() += 1;
            c.queue.check()?;
            queued += c.queue.lengths().map(cost).sum::<usize>();
            let over = c.queue.len() > self.lim.queue.datagrams
                || (c.queue.len() > 1 && c.queue.bytes() > self.lim.queue.bytes);
            let listed = c
                .backlog_pos
                .is_some_and(|p| self.backlog.get(p) == Some(&id));
            if over || listed == c.queue.is_empty() || c.want_writable == c.queue.is_empty() {
                return Err(format!(
                    "connection {id}: queue {} datagrams {} bytes, listed {listed}, writable {}",
                    c.queue.len(),
                    c.queue.bytes(),
                    c.want_writable
                ));
            }
            if c.subs.len() > self.lim.max_subs || (c.state != State::Ready && !c.subs.is_empty()) {
                return Err(format!(
                    "connection {id} holds {} subscriptions",
                    c.subs.len()
                ));
            }
            if let Some(key) = c.subs.iter().find(|k| !self.index.contains(id, k)) {
                return Err(format!("connection {id}: {key} missing from the index"));
            }
        }
        let s = &self.stats;
        let counted = (s.connections, s.subscriptions, s.queued_bytes as usize);
        if counted != (conns, subs, queued) || self.index.entries() as u64 != subs {
            return Err(format!(
                "counted {counted:?}, hold ({conns}, {subs}, {queued}), index {}",
                self.index.entries()
            ));
        }
        if queued > self.lim.max_queued
            || self.backlog.len()
                != self
                    .conns
                    .iter()
                    .flatten()
                    .filter(|c| !c.queue.is_empty())
                    .count()
        {
            return Err(format!(
                "{queued} bytes queued over the budget {}, or backlog off",
                self.lim.max_queued
            ));
        }
        let per_uid_over =
            self.lim.max_per_uid > 0 && uids.values().any(|&n| n > self.lim.max_per_uid);
        if per_uid_over {
            return Err(format!(
                "a uid holds more than {} connections: {uids:?}",
                self.lim.max_per_uid
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
