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
        let o = r.handle(now, black_box("get"), black_box("/site/cops"), replyto, b"", &mut reply);
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
        let o = r.handle(now, "set", black_box("/site/cops/cops_heartbeat"), None, &body, &mut reply);
        assert_eq!(o, Outcome::Handled);
    });
    let clothed = per_call(|| {
        let o = r.handle(now, "set", "/site/cops/cops_heartbeat", replyto, br#"{"value":17}"#, &mut reply);
        assert_eq!(o, Outcome::Reply);
    });
    let not_mine = per_call(|| {
        let o = r.handle(now, "pub", black_box("/components/bms_9/cap"), None, b"1234", &mut reply);
        assert_eq!(o, Outcome::NotMine);
    });
    println!("get <uri>/cops into its answer: {get:.0} ns");
    println!("naked set (with formatting the body): {set:.0} ns");
    println!("clothed set with replyto (serde_json): {clothed:.0} ns");
    println!("not mine: {not_mine:.1} ns");
}
