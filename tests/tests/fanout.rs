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

/// PROTOCOL.md, Ordering: a publish racing with a subscribe reaches the new
/// subscriber exactly once, live or retained. With retention larger than
/// the number of messages, retained + live is every message, no gap, no
/// duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_racing_with_publishes_sees_each_message_once() {
    const MESSAGES: usize = 2_000;
    let server = start_default().await;
    let addr = server.local_addr();
    let cfg = sente_lite_protocol::ChannelConfig {
        message_retention: MESSAGES,
        ..Default::default()
    };
    server
        .channels()
        .create_channel("race", Some(cfg))
        .await
        .unwrap();
    let mut publisher = Client::connect(addr).await;
    let mut late = Client::connect(addr).await;
    let publishing = tokio::spawn(async move {
        for i in 0..MESSAGES {
            publisher
                .send(json!({"type": "publish", "channel-id": "race", "data": i}))
                .await;
        }
        for _ in 0..MESSAGES {
            publisher.recv_type("publish-result").await;
        }
    });
    // Subscribe while the publishes are being processed.
    late.send(json!({"type": "subscribe", "channel-id": "race"}))
        .await;
    let mut seqs: Vec<u64> = Vec::new();
    let mut live_before_result = Vec::new();
    loop {
        let f = late.recv().await;
        match f["type"].as_str().unwrap() {
            "subscription-result" => {
                assert_eq!(f["success"], true, "{f}");
                let retained: Vec<u64> = f["retained-messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["data"].as_u64().unwrap())
                    .collect();
                seqs.extend(retained);
                seqs.append(&mut live_before_result);
                break;
            }
            "channel-message" => live_before_result.push(f["data"].as_u64().unwrap()),
            other => panic!("unexpected {other}: {f}"),
        }
    }
    while seqs.len() < MESSAGES {
        let m = late.recv_type("channel-message").await;
        seqs.push(m["data"].as_u64().unwrap());
    }
    within("the publisher", publishing).await.unwrap();
    let want: Vec<u64> = (0..MESSAGES as u64).collect();
    assert_eq!(
        seqs, want,
        "retained + live must be every message exactly once, in order"
    );
    late.roundtrip().await;
}
