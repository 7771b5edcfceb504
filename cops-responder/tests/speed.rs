//! Rough timing of the hot path; the real benches live in `cops-benches`.
//! Run: `cargo test -p cops-responder --release --test speed -- --ignored --nocapture`

use std::hint::black_box;
use std::time::Instant;

use cops_responder::{Outcome, Responder};

fn per_call(mut f: impl FnMut()) -> f64 {
    for _ in 0..10_000 {
        f();
    }
    let n = 1_000_000;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

#[test]
#[ignore = "timing; run in release by hand"]
fn hot_path_timing() {
    let mut r = Responder::new("hybridos_controller", "/site").expect("valid");
    r.set_version("1.4.0", "a1b2c3d", "372");
    let mut reply = Vec::new();
    let now = Instant::now();
    let replyto = Some("/cops/heartbeat/hybridos_controller");
    let get = per_call(|| {
        let o = r.handle(
            now,
            black_box("get"),
            black_box("/site/cops"),
            replyto,
            b"",
            &mut reply,
        );
        assert_eq!(o, Outcome::Reply);
        black_box(&reply);
    });
    let mut hb = 0u64;
    let mut body = Vec::new();
    let set = per_call(|| {
        hb += 1;
        body.clear();
        use std::io::Write;
        let _ = write!(body, "{hb}");
        let o = r.handle(
            now,
            "set",
            black_box("/site/cops/cops_heartbeat"),
            None,
            &body,
            &mut reply,
        );
        assert_eq!(o, Outcome::Handled);
    });
    let clothed = per_call(|| {
        let o = r.handle(
            now,
            "set",
            "/site/cops/cops_heartbeat",
            replyto,
            br#"{"value":17}"#,
            &mut reply,
        );
        assert_eq!(o, Outcome::Reply);
    });
    let not_mine = per_call(|| {
        let o = r.handle(
            now,
            "pub",
            black_box("/components/bms_9/cap"),
            None,
            b"1234",
            &mut reply,
        );
        assert_eq!(o, Outcome::NotMine);
    });
    println!("get <uri>/cops into its answer: {get:.0} ns");
    println!("naked set (with formatting the body): {set:.0} ns");
    println!("clothed set with replyto (serde_json): {clothed:.0} ns");
    println!("not mine: {not_mine:.1} ns");
}

/// CPU time of the calling thread.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Heartbeat round trips through a real broker, answered three ways: by the
/// `Driver`; by a bare recv/send loop around `Responder::handle`; by a bare loop
/// sending a canned answer (the floor without the responder). Wall time per
/// round trip is noisy on a shared machine, so the answering thread's CPU time
/// per answer is reported too.
#[test]
#[ignore = "timing; run in release by hand"]
fn round_trip_timing() {
    use fims::blocking::Client;
    use fims::Method;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::Duration;

    const N: u32 = 3000;

    fn measure(socket: &std::path::Path, uri: &str) -> f64 {
        let mut c = Client::connect_to(socket, "cops").expect("client");
        let t = Duration::from_secs(2);
        let start = Instant::now();
        for _ in 0..N {
            c.request(Method::Get, uri, b"", t).expect("answer");
        }
        start.elapsed().as_nanos() as f64 / f64::from(N) / 1000.0
    }

    /// Answers until `stop`; returns (answers, CPU time spent answering).
    type Answerer = JoinHandle<(u64, Duration)>;

    /// A bare loop answering `base/cops`, with the core or with a canned body.
    fn bare(socket: &std::path::Path, base: &str, core: bool, stop: Arc<AtomicBool>) -> Answerer {
        let mut r = Responder::new("bare", base).expect("valid");
        let mut c = Client::connect_to(socket, "bare").expect("bare");
        c.subscribe(&[r.cops_uri()]).expect("sub");
        std::thread::spawn(move || {
            let mut replyto = String::new();
            let mut reply = br#"{"cops_heartbeat":0,"pid":1234}"#.to_vec();
            let (mut n, cpu0) = (0, thread_cpu());
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(m)) = c.recv(Some(Duration::from_millis(10))) {
                    replyto.clear();
                    replyto.push_str(m.replyto);
                    if core {
                        let _ = r.handle_message(Instant::now(), &m, &mut reply);
                    }
                    let _ = c.send(Method::Set, &replyto, None, &reply);
                    n += 1;
                }
            }
            (n, thread_cpu() - cpu0)
        })
    }

    let broker = testkit::Broker::start();
    let stop = Arc::new(AtomicBool::new(false));
    let r = Responder::new("rt", "/rt").expect("valid");
    let mut d = cops_responder::Driver::connect(r, broker.socket()).expect("connects");
    let s = stop.clone();
    let t1: Answerer = std::thread::spawn(move || {
        let (mut n, cpu0) = (0, thread_cpu());
        while !s.load(Ordering::Relaxed) {
            n += d.poll(Duration::from_millis(10)).unwrap_or(0) as u64;
        }
        (n, thread_cpu() - cpu0)
    });
    let t2 = bare(broker.socket(), "/core", true, stop.clone());
    let t3 = bare(broker.socket(), "/canned", false, stop.clone());
    let mut v = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..5 {
        for (i, uri) in ["/rt/cops", "/core/cops", "/canned/cops"]
            .iter()
            .enumerate()
        {
            v[i].push(measure(broker.socket(), uri));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let cpu: Vec<f64> = [t1, t2, t3]
        .into_iter()
        .map(|t| {
            let (n, cpu) = t.join().expect("answerer");
            cpu.as_nanos() as f64 / n.max(1) as f64 / 1000.0
        })
        .collect();
    let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    let (d, c, b) = (min(&v[0]), min(&v[1]), min(&v[2]));
    let pct = |x: f64| (x - b) / b * 100.0;
    println!(
        "round trip (best of 5 x {N}): canned answer {b:.2} us; core in a bare loop {c:.2} us ({:+.1}%); Driver {d:.2} us ({:+.1}%)",
        pct(c),
        pct(d)
    );
    println!(
        "answering thread CPU per answer (includes its 10 ms idle wakeups): canned {:.2} us; core {:.2} us; Driver {:.2} us",
        cpu[2], cpu[1], cpu[0]
    );
}
