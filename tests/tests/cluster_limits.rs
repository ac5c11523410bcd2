//! The engine's limits across nodes on one real Redis: only a connection
//! that was sent an RPC request may answer it (the worker's node decides),
//! idle auto-created channels expire cluster-wide, and a join's replay is
//! bounded by `channels.max-retained-bytes`.

#![allow(clippy::unwrap_used)]

use sente_lite_server::Hooks;
use sente_lite_tests::external::RedisServer;
use sente_lite_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Starts nodes `node-0`, ... with `edit` applied to each config, and
/// waits until each sees all of them.
async fn cluster(redis: &RedisServer, n: usize, edit: impl Fn(&mut Config)) -> Vec<Server> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut c = redis_node(config(), &redis.url(), &format!("node-{i}"));
        edit(&mut c);
        let hooks = Hooks {
            authorizer: Some(Arc::new(ByPeer)),
            ..Default::default()
        };
        nodes.push(Server::start_with(c, hooks).await.unwrap());
    }
    for node in &nodes {
        wait_healthy(node.local_addr(), n).await;
    }
    nodes
}

async fn channel_ids(node: &Server) -> Vec<String> {
    let (status, body) = http_get(node.local_addr(), "/channels").await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<String> = body["channels"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_worker_sent_the_request_may_answer_it_on_any_node() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3, |_| {}).await;
    let mut worker = Client::connect(nodes[1].local_addr()).await;
    worker.subscribe("svc").await;
    let mut req = Client::connect(nodes[0].local_addr()).await;
    // Strangers on the requester's node and on a third node.
    let mut near = Client::connect(nodes[0].local_addr()).await;
    let mut far = Client::connect(nodes[2].local_addr()).await;
    req.send(json!({"type": "rpc-request", "channel-id": "svc", "data": "q"}))
        .await;
    let r = req.recv_type("rpc-request-result").await;
    assert_eq!(r["delivery"]["delivered-to"], 1, "{r}");
    let id = r["request-id"].as_str().unwrap().to_owned();
    assert!(id.ends_with("@node-0"), "{id}");
    worker.recv_type("rpc-request").await;
    for stranger in [&mut near, &mut far] {
        stranger
            .send(json!({"type": "rpc-response", "request-id": id, "data": "forged"}))
            .await;
        let rr = stranger.recv_type("rpc-response-result").await;
        assert_eq!(rr["reason"], "request-not-found", "{rr}");
    }
    // A subscriber on a third node that joined after the request went out
    // was not sent it either.
    far.subscribe("svc").await;
    far.send(json!({"type": "rpc-response", "request-id": id, "data": "forged"}))
        .await;
    let rr = far.recv_type("rpc-response-result").await;
    assert_eq!(rr["reason"], "request-not-found", "{rr}");
    req.roundtrip().await;
    worker
        .send(json!({"type": "rpc-response", "request-id": id, "data": "real"}))
        .await;
    let ok = worker.recv_type("rpc-response-result").await;
    assert_eq!(ok["success"], true, "{ok}");
    let resp = req.recv_type("rpc-response").await;
    assert_eq!(resp["data"], "real");
    assert_eq!(resp["responder-conn-id"], worker.conn_id.as_str(), "{resp}");
    assert!(worker.conn_id.ends_with("@node-1"));
    let user = format!("user@{}", worker.ws.get_ref().local_addr().unwrap());
    assert_eq!(resp["responder-user-id"], user.as_str(), "{resp}");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_auto_created_channels_expire_cluster_wide() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2, |c| {
        c.channels.idle_channel_ttl_ms = 400;
        c.channels.default_config.message_retention = 5;
    })
    .await;
    nodes[0]
        .channels()
        .create_channel("kept", None)
        .await
        .unwrap();
    let mut p = Client::connect(nodes[0].local_addr()).await;
    p.publish("junk", json!(1)).await;
    // Subscribed on the other node only: in use cluster-wide.
    let mut s = Client::connect(nodes[1].local_addr()).await;
    s.subscribe("used").await;
    // Subscribed and left again: idle from then on.
    let mut t = Client::connect(nodes[0].local_addr()).await;
    t.subscribe("left").await;
    t.send(json!({"type": "unsubscribe", "channel-id": "left"}))
        .await;
    t.recv_type("unsubscription-result").await;
    assert_eq!(
        channel_ids(&nodes[1]).await,
        ["junk", "kept", "left", "used"]
    );
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if channel_ids(&nodes[1]).await == ["kept", "used"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "idle channels stay");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Gone from Redis with their streams, not only from the listing.
    assert_eq!(
        redis.command(&["EXISTS", "sente-lite:ch:junk"]).trim(),
        ":0"
    );
    assert_eq!(
        redis.command(&["EXISTS", "sente-lite:st:junk"]).trim(),
        ":0"
    );
    let mut removed = 0;
    for n in &nodes {
        let st = stats(n.local_addr()).await;
        removed += st["channel-stats"]["idle-channels-removed"]
            .as_u64()
            .unwrap_or(0);
    }
    assert_eq!(removed, 2, "each removed once, by whichever node swept");
    // The one in use still works across nodes.
    p.publish("used", json!("still")).await;
    assert_eq!(s.recv_type("channel-message").await["data"], "still");
    let again = p.subscribe("junk").await;
    assert_eq!(again["retained-messages"], json!([]), "{again}");
    for n in nodes {
        n.stop().await;
    }
}

fn blob(n: usize, tag: u64) -> Value {
    json!(format!("{tag:06}{}", "x".repeat(n)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_replays_at_most_max_retained_bytes_from_the_stream() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2, |c| {
        c.channels.default_config.message_retention = 10;
        c.channels.max_retained_bytes = 2_500_000;
        // A queue the replay fits in: here the bound under test is
        // max-retained-bytes, not the subscriber's free queue bytes.
        c.websocket.max_outbound_bytes = 8 << 20;
    })
    .await;
    let mut p = Client::connect(nodes[0].local_addr()).await;
    for i in 1..=6 {
        p.publish("frames", blob(1_000_000, i)).await;
    }
    let mut s = Client::connect(nodes[1].local_addr()).await;
    let r = s.subscribe("frames").await;
    let kept = r["retained-messages"].as_array().unwrap();
    assert_eq!(kept.len(), 2, "two ~1 MB messages fit 2.5 MB");
    assert_eq!(r["retained-omitted"], 4, "{}", r["retained-omitted"]);
    assert_eq!(kept[1]["offset"], 6, "the newest are kept");
    s.roundtrip().await;
    let st = stats(nodes[1].local_addr()).await;
    assert_eq!(st["channel-stats"]["retained-omitted"], 4, "{st}");
    for n in nodes {
        n.stop().await;
    }
}
