//! The tokio driver (feature `tokio`): a task that owns a FIMS connection and
//! answers, gated by pets from the work loop.

use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;

use fims::tokio::Client;
use fims::Method;

use crate::driver::{Event, RECONNECT_MAX, RECONNECT_MIN};
use crate::pet::PetHandle;
use crate::responder::{Outcome, Responder};

/// A [`Responder`] with an async FIMS connection of its own.
///
/// In an async process the answering task is not the work loop, so **turn on
/// the liveness gate** ([`Responder::set_liveness_window`]) and call
/// [`PetHandle::pet`] from the loop that does the real work: the driver stays
/// silent once the last pet is older than the window, and COPS sees the hang.
/// Without a window the driver answers whenever the runtime runs it, which
/// proves only that the runtime is alive.
#[derive(Debug)]
pub struct TokioDriver {
    responder: Responder,
    path: PathBuf,
    reply: Vec<u8>,
    connects: u64,
    dropped: u64,
}

impl TokioDriver {
    /// A driver for the broker at `socket`; nothing happens until [`run`](Self::run).
    pub fn new(responder: Responder, socket: impl Into<PathBuf>) -> TokioDriver {
        TokioDriver {
            responder,
            path: socket.into(),
            reply: Vec::with_capacity(256),
            connects: 0,
            dropped: 0,
        }
    }

    /// The handle the work loop pets or ticks (clone it freely).
    pub fn pet_handle(&self) -> PetHandle {
        self.responder.pet_handle()
    }

    /// The responder.
    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    /// The responder, to configure it.
    pub fn responder_mut(&mut self) -> &mut Responder {
        &mut self.responder
    }

    /// How many times the driver connected.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Answers dropped because FIMS could not carry them (a replyto that is not
    /// a URI, an answer over the broker's body limit).
    pub fn dropped_answers(&self) -> u64 {
        self.dropped
    }

    /// Answers until `shutdown` completes, reconnecting (50 ms doubling to
    /// 500 ms between attempts) whenever the broker goes away.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        self.run_with(shutdown, |_| {}, |_| {}).await
    }

    /// [`run`](Self::run), calling `on_event` for each message the responder
    /// took (before its answer is sent) and `on_error` for each connection
    /// error (failed connects and broken connections).
    pub async fn run_with(
        &mut self,
        shutdown: impl Future<Output = ()>,
        mut on_event: impl FnMut(&Event<'_>),
        mut on_error: impl FnMut(&fims::Error),
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = RECONNECT_MIN;
        loop {
            let connected = tokio::select! {
                biased;
                () = &mut shutdown => return,
                c = self.open() => c,
            };
            let client = match connected {
                Ok(c) => c,
                Err(e) => {
                    on_error(&e);
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                    continue;
                }
            };
            backoff = RECONNECT_MIN;
            match self.serve(client, &mut shutdown, &mut on_event).await {
                None => return,
                Some(e) => on_error(&e),
            }
        }
    }

    async fn open(&mut self) -> fims::Result<Client> {
        let mut client = Client::connect_to(&self.path, self.responder.process_name()).await?;
        client.subscribe(&[self.responder.cops_uri()]).await?;
        self.connects += 1;
        Ok(client)
    }

    /// Answers on one connection: `None` at shutdown, the error when it broke.
    async fn serve(
        &mut self,
        mut client: Client,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
        on_event: &mut impl FnMut(&Event<'_>),
    ) -> Option<fims::Error> {
        let mut sender = client.sender();
        loop {
            let received = tokio::select! {
                biased;
                () = shutdown.as_mut() => return None,
                m = client.recv() => m,
            };
            let msg = match received {
                Ok(m) => m,
                Err(fims::Error::Decode(_)) => continue,
                Err(e) => return Some(e),
            };
            let outcome = self
                .responder
                .handle_message(Instant::now(), &msg, &mut self.reply);
            if outcome.is_mine() {
                on_event(&Event {
                    method: msg.method,
                    uri: msg.uri,
                    replyto: msg.replyto,
                    outcome,
                    reply: &self.reply,
                });
            }
            if outcome == Outcome::Reply {
                let sent = sender
                    .send(Method::Set, msg.replyto, None, &self.reply)
                    .await;
                match sent {
                    Ok(()) => {}
                    Err(e) if e.is_disconnect() || matches!(e, fims::Error::Io(_)) => {
                        return Some(e)
                    }
                    // A replyto FIMS cannot carry (bad input from the bus): drop that answer.
                    Err(_) => self.dropped += 1,
                }
            }
        }
    }
}
