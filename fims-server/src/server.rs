//! The broker's event loop: accept, handshake, subscribe, route.
//!
//! Single-threaded, edge-triggered epoll (mio). One shared receive buffer; each
//! message is sent to its receivers straight from that buffer (header and
//! strings rewritten in a small side buffer, body by reference); only a
//! receiver whose socket is full gets a copy, shared by all such receivers.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fims::codec::{
    decode_sub_body, Handshake, Message, Method, HEADER_LEN, LAYOUT_VERSION, MAX_OVERHEAD,
};
use fims::DecodeError;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::conn::{Conn, Delivery, QueueLimit, State};
use crate::index::{ConnId, SubIndex};
use crate::listener::{listen, ServeError};
use crate::stats::{DropKind, RateLimiter, Stats};
use crate::{sys, Config};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Datagrams read from one connection before the others get a turn.
const READ_BUDGET: usize = 64;

/// Stops a running [`Server`] from another thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Asks the server to stop; [`Server::run`] returns soon after.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // A failed wake means the loop is gone already.
        let _ = self.waker.wake();
    }
}

/// The broker. Create with [`Server::bind`], then [`Server::run`] on the same thread.
#[derive(Debug)]
pub struct Server {
    cfg: Config,
    limit: QueueLimit,
    poll: Poll,
    listener: OwnedFd,
    socket_id: (u64, u64),
    conns: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    index: SubIndex,
    rbuf: Box<[u8]>,
    obuf: Vec<u8>,
    gen: u64,
    stats: Stats,
    limiter: RateLimiter,
    again: Vec<ConnId>,
    to_close: Vec<ConnId>,
    outcomes: Vec<(ConnId, Delivery)>,
    users: HashMap<u32, Rc<str>>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Server {
    /// Binds the socket (replacing a stale file, refusing when a live broker
    /// answers) and sets its mode.
    pub fn bind(cfg: Config) -> Result<Server, ServeError> {
        if let Err(e) = fims::socket::raise_nofile_limit() {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
        let listener = listen(&cfg.socket, cfg.mode)?;
        let path = cfg.socket.clone();
        let meta = std::fs::symlink_metadata(&path).map_err(|source| ServeError::Bind {
            path: path.clone(),
            source,
        })?;
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let limit = QueueLimit {
            datagrams: cfg.queue_datagrams.max(1),
            bytes: cfg.queue_bytes,
        };
        // The handshake number limits the whole datagram, as in the existing broker.
        let rbuf = vec![0u8; (cfg.max_len as usize).max(HEADER_LEN)].into_boxed_slice();
        tracing::info!(socket = %path.display(), mode = format_args!("{:o}", cfg.mode),
            max_len = cfg.max_len, "fims_server listening");
        Ok(Server {
            cfg,
            limit,
            poll,
            listener,
            socket_id: (meta.dev(), meta.ino()),
            conns: Vec::new(),
            free: Vec::new(),
            index: SubIndex::default(),
            rbuf,
            obuf: Vec::with_capacity(MAX_OVERHEAD),
            gen: 0,
            stats: Stats::default(),
            limiter: RateLimiter::new(Duration::from_secs(1)),
            again: Vec::new(),
            to_close: Vec::new(),
            outcomes: Vec::new(),
            users: HashMap::new(),
            stop: Arc::new(AtomicBool::new(false)),
            waker,
        })
    }

    /// A handle that stops [`run`](Self::run) from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: Arc::clone(&self.stop),
            waker: Arc::clone(&self.waker),
        }
    }

    /// What the broker counted so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.cfg.socket
    }

    /// Runs until the shutdown handle fires, then closes every connection,
    /// removes the socket file (if it is still ours) and returns the counters.
    pub fn run(mut self) -> Result<Stats, ServeError> {
        let result = self.event_loop();
        self.remove_socket_file();
        let s = self.stats;
        tracing::info!(
            accepted = s.accepted,
            handshakes = s.handshakes,
            sub_refused = s.sub_refused,
            routed = s.routed,
            delivered = s.delivered,
            overflow = s.overflow,
            malformed = s.malformed,
            unknown_method = s.unknown_method,
            oversize = s.oversize,
            bad_handshakes = s.bad_handshakes,
            send_errors = s.send_errors,
            "fims_server stopped"
        );
        result.map(|()| s)
    }

    fn event_loop(&mut self) -> Result<(), ServeError> {
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::SeqCst) {
            let again = std::mem::take(&mut self.again);
            let timeout = (!again.is_empty()).then_some(Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    self.again = again;
                    continue;
                }
                return Err(e.into());
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(id) => {
                        if ev.is_writable() {
                            self.flush(id);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(id);
                        }
                    }
                }
                self.close_marked();
            }
            for id in again {
                self.read(id);
                self.close_marked();
            }
        }
        Ok(())
    }

    fn remove_socket_file(&self) {
        let path = &self.cfg.socket;
        match std::fs::symlink_metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == self.socket_id => {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(socket = %path.display(), error = %e, "cannot remove socket file");
                }
            }
            _ => tracing::info!(socket = %path.display(), "socket file is not ours any more; left"),
        }
    }

    fn warn_drop(&mut self, kind: DropKind, count: u64, detail: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.limiter.allow(kind, Instant::now()) {
            tracing::warn!(kind = ?kind, total = count, suppressed, detail = %detail, "datagram dropped");
        }
    }

    fn accept_all(&mut self) {
        loop {
            match sys::accept(self.listener.as_fd()) {
                Ok(fd) => self.add_conn(fd),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    if let Some(suppressed) = self.limiter.allow(DropKind::Accept, Instant::now()) {
                        tracing::error!(error = %e, suppressed, "accept failed");
                    }
                    return;
                }
            }
        }
    }

    fn user_of(&mut self, fd: &OwnedFd) -> Rc<str> {
        let uid = match sys::peer_uid(fd.as_fd()) {
            Ok(uid) => uid,
            Err(e) => {
                tracing::warn!(error = %e, "SO_PEERCRED failed; username left as ?");
                return "?".into();
            }
        };
        Rc::clone(
            self.users
                .entry(uid)
                .or_insert_with(|| sys::user_name(uid).into()),
        )
    }

    fn add_conn(&mut self, fd: OwnedFd) {
        self.stats.accepted += 1;
        fims::socket::set_buffers(fd.as_fd(), self.cfg.max_len as usize);
        let user = self.user_of(&fd);
        let hs = Handshake {
            version: LAYOUT_VERSION,
            max_len: self.cfg.max_len,
        }
        .encode();
        if let Err(e) = sys::send_parts(fd.as_fd(), &[&hs]) {
            tracing::debug!(error = %e, "client left before the handshake");
            return;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&fd.as_raw_fd()),
            Token(id),
            Interest::READABLE,
        ) {
            tracing::error!(error = %e, "cannot register a connection");
            self.free.push(id);
            return;
        }
        self.conns[id] = Some(Conn::new(fd, user));
    }

    /// Marks `id` for closing at the next [`close_marked`](Self::close_marked).
    fn mark_close(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) {
            if !c.closing {
                c.closing = true;
                self.to_close.push(id);
            }
        }
    }

    fn close_marked(&mut self) {
        while let Some(id) = self.to_close.pop() {
            let Some(conn) = self.conns.get_mut(id).and_then(Option::take) else {
                continue;
            };
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&conn.fd.as_raw_fd()));
            for key in &conn.subs {
                self.index.remove(id, key);
            }
            if conn.overflow > 0 {
                tracing::info!(name = %conn.name, overflow = conn.overflow, "slow receiver closed");
            }
            tracing::debug!(name = %conn.name, "connection closed");
            self.free.push(id);
        }
    }

    fn flush(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        match conn.flush() {
            Err(()) => self.mark_close(id),
            Ok(failed) => {
                self.stats.send_errors += failed;
                if conn.queued() == 0 && conn.want_writable {
                    conn.want_writable = false;
                    let _ = self.poll.registry().reregister(
                        &mut SourceFd(&conn.fd.as_raw_fd()),
                        Token(id),
                        Interest::READABLE,
                    );
                }
            }
        }
    }

    fn read(&mut self, id: ConnId) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        self.read_with(id, &mut rbuf);
        self.rbuf = rbuf;
    }

    fn read_with(&mut self, id: ConnId, rbuf: &mut [u8]) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get(id).and_then(Option::as_ref) else {
                return;
            };
            if conn.closing {
                return;
            }
            match sys::recv(conn.fd.as_fd(), rbuf) {
                Ok(0) if sys::peer_hung_up(conn.fd.as_fd()) => return self.mark_close(id),
                Ok(n) => self.on_datagram(id, rbuf, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "recv failed; closing");
                    return self.mark_close(id);
                }
            }
        }
        self.again.push(id);
    }

    fn on_datagram(&mut self, id: ConnId, rbuf: &[u8], n: usize) {
        let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        match conn.state {
            State::AwaitHandshake => {
                let hs = rbuf.get(..n).and_then(|b| Handshake::decode(b).ok());
                match hs {
                    Some(hs) if hs.version == LAYOUT_VERSION => conn.state = State::AwaitName,
                    _ => self.bad_handshake(id, n, "handshake is not 8 bytes of version 1"),
                }
            }
            State::AwaitName => match rbuf.get(..n).map(std::str::from_utf8) {
                Some(Ok(name)) if (1..=255).contains(&n) => {
                    conn.name = name.into();
                    conn.state = State::Ready;
                    self.stats.handshakes += 1;
                    tracing::debug!(name, user = %conn.user, "client connected");
                }
                _ => self.bad_handshake(id, n, "process name must be 1..=255 bytes of UTF-8"),
            },
            State::Ready => {
                if n > rbuf.len() {
                    self.stats.oversize += 1;
                    let c = self.stats.oversize;
                    return self.warn_drop(DropKind::Oversize, c, &format_args!("{n} bytes"));
                }
                self.on_message(id, &rbuf[..n]);
            }
        }
    }

    fn bad_handshake(&mut self, id: ConnId, n: usize, why: &str) {
        self.stats.bad_handshakes += 1;
        let c = self.stats.bad_handshakes;
        self.warn_drop(
            DropKind::BadHandshake,
            c,
            &format_args!("{why} ({n} bytes); closing that connection"),
        );
        self.mark_close(id);
    }

    fn on_message(&mut self, id: ConnId, dg: &[u8]) {
        let checked = Message::decode(dg).and_then(|m| m.check_data().map(|meth| (m, meth)));
        let (msg, method) = match checked {
            Ok(ok) => ok,
            Err(DecodeError::UnknownMethod) => {
                self.stats.unknown_method += 1;
                let c = self.stats.unknown_method;
                let m = String::from_utf8_lossy(dg.get(12..12 + usize::from(dg[0])).unwrap_or(&[]))
                    .into_owned();
                return self.warn_drop(DropKind::UnknownMethod, c, &format_args!("method {m:?}"));
            }
            Err(e) => {
                self.stats.malformed += 1;
                let c = self.stats.malformed;
                return self.warn_drop(DropKind::Malformed, c, &e);
            }
        };
        if method == Method::Sub {
            self.subscribe(id, &msg);
        } else {
            self.route(id, &msg, method);
        }
    }

    fn subscribe(&mut self, id: ConnId, msg: &Message<'_>) {
        let answer = match decode_sub_body(msg.body) {
            Ok(list) => {
                let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
                    return;
                };
                for (uri, pub_only) in list {
                    if let Some(key) = self.index.add(id, uri, pub_only) {
                        conn.subs.push(key);
                    }
                }
                tracing::debug!(name = %conn.name, subs = conn.subs.len(), "subscribed");
                "SUCCESS".to_owned()
            }
            Err(e) => {
                self.stats.sub_refused += 1;
                tracing::debug!(error = %e, "subscribe refused");
                format!("FAILURE: {e}")
            }
        };
        let reply = Message {
            process_name: "fims_server",
            body: answer.as_bytes(),
            ..Message::default()
        };
        let mut out = Vec::with_capacity(reply.encoded_len());
        // Cannot fail: every string is short and the body small.
        if reply.encode(&mut out).is_ok() {
            self.deliver_to(id, &[&out]);
        }
    }

    /// Delivers one datagram to one connection (used for broker answers).
    fn deliver_to(&mut self, id: ConnId, parts: &[&[u8]]) {
        let limit = self.limit;
        let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let outcome = conn.deliver(parts, &mut None, limit);
        self.after_delivery(id, outcome);
    }

    fn after_delivery(&mut self, id: ConnId, outcome: Delivery) {
        match outcome {
            Delivery::Sent => self.stats.delivered += 1,
            Delivery::Queued { first } => {
                self.stats.delivered += 1;
                if first {
                    self.want_writable(id);
                }
            }
            Delivery::Overflow => {
                self.stats.overflow += 1;
                if let Some(suppressed) = self.limiter.allow(DropKind::Overflow, Instant::now()) {
                    let name = self.conn_name(id);
                    tracing::warn!(receiver = %name, total = self.stats.overflow, suppressed,
                        "outbound queue full; message dropped for this receiver");
                }
            }
            Delivery::Gone => self.mark_close(id),
            Delivery::Failed(errno) => {
                self.stats.send_errors += 1;
                let c = self.stats.send_errors;
                let detail = format_args!("send failed: {}", io::Error::from_raw_os_error(errno));
                self.warn_drop(DropKind::SendError, c, &detail);
            }
        }
    }

    fn conn_name(&self, id: ConnId) -> String {
        self.conns
            .get(id)
            .and_then(Option::as_ref)
            .map(|c| c.name.to_string())
            .unwrap_or_default()
    }

    fn want_writable(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        if !conn.want_writable {
            conn.want_writable = true;
            let r = self.poll.registry().reregister(
                &mut SourceFd(&conn.fd.as_raw_fd()),
                Token(id),
                Interest::READABLE | Interest::WRITABLE,
            );
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot ask for writable events; closing");
                self.mark_close(id);
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
        let pname = if msg.process_name.is_empty() {
            &*sender.name
        } else {
            msg.process_name
        };
        let obuf = &mut self.obuf;
        obuf.clear();
        let strs = [msg.method, msg.uri, msg.replyto, pname, &*sender.user];
        // Every string is at most 255 bytes: decoded ones by the format, the
        // handshake name and the user name by their checks.
        obuf.extend(strs.iter().map(|s| s.len() as u8));
        obuf.extend_from_slice(&[0, 0, 0]);
        obuf.extend_from_slice(&(msg.body.len() as u32).to_le_bytes());
        for s in strs {
            obuf.extend_from_slice(s.as_bytes());
        }
        let out_len = obuf.len() + msg.body.len();
        if out_len > self.cfg.max_len as usize {
            // Within 255 bytes of the limit, the stamped user name pushed it over:
            // receivers size their buffers by the handshake number.
            self.stats.oversize += 1;
            let c = self.stats.oversize;
            let detail = format_args!("{out_len} bytes once the user name is written in");
            return self.warn_drop(DropKind::Oversize, c, &detail);
        }
        self.stats.routed += 1;
        let obuf = std::mem::take(&mut self.obuf);
        let parts: [&[u8]; 2] = [&obuf, msg.body];
        let mut shared = None;
        let mut outcomes = std::mem::take(&mut self.outcomes);
        let (index, conns, limit) = (&self.index, &mut self.conns, self.limit);
        index.for_each_match(msg.uri, |e| {
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
            let outcome = conn.deliver(&parts, &mut shared, limit);
            if outcome != Delivery::Sent {
                outcomes.push((e.conn, outcome));
            } else {
                self.stats.delivered += 1;
            }
        });
        for (id, outcome) in outcomes.drain(..) {
            self.after_delivery(id, outcome);
        }
        self.outcomes = outcomes;
        self.obuf = obuf;
    }
}
