//! The broker measurements: a real `fims_server` child process, a peer child
//! process on the far side, and this process as the client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use fims::blocking::Client;

use crate::floor::Burst;
use crate::msgs;
use crate::{err, Result};

/// How long to wait for an answer before calling the measurement broken.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A `fims_server` child in its own temp directory, stopped on drop.
#[derive(Debug)]
pub struct BrokerProc {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    child: Child,
}

impl BrokerProc {
    /// Starts `exe --socket <tmp>/fims.sock` and waits until it accepts clients.
    pub fn start(exe: &Path) -> Result<BrokerProc> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("fims.sock");
        let child = Command::new(exe)
            .arg("--socket")
            .arg(&socket)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| err!("starting {}: {e}", exe.display()))?;
        let mut b = BrokerProc {
            _dir: dir,
            socket,
            child,
        };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if Client::connect_to(&b.socket, "perf_probe").is_ok() {
                return Ok(b);
            }
            if let Ok(Some(status)) = b.child.try_wait() {
                return Err(err!("fims_server exited at start ({status})"));
            }
            if Instant::now() > end {
                return Err(err!("fims_server did not accept within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The broker's socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The broker's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp directory the socket lives in (for other files of the run).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// SIGTERM, up to 2 s grace, then SIGKILL; always reaped.
pub fn stop_child(child: &mut Child) {
    let _ = crate::sys::signal(child.id() as libc::pid_t, libc::SIGTERM);
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A peer role (`perf-report --peer ROLE`) running as a child process.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    _out: BufReader<ChildStdout>,
}

impl Peer {
    /// Spawns `exe --peer role --socket socket` and waits for its `ready` line.
    pub fn spawn(exe: &Path, role: &str, socket: &Path) -> Result<Peer> {
        Peer::spawn_with(exe, role, socket, &[], false)
    }

    /// [`spawn`](Self::spawn) with extra arguments, and stdin piped when
    /// `stdin` (take it with [`stdin`](Self::stdin)).
    pub fn spawn_with(
        exe: &Path,
        role: &str,
        socket: &Path,
        extra: &[String],
        stdin: bool,
    ) -> Result<Peer> {
        let mut child = Command::new(exe)
            .args(["--peer", role, "--socket"])
            .arg(socket)
            .args(extra)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| err!("starting peer {role}: {e}"))?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| err!("peer {role} has no stdout"))?;
        let mut out = BufReader::new(out);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            stop_child(&mut child);
            return Err(err!("peer {role} failed to start (said {line:?})"));
        }
        Ok(Peer { child, _out: out })
    }

    /// The peer's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The peer's stdin, when spawned with one.
    pub fn stdin(&mut self) -> Option<&mut std::process::ChildStdin> {
        self.child.stdin.as_mut()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Heartbeat round trips through the broker to a peer answering `get /bench/cops`.
#[derive(Debug)]
pub struct BusRtt {
    client: Client,
    request: Vec<u8>,
    reply_uri: &'static str,
    peer: Peer,
}

impl BusRtt {
    /// Connects as `cops`, subscribes to the reply URI, starts peer `role`
    /// (`echo` on `/bench_echo` or `responder` on `/bench`) and checks one round trip.
    pub fn start(broker: &BrokerProc, peer_exe: &Path, role: &str) -> Result<BusRtt> {
        let (base, reply_uri) = match role {
            "echo" => (msgs::ECHO_BASE_URI, msgs::ECHO_REPLY_URI),
            _ => (msgs::BASE_URI, msgs::REPLY_URI),
        };
        let mut client = Client::connect_to(broker.socket(), "cops")?;
        client.subscribe(&[reply_uri])?;
        let peer = Peer::spawn(peer_exe, role, broker.socket())?;
        let mut rtt = BusRtt {
            client,
            request: msgs::heartbeat_get_to(&format!("{base}/cops"), reply_uri),
            reply_uri,
            peer,
        };
        rtt.round_trip()?;
        Ok(rtt)
    }

    /// One `get /bench/cops` and its answer.
    pub fn round_trip(&mut self) -> Result<()> {
        self.client.send_raw(&self.request)?;
        let end = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.client.recv(Some(left))? {
                None => return Err(err!("no heartbeat answer within {ANSWER_TIMEOUT:?}")),
                Some(m) if m.uri == self.reply_uri => return Ok(()),
                Some(_) => {}
            }
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

    /// The answering peer's PID.
    pub fn peer_pid(&self) -> u32 {
        self.peer.pid()
    }
}

/// Publisher-to-subscriber bursts through the broker.
#[derive(Debug)]
pub struct BusThroughput {
    client: Client,
    _peer: Peer,
    seq: u64,
}

impl BusThroughput {
    /// Connects as the publisher and starts the `sink` peer.
    pub fn start(broker: &BrokerProc, peer_exe: &Path) -> Result<BusThroughput> {
        let mut client = Client::connect_to(broker.socket(), "bench_publisher")?;
        client.subscribe(&[msgs::TP_ACK_URI])?;
        let peer = Peer::spawn(peer_exe, "sink", broker.socket())?;
        Ok(BusThroughput {
            client,
            _peer: peer,
            seq: 0,
        })
    }

    /// Publishes `msg` `n` times, then end markers until the sink's count comes back.
    pub fn burst(&mut self, msg: &[u8], n: u64) -> Result<Burst> {
        self.seq += 1;
        let seq = self.seq.to_string();
        let t = Instant::now();
        for _ in 0..n {
            self.client.send_raw(msg)?;
        }
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            self.client.send(
                fims::Method::Pub,
                msgs::TP_END_URI,
                Some(msgs::TP_ACK_URI),
                seq.as_bytes(),
            )?;
            let wait = Instant::now() + Duration::from_millis(200);
            while let Some(m) = self
                .client
                .recv(Some(wait.saturating_duration_since(Instant::now())))?
            {
                if let Some(count) = parse_ack(m.body, &seq) {
                    return Ok(Burst {
                        delivered: count,
                        elapsed: t.elapsed(),
                    });
                }
            }
        }
        Err(err!("the sink never acknowledged burst {seq}"))
    }
}

/// `"<seq> <count>"` when `seq` matches.
pub fn parse_ack(body: &[u8], seq: &str) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let (s, count) = text.split_once(' ')?;
    (s == seq).then(|| count.parse().ok())?
}
