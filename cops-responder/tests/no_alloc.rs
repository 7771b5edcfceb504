//! Once warm, handling `get <uri>/cops` (and the other hot messages) allocates
//! nothing, in the core and in the blocking driver's answer path, nor does a
//! loop tick, nor the answer that carries the loop figures: checked with
//! a counting global allocator that counts per thread (so other test threads
//! and the asking client do not disturb the count).

use std::time::{Duration, Instant};
use testkit::alloc::allocs;

use cops_responder::{Driver, Outcome, Responder};

#[global_allocator]
static GLOBAL: testkit::alloc::Counting = testkit::alloc::Counting;

#[test]
fn warm_hot_path_does_not_allocate() {
    let mut r = Responder::new("hybridos_controller", "/site").expect("valid");
    r.set_version("1.4.0", "a1b2c3d", "372");
    r.set_liveness_window(Some(Duration::from_secs(1)));
    let replyto = Some("/cops/heartbeat/hybridos_controller");
    let mut reply = Vec::new();
    let mut hb = u64::MAX - 2000;
    let mut body = Vec::with_capacity(32);
    let ticks = r.pet_handle();
    let cycle = |r: &mut Responder, reply: &mut Vec<u8>, body: &mut Vec<u8>, hb: u64| {
        let now = Instant::now();
        r.pet(now);
        r.loop_tick(now);
        ticks.tick();
        body.clear();
        // Format the body without allocating either (u64 Display writes into a stack buffer).
        use std::io::Write;
        let _ = write!(body, "{hb}");
        let o = r.handle(now, "set", "/site/cops/cops_heartbeat", None, body, reply);
        assert_eq!(o, Outcome::Handled);
        let o = r.handle(now, "get", "/site/cops", replyto, b"", reply);
        assert_eq!(o, Outcome::Reply);
        assert!(reply.ends_with(b"}}"), "the answer carries the loop object");
        let o = r.handle(now, "get", "/site/cops/loop", replyto, b"", reply);
        assert_eq!(o, Outcome::Reply);
        let o = r.handle(now, "get", "/site/cops/cops_heartbeat", replyto, b"", reply);
        assert_eq!(o, Outcome::Reply);
        let o = r.handle(
            now,
            "set",
            "/site/cops/cops_heartbeat",
            replyto,
            body,
            reply,
        );
        assert_eq!(o, Outcome::Reply);
        let o = r.handle(now, "get", "/site/cops/version_tag", replyto, b"", reply);
        assert_eq!(o, Outcome::Reply);
        let o = r.handle(now, "get", "/site/cops/nope", replyto, b"", reply);
        assert_eq!(o, Outcome::Reply);
        let o = r.handle(now, "pub", "/elsewhere", None, b"{}", reply);
        assert_eq!(o, Outcome::NotMine);
    };
    // Warm up: the reply buffer grows to its largest answer.
    for _ in 0..10 {
        cycle(&mut r, &mut reply, &mut body, hb);
        hb += 1;
    }
    // The counter works: a deliberate allocation is seen.
    let probe = allocs();
    drop(std::hint::black_box(Box::new(7u64)));
    assert!(allocs() > probe, "allocator not counting");
    let before = allocs();
    for _ in 0..1000 {
        cycle(&mut r, &mut reply, &mut body, hb);
        hb += 1;
    }
    assert_eq!(allocs() - before, 0, "allocations on the warm hot path");
    assert_eq!(r.heartbeat(), hb - 1);
}

#[test]
fn warm_driver_answers_without_allocating() {
    use fims::blocking::Client;
    use fims::Method;

    let broker = testkit::Broker::start();
    let mut r = Responder::new("alloc_check", "/ac").expect("valid");
    r.set_version("1", "2", "3");
    let mut d = Driver::connect(r, broker.socket()).expect("connects");
    // COPS's side runs on another thread: its allocations are not counted here.
    const ROUNDS: usize = 300;
    let asker = std::thread::spawn({
        let sock = broker.socket().to_path_buf();
        move || {
            let mut c = Client::connect_to(&sock, "cops").expect("client");
            c.subscribe(&["/cops/heartbeat/alloc_check"]).expect("sub");
            for i in 0..2 * ROUNDS {
                let body = i.to_string();
                c.send(
                    Method::Set,
                    "/ac/cops/cops_heartbeat",
                    None,
                    body.as_bytes(),
                )
                .expect("send");
                let a = c
                    .request_on(
                        Method::Get,
                        "/ac/cops",
                        "/cops/heartbeat/alloc_check",
                        b"",
                        Duration::from_secs(3),
                    )
                    .expect("answer");
                assert!(a
                    .body_text()
                    .starts_with(&format!("{{\"cops_heartbeat\":{i},")));
            }
        }
    });
    let mut answered = 0;
    let mut before = None;
    let end = Instant::now() + Duration::from_secs(20);
    while answered < 4 * ROUNDS && Instant::now() < end {
        // The work loop ticks: the answers carry the loop figures.
        d.tick();
        answered += d.poll(Duration::from_millis(50)).expect("poll");
        if before.is_none() && answered >= 2 * ROUNDS {
            // Warm: the rest must not allocate.
            before = Some(allocs());
        }
    }
    let after = allocs();
    asker.join().expect("asker");
    assert_eq!(answered, 4 * ROUNDS);
    assert_eq!(
        after - before.expect("warmed up"),
        0,
        "driver allocations once warm"
    );
}
