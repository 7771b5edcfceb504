//! Simulated monitored processes for the COPS measurement: N responders over a
//! few FIMS connections, in one child process (`perf-report --peer sim`).
//!
//! Process `i` is named `p<i>` with base URI `/sim/p<i>`; connection `j` of `k`
//! serves every `i` with `i % k == j`, on its own thread. Each stores the
//! heartbeat COPS sets and answers `get /sim/p<i>/cops` with
//! `{"cops_heartbeat":H,"pid":<this process>,...}`. A line `hang 3 17 42` on
//! stdin makes those processes stop answering (their threads keep serving the
//! others, as a hung process would go silent while the bus stays up).

use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fims::blocking::Client;
use fims::{Method, Subscription};

use crate::{err, Result};

/// Base URI of simulated process `i`.
pub fn base_uri(i: usize) -> String {
    format!("/sim/p{i}")
}

/// Name of simulated process `i`.
pub fn name(i: usize) -> String {
    format!("p{i}")
}

/// Runs `n` simulated processes over `k` connections; calls `ready` once all
/// are subscribed, then reads hang commands from stdin until it closes.
pub fn run(socket: &Path, n: usize, k: usize, ready: fn() -> Result<()>) -> Result<()> {
    let k = k.clamp(1, n.max(1));
    let hung: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
    let mut clients = Vec::with_capacity(k);
    for j in 0..k {
        let mut c = Client::connect_to(socket, &format!("cops_sim_{j}"))?;
        let subs: Vec<Subscription> = (j..n)
            .step_by(k)
            .map(|i| Subscription::all(format!("{}/cops", base_uri(i))))
            .collect();
        c.subscribe_with(&subs)?;
        clients.push(c);
    }
    for c in clients {
        let hung = Arc::clone(&hung);
        std::thread::spawn(move || serve(c, n, &hung));
    }
    ready()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        if words.next() != Some("hang") {
            continue;
        }
        for w in words {
            let i: usize = w.parse().map_err(|_| err!("bad process index {w:?}"))?;
            if let Some(f) = hung.get(i) {
                f.store(true, Ordering::Release);
            }
        }
    }
    Ok(())
}

/// One connection's loop; returns when the broker goes away.
fn serve(mut c: Client, n: usize, hung: &[AtomicBool]) {
    let pid = std::process::id();
    let mut heartbeat = vec![0u64; n];
    let mut replyto = String::with_capacity(256);
    let mut body = Vec::with_capacity(256);
    loop {
        let answer_for = match c.recv(None) {
            Ok(Some(m)) => {
                let Some((i, field)) = parse_uri(m.uri).filter(|(i, _)| *i < n) else {
                    continue;
                };
                match (m.method, field) {
                    ("set", Some("cops_heartbeat")) => {
                        if let Some(h) = m.body_str().and_then(|s| s.trim().parse().ok()) {
                            heartbeat[i] = h;
                        }
                        None
                    }
                    ("get", None) if !m.replyto.is_empty() => {
                        replyto.clear();
                        replyto.push_str(m.replyto);
                        Some(i)
                    }
                    _ => None,
                }
            }
            Ok(None) => continue,
            Err(e) if e.is_disconnect() => return,
            Err(_) => continue,
        };
        let Some(i) = answer_for else { continue };
        if hung[i].load(Ordering::Acquire) {
            continue;
        }
        body.clear();
        use std::io::Write;
        let _ = write!(
            body,
            r#"{{"cops_heartbeat":{},"pid":{pid},"version_tag":"sim","version_commit":"0","version_build":"0"}}"#,
            heartbeat[i]
        );
        if let Err(e) = c.send(Method::Set, &replyto, None, &body) {
            if e.is_disconnect() {
                return;
            }
        }
    }
}

/// `/sim/p<i>/cops[/<field>]` -> `(i, field)`.
fn parse_uri(uri: &str) -> Option<(usize, Option<&str>)> {
    let rest = uri.strip_prefix("/sim/p")?;
    let (num, rest) = rest.split_once('/')?;
    let i = num.parse().ok()?;
    let rest = rest.strip_prefix("cops")?;
    match rest {
        "" => Some((i, None)),
        r => Some((i, Some(r.strip_prefix('/')?))),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_uri;

    #[test]
    fn parses_sim_uris() {
        assert_eq!(parse_uri("/sim/p12/cops"), Some((12, None)));
        assert_eq!(
            parse_uri("/sim/p3/cops/cops_heartbeat"),
            Some((3, Some("cops_heartbeat")))
        );
        assert_eq!(parse_uri("/sim/p3/copsx"), None);
        assert_eq!(parse_uri("/sim/px/cops"), None);
    }
}
