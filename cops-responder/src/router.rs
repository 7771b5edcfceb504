//! For hosts that already own a FIMS connection: offer each received message,
//! send the answer, keep the host's loop a few lines long.

use std::time::Instant;

use fims::{Message, Method};

use crate::pet::PetHandle;
use crate::responder::{Outcome, Responder};

/// A [`Responder`] plus the buffers to answer on a connection the host owns.
///
/// With the blocking client a received [`Message`] borrows the client, so the
/// answer is taken in two steps: [`offer`](Self::offer) while the message is
/// alive, then [`flush`](Self::flush) once it is not. [`route`](Self::route)
/// does both for messages that do not borrow the client (for example an
/// [`fims::OwnedMessage`], or one received with the tokio client, whose
/// [`Sender`](fims::tokio::Sender) is separate).
#[derive(Debug, Clone)]
pub struct Router {
    responder: Responder,
    reply: Vec<u8>,
    replyto: String,
    pending: bool,
}

impl Router {
    /// Wraps `responder`.
    pub fn new(responder: Responder) -> Router {
        Router {
            responder,
            reply: Vec::with_capacity(256),
            replyto: String::with_capacity(64),
            pending: false,
        }
    }

    /// The responder.
    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    /// The responder, to configure it or pet it at a given instant.
    pub fn responder_mut(&mut self) -> &mut Responder {
        &mut self.responder
    }

    /// Pets the liveness gate now (see [`Responder::pet`]).
    pub fn pet(&mut self) {
        self.responder.pet(Instant::now());
    }

    /// One iteration of the work loop ended now (see [`Responder::loop_tick`]).
    pub fn tick(&mut self) {
        self.responder.loop_tick(Instant::now());
    }

    /// A handle for pets and ticks from another thread or task (when the
    /// routing loop is not the work loop).
    pub fn pet_handle(&mut self) -> PetHandle {
        self.responder.pet_handle()
    }

    /// Offers one received message. `false`: not the responder's, the host
    /// handles it. `true`: the responder's; an answer, if any, is kept for
    /// [`flush`](Self::flush) (an answer not yet flushed is replaced).
    pub fn offer(&mut self, msg: &Message<'_>) -> bool {
        self.offer_at(Instant::now(), msg)
    }

    /// [`offer`](Self::offer) at a given instant.
    pub fn offer_at(&mut self, now: Instant, msg: &Message<'_>) -> bool {
        self.pending = false;
        match self.responder.handle_message(now, msg, &mut self.reply) {
            Outcome::NotMine => false,
            Outcome::Handled => true,
            Outcome::Reply => {
                self.replyto.clear();
                self.replyto.push_str(msg.replyto);
                self.pending = true;
                true
            }
        }
    }

    /// The answer waiting to be sent: `(replyto, body)`.
    pub fn pending(&self) -> Option<(&str, &[u8])> {
        self.pending
            .then_some((self.replyto.as_str(), self.reply.as_slice()))
    }

    /// Sends the answer kept by the last [`offer`](Self::offer), if any, as
    /// `set <replyto>`. Returns whether one was sent. On error the answer is
    /// dropped (COPS counts a miss and asks again next cycle).
    pub fn flush(&mut self, client: &mut fims::blocking::Client) -> fims::Result<bool> {
        if !std::mem::take(&mut self.pending) {
            return Ok(false);
        }
        client.send(Method::Set, &self.replyto, None, &self.reply)?;
        Ok(true)
    }

    /// [`offer`](Self::offer) then [`flush`](Self::flush): `Ok(true)` when the
    /// message was the responder's (answered if it asked for an answer).
    pub fn route(
        &mut self,
        client: &mut fims::blocking::Client,
        msg: &Message<'_>,
    ) -> fims::Result<bool> {
        let mine = self.offer(msg);
        self.flush(client)?;
        Ok(mine)
    }

    /// [`flush`](Self::flush) on a tokio [`Sender`](fims::tokio::Sender).
    #[cfg(feature = "tokio")]
    pub async fn flush_async(&mut self, sender: &mut fims::tokio::Sender) -> fims::Result<bool> {
        if !std::mem::take(&mut self.pending) {
            return Ok(false);
        }
        sender
            .send(Method::Set, &self.replyto, None, &self.reply)
            .await?;
        Ok(true)
    }

    /// [`route`](Self::route) for the tokio client: the message may borrow
    /// the client since the answer goes out on its [`Sender`](fims::tokio::Sender).
    #[cfg(feature = "tokio")]
    pub async fn route_async(
        &mut self,
        sender: &mut fims::tokio::Sender,
        msg: &Message<'_>,
    ) -> fims::Result<bool> {
        let mine = self.offer(msg);
        self.flush_async(sender).await?;
        Ok(mine)
    }
}
