//! Fan-out under load: every message reaches every subscriber, complete and
//! in order.

#![allow(clippy::unwrap_used)]

use futures::future::join_all;
use sente_lite_tests::*;
use serde_json::{json, Value};

/// Reads `n` channel-messages of `channel`.
async fn read_messages(mut c: Client, channel: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let m = c.recv_type("channel-message").await;
        assert_eq!(m["channel-id"], channel);
        got.push(m);
    }
    // Nothing more queued for it.
    c.roundtrip().await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_subscribers_get_500_messages_complete_and_in_order() {
    const SUBSCRIBERS: usize = 20;
    const MESSAGES: usize = 500;
    let server = start_default().await;
    let addr = server.local_addr();
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut c = Client::connect(addr).await;
        c.subscribe("fan").await;
        readers.push(tokio::spawn(read_messages(c, "fan", MESSAGES)));
    }
    let mut publisher = Client::connect(addr).await;
    // Pipelined: every publish sent before reading any result.
    for i in 0..MESSAGES {
        publisher
            .send(json!({"type": "publish", "channel-id": "fan",
                         "data": {"seq": i, "text": format!("message {i}")}}))
            .await;
    }
    let mut ids = Vec::new();
    for _ in 0..MESSAGES {
        let r = publisher.recv_type("publish-result").await;
        assert_eq!(r["delivered-to"], SUBSCRIBERS, "{r}");
        ids.push(r["message-id"].as_str().unwrap().to_owned());
    }
    for got in join_all(readers).await {
        let got = got.unwrap();
        assert_eq!(got.len(), MESSAGES);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m["data"], json!({"seq": i, "text": format!("message {i}")}));
            assert_eq!(m["message-id"], ids[i].as_str());
            assert_eq!(m["sender-conn-id"], publisher.conn_id.as_str());
        }
    }
    let s = stats(addr).await;
    assert_eq!(
        s["channel-stats"]["channels"]["fan"]["message-count"],
        MESSAGES
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_keep_per_publisher_order() {
    const SUBSCRIBERS: usize = 5;
    const PUBLISHERS: usize = 4;
    const EACH: usize = 200;
    let server = start_default().await;
    let addr = server.local_addr();
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut c = Client::connect(addr).await;
        c.subscribe("shared").await;
        readers.push(tokio::spawn(read_messages(c, "shared", PUBLISHERS * EACH)));
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let mut c = Client::connect(addr).await;
        publishers.push(tokio::spawn(async move {
            for i in 0..EACH {
                c.send(json!({"type": "publish", "channel-id": "shared",
                              "data": {"p": p, "seq": i}}))
                    .await;
            }
            for _ in 0..EACH {
                let r = c.recv_type("publish-result").await;
                assert_eq!(r["delivered-to"], SUBSCRIBERS, "{r}");
            }
            c.conn_id.clone()
        }));
    }
    let senders: Vec<String> = join_all(publishers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut orders: Vec<Vec<String>> = Vec::new();
    for got in join_all(readers).await {
        let got = got.unwrap();
        let mut next = [0u64; PUBLISHERS];
        for m in &got {
            let p = m["data"]["p"].as_u64().unwrap() as usize;
            assert_eq!(m["data"]["seq"], next[p], "publisher {p} out of order");
            assert_eq!(m["sender-conn-id"], senders[p].as_str());
            next[p] += 1;
        }
        assert_eq!(next, [EACH as u64; PUBLISHERS]);
        orders.push(
            got.iter()
                .map(|m| m["message-id"].as_str().unwrap().to_owned())
                .collect(),
        );
    }
    // All subscribers saw the same interleaving.
    for o in &orders[1..] {
        assert_eq!(o, &orders[0], "subscribers disagree on the relative order");
    }
}
