//! The far side of the broker measurements, run as `perf-report --peer ROLE
//! --socket PATH` in a child process. Each role prints `ready` once it is
//! subscribed and runs until the broker closes the connection.
//!
//! - `echo`: answers every `get /bench_echo/cops` with a fixed heartbeat object
//!   (no responder logic: the broker-only part of a round trip);
//! - `responder`: answers through `cops_responder::Responder` (the real thing);
//! - `sink`: counts messages under `/bench/tp`; on `/bench/tp/end` with body
//!   `<seq>` answers `<seq> <count>` on the replyto, `count` being the messages
//!   since the previous end marker. Its connection (and so the process name of
//!   its answers) is `bench_sink`, or `bench_sink_<id>` with `--peer-id <id>`,
//!   so that several sinks can answer one publisher.

use std::io::Write;
use std::path::Path;

use fims::blocking::Client;
use fims::Method;

use crate::msgs;
use crate::{err, Result};

/// Runs role `role` against the broker at `socket`; `id` tells sinks apart.
pub fn run(role: &str, socket: &Path, id: Option<u32>) -> Result<()> {
    match role {
        "echo" => echo(socket),
        "responder" => responder(socket),
        "sink" => sink(socket, &sink_name(id)),
        other => Err(err!("unknown peer role {other:?} (echo, responder, sink)")),
    }
}

/// Tells the parent the peer is up (one `ready` line on stdout).
pub fn ready() -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(b"ready\n")?;
    out.flush()?;
    Ok(())
}

/// `Ok(false)` when the broker went away (the normal end of a peer).
fn closed(e: &fims::Error) -> bool {
    e.is_disconnect()
}

fn echo(socket: &Path) -> Result<()> {
    let mut c = Client::connect_to(socket, "bench_responder")?;
    c.subscribe(&[&format!("{}/cops", msgs::ECHO_BASE_URI)])?;
    ready()?;
    let mut replyto = String::with_capacity(256);
    loop {
        match c.recv(None) {
            Ok(Some(m)) => {
                replyto.clear();
                replyto.push_str(m.replyto);
            }
            Ok(None) => continue,
            Err(e) if closed(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if !replyto.is_empty() {
            c.send(Method::Set, &replyto, None, msgs::ANSWER_BODY)?;
        }
    }
}

fn responder(socket: &Path) -> Result<()> {
    crate::responder::serve(socket, ready)
}

/// The connection name of sink `id`.
pub fn sink_name(id: Option<u32>) -> String {
    match id {
        Some(i) => format!("bench_sink_{i}"),
        None => "bench_sink".into(),
    }
}

fn sink(socket: &Path, name: &str) -> Result<()> {
    let mut c = Client::connect_to(socket, name)?;
    c.subscribe(&[msgs::TP_URI])?;
    ready()?;
    let mut count: u64 = 0;
    let (mut last_seq, mut last_count) = (String::new(), 0u64);
    let mut replyto = String::new();
    let mut seq = String::new();
    loop {
        match c.recv(None) {
            Ok(Some(m)) if m.uri == msgs::TP_END_URI => {
                replyto.clear();
                replyto.push_str(m.replyto);
                seq.clear();
                seq.push_str(m.body_str().unwrap_or(""));
            }
            Ok(Some(_)) => {
                count += 1;
                continue;
            }
            Ok(None) => continue,
            Err(e) if closed(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if seq != last_seq {
            last_seq.clone_from(&seq);
            last_count = count;
            count = 0;
        }
        if !replyto.is_empty() {
            let body = format!("{last_seq} {last_count}");
            c.send(Method::Set, &replyto, None, body.as_bytes())?;
        }
    }
}
