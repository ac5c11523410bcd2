//! Several nodes on one real Redis act as one server: end to end, each node
//! a real server on 127.0.0.1:0 with `broker.kind = redis`, each test with
//! a `redis-server` of its own.

#![allow(clippy::unwrap_used)]

use futures::future::join_all;
use sente_lite_tests::external::RedisServer;
use sente_lite_tests::*;
use serde_json::{json, Value};
use std::collections::HashSet;

/// A node's configuration on `redis`, named `id`.
fn node_config(redis: &RedisServer, id: &str) -> Config {
    redis_node(config(), &redis.url(), id)
}

/// Starts `n` nodes (`node-0`, ...) on `redis` and waits until each sees
/// all of them.
async fn cluster(redis: &RedisServer, n: usize) -> Vec<Server> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(start(node_config(redis, &format!("node-{i}"))).await);
    }
    for node in &nodes {
        wait_healthy(node.local_addr(), n).await;
    }
    nodes
}

/// Polls `/health` of `addr` until its status is `want`; returns its body.
async fn health_status(addr: std::net::SocketAddr, want: u16, within_ms: u64) -> Value {
    let within = std::time::Duration::from_millis(within_ms);
    health_until(addr, within, &format!("{want}"), |status, _| status == want).await
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
        assert_eq!(
            offsets,
            (1..=200).collect::<Vec<_>>(),
            "every offset once, in order"
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclude_sender_and_every_count_are_cluster_wide() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3).await;
    let mut a = Client::connect(nodes[0].local_addr()).await;
    let mut b = Client::connect(nodes[1].local_addr()).await;
    let mut p = Client::connect(nodes[1].local_addr()).await;
    assert_eq!(a.subscribe("room").await["subscriber-count"], 1);
    assert_eq!(b.subscribe("room").await["subscriber-count"], 2);
    assert_eq!(p.subscribe("room").await["subscriber-count"], 3);
    p.send(
        json!({"type": "publish", "channel-id": "room", "data": {"x": 1},
                  "exclude-sender": true}),
    )
    .await;
    let r = p.recv_type("publish-result").await;
    assert_eq!(r["delivered-to"], 2, "sender left out of the count: {r}");
    for c in [&mut a, &mut b] {
        let m = c.recv_type("channel-message").await;
        assert_eq!(m["data"], json!({"x": 1}));
        assert_eq!(m["sender-conn-id"], p.conn_id.as_str());
    }
    // The sender got nothing: its next frame is the pong.
    p.roundtrip().await;

    // Every node shows the cluster's counts.
    for node in &nodes {
        let addr = node.local_addr();
        let (status, ch) = http_get(addr, "/channels").await;
        assert_eq!(status, 200);
        assert_eq!(ch["channels"]["room"]["subscriber-count"], 3, "{ch}");
        assert_eq!(ch["channels"]["room"]["message-count"], 1, "{ch}");
        let s = stats(addr).await;
        assert_eq!(
            s["channel-stats"]["channels"]["room"]["subscriber-count"],
            3
        );
        assert_eq!(s["channel-stats"]["total-subscriptions"], 3);
        let ids: Vec<&str> = s["broker"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(ids, ["node-0", "node-1", "node-2"], "{s}");
        let info = node.channels().channel_info("room").await.unwrap();
        assert_eq!(info.message_count, 1);
        assert_eq!(info.position.offset, 1);
    }
    let (_, health) = http_get(nodes[2].local_addr(), "/health").await;
    assert_eq!(health["broker"]["kind"], "redis");
    assert_eq!(health["broker"]["state"], "connected");
    assert_eq!(health["broker"]["node-id"], "node-2");
    let mut q = Client::connect(nodes[2].local_addr()).await;
    q.send(json!({"type": "list-channels"})).await;
    let l = q.recv_type("channel-list").await;
    assert_eq!(l["channels"]["room"]["subscriber-count"], 3, "{l}");

    // Leaving is counted everywhere too.
    b.send(json!({"type": "unsubscribe", "channel-id": "room"}))
        .await;
    b.recv_type("unsubscription-result").await;
    a.close().await;
    p.send(json!({"type": "publish", "channel-id": "room", "data": 2}))
        .await;
    let (r, before) = p.recv_until("publish-result").await;
    assert_eq!(r["delivered-to"], 1, "only p itself is left: {r}");
    assert_eq!(before.len(), 1, "its own message first: {before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_and_history_are_the_same_on_every_node() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2).await;
    let config = sente_lite_protocol::ChannelConfig {
        message_retention: 3,
        ..Default::default()
    };
    nodes[0]
        .channels()
        .create_channel("news", Some(config))
        .await
        .unwrap();
    // Created on node 0, so node 1 cannot create it again.
    assert!(nodes[1]
        .channels()
        .create_channel("news", None)
        .await
        .is_err());
    let mut p = Client::connect(nodes[0].local_addr()).await;
    for i in 1..=5 {
        p.publish("news", json!({"n": i})).await;
    }
    // The epoch comes from Redis: the same on every node.
    let epoch = nodes[1]
        .channels()
        .channel_info("news")
        .await
        .unwrap()
        .position
        .epoch;
    let epoch = json!(&*epoch);
    assert_ne!(epoch, json!(""));
    let mut s = Client::connect(nodes[1].local_addr()).await;
    let r = s.subscribe("news").await;
    let retained = r["retained-messages"].as_array().unwrap();
    let got: Vec<(Value, Value, Value)> = retained
        .iter()
        .map(|m| {
            (
                m["data"]["n"].clone(),
                m["offset"].clone(),
                m["epoch"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        (3..=5)
            .map(|n| (json!(n), json!(n), epoch.clone()))
            .collect::<Vec<_>>()
    );
    // Live after retained, with the next offset.
    p.publish("news", json!({"n": 6})).await;
    let m = s.recv_type("channel-message").await;
    assert_eq!(
        (m["offset"].clone(), m["epoch"].clone()),
        (json!(6), epoch.clone())
    );
    for node in &nodes {
        let info = node.channels().channel_info("news").await.unwrap();
        let offsets: Vec<u64> = info.retained_messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [4, 5, 6]);
        assert_eq!(info.config.message_retention, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_crosses_nodes_and_comes_back_to_the_requester_only() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3).await;
    let mut worker = Client::connect(nodes[1].local_addr()).await;
    worker.subscribe("svc").await;
    let mut bystander = Client::connect(nodes[2].local_addr()).await;
    bystander.subscribe("other").await;
    let mut req = Client::connect(nodes[0].local_addr()).await;
    req.send(json!({"type": "rpc-request", "channel-id": "svc", "data": {"q": 1}}))
        .await;
    let r = req.recv_type("rpc-request-result").await;
    assert_eq!(r["delivery"]["success"], true, "{r}");
    assert_eq!(r["delivery"]["delivered-to"], 1, "{r}");
    let id = r["request-id"].as_str().unwrap().to_owned();
    let got = worker.recv_type("rpc-request").await;
    assert_eq!(got["request-id"], id.as_str());
    assert_eq!(got["sender-conn-id"], req.conn_id.as_str());
    worker
        .send(json!({"type": "rpc-response", "request-id": id, "data": {"a": 2}}))
        .await;
    let ok = worker.recv_type("rpc-response-result").await;
    assert_eq!(ok["success"], true, "{ok}");
    let resp = req.recv_type("rpc-response").await;
    assert_eq!(resp["data"], json!({"a": 2}));
    // Answered: a second answer is refused, on the worker's node too.
    worker
        .send(json!({"type": "rpc-response", "request-id": id, "data": 3}))
        .await;
    let again = worker.recv_type("rpc-response-result").await;
    assert_eq!(again["reason"], "request-not-found", "{again}");
    bystander.roundtrip().await;

    // A timeout, and the late answer after it.
    req.send(
        json!({"type": "rpc-request", "channel-id": "svc", "data": 1,
                    "timeout-ms": 200}),
    )
    .await;
    let r = req.recv_type("rpc-request-result").await;
    let id = r["request-id"].as_str().unwrap().to_owned();
    worker.recv_type("rpc-request").await;
    let e = req.recv_type("error").await;
    assert_eq!(e["reason"], "rpc-timeout");
    assert_eq!(e["request-id"], id.as_str());
    worker
        .send(json!({"type": "rpc-response", "request-id": id, "data": 1}))
        .await;
    let late = worker.recv_type("rpc-response-result").await;
    assert_eq!(late["reason"], "request-not-found", "{late}");
    req.roundtrip().await;

    // No worker anywhere.
    req.send(json!({"type": "rpc-request", "channel-id": "nobody", "data": 1}))
        .await;
    let r = req.recv_type("rpc-request-result").await;
    assert_eq!(r["delivery"]["reason"], "no-subscribers", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_api_is_cluster_wide() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2).await;
    let mut far = Client::connect(nodes[1].local_addr()).await;
    far.subscribe("c").await;
    let mut near = Client::connect(nodes[0].local_addr()).await;
    // A broadcast from node 0 reaches node 1's connections.
    let msg = json!({"type": "announcement", "text": "hi"});
    nodes[0].broadcast(msg.as_object().cloned().unwrap()).await;
    for c in [&mut far, &mut near] {
        let b = c.recv_type("announcement").await;
        assert_eq!(b["broadcast"], true);
    }
    // To a channel's subscribers on another node.
    let n = nodes[0]
        .broadcast_to_channel("c", json!({"type": "notice"}).as_object().cloned().unwrap())
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(far.recv_type("notice").await["channel-id"], "c");
    // To one connection on another node, by the id its welcome gave.
    nodes[0]
        .send_to_connection(&far.conn_id, &json!({"type": "direct", "n": 1}))
        .await
        .unwrap();
    assert_eq!(far.recv_type("direct").await["n"], 1);
    // Deleting on node 0 unsubscribes node 1's subscriber (once the notice
    // has crossed Redis: asked until then).
    assert_eq!(nodes[0].channels().delete_channel("c").await.unwrap(), 1);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        far.send(json!({"type": "get-subscriptions"})).await;
        let subs = far.recv_type("subscription-list").await;
        if subs["subscriptions"] == json!([]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still subscribed: {subs}"
        );
    }
    let r = near.publish("c", json!(1)).await;
    assert_eq!(
        r["delivered-to"], 0,
        "nobody is subscribed to the new c: {r}"
    );
    far.roundtrip().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_a_prompt_named_error_and_redis_back_heals_the_cluster() {
    let mut redis = RedisServer::start();
    let mut nodes = Vec::new();
    for i in 0..2 {
        let mut c = node_config(&redis, &format!("node-{i}"));
        c.websocket.message_timeout_ms = 1000;
        nodes.push(start(c).await);
    }
    for n in &nodes {
        wait_healthy(n.local_addr(), 2).await;
    }
    let mut a = Client::connect(nodes[0].local_addr()).await;
    a.subscribe("c").await;
    let mut b = Client::connect(nodes[1].local_addr()).await;
    assert_eq!(b.publish("c", json!(1)).await["delivered-to"], 1);
    assert_eq!(a.recv_type("channel-message").await["data"], 1);

    redis.stop();
    for n in &nodes {
        let h = health_status(n.local_addr(), 503, 5000).await;
        assert_eq!(h["status"], "unhealthy");
        assert_eq!(h["broker"]["healthy"], false, "{h}");
        assert_ne!(h["broker"]["state"], "connected", "{h}");
    }
    let asked = std::time::Instant::now();
    b.send(json!({"type": "publish", "channel-id": "c", "data": 2}))
        .await;
    let r = b.recv_type("publish-result").await;
    assert_eq!(
        (r["success"].clone(), r["reason"].clone()),
        (json!(false), json!("broker-unavailable")),
        "{r}"
    );
    b.send(json!({"type": "subscribe", "channel-id": "d"}))
        .await;
    let r = b.recv_type("subscription-result").await;
    assert_eq!(r["reason"], "broker-unavailable", "{r}");
    b.send(json!({"type": "rpc-request", "channel-id": "c", "data": 1}))
        .await;
    let r = b.recv_type("rpc-request-result").await;
    assert_eq!(r["delivery"]["reason"], "broker-unavailable", "{r}");
    b.send(json!({"type": "list-channels"})).await;
    assert_eq!(b.recv_type("error").await["reason"], "broker-unavailable");
    assert!(
        asked.elapsed() < std::time::Duration::from_millis(1000),
        "answered within message-timeout-ms: {:?}",
        asked.elapsed()
    );
    let (status, body) = http_get(nodes[0].local_addr(), "/channels").await;
    assert_eq!(
        (status, body["reason"].clone()),
        (503, json!("broker-unavailable")),
        "{body}"
    );
    // The nodes stay up: the connections still answer.
    a.roundtrip().await;

    // Redis back with nothing (no persistence): the nodes reconnect, and
    // a's channel lost its history, so a is asked to come back.
    redis.start_again();
    for n in &nodes {
        let h = health_status(n.local_addr(), 200, 10_000).await;
        assert_eq!(h["broker"]["state"], "connected", "{h}");
    }
    let (frames, end) = a.drain_until_end().await;
    assert!(
        frames.iter().all(|f| f["type"] != "channel-message"),
        "{frames:?}"
    );
    assert_eq!(
        end,
        Ended::Closed(Some((1012, "broker-reconnect".to_owned())))
    );
    let s = stats(nodes[0].local_addr()).await;
    assert_eq!(s["broker"]["counters"]["subscribers-reconnected"], 1, "{s}");
    // Resubscribed, it gets what is published from now on.
    let mut a = Client::connect(nodes[0].local_addr()).await;
    a.subscribe("c").await;
    assert_eq!(b.publish("c", json!(3)).await["delivered-to"], 1);
    let m = a.recv_type("channel-message").await;
    assert_eq!(
        (m["data"].clone(), m["offset"].clone()),
        (json!(3), json!(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_fills_the_gap_from_the_stream_by_offset() {
    let redis = RedisServer::start();
    // Node 0 logs in as a Redis user of its own, so the test can cut off
    // that node alone (kill its connections, refuse its reconnects).
    let ok = redis.command(&["ACL", "SETUSER", "node0", "on", ">pw", "~*", "&*", "+@all"]);
    assert_eq!(ok, "+OK\r\n");
    let mut c0 = node_config(&redis, "node-0");
    c0.broker.redis_url = format!("redis://node0:pw@127.0.0.1:{}/", redis.port());
    let nodes = vec![start(c0).await, start(node_config(&redis, "node-1")).await];
    for n in &nodes {
        wait_healthy(n.local_addr(), 2).await;
    }
    let mut a = Client::connect(nodes[0].local_addr()).await;
    a.subscribe("c").await;
    let mut b = Client::connect(nodes[1].local_addr()).await;
    b.publish("c", json!(1)).await;
    assert_eq!(a.recv_type("channel-message").await["offset"], 1);

    redis.command(&["ACL", "SETUSER", "node0", "off"]);
    redis.command(&["CLIENT", "KILL", "USER", "node0"]);
    health_status(nodes[0].local_addr(), 503, 5000).await;
    // Published while node 0 hears nothing.
    for i in 2..=4 {
        assert_eq!(b.publish("c", json!(i)).await["delivered-to"], 1);
    }
    redis.command(&["ACL", "SETUSER", "node0", "on"]);
    health_status(nodes[0].local_addr(), 200, 10_000).await;
    b.publish("c", json!(5)).await;
    // What node 0 missed reaches a from the stream, then live: once each,
    // in order.
    let mut got = Vec::new();
    while got.len() < 4 {
        let m = a.recv_type("channel-message").await;
        got.push((m["offset"].as_u64().unwrap(), m["data"].as_u64().unwrap()));
    }
    assert_eq!(got, [(2, 2), (3, 3), (4, 4), (5, 5)]);
    a.roundtrip().await;
    let s = stats(nodes[0].local_addr()).await;
    assert_eq!(s["broker"]["counters"]["gap-messages-filled"], 3, "{s}");
    assert_eq!(s["broker"]["counters"]["reconnects"], 1, "{s}");
    assert_eq!(s["broker"]["counters"]["subscribers-reconnected"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_publisher_gets_its_own_message_before_its_result() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2).await;
    let mut other = Client::connect(nodes[1].local_addr()).await;
    other.subscribe("echo").await;
    let mut p = Client::connect(nodes[0].local_addr()).await;
    p.subscribe("echo").await;
    for i in 0..50 {
        p.send(json!({"type": "publish", "channel-id": "echo", "data": i}))
            .await;
        let m = p.recv_type("channel-message").await;
        assert_eq!(m["data"], i);
        let r = p.recv_type("publish-result").await;
        assert_eq!(r["delivered-to"], 2, "{r}");
    }
    for i in 0..50 {
        assert_eq!(other.recv_type("channel-message").await["data"], i);
    }
}

/// `PUBSUB NUMSUB` of a channel's Redis channel: how many nodes receive it.
fn nodes_subscribed(redis: &RedisServer, channel: &str) -> String {
    redis.command(&["PUBSUB", "NUMSUB", &format!("sente-lite:m:{channel}")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_receives_a_channel_only_while_it_has_local_subscribers() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2).await;
    let none = "*2\r\n$15\r\nsente-lite:m:ch\r\n:0\r\n";
    let one = "*2\r\n$15\r\nsente-lite:m:ch\r\n:1\r\n";
    let two = "*2\r\n$15\r\nsente-lite:m:ch\r\n:2\r\n";
    assert_eq!(nodes_subscribed(&redis, "ch"), none);
    let mut a = Client::connect(nodes[0].local_addr()).await;
    let mut b = Client::connect(nodes[0].local_addr()).await;
    a.subscribe("ch").await;
    b.subscribe("ch").await;
    assert_eq!(nodes_subscribed(&redis, "ch"), one, "first in");
    let mut c = Client::connect(nodes[1].local_addr()).await;
    c.subscribe("ch").await;
    assert_eq!(nodes_subscribed(&redis, "ch"), two);
    a.send(json!({"type": "unsubscribe", "channel-id": "ch"}))
        .await;
    a.recv_type("unsubscription-result").await;
    assert_eq!(nodes_subscribed(&redis, "ch"), two, "b is still there");
    b.close().await;
    // The close is handled after the socket ends: wait for node 0 to leave.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while nodes_subscribed(&redis, "ch") != one {
        assert!(tokio::time::Instant::now() < deadline, "node 0 never left");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = a.publish("ch", json!(1)).await;
    assert_eq!(r["delivered-to"], 1, "{r}");
    assert_eq!(c.recv_type("channel-message").await["data"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_joining_during_a_stream_of_publishes_see_each_message_once() {
    const MESSAGES: u64 = 400;
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2).await;
    let config = sente_lite_protocol::ChannelConfig {
        message_retention: 50,
        ..Default::default()
    };
    nodes[0]
        .channels()
        .create_channel("s", Some(config))
        .await
        .unwrap();
    let paddr = nodes[0].local_addr();
    // The publisher tells how far it got; joiner j joins after j * 30.
    let (progress, seen) = tokio::sync::watch::channel(0u64);
    let publisher = stream_publisher(paddr, "s", MESSAGES, progress);
    // Joiners on both nodes while the publishes go on.
    let mut joiners = Vec::new();
    for j in 0..12 {
        let addr = nodes[j % 2].local_addr();
        let mut seen = seen.clone();
        joiners.push(tokio::spawn(async move {
            let c = Client::connect(addr).await;
            let at = j as u64 * 30;
            seen.wait_for(|n| *n >= at).await.unwrap();
            join_and_read(c, "s", MESSAGES).await.1
        }));
    }
    publisher.await.unwrap();
    for j in join_all(joiners).await {
        let offsets = j.unwrap();
        let first = offsets[0];
        assert_eq!(
            offsets,
            (first..=MESSAGES).collect::<Vec<_>>(),
            "retained then live: each offset once, none missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_times_out_within_message_timeout_and_nothing_is_lost_after() {
    let mut redis = RedisServer::start();
    let mut c = node_config(&redis, "node-0");
    c.websocket.message_timeout_ms = 500;
    let node = start(c).await;
    wait_healthy(node.local_addr(), 1).await;
    let mut sub = Client::connect(node.local_addr()).await;
    sub.subscribe("h").await;
    let mut p = Client::connect(node.local_addr()).await;
    p.publish("h", json!(1)).await;
    assert_eq!(sub.recv_type("channel-message").await["offset"], 1);

    redis.freeze();
    let asked = std::time::Instant::now();
    p.send(json!({"type": "publish", "channel-id": "h", "data": 2}))
        .await;
    let r = p.recv_type("publish-result").await;
    let took = asked.elapsed();
    assert_eq!(r["reason"], "broker-unavailable", "{r}");
    assert!(
        took >= std::time::Duration::from_millis(400)
            && took < std::time::Duration::from_millis(1500),
        "a hung Redis answers at message-timeout-ms (500 ms), took {took:?}"
    );
    health_status(node.local_addr(), 503, 5000).await;
    redis.unfreeze();
    health_status(node.local_addr(), 200, 10_000).await;
    // Nothing was published meanwhile: the subscriber stays, and gets the
    // next message.
    p.publish("h", json!(3)).await;
    let m = sub.recv_type("channel-message").await;
    assert_eq!(
        (m["data"].clone(), m["offset"].clone()),
        (json!(3), json!(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_client_does_not_hold_up_its_nodes_other_subscribers() {
    let redis = RedisServer::start();
    let publisher_node = start(node_config(&redis, "node-0")).await;
    let mut c = node_config(&redis, "node-1");
    c.websocket.max_outbound_frames = 64;
    // The close frame waits in the slow client's full socket until the test
    // drains it, after the whole publish run: on a loaded machine that run
    // can take longer than the default 5 s write timeout, after which the
    // server gives up on the close and the client sees a reset instead.
    c.websocket.message_timeout_ms = 60_000;
    let node = start(c).await;
    wait_healthy(node.local_addr(), 2).await;
    let addr = node.local_addr();
    // A client that never reads, with a small socket buffer, and a normal
    // one, both on node 1.
    let mut slow = Client::connect_small_buffer(addr, 4096).await;
    slow.subscribe("firehose").await;
    let mut normal = Client::connect(addr).await;
    normal.subscribe("firehose").await;
    const MESSAGES: u64 = 1000;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < MESSAGES as usize {
            let m = normal.recv_type("channel-message").await;
            seqs.push(m["data"]["seq"].as_u64().unwrap());
        }
        seqs
    });
    let mut p = Client::connect(publisher_node.local_addr()).await;
    let pad = "p".repeat(16 * 1024);
    for seq in 0..MESSAGES {
        p.send(json!({"type": "publish", "channel-id": "firehose",
                      "data": {"seq": seq, "pad": pad}}))
            .await;
    }
    for _ in 0..MESSAGES {
        p.recv_type("publish-result").await;
    }
    let seqs = reader.await.unwrap();
    assert_eq!(seqs, (0..MESSAGES).collect::<Vec<_>>());
    let (frames, end) = slow.drain_until_end().await;
    assert_eq!(end, Ended::Closed(Some((1008, "slow-consumer".to_owned()))));
    assert!(
        frames.len() < MESSAGES as usize,
        "it was closed before the end"
    );
    eventually("the slow consumer counted", || {
        node.transport_stats().closed_slow_consumer == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_simultaneous_joins_on_one_node_see_each_message_once() {
    const MESSAGES: u64 = 600;
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2).await;
    let config = sente_lite_protocol::ChannelConfig {
        message_retention: 20,
        ..Default::default()
    };
    nodes[0]
        .channels()
        .create_channel("burst", Some(config))
        .await
        .unwrap();
    let (progress, seen) = tokio::sync::watch::channel(0u64);
    let paddr = nodes[0].local_addr();
    let publisher = stream_publisher(paddr, "burst", MESSAGES, progress);
    // Three waves of 20 connections on node 1, each wave subscribing at
    // the same moment while the stream goes on.
    let addr = nodes[1].local_addr();
    let mut joiners = Vec::new();
    for wave in 1..=3u64 {
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(Client::connect(addr).await);
        }
        let mut seen = seen.clone();
        seen.wait_for(|n| *n >= wave * 100).await.unwrap();
        for c in clients {
            joiners.push(tokio::spawn(join_and_read(c, "burst", MESSAGES)));
        }
    }
    publisher.await.unwrap();
    let mut alive = Vec::new();
    for j in join_all(joiners).await {
        let (c, offsets) = j.unwrap();
        let first = offsets[0];
        assert_eq!(offsets, (first..=MESSAGES).collect::<Vec<_>>());
        alive.push(c);
    }
    let s = stats(addr).await;
    assert_eq!(s["broker"]["counters"]["subscribers-reconnected"], 0, "{s}");
    let (_, ch) = http_get(addr, "/channels").await;
    assert_eq!(ch["channels"]["burst"]["subscriber-count"], 60, "{ch}");
}

/// Publishes `1..=n` (each message's data is its number) to `channel` from
/// a client of `addr`, ten at a time, telling `progress` how far it got.
fn stream_publisher(
    addr: std::net::SocketAddr,
    channel: &'static str,
    n: u64,
    progress: tokio::sync::watch::Sender<u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut p = Client::connect(addr).await;
        for i in 1..=n {
            p.send(json!({"type": "publish", "channel-id": channel, "data": i}))
                .await;
            if i % 10 == 0 {
                for _ in 0..10 {
                    p.recv_type("publish-result").await;
                }
                let _ = progress.send(i);
            }
        }
    })
}

/// Subscribes `c` to a channel of [`stream_publisher`] and reads its
/// retained, then live messages up to offset `last`: the offsets seen, in
/// order (each message's data must be its offset).
async fn join_and_read(mut c: Client, channel: &str, last: u64) -> (Client, Vec<u64>) {
    let r = c.subscribe(channel).await;
    let mut offsets = Vec::new();
    for m in r["retained-messages"].as_array().unwrap() {
        assert_eq!(m["data"], m["offset"]);
        offsets.push(m["offset"].as_u64().unwrap());
    }
    while offsets.last().copied().unwrap_or(0) < last {
        let m = c.recv_type("channel-message").await;
        assert_eq!(m["data"], m["offset"]);
        offsets.push(m["offset"].as_u64().unwrap());
    }
    (c, offsets)
}
