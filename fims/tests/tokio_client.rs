#![cfg(feature = "tokio")]
//! The tokio client against the real broker. Run with
//! `cargo test -p fims --features tokio --test tokio_client`.

use std::time::Duration;

use fims::tokio::Client;
use fims::{Error, Method, OwnedMessage, Subscription};
use testkit::Broker;

const WAIT: Duration = Duration::from_secs(5);

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
