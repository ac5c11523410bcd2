//! The engine's limits end to end, against the real server: subscriptions
//! per connection, idle channels, retained memory, retained replays cut to
//! the subscriber's queue, and who may answer an RPC request.

#![allow(clippy::unwrap_used)]

use sente_lite_server::Hooks;
use sente_lite_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// About `n` bytes of JSON string, tagged so each message differs.
fn blob(n: usize, tag: u64) -> Value {
    json!(format!("{tag:06}{}", "x".repeat(n)))
}

#[tokio::test]
async fn a_connection_has_at_most_max_subscriptions_per_connection() {
    let mut c = config();
    c.websocket.max_subscriptions_per_connection = 3;
    let server = start(c).await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    for ch in ["one", "two", "three"] {
        a.subscribe(ch).await;
    }
    a.send(json!({"type": "subscribe", "channel-id": "four"}))
        .await;
    let r = a.recv_type("subscription-result").await;
    assert_eq!(
        r,
        json!({"type": "subscription-result", "channel-id": "four",
               "success": false, "reason": "max-subscriptions-reached"})
    );
    // Subscribing again to one it has is not a new subscription.
    a.subscribe("two").await;
    // Another connection is not held back by it.
    let mut b = Client::connect(addr).await;
    b.subscribe("four").await;
    let s = stats(addr).await;
    assert_eq!(
        s["channel-stats"]["rejected"]["max-subscriptions-reached"], 1,
        "{s}"
    );
    server.stop().await;
}

#[tokio::test]
async fn idle_auto_created_channels_go_and_created_ones_stay() {
    let mut c = config();
    c.channels.idle_channel_ttl_ms = 300;
    c.channels.default_config.message_retention = 5;
    let server = start(c).await;
    let addr = server.local_addr();
    server
        .channels()
        .create_channel("kept", None)
        .await
        .unwrap();
    let mut a = Client::connect(addr).await;
    let t0 = Instant::now();
    // A client makes channels it never uses.
    for i in 0..20 {
        a.publish(&format!("junk-{i}"), json!(i)).await;
    }
    a.subscribe("used").await;
    assert_eq!(server.channels().channel_count(), 22);
    eventually("the idle channels are removed", || {
        server.channels().channel_count() == 2
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "not before the ttl"
    );
    let (status, body) = http_get(addr, "/channels").await;
    assert_eq!(status, 200);
    let mut ids: Vec<&String> = body["channels"].as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, ["kept", "used"], "{body}");
    let s = stats(addr).await;
    assert_eq!(s["channel-stats"]["idle-channels-removed"], 20, "{s}");
    // The retained messages went with them.
    let again = a.subscribe("junk-3").await;
    assert_eq!(again["retained-messages"], json!([]), "{again}");
    server.stop().await;
}

#[tokio::test]
async fn retained_memory_is_bounded_per_channel_and_in_total() {
    let mut c = config();
    c.channels.default_config.message_retention = 10;
    c.channels.max_retained_bytes = 3 << 20;
    c.channels.max_retained_bytes_total = 8 << 20;
    let server = start(c).await;
    let addr = server.local_addr();
    let mut p = Client::connect(addr).await;
    // Ten channels, ten messages of almost 1 MiB each: 100 MiB unbounded.
    for ch in 0..10 {
        for i in 0..10 {
            p.publish(&format!("big-{ch}"), blob(1_000_000, i)).await;
        }
    }
    let s = stats(addr).await;
    let cs = &s["channel-stats"];
    let held = cs["retained-bytes"].as_u64().unwrap();
    assert!(held <= 8 << 20, "total bound: {held}");
    assert!(held >= 6 << 20, "as much as fits is kept: {held}");
    let evicted = cs["retained-evicted"].as_u64().unwrap();
    assert!(evicted >= 100 - 8, "{cs}");
    // The newest channel keeps its newest messages, the oldest channel
    // nothing.
    let info = server.channels().channel_info("big-9").await.unwrap();
    assert!(info.retained_messages.len() >= 2);
    assert!(info.retained_messages.len() <= 3);
    assert_eq!(info.retained_messages.last().unwrap().offset, 10);
    let oldest = server.channels().channel_info("big-0").await.unwrap();
    assert!(oldest.retained_messages.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_replay_larger_than_the_queue_is_cut_and_the_subscriber_stays() {
    let mut c = config();
    c.channels.default_config.message_retention = 10;
    c.channels.max_retained_bytes = 64 << 20;
    c.channels.max_retained_bytes_total = 64 << 20;
    c.websocket.max_outbound_bytes = 4 << 20;
    let server = start(c).await;
    let addr = server.local_addr();
    let mut p = Client::connect(addr).await;
    for i in 1..=9 {
        p.publish("frames", blob(1_000_000, i)).await;
    }
    // Several new subscribers at once: none is closed as a slow consumer.
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut s = Client::connect(addr).await;
        let r = s.subscribe("frames").await;
        let kept = r["retained-messages"].as_array().unwrap();
        let omitted = r["retained-omitted"].as_u64().unwrap();
        assert!(omitted >= 5, "{omitted}");
        assert_eq!(kept.len() as u64 + omitted, 9);
        assert_eq!(kept.last().unwrap()["offset"], 9, "the newest are kept");
        assert!(kept.len() >= 2, "as many as fit: {}", kept.len());
        subs.push(s);
    }
    p.publish("frames", json!("live")).await;
    for s in &mut subs {
        assert_eq!(s.recv_type("channel-message").await["data"], "live");
        s.roundtrip().await;
    }
    let st = stats(addr).await;
    assert_eq!(st["transport"]["closed-slow-consumer"], 0, "{st}");
    assert!(st["channel-stats"]["retained-omitted"].as_u64().unwrap() >= 15);
    // A small replay has no retained-omitted at all.
    let mut q = Client::connect(addr).await;
    q.publish("small", json!(1)).await;
    let r = q.subscribe("small").await;
    assert!(r.get("retained-omitted").is_none(), "{r}");
    server.stop().await;
}

fn user_of(c: &Client) -> String {
    format!("user@{}", c.ws.get_ref().local_addr().unwrap())
}

#[tokio::test]
async fn a_stranger_cannot_answer_a_request_it_was_not_sent() {
    let hooks = Hooks {
        authorizer: Some(Arc::new(ByPeer)),
        ..Default::default()
    };
    let server = sente_lite_server::Server::start_with(config(), hooks)
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut worker = Client::connect(addr).await;
    worker.subscribe("svc").await;
    let mut stranger = Client::connect(addr).await;
    let mut req = Client::connect(addr).await;
    req.send(json!({"type": "rpc-request", "channel-id": "svc", "data": "q"}))
        .await;
    let r = req.recv_type("rpc-request-result").await;
    let id = r["request-id"].as_str().unwrap().to_owned();
    worker.recv_type("rpc-request").await;
    // Knowing the id is not enough.
    stranger
        .send(json!({"type": "rpc-response", "request-id": id, "data": "forged"}))
        .await;
    assert_eq!(
        stranger.recv_type("rpc-response-result").await,
        json!({"type": "rpc-response-result", "request-id": id,
               "success": false, "reason": "request-not-found"})
    );
    // Nor is subscribing after it was sent.
    stranger.subscribe("svc").await;
    stranger
        .send(json!({"type": "rpc-response", "request-id": id, "data": "forged"}))
        .await;
    let late = stranger.recv_type("rpc-response-result").await;
    assert_eq!(late["reason"], "request-not-found", "{late}");
    // The real worker's answer still succeeds, naming it.
    worker
        .send(json!({"type": "rpc-response", "request-id": id, "data": "real"}))
        .await;
    assert_eq!(
        worker.recv_type("rpc-response-result").await["success"],
        true
    );
    let resp = req.recv_type("rpc-response").await;
    assert_eq!(
        resp,
        json!({"type": "rpc-response", "request-id": id, "data": "real", "error": false,
               "responder-conn-id": worker.conn_id, "responder-user-id": user_of(&worker)})
    );
    req.roundtrip().await;
    let s = stats(addr).await;
    assert_eq!(
        s["channel-stats"]["rejected"]["request-not-found"], 2,
        "{s}"
    );
    server.stop().await;
}
