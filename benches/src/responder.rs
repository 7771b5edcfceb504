//! The real responder on the far side of a heartbeat round trip.

use std::path::Path;
use std::time::Instant;

use cops_responder::{Outcome, Responder};
use fims::blocking::Client;
use fims::Method;

use crate::msgs;
use crate::{err, Result};

/// A responder configured like the benches' monitored process.
pub fn bench_responder() -> Result<Responder> {
    let mut r = Responder::new("bench", msgs::BASE_URI).map_err(|e| err!("responder: {e:?}"))?;
    r.set_version("1.4.0", "a1b2c3d", "372");
    Ok(r)
}

/// Connects to `socket`, subscribes to `/bench/cops`, calls `ready`, and answers
/// through [`Responder::handle`] until the broker goes away.
pub fn serve(socket: &Path, ready: fn() -> Result<()>) -> Result<()> {
    let mut r = bench_responder()?;
    let mut c = Client::connect_to(socket, "bench_responder")?;
    c.subscribe(&[msgs::COPS_URI])?;
    ready()?;
    let mut reply = Vec::with_capacity(512);
    let mut replyto = String::with_capacity(256);
    loop {
        let outcome = match c.recv(None) {
            Ok(Some(m)) => {
                replyto.clear();
                replyto.push_str(m.replyto);
                r.handle(
                    Instant::now(),
                    m.method,
                    m.uri,
                    m.replyto(),
                    m.body,
                    &mut reply,
                )
            }
            Ok(None) => continue,
            Err(e) if e.is_disconnect() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if outcome == Outcome::Reply {
            c.send(Method::Set, &replyto, None, &reply)?;
        }
    }
}
