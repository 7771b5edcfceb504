//! The tokio client against the real broker. Run with
//! `cargo test -p fims --features tokio --test tokio_client`.
#![cfg(feature = "tokio")]

mod common;

use std::time::Duration;

use common::{answer_subs_and_gets, decode, full_backlog, sub_datagram, sub_uris, SLACK, WAIT};
use fims::tokio::Client;
use fims::{Error, Method, OwnedMessage, Subscription};
use testkit::fake_broker::FakeBroker;
use testkit::Broker;

async fn client(b: &Broker, name: &str, uris: &[&str]) -> Client {
    let mut c = Client::connect_to(b.socket(), name).await.expect("connect");
    if !uris.is_empty() {
        c.subscribe(uris).await.expect("subscribe");
    }
    c
}

async fn next(c: &mut Client) -> OwnedMessage {
    tokio::time::timeout(WAIT, c.recv())
        .await
        .expect("a message in time")
        .expect("recv")
        .to_owned()
}

#[tokio::test]
async fn send_subscribe_receive_and_pub_only() {
    let b = Broker::start();
    let mut rx = client(&b, "rx", &["/site"]).await;
    rx.subscribe_with(&[Subscription::pub_only("/ess")])
        .await
        .unwrap();
    let mut tx = client(&b, "tx", &[]).await;
    tx.send(Method::Set, "/site/cops", None, b"1")
        .await
        .unwrap();
    tx.send(Method::Set, "/ess/x", None, b"not me")
        .await
        .unwrap();
    tx.send(Method::Pub, "/ess/x", None, b"2").await.unwrap();
    let m = next(&mut rx).await;
    assert_eq!(
        (m.uri.as_str(), m.process_name.as_str()),
        ("/site/cops", "tx")
    );
    assert_eq!(next(&mut rx).await.body, b"2");
}

#[tokio::test]
async fn recv_is_cancel_safe() {
    let b = Broker::start();
    let mut rx = client(&b, "rx", &["/c"]).await;
    // Cancel many receives before anything arrives.
    for _ in 0..20 {
        let r = tokio::time::timeout(Duration::from_millis(1), rx.recv()).await;
        assert!(r.is_err());
    }
    let mut tx = client(&b, "tx", &[]).await;
    for i in 0..50u32 {
        tx.send(Method::Pub, "/c", None, i.to_string().as_bytes())
            .await
            .unwrap();
    }
    for i in 0..50u32 {
        let body = loop {
            tokio::select! {
                m = rx.recv() => break m.unwrap().body.to_vec(),
                _ = tokio::time::sleep(Duration::from_micros(10)) => {}
            }
        };
        assert_eq!(body, i.to_string().as_bytes());
    }
}

#[tokio::test]
async fn request_with_a_responder_task_and_timeout() {
    let b = Broker::start();
    let mut svc = client(&b, "svc", &["/svc"]).await;
    let task = tokio::spawn(async move {
        let m = next(&mut svc).await;
        let answer = [&b"echo:"[..], &m.body].concat();
        svc.send(Method::Set, &m.replyto, None, &answer)
            .await
            .unwrap();
    });
    let mut req = client(&b, "req", &[]).await;
    let a = req
        .request(Method::Get, "/svc/x", b"hi", WAIT)
        .await
        .unwrap();
    assert_eq!(a.body, b"echo:hi");
    task.await.unwrap();
    let e = req
        .request_on(
            Method::Get,
            "/nobody",
            "/req/r",
            b"",
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(50)), "{e}");
}

#[tokio::test]
async fn sender_works_from_another_task() {
    let b = Broker::start();
    let mut rx = client(&b, "rx", &["/from"]).await;
    let owner = client(&b, "owner", &[]).await;
    let mut sender = owner.sender();
    tokio::spawn(async move {
        sender
            .send(Method::Pub, "/from/task", None, b"t")
            .await
            .unwrap();
    })
    .await
    .unwrap();
    let m = next(&mut rx).await;
    assert_eq!(
        (m.uri.as_str(), m.process_name.as_str()),
        ("/from/task", "owner")
    );
    drop(owner);
}

#[tokio::test]
async fn reconnect_after_broker_restart() {
    let mut b = Broker::start();
    let mut rx = client(&b, "rx", &["/a"]).await;
    b.kill();
    b.restart();
    let e = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.is_disconnect(), "{e}");
    rx.reconnect().await.unwrap();
    let mut tx = client(&b, "tx", &[]).await;
    tx.send(Method::Set, "/a/b", None, b"back").await.unwrap();
    assert_eq!(next(&mut rx).await.body, b"back");
}

#[tokio::test]
async fn broker_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let e = Client::connect_to(dir.path().join("none.sock"), "x")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BrokerNotRunning { .. }), "{e}");
}

// ---- the complete set on the wire (recording fake broker) ----

#[tokio::test]
async fn every_change_and_reconnect_sends_the_whole_set_in_one_sub() {
    let fake = FakeBroker::start(answer_subs_and_gets);
    let mut c = Client::connect_to(fake.socket(), "async_set")
        .await
        .unwrap();
    c.subscribe(&["/a"]).await.unwrap();
    c.subscribe_with(&[Subscription::pub_only("/b")])
        .await
        .unwrap();
    let a = c.request(Method::Get, "/svc/x", b"", WAIT).await.unwrap();
    assert_eq!(a.body, b"\"answer\"");
    let dgs = wait_datagrams(&fake, 0, 4).await;
    assert_eq!(
        dgs[0],
        sub_datagram("async_set", &[Subscription::all("/a")])
    );
    let ab = [Subscription::all("/a"), Subscription::pub_only("/b")];
    assert_eq!(dgs[1], sub_datagram("async_set", &ab));
    let uris = sub_uris(&dgs[2]);
    assert_eq!(uris.len(), 3, "the reply prefix joins the set: {uris:?}");
    assert!(uris[2].0.starts_with("/_fims_reply/"));
    assert_eq!(decode(&dgs[3]).uri, "/svc/x");
    // Replace, then reconnect: the replaced set goes again, whole, in one sub.
    let only = [Subscription::all("/only")];
    c.set_subscriptions(&only).await.unwrap();
    fake.disconnect_all();
    let e = tokio::time::timeout(WAIT, c.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.is_disconnect(), "{e}");
    c.reconnect().await.unwrap();
    let after = wait_datagrams(&fake, 1, 1).await;
    assert_eq!(after, [sub_datagram("async_set", &only)]);
    assert_eq!(c.subscriptions(), &only);
}

#[tokio::test]
async fn more_than_255_is_refused_before_anything_is_sent() {
    let fake = FakeBroker::start(answer_subs_and_gets);
    let mut c = Client::connect_to(fake.socket(), "async_greedy")
        .await
        .unwrap();
    let subs: Vec<Subscription> = (0..300)
        .map(|i| Subscription::all(format!("/n/{i}")))
        .collect();
    c.subscribe_with(&subs[..200]).await.unwrap();
    let e = c.subscribe_with(&subs[200..]).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooManySubscriptions {
                count: 300,
                max: 255
            }
        ),
        "{e}"
    );
    assert_eq!(c.subscriptions().len(), 200);
    c.send(Method::Pub, "/sentinel", None, b"").await.unwrap();
    let dgs = wait_datagrams(&fake, 0, 2).await;
    assert_eq!(sub_uris(&dgs[0]).len(), 200);
    assert_eq!(decode(&dgs[1]).uri, "/sentinel");
}

// ---- connect never blocks the runtime, and ends at its deadline ----

/// On a current-thread runtime a blocking connect would stop every other task;
/// a ticker task keeps ticking while the connect waits on a full backlog.
#[tokio::test(flavor = "current_thread")]
async fn connect_to_a_full_backlog_does_not_block_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (_listener, path, _held) = full_backlog(&dir);
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let t = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let timeout = Duration::from_millis(500);
    let start = std::time::Instant::now();
    let e = Client::connect_timeout(&path, "patient", timeout)
        .await
        .unwrap_err();
    let took = start.elapsed();
    ticker.abort();
    assert!(matches!(e, Error::Timeout(500)), "{e}");
    assert!(took >= timeout && took < timeout + SLACK, "{took:?}");
    let n = ticks.load(std::sync::atomic::Ordering::Relaxed);
    assert!(n >= 5, "the runtime ran other tasks meanwhile: {n} ticks");
}

#[tokio::test]
async fn a_silent_broker_times_out_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let _listener = testkit::fake_broker::SeqpacketListener::bind(&path, 16);
    let start = std::time::Instant::now();
    let e = Client::connect_timeout(&path, "patient", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(300)), "{e}");
    assert!(start.elapsed() < Duration::from_millis(300) + SLACK);
}

/// Waits (without blocking the runtime) for connection `conn` of the fake
/// broker to have sent `n` datagrams.
async fn wait_datagrams(fake: &FakeBroker, conn: usize, n: usize) -> Vec<Vec<u8>> {
    let end = std::time::Instant::now() + WAIT;
    loop {
        let dgs = fake.datagrams(conn);
        if dgs.len() >= n {
            return dgs;
        }
        assert!(
            std::time::Instant::now() < end,
            "connection {conn}: {} of {n} datagrams",
            dgs.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn on_our_broker_a_request_keeps_earlier_subscriptions_and_255_route() {
    let b = Broker::start();
    let mut svc = client(&b, "svc", &["/svc"]).await;
    let task = tokio::spawn(async move {
        let m = next(&mut svc).await;
        svc.send(Method::Set, &m.replyto, None, b"1").await.unwrap();
    });
    let uris: Vec<String> = (0..254).map(|i| format!("/many/{i}")).collect();
    let refs: Vec<&str> = uris.iter().map(String::as_str).collect();
    let mut c = client(&b, "c", &refs).await;
    c.request(Method::Get, "/svc/x", b"", WAIT).await.unwrap();
    task.await.unwrap();
    assert_eq!(
        c.subscriptions().len(),
        255,
        "254 URIs and the reply prefix"
    );
    let mut tx = client(&b, "tx", &[]).await;
    for i in [0, 64, 253] {
        let body = i.to_string();
        tx.send(Method::Set, &format!("/many/{i}"), None, body.as_bytes())
            .await
            .unwrap();
        assert_eq!(next(&mut c).await.body, body.as_bytes());
    }
}
