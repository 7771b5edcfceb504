//! The blocking driver and the host-routed helper against a real broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cops_responder::{Driver, Outcome, Responder, Router};
use fims::blocking::Client;
use fims::Method;
use testkit::Broker;

const T: Duration = Duration::from_secs(3);

fn responder(uri: &str) -> Responder {
    let mut r = Responder::new("proc_under_test", uri).expect("valid");
    r.set_version("1.4.0", "a1b2c3d", "372");
    r
}

/// Runs `driver` on a thread (the test's "work loop") until the flag drops.
/// `pet` says whether that loop pets each iteration.
struct Running {
    stop: Arc<AtomicBool>,
    pet: Arc<AtomicBool>,
    thread: Option<JoinHandle<Driver>>,
}

impl Running {
    fn start(mut driver: Driver) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let pet = Arc::new(AtomicBool::new(true));
        let (s, p) = (stop.clone(), pet.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if p.load(Ordering::Relaxed) {
                    driver.pet();
                }
                // Errors (broker gone) are reported once; the next polls reconnect.
                let _ = driver.poll(Duration::from_millis(10));
            }
            driver
        });
        Running {
            stop,
            pet,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Driver {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("driver thread")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn get(c: &mut Client, uri: &str, timeout: Duration) -> fims::Result<String> {
    Ok(c.request(Method::Get, uri, b"", timeout)?.body_text())
}

/// Asks until an answer comes (the driver may be reconnecting).
fn get_eventually(socket: &std::path::Path, uri: &str, within: Duration) -> Option<String> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(mut c) = Client::connect_to(socket, "asker") {
            if let Ok(a) = get(&mut c, uri, Duration::from_millis(200)) {
                return Some(a);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn driver_answers_heartbeats_through_the_broker() {
    let broker = Broker::start();
    let driver = Driver::connect(responder("/site"), broker.socket()).expect("connects");
    assert!(driver.is_connected() && driver.raw_fd().is_some());
    assert_eq!(driver.connects(), 1);
    let run = Running::start(driver);

    let mut cops = Client::connect_to(broker.socket(), "cops").expect("client");
    // The COPS cycle: a naked set without replyto, then get with replyto.
    cops.send(Method::Set, "/site/cops/cops_heartbeat", None, b"17")
        .expect("send");
    let answer = get(&mut cops, "/site/cops", T).expect("answer");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("JSON object");
    assert_eq!(v["cops_heartbeat"], 17);
    assert_eq!(v["pid"], std::process::id(), "pid is this process's own");
    assert_eq!(v["version_tag"], "1.4.0");
    assert_eq!(
        get(&mut cops, "/site/cops/pid", T).expect("pid"),
        std::process::id().to_string()
    );
    // A set with a replyto echoes; a bad one answers an error and keeps 17.
    let echo = cops
        .request(
            Method::Set,
            "/site/cops/cops_heartbeat",
            b"{\"value\":18}",
            T,
        )
        .expect("echo");
    assert_eq!(echo.body_text(), "18");
    let err = cops
        .request(Method::Set, "/site/cops/cops_heartbeat", b"-1", T)
        .expect("error answer");
    assert!(
        err.body_text().starts_with("\"Error: "),
        "{}",
        err.body_text()
    );
    assert_eq!(
        get(&mut cops, "/site/cops/cops_heartbeat", T).expect("hb"),
        "18"
    );

    let driver = run.finish();
    assert_eq!(driver.responder().heartbeat(), 18);
}

#[test]
fn driver_reconnects_after_broker_restart() {
    let mut broker = Broker::start();
    let run = Running::start(Driver::new(responder("/re"), broker.socket()));
    assert!(get_eventually(broker.socket(), "/re/cops/cops_heartbeat", T).is_some());
    broker.kill();
    broker.restart();
    let t0 = Instant::now();
    let answer = get_eventually(broker.socket(), "/re/cops", Duration::from_secs(5))
        .expect("answers again after the broker restarted");
    let took = t0.elapsed();
    let v: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(v["pid"], std::process::id());
    let driver = run.finish();
    assert_eq!(driver.connects(), 2);
    assert!(took < Duration::from_secs(3), "reconnect took {took:?}");
}

#[test]
fn driver_waits_for_a_broker_that_starts_later() {
    let mut broker = Broker::start();
    broker.kill();
    let mut d = Driver::new(responder("/late"), broker.socket());
    let t0 = Instant::now();
    assert_eq!(d.poll(Duration::from_millis(120)).expect("not an error"), 0);
    assert!(
        t0.elapsed() >= Duration::from_millis(110),
        "poll honours its timeout"
    );
    assert!(!d.is_connected() && d.raw_fd().is_none());
    assert!(d.last_error().is_some_and(fims::Error::is_disconnect));
    assert!(d.reconnect_at().is_some());
    broker.restart();
    let run = Running::start(d);
    assert!(get_eventually(broker.socket(), "/late/cops/pid", T).is_some());
    assert_eq!(run.finish().connects(), 1);
}

#[test]
fn gate_goes_silent_when_pets_stop_and_answers_when_they_resume() {
    let broker = Broker::start();
    let mut r = responder("/gated");
    r.set_liveness_window(Some(Duration::from_millis(150)));
    let run = Running::start(Driver::connect(r, broker.socket()).expect("connects"));
    let mut cops = Client::connect_to(broker.socket(), "cops").expect("client");
    assert!(get(&mut cops, "/gated/cops", T).is_ok());
    // The work loop stops petting: after the window, no answers (the set is still stored).
    run.pet.store(false, Ordering::Relaxed);
    // Silent once the window has passed (polled for, so a loaded machine does not flake).
    let silent = testkit::wait_for(T, || {
        matches!(
            get(&mut cops, "/gated/cops", Duration::from_millis(300)),
            Err(fims::Error::Timeout(_))
        )
    });
    assert!(silent, "the gate closes when pets stop");
    cops.send(Method::Set, "/gated/cops/cops_heartbeat", None, b"5")
        .expect("send");
    let still = get(&mut cops, "/gated/cops", Duration::from_millis(300));
    assert!(matches!(still, Err(fims::Error::Timeout(_))), "{still:?}");
    // Pets resume: answers resume, with the value stored while silent. (A get
    // that lands in the poll before the loop's first pet is still gated: ask again.)
    run.pet.store(true, Ordering::Relaxed);
    let answer = get_eventually(broker.socket(), "/gated/cops", T).expect("answers again");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(v["cops_heartbeat"], 5);
}

#[test]
fn pet_handle_gates_a_driver_on_another_thread() {
    let broker = Broker::start();
    let mut r = responder("/side");
    r.set_liveness_window(Some(Duration::from_millis(150)));
    let mut d = Driver::connect(r, broker.socket()).expect("connects");
    let pets = d.pet_handle();
    // This driver thread never pets itself: only the handle does.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let _ = d.poll(Duration::from_millis(10));
        }
    });
    let mut cops = Client::connect_to(broker.socket(), "cops").expect("client");
    assert!(
        get(&mut cops, "/side/cops", Duration::from_millis(300)).is_err(),
        "never petted: silent"
    );
    pets.pet();
    assert!(get(&mut cops, "/side/cops", T).is_ok());
    stop.store(true, Ordering::Relaxed);
    t.join().expect("thread");
}

#[test]
fn raw_fd_in_the_hosts_own_poll_loop() {
    let broker = Broker::start();
    let mut d = Driver::connect(responder("/fd"), broker.socket()).expect("connects");
    let asker = std::thread::spawn({
        let sock = broker.socket().to_path_buf();
        move || {
            let mut c = Client::connect_to(&sock, "cops").expect("client");
            get(&mut c, "/fd/cops/version_build", T)
        }
    });
    let end = Instant::now() + T;
    let mut answered = 0;
    while answered == 0 && Instant::now() < end {
        let fd = d.raw_fd().expect("connected");
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on a live descriptor.
        let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
        if rc > 0 {
            answered += d.poll(Duration::ZERO).expect("poll");
        }
    }
    assert_eq!(answered, 1);
    assert_eq!(asker.join().expect("asker").expect("answer"), "\"372\"");
}

#[test]
fn poll_with_observes_each_message() {
    let broker = Broker::start();
    let mut d = Driver::connect(responder("/obs"), broker.socket()).expect("connects");
    let mut c = Client::connect_to(broker.socket(), "cops").expect("client");
    c.send(Method::Set, "/obs/cops/cops_heartbeat", None, b"3")
        .expect("send");
    c.send(Method::Get, "/obs/cops", Some("/reply/x"), b"")
        .expect("send");
    let mut seen = Vec::new();
    let end = Instant::now() + T;
    while seen.len() < 2 && Instant::now() < end {
        d.poll_with(Duration::from_millis(50), |e| {
            seen.push((
                e.method.to_owned(),
                e.uri.to_owned(),
                e.outcome,
                e.reply.to_vec(),
            ))
        })
        .expect("poll");
    }
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0],
        (
            "set".into(),
            "/obs/cops/cops_heartbeat".into(),
            Outcome::Handled,
            vec![]
        )
    );
    assert_eq!((seen[1].0.as_str(), seen[1].2), ("get", Outcome::Reply));
    assert!(seen[1].3.starts_with(b"{\"cops_heartbeat\":3,"));
}

#[test]
fn router_answers_on_the_hosts_own_connection() {
    let broker = Broker::start();
    let mut host = Client::connect_to(broker.socket(), "host").expect("host");
    host.subscribe(&["/h"]).expect("sub");
    let mut router = Router::new(responder("/h"));
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        let mut others = Vec::new();
        while !s.load(Ordering::Relaxed) {
            router.pet();
            if let Some(msg) = host.recv(Some(Duration::from_millis(10))).expect("recv") {
                if !router.offer(&msg) {
                    others.push(msg.uri.to_owned());
                }
            }
            router.flush(&mut host).expect("flush");
        }
        (others, router)
    });
    let mut c = Client::connect_to(broker.socket(), "cops").expect("client");
    c.send(Method::Set, "/h/setpoint", None, b"1")
        .expect("send");
    c.send(Method::Set, "/h/cops/cops_heartbeat", None, b"9")
        .expect("send");
    assert_eq!(
        get(&mut c, "/h/cops/cops_heartbeat", T).expect("answer"),
        "9"
    );
    stop.store(true, Ordering::Relaxed);
    let (others, router) = t.join().expect("host thread");
    assert_eq!(others, ["/h/setpoint"]);
    assert_eq!(router.responder().heartbeat(), 9);
    assert!(router.pending().is_none());
}

#[test]
fn router_route_with_an_owned_message() {
    let broker = Broker::start();
    let mut host = Client::connect_to(broker.socket(), "host").expect("host");
    let mut listener = Client::connect_to(broker.socket(), "cops").expect("listener");
    listener.subscribe(&["/answers"]).expect("sub");
    let mut router = Router::new(responder("/o"));
    let owned = fims::Message {
        method: "get",
        uri: "/o/cops/cops_heartbeat",
        replyto: "/answers/1",
        ..Default::default()
    }
    .to_owned();
    assert!(router.route(&mut host, &owned.as_message()).expect("route"));
    let other = fims::Message::new(Method::Set, "/o/other", b"1");
    assert!(!router.route(&mut host, &other).expect("route"));
    let got = listener.recv(Some(T)).expect("recv").expect("answer");
    assert_eq!((got.uri, got.body), ("/answers/1", &b"0"[..]));
}

#[test]
fn answer_to_an_unusable_replyto_is_dropped_not_an_error() {
    let broker = Broker::start();
    let mut d = Driver::connect(responder("/d"), broker.socket()).expect("connects");
    let mut c = Client::connect_to(broker.socket(), "cops").expect("client");
    c.send(Method::Get, "/d/cops", Some("not-a-uri"), b"")
        .expect("send");
    let mut n = 0;
    let end = Instant::now() + T;
    while n == 0 && Instant::now() < end {
        n += d.poll(Duration::from_millis(50)).expect("not an error");
    }
    assert_eq!((n, d.dropped_answers()), (1, 1));
    assert!(d.is_connected());
}

/// A broker that accepts the connection but never answers its handshake costs
/// `poll(0)` nothing: the attempt advances without blocking, poll after poll.
#[test]
fn poll_zero_does_not_block_on_a_silent_broker() {
    use testkit::fake_broker::SeqpacketListener;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("silent.sock");
    // Listens (so connect succeeds through the backlog) but never accepts or answers.
    let _silent = SeqpacketListener::bind(&path, 16);
    let r = Responder::new("silent_test", "/silent").expect("valid");
    let mut d = Driver::new(r, &path);
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(d.poll(Duration::ZERO).expect("no error"), 0);
        assert!(!d.is_connected());
        let next = d.reconnect_at().expect("disconnected: a time to come back");
        assert!(
            next <= Instant::now() + Duration::from_millis(600),
            "{next:?}"
        );
    }
    // 20 polls, far from the 5 s the handshake used to hold one of them
    // (a generous bound for a loaded machine).
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A poll with a timeout waits about that long, not 5 s.
    let t = Instant::now();
    assert_eq!(d.poll(Duration::from_millis(100)).expect("no error"), 0);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

/// Polls of 0 alone connect to a real broker and answer.
#[test]
fn polls_of_zero_alone_connect_and_answer() {
    use fims::blocking::Client;
    use fims::Method;

    let broker = testkit::Broker::start();
    let mut d = Driver::new(Responder::new("p0", "/p0").expect("valid"), broker.socket());
    let connected = testkit::wait_for(Duration::from_secs(10), || {
        let _ = d.poll(Duration::ZERO);
        d.is_connected()
    });
    assert!(connected, "last error: {:?}", d.last_error());
    let asker = std::thread::spawn({
        let sock = broker.socket().to_path_buf();
        move || {
            let mut c = Client::connect_to(&sock, "asker").expect("client");
            c.request(Method::Get, "/p0/cops/pid", b"", Duration::from_secs(5))
                .expect("answer")
                .body_text()
        }
    });
    let mut answered = 0;
    let end = Instant::now() + Duration::from_secs(10);
    while answered == 0 && Instant::now() < end {
        answered += d.poll(Duration::ZERO).expect("poll");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(asker.join().expect("asker"), std::process::id().to_string());
}
