//! The tokio FIMS client (feature `tokio`): the blocking client's twin for async hosts.
//!
//! [`Client::recv`] is cancel-safe (a datagram is either taken whole or left in the
//! socket), so it can sit in a `select!` next to timers. [`Client::sender`] gives a
//! cloneable [`Sender`] for other tasks; senders belong to one connection, take new
//! ones after [`Client::reconnect`].
//!
//! Connecting never blocks the runtime: the socket is nonblocking from the
//! start, a full listen backlog is retried on a timer, and the connect, the
//! handshake and the first answers run under one timeout
//! ([`Client::connect_timeout`]).
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
    /// blocks the runtime.
    pub async fn connect_timeout(
        path: impl AsRef<Path>,
        name: &str,
        timeout: Duration,
    ) -> Result<Client> {
        proto::check_name(name)?;
        let path = path.as_ref().to_path_buf();
        let (io, max_len) = with_timeout(timeout, handshake(&path, name)).await?;
        Ok(Client {
            tx: Sender {
                io,
                name: name.into(),
                max_len,
                wbuf: Vec::new(),
            },
            path,
            rbuf: Vec::with_capacity(proto::recv_capacity(max_len)),
            subs: Vec::new(),
            pending: VecDeque::new(),
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
        let sub = match self.subs.is_empty() {
            true => None,
            false => Some(proto::encode_sub(&self.tx.name, &self.subs)?),
        };
        let (io, max, rbuf, pending) = with_timeout(timeout, async {
            let (io, max) = handshake(&self.path, &self.tx.name).await?;
            let mut rbuf = Vec::with_capacity(proto::recv_capacity(max));
            let mut pending = VecDeque::new();
            if let Some(dg) = &sub {
                exchange_sub(&io, dg, &mut rbuf, &mut pending).await?;
            }
            Ok((io, max, rbuf, pending))
        })
        .await?;
        self.tx.io = io;
        self.tx.max_len = max;
        self.rbuf = rbuf;
        self.pending = pending;
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

/// Connects (nonblocking; a full listen backlog is retried on a timer, never
/// waited for in a blocking call) and runs the client side of the handshake.
/// The caller bounds it with a timeout.
async fn handshake(path: &Path, name: &str) -> Result<(Arc<AsyncFd<OwnedFd>>, u32)> {
    let fd = loop {
        match sys::connect(path) {
            Ok(Some(fd)) => break fd,
            Ok(None) => tokio::time::sleep(proto::CONNECT_RETRY).await,
            Err(e) => return Err(proto::connect_error(path, e)),
        }
    };
    // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it (and so keeps it
    // open and unchanged) until the AsyncFd is dropped.
    let io = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
    let io = Arc::new(io);
    let mut buf = Vec::with_capacity(64);
    recv_dg(&io, &mut buf).await?;
    let hs = proto::answer_handshake(&buf)?;
    sys::set_buffers(io.get_ref().as_fd(), proto::recv_capacity(hs.max_len));
    send_dg(&io, &proto::our_handshake(&hs)).await?;
    send_dg(&io, name.as_bytes()).await?;
    Ok((io, hs.max_len))
}
