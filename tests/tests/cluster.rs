//! Several nodes on one real Redis act as one server: end to end, each node
//! a real server on 127.0.0.1:0 with `broker.kind = redis`, each test with
//! a `redis-server` of its own.

#![allow(clippy::unwrap_used)]

use futures::future::join_all;
use sente_lite_server::BrokerKind;
use sente_lite_tests::external::RedisServer;
use sente_lite_tests::*;
use serde_json::{json, Value};
use std::collections::HashSet;

/// A node's configuration on `redis`, named `id`.
fn node_config(redis: &RedisServer, id: &str) -> Config {
    let mut c = config();
    c.broker.kind = BrokerKind::Redis;
    c.broker.redis_url = redis.url();
    c.node.id = id.to_owned();
    c
}

/// Starts `n` nodes (`node-0`, ...) on `redis` and waits until each sees
/// all of them.
async fn cluster(redis: &RedisServer, n: usize) -> Vec<Server> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(start(node_config(redis, &format!("node-{i}"))).await);
    }
    for node in &nodes {
        wait_healthy(node, n).await;
    }
    nodes
}

/// Waits until `/health` of `node` is 200 and shows `n` nodes.
async fn wait_healthy(node: &Server, n: usize) {
    let addr = node.local_addr();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (status, body) = http_get(addr, "/health").await;
        let seen = body["broker"]["nodes"].as_array().map_or(0, Vec::len);
        if status == 200 && seen >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {addr} not healthy with {n} nodes: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn read_messages(mut c: Client, channel: &str, n: usize) -> (Client, Vec<Value>) {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let m = c.recv_type("channel-message").await;
        assert_eq!(m["channel-id"], channel);
        got.push(m);
    }
    c.roundtrip().await;
    (c, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_any_node_reaches_every_subscriber_once_in_one_order() {
    const PER_PUBLISHER: usize = 100;
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3).await;
    let mut readers = Vec::new();
    let mut count = 0;
    for node in &nodes {
        for _ in 0..2 {
            let mut c = Client::connect(node.local_addr()).await;
            let r = c.subscribe("room").await;
            count += 1;
            assert_eq!(r["subscriber-count"], count, "cluster-wide count: {r}");
            readers.push(c);
        }
    }
    let readers: Vec<_> = readers
        .into_iter()
        .map(|c| tokio::spawn(read_messages(c, "room", 2 * PER_PUBLISHER)))
        .collect();
    // Two publishers on different nodes, pipelined.
    let mut pubs = Vec::new();
    for (p, node) in nodes.iter().take(2).enumerate() {
        let addr = node.local_addr();
        pubs.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            for i in 0..PER_PUBLISHER {
                c.send(json!({"type": "publish", "channel-id": "room",
                              "data": {"p": p, "seq": i}}))
                    .await;
            }
            for _ in 0..PER_PUBLISHER {
                let r = c.recv_type("publish-result").await;
                assert_eq!(r["success"], true, "{r}");
                assert_eq!(r["delivered-to"], 6, "{r}");
            }
        }));
    }
    for p in join_all(pubs).await {
        p.unwrap();
    }
    let mut orders = Vec::new();
    for r in join_all(readers).await {
        let (_c, got) = r.unwrap();
        let offsets: Vec<u64> = got.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
        assert_eq!(offsets, (1..=200).collect::<Vec<_>>(), "every offset once, in order");
        for p in 0..2 {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|m| m["data"]["p"] == p)
                .map(|m| m["data"]["seq"].as_u64().unwrap())
                .collect();
            assert_eq!(seqs, (0..PER_PUBLISHER as u64).collect::<Vec<_>>());
        }
        let ids: Vec<String> = got.iter().map(|m| m["message-id"].to_string()).collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        orders.push(ids);
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "one order for all");
}
