//! The tokio driver and `Router::route_async` against a real broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cops_responder::{Responder, Router, TokioDriver};
use fims::tokio::Client;
use fims::Method;
use testkit::Broker;
use tokio::sync::oneshot;

const T: Duration = Duration::from_secs(3);

fn responder(uri: &str) -> Responder {
    let mut r = Responder::new("async_proc", uri).expect("valid");
    r.set_version("2.0.0", "c0ffee", "9");
    r
}

/// Spawns the driver; the sender stops it, the handle gives it back.
fn spawn(mut d: TokioDriver) -> (oneshot::Sender<()>, tokio::task::JoinHandle<TokioDriver>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        d.run(async {
            let _ = stopped.await;
        })
        .await;
        d
    });
    (stop, task)
}

async fn ask(socket: &std::path::Path, uri: &str, timeout: Duration) -> Option<String> {
    let mut c = Client::connect_to(socket, "cops").await.ok()?;
    let m = c.request(Method::Get, uri, b"", timeout).await.ok()?;
    Some(m.body_text())
}

async fn ask_eventually(socket: &std::path::Path, uri: &str, within: Duration) -> Option<String> {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if let Some(a) = ask(socket, uri, Duration::from_millis(200)).await {
            return Some(a);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_driver_answers_and_reconnects() {
    let mut broker = Broker::start();
    let (stop, task) = spawn(TokioDriver::new(responder("/as"), broker.socket()));
    let first = ask_eventually(broker.socket(), "/as/cops", T)
        .await
        .expect("answers");
    let v: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(v["pid"], std::process::id());
    assert_eq!(v["version_commit"], "c0ffee");
    let mut c = Client::connect_to(broker.socket(), "cops")
        .await
        .expect("client");
    c.send(Method::Set, "/as/cops/cops_heartbeat", None, b"41")
        .await
        .expect("send");
    // An answer FIMS cannot carry is dropped, and the driver goes on.
    c.send(Method::Get, "/as/cops", Some("not-a-uri"), b"")
        .await
        .expect("send");
    let hb = c
        .request(Method::Get, "/as/cops/cops_heartbeat", b"", T)
        .await
        .expect("hb");
    assert_eq!(hb.body_text(), "41");

    broker.kill();
    broker.restart();
    let again = ask_eventually(
        broker.socket(),
        "/as/cops/cops_heartbeat",
        Duration::from_secs(5),
    )
    .await
    .expect("answers after the broker restarted");
    assert_eq!(again, "41", "the value survives the reconnect");

    stop.send(()).expect("driver running");
    let d = tokio::time::timeout(T, task)
        .await
        .expect("stops")
        .expect("task");
    assert_eq!(d.connects(), 2);
    assert_eq!(d.dropped_answers(), 1);
    assert_eq!(d.responder().heartbeat(), 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_driver_gate_follows_the_work_loop() {
    let broker = Broker::start();
    let mut r = responder("/ag");
    r.set_liveness_window(Some(Duration::from_millis(150)));
    let d = TokioDriver::new(r, broker.socket());
    let pets = d.pet_handle();
    let (stop, task) = spawn(d);
    // The work loop: pets each iteration while "healthy".
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let work = tokio::spawn(async move {
        loop {
            if h.load(Ordering::Relaxed) {
                pets.pet();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(ask_eventually(broker.socket(), "/ag/cops", T)
        .await
        .is_some());
    healthy.store(false, Ordering::Relaxed);
    // Silent once the window has passed (asked until then, so load does not flake it).
    let end = tokio::time::Instant::now() + T;
    let mut silent = false;
    while !silent && tokio::time::Instant::now() < end {
        silent = ask(broker.socket(), "/ag/cops", Duration::from_millis(300))
            .await
            .is_none();
    }
    assert!(silent, "silent while stuck");
    healthy.store(true, Ordering::Relaxed);
    assert!(
        ask_eventually(broker.socket(), "/ag/cops", T)
            .await
            .is_some(),
        "answers again"
    );
    work.abort();
    stop.send(()).expect("running");
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_async_on_the_hosts_connection() {
    let broker = Broker::start();
    let mut host = Client::connect_to(broker.socket(), "host")
        .await
        .expect("host");
    host.subscribe(&["/ah"]).await.expect("sub");
    let mut sender = host.sender();
    let mut r = responder("/ah");
    r.set_liveness_window(Some(Duration::from_secs(60)));
    let mut router = Router::new(r);
    // The work loop lives elsewhere: it pets through a handle.
    router.pet_handle().pet();
    let hosted = tokio::spawn(async move {
        let mut others = Vec::new();
        while others.is_empty() {
            let msg = host.recv().await.expect("recv");
            if !router.route_async(&mut sender, &msg).await.expect("route") {
                others.push(msg.uri.to_owned());
            }
        }
        others
    });
    assert_eq!(
        ask_eventually(broker.socket(), "/ah/cops/version_tag", T)
            .await
            .as_deref(),
        Some("\"2.0.0\"")
    );
    let mut c = Client::connect_to(broker.socket(), "cops")
        .await
        .expect("client");
    c.send(Method::Set, "/ah/speed", None, b"3")
        .await
        .expect("send");
    let others = tokio::time::timeout(T, hosted)
        .await
        .expect("done")
        .expect("task");
    assert_eq!(others, ["/ah/speed"]);
}

/// The reconnect backoff on the runtime's clock, paused: no broker at the
/// path, so every attempt fails at once and only the pauses between them
/// take (virtual) time: 50 ms doubling to 500 ms, exactly.
#[tokio::test(start_paused = true)]
async fn tokio_driver_backs_off_50ms_doubling_to_500ms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = TokioDriver::new(responder("/bo"), dir.path().join("no-broker.sock"));
    let start = tokio::time::Instant::now();
    let mut failed_at = Vec::new();
    d.run_with(
        tokio::time::sleep(Duration::from_millis(2000)),
        |_| {},
        |_| failed_at.push((tokio::time::Instant::now() - start).as_millis()),
    )
    .await;
    assert_eq!(failed_at, [0, 50, 150, 350, 750, 1250, 1750]);
    assert_eq!(d.connects(), 0);
}
