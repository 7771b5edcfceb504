//! Watching COPS from outside: the events it posts (a FIMS listener on
//! `/events`) and its stats (`get /cops/stats`). Nothing here knows COPS's
//! internals, so the suite holds whatever they become.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fims::{blocking::Client, Method};
use serde_json::{Map, Value};

/// One `post /events` as received.
#[derive(Debug, Clone)]
pub struct Ev {
    /// When the listener received it.
    pub at: Instant,
    /// 1 info, 2 status, 3 alarm, 4 fault.
    pub severity: i64,
    /// The text.
    pub message: String,
}

impl Ev {
    /// A stall alarm: severity 3, "bus or host stall ...".
    pub fn is_stall(&self) -> bool {
        self.severity == 3 && self.message.starts_with("bus or host stall")
    }
    /// The end of a stall: severity 2, "... stall over ...".
    pub fn is_stall_over(&self) -> bool {
        self.severity == 2 && self.message.contains("stall over")
    }
    /// A hung verdict.
    pub fn is_verdict(&self) -> bool {
        self.message.contains("hung (")
    }
}

/// A listener on `/events` in its own thread (reconnects when the broker restarts).
pub struct Events {
    list: Arc<Mutex<Vec<Ev>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn listen(socket: &Path, list: &Mutex<Vec<Ev>>, stop: &AtomicBool, up: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let subscribed = Client::connect_to(socket, "faults_events").and_then(|mut c| {
            c.subscribe(&["/events"])?;
            Ok(c)
        });
        let Ok(mut c) = subscribed else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        up.store(true, Ordering::SeqCst);
        while !stop.load(Ordering::SeqCst) {
            match c.recv(Some(Duration::from_millis(100))) {
                Ok(Some(m)) => {
                    let at = Instant::now();
                    let Ok(v) = serde_json::from_slice::<Value>(m.body) else {
                        continue;
                    };
                    let message = v["message"].as_str().unwrap_or_default().to_owned();
                    let severity = v["severity"].as_i64().unwrap_or(0);
                    list.lock().unwrap_or_else(|e| e.into_inner()).push(Ev {
                        at,
                        severity,
                        message,
                    });
                }
                Ok(None) => {}
                Err(e) if e.is_disconnect() => break,
                Err(_) => {}
            }
        }
    }
}

impl Events {
    /// Starts listening on the broker at `socket`; returns once subscribed.
    pub fn start(socket: &Path) -> Events {
        let list = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let up = Arc::new(AtomicBool::new(false));
        let (l, s, u, path) = (list.clone(), stop.clone(), up.clone(), socket.to_owned());
        let thread = std::thread::spawn(move || listen(&path, &l, &s, &u));
        let ok = testkit::wait_for(Duration::from_secs(20), || up.load(Ordering::SeqCst));
        assert!(ok, "the events listener could not subscribe");
        Events {
            list,
            stop,
            thread: Some(thread),
        }
    }

    /// Every event received so far.
    pub fn all(&self) -> Vec<Ev> {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many events received since `since` satisfy `f`.
    pub fn count(&self, since: Instant, f: impl Fn(&Ev) -> bool) -> usize {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.at >= since && f(e))
            .count()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Asks COPS for its stats (one request at a time; reconnects when needed).
pub struct StatsClient {
    socket: PathBuf,
    client: Option<Client>,
    n: u64,
}

/// Our reply URIs live under this prefix (one `sub` covers them all).
const REPLY_PREFIX: &str = "/faults_obs";

impl StatsClient {
    /// A client for the broker at `socket` (connects on first use).
    pub fn new(socket: &Path) -> StatsClient {
        StatsClient {
            socket: socket.to_owned(),
            client: None,
            n: 0,
        }
    }

    fn client(&mut self) -> Option<&mut Client> {
        if self.client.is_none() {
            let mut c = Client::connect_to(&self.socket, "faults_stats").ok()?;
            c.subscribe(&[REPLY_PREFIX]).ok()?;
            self.client = Some(c);
        }
        self.client.as_mut()
    }

    /// `get /cops/stats`: the stats object of every process by name, if COPS answered.
    pub fn all(&mut self) -> Option<Map<String, Value>> {
        self.n += 1;
        let replyto = format!("{REPLY_PREFIX}/r{}", self.n);
        let c = self.client()?;
        // Answers to earlier requests that timed out are of no use now.
        while let Ok(Some(_)) = c.recv(Some(Duration::ZERO)) {}
        match c.request_on(
            Method::Get,
            "/cops/stats",
            &replyto,
            b"",
            Duration::from_millis(500),
        ) {
            Ok(m) => match serde_json::from_slice(&m.body) {
                Ok(Value::Object(map)) => Some(map),
                _ => None,
            },
            Err(e) => {
                if e.is_disconnect() {
                    self.client = None;
                }
                None
            }
        }
    }
}
