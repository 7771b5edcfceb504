//! The tokio FIMS client (feature `tokio`): the blocking client's twin for async hosts.
//!
//! [`Client::recv`] is cancel-safe (a datagram is either taken whole or left in the
//! socket), so it can sit in a `select!` next to timers. [`Client::sender`] gives a
//! cloneable [`Sender`] for other tasks; senders belong to one connection, take new
//! ones after [`Client::reconnect`].
//!
//! Connecting never blocks the runtime: it is the blocking client's
//! step-by-step [`Connecting`] driven by [`establish`] (a full listen backlog
//! is retried on a timer; the connect, the handshake and the first answers run
//! under one deadline, [`Client::connect_timeout`]).
//!
//! Subscriptions work as in the blocking client: the client keeps its complete
//! set and sends it whole, in one `sub`, on every change and every reconnect
//! (a `sub` replaces the connection's set on the existing broker); at most 255
//! URIs, a larger set is refused before anything is sent.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::blocking::{Connecting, Progress, Wait};

use crate::codec::{Message, Method, OwnedMessage, Subscription};
use crate::error::{Error, Result};
use crate::{proto, sys};

/// An async connection to the FIMS broker.
#[derive(Debug)]
pub struct Client {
    /// The connection's sending half; also owns the socket.
    tx: Sender,
    path: PathBuf,
    rbuf: Vec<u8>,
    subs: Vec<Subscription>,
    pending: VecDeque<OwnedMessage>,
    current: OwnedMessage,
    replies: proto::ReplyUris,
}

/// Sends on a [`Client`]'s connection from another task.
#[derive(Debug, Clone)]
pub struct Sender {
    io: Arc<AsyncFd<OwnedFd>>,
    name: Arc<str>,
    max_len: u32,
    wbuf: Vec<u8>,
}

impl Sender {
    /// Sends one data message as the client's process.
    pub async fn send(
        &mut self,
        method: Method,
        uri: &str,
        replyto: Option<&str>,
        body: &[u8],
    ) -> Result<()> {
        proto::encode_data(
            &mut self.wbuf,
            &self.name,
            self.max_len,
            method,
            uri,
            replyto,
            body,
        )?;
        send_dg(&self.io, &self.wbuf).await
    }

    /// Sends a message exactly as given.
    pub async fn send_message(&mut self, msg: &Message<'_>) -> Result<()> {
        proto::encode_checked(&mut self.wbuf, msg, self.max_len)?;
        send_dg(&self.io, &self.wbuf).await
    }
}

async fn send_dg(io: &AsyncFd<OwnedFd>, dg: &[u8]) -> Result<()> {
    loop {
        let mut guard = io.writable().await?;
        match guard.try_io(|fd| sys::send(fd.get_ref().as_fd(), dg)) {
            Ok(r) => return r.map_err(Into::into),
            Err(_would_block) => continue,
        }
    }
}

/// Receives one datagram into `buf`; `Err(Closed)` when the broker went away.
async fn recv_dg(io: &AsyncFd<OwnedFd>, buf: &mut Vec<u8>) -> Result<()> {
    loop {
        let mut guard = io.readable().await?;
        match guard.try_io(|fd| sys::recv(fd.get_ref().as_fd(), buf)) {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => return Err(Error::Closed),
            Ok(Err(e)) => return Err(e.into()),
            Err(_would_block) => continue,
        }
    }
}

async fn with_timeout<T>(
    t: Duration,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(t, f)
        .await
        .map_err(|_| Error::Timeout(t.as_millis() as u64))?
}

impl Client {
    /// Connects to the broker at [`socket_path()`](crate::socket_path) as `name`
    /// (at most 5 s for the connect and the handshake).
    pub async fn connect(name: &str) -> Result<Client> {
        Client::connect_to(crate::socket_path(), name).await
    }

    /// Connects to the broker at `path` as `name` (1..=255 bytes), within 5 s
    /// for the connect and the handshake.
    pub async fn connect_to(path: impl AsRef<Path>, name: &str) -> Result<Client> {
        Client::connect_timeout(path, name, proto::BROKER_ANSWER_TIMEOUT).await
    }

    /// Connects to the broker at `path` as `name`, with the connect and the
    /// handshake done within `timeout` ([`Error::Timeout`] after that). Never
    /// blocks the runtime: the setup is the blocking client's non-blocking
    /// [`Connecting`], driven by [`establish`].
    pub async fn connect_timeout(
        path: impl AsRef<Path>,
        name: &str,
        timeout: Duration,
    ) -> Result<Client> {
        let c = establish(Connecting::start(path, name, timeout)?).await?;
        Client::from_blocking(c)
    }

    /// A tokio client on the socket of a connected blocking client (its
    /// set and its received messages come along).
    fn from_blocking(c: crate::blocking::Client) -> Result<Client> {
        let path = c.path().to_path_buf();
        let parts = c.into_parts();
        let (io, max_len) = register(parts.fd, parts.max_len)?;
        Ok(Client {
            tx: Sender {
                io,
                name: parts.name.into(),
                max_len,
                wbuf: Vec::new(),
            },
            path,
            rbuf: Vec::with_capacity(proto::recv_capacity(max_len)),
            subs: parts.subscriptions,
            pending: parts.pending,
            current: OwnedMessage::default(),
            replies: proto::ReplyUris::default(),
        })
    }

    /// Connects again to the same path under the same name and sends the
    /// complete subscription set in one `sub` (at most 5 s in all). Senders
    /// taken before go stale: take new ones. On failure the client keeps its
    /// set for the next attempt.
    pub async fn reconnect(&mut self) -> Result<()> {
        self.reconnect_timeout(proto::BROKER_ANSWER_TIMEOUT).await
    }

    /// [`reconnect`](Self::reconnect) within `timeout` for the connect, the
    /// handshake and the subscription answer together.
    pub async fn reconnect_timeout(&mut self, timeout: Duration) -> Result<()> {
        let mut c = Connecting::start(&self.path, &self.tx.name, timeout)?;
        if !self.subs.is_empty() {
            c = c.with_subscriptions(&self.subs)?;
        }
        let parts = establish(c).await?.into_parts();
        let (io, max_len) = register(parts.fd, parts.max_len)?;
        self.tx.io = io;
        self.tx.max_len = max_len;
        self.rbuf = Vec::with_capacity(proto::recv_capacity(max_len));
        self.pending = parts.pending;
        Ok(())
    }

    /// The datagram limit the broker announced (whole datagram).
    pub fn max_len(&self) -> u32 {
        self.tx.max_len
    }

    /// This client's process name.
    pub fn name(&self) -> &str {
        &self.tx.name
    }

    /// The complete subscription set (what the broker confirmed last).
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subs
    }

    /// A cloneable sender on this connection for other tasks.
    pub fn sender(&self) -> Sender {
        Sender {
            wbuf: Vec::new(),
            ..self.tx.clone()
        }
    }

    /// Adds each URI (every method) to the set and sends the complete set in
    /// one `sub`. An empty list changes nothing.
    pub async fn subscribe(&mut self, uris: &[&str]) -> Result<()> {
        let subs: Vec<_> = uris.iter().map(|u| Subscription::all(*u)).collect();
        self.subscribe_with(&subs).await
    }

    /// Adds subscriptions with a pub-only flag per URI to the set, sends the
    /// complete set in one `sub` and waits for the broker's answer. A URI
    /// already in the set stays pub-only only if the new one is pub-only too.
    pub async fn subscribe_with(&mut self, subs: &[Subscription]) -> Result<()> {
        if subs.is_empty() {
            return Ok(());
        }
        self.send_set(proto::merged(&self.subs, subs)).await
    }

    /// Replaces the whole set with `subs` (1..=255 URIs) and sends it in one `sub`.
    pub async fn set_subscriptions(&mut self, subs: &[Subscription]) -> Result<()> {
        self.send_set(proto::merged(&[], subs)).await
    }

    /// Sends `set` as the complete set; it becomes the client's set once the
    /// broker said `SUCCESS` (on any failure the old set stays).
    async fn send_set(&mut self, set: Vec<Subscription>) -> Result<()> {
        let dg = proto::encode_sub(&self.tx.name, &set)?;
        with_timeout(
            proto::BROKER_ANSWER_TIMEOUT,
            exchange_sub(&self.tx.io, &dg, &mut self.rbuf, &mut self.pending),
        )
        .await?;
        self.subs = set;
        Ok(())
    }

    /// Sends one data message as this process.
    pub async fn send(
        &mut self,
        method: Method,
        uri: &str,
        replyto: Option<&str>,
        body: &[u8],
    ) -> Result<()> {
        self.tx.send(method, uri, replyto, body).await
    }

    /// Sends a message exactly as given.
    pub async fn send_message(&mut self, msg: &Message<'_>) -> Result<()> {
        self.tx.send_message(msg).await
    }

    /// Receives the next message. Cancel-safe; wrap in `tokio::time::timeout` to bound it.
    /// [`Error::Decode`] leaves the connection usable; [`Error::Closed`] means the broker
    /// went away.
    pub async fn recv(&mut self) -> Result<Message<'_>> {
        if let Some(m) = self.pending.pop_front() {
            self.current = m;
            return Ok(self.current.as_message());
        }
        recv_dg(&self.tx.io, &mut self.rbuf).await?;
        Ok(Message::decode(&self.rbuf)?)
    }

    /// Sends a request on a fresh reply URI of this client and waits up to `timeout`.
    pub async fn request(
        &mut self,
        method: Method,
        uri: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<OwnedMessage> {
        let (prefix, fresh) = self.replies.prefix();
        if fresh {
            self.subscribe(&[&prefix]).await?;
            self.replies.subscribed(prefix.clone());
        }
        let replyto = self.replies.next(&prefix);
        self.request_on(method, uri, &replyto, body, timeout).await
    }

    /// Sends a request answered on `replyto` (subscribing first unless covered).
    pub async fn request_on(
        &mut self,
        method: Method,
        uri: &str,
        replyto: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<OwnedMessage> {
        if !proto::covered(&self.subs, replyto) {
            self.subscribe(&[replyto]).await?;
        }
        self.send(method, uri, Some(replyto), body).await?;
        with_timeout(timeout, async {
            loop {
                recv_dg(&self.tx.io, &mut self.rbuf).await?;
                let msg = Message::decode(&self.rbuf)?;
                if msg.uri == replyto {
                    return Ok(msg.to_owned());
                }
                self.pending.push_back(msg.to_owned());
            }
        })
        .await
    }
}

impl AsRawFd for Client {
    fn as_raw_fd(&self) -> RawFd {
        self.tx.io.get_ref().as_raw_fd()
    }
}

/// Sends a `sub` datagram and waits for the broker's answer, keeping other
/// messages that arrive meanwhile in `pending`.
async fn exchange_sub(
    io: &AsyncFd<OwnedFd>,
    dg: &[u8],
    rbuf: &mut Vec<u8>,
    pending: &mut VecDeque<OwnedMessage>,
) -> Result<()> {
    send_dg(io, dg).await?;
    loop {
        recv_dg(io, rbuf).await?;
        let msg = Message::decode(rbuf)?;
        match proto::sub_answer(&msg) {
            Some(answer) => return answer,
            None => pending.push_back(msg.to_owned()),
        }
    }
}

/// The connected socket, nonblocking, registered with the runtime.
fn register(fd: OwnedFd, max_len: u32) -> Result<(Arc<AsyncFd<OwnedFd>>, u32)> {
    sys::set_nonblocking(fd.as_fd(), true)?;
    // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it (and so keeps it
    // open and unchanged) until the AsyncFd is dropped.
    let io = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
    Ok((Arc::new(io), max_len))
}

/// A descriptor owned elsewhere, registered with the runtime only while its
/// owner waits on it.
struct Borrowed(RawFd);

impl AsRawFd for Borrowed {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Drives a blocking-client [`Connecting`] to its end on the tokio runtime,
/// never blocking it: each step that cannot go on waits for the socket in
/// the runtime's reactor (or on a timer while the broker's listen backlog is
/// full), never past the connection's deadline. Every async host connects
/// through this: the tokio [`Client`] and hosts that take the socket whole
/// ([`crate::blocking::Client::into_parts`]).
pub async fn establish(mut c: Connecting) -> Result<crate::blocking::Client> {
    loop {
        match c.advance()? {
            Progress::Ready(client) => return Ok(client),
            Progress::Pending(next) => c = next,
        }
        let deadline = tokio::time::Instant::from_std(c.deadline());
        let (fd, interest) = match c.wait() {
            Wait::Until(at) => {
                tokio::time::sleep_until(tokio::time::Instant::from_std(at).min(deadline)).await;
                continue;
            }
            Wait::Readable(fd) => (fd, Interest::READABLE),
            Wait::Writable(fd) => (fd, Interest::WRITABLE),
        };
        // SAFETY: `c` owns `fd` and keeps it open and unchanged while the
        // registration lives: it is dropped at the end of this turn, before
        // `c` is advanced (which may replace the socket) or dropped.
        let io = unsafe { AsyncFd::register_with_interest(Borrowed(fd), interest) }
            .map_err(|e| e.into_parts().1)?;
        let ready = async {
            match interest == Interest::READABLE {
                true => io.readable().await.map(drop),
                false => io.writable().await.map(drop),
            }
        };
        // At the deadline, the next `advance` says so.
        if let Ok(r) = tokio::time::timeout_at(deadline, ready).await {
            r?;
        }
    }
}
