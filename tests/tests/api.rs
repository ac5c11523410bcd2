//! The server's Rust API seen from WebSocket clients: broadcasts, sends to
//! one connection, server-side publishes, several servers in one process.

#![allow(clippy::unwrap_used)]

use sente_lite_tests::*;
use serde_json::{json, Map, Value};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[tokio::test]
async fn broadcast_reaches_every_connection_with_broadcast_true() {
    let server = start_default().await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    a.subscribe("x").await; // subscriptions do not matter
    let n = server
        .broadcast(obj(
            json!({"type": "announcement", "text": "Server restarts at 22:00", "broadcast": "no"}),
        ))
        .await;
    assert_eq!(n, 2);
    let want =
        json!({"type": "announcement", "text": "Server restarts at 22:00", "broadcast": true});
    assert_eq!(a.recv().await, want);
    assert_eq!(b.recv().await, want);
}

#[tokio::test]
async fn broadcast_to_channel_adds_channel_id_and_broadcast_time() {
    let server = start_default().await;
    let addr = server.local_addr();
    let mut sub = Client::connect(addr).await;
    let mut other = Client::connect(addr).await;
    sub.subscribe("prices").await;
    other.subscribe("elsewhere").await;
    let before = now_ms();
    let n = server
        .broadcast_to_channel("prices", obj(json!({"type": "price", "value": 42.5})))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let m = sub.recv().await;
    assert_keys(&m, &["type", "value", "channel-id", "broadcast-time"]);
    assert_eq!(m["type"], "price");
    assert_eq!(m["value"], 42.5);
    assert_eq!(m["channel-id"], "prices");
    let t = m["broadcast-time"].as_i64().unwrap();
    assert!(t >= before && t <= now_ms(), "{m}");
    // Not to others; not retained.
    other.roundtrip().await;
    let mut late = Client::connect(addr).await;
    assert_eq!(
        late.subscribe("prices").await["retained-messages"],
        json!([])
    );
    // A channel that does not exist is an error.
    assert!(server
        .broadcast_to_channel("nowhere", obj(json!({"type": "x"})))
        .await
        .is_err());
}

#[tokio::test]
async fn send_to_connection_by_its_welcome_conn_id() {
    let server = start_default().await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    let msg = json!({"type": "notice", "text": "Your export is ready", "n": [1, 2]});
    server.send_to_connection(&b.conn_id, &msg).await.unwrap();
    assert_eq!(b.recv().await, msg, "unchanged");
    a.roundtrip().await; // a got nothing
    assert!(server.send_to_connection("conn-nope", &msg).await.is_err());
}

#[tokio::test]
async fn server_side_publish_has_null_sender_and_is_retained() {
    let server = start_default().await;
    let cfg = sente_lite_protocol::ChannelConfig {
        message_retention: 5,
        ..Default::default()
    };
    server
        .channels()
        .create_channel("notifications", Some(cfg))
        .await
        .unwrap();
    let mut a = Client::connect(server.local_addr()).await;
    a.subscribe("notifications").await;
    let p = server
        .channels()
        .publish(None, "notifications", json!("maintenance at 22:00"), false)
        .await
        .unwrap();
    assert_eq!(p.delivered_to, 1);
    let m = a.recv_type("channel-message").await;
    assert_eq!(m["sender-conn-id"], Value::Null);
    assert_eq!(m["message-id"], p.message_id.as_str());
    assert_eq!(m["data"], "maintenance at 22:00");
    let mut late = Client::connect(server.local_addr()).await;
    let r = late.subscribe("notifications").await;
    assert_eq!(r["retained-messages"], json!([m]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_servers_in_one_process_are_independent() {
    let mut servers = Vec::new();
    for i in 0..3 {
        let mut c = config();
        c.telemetry.handler_id = format!("server-{i}");
        servers.push(start(c).await);
    }
    let ports: std::collections::HashSet<u16> =
        servers.iter().map(|s| s.local_addr().port()).collect();
    assert_eq!(ports.len(), 3);
    let mut clients = Vec::new();
    for s in &servers {
        let mut c = Client::connect(s.local_addr()).await;
        c.subscribe("same-name").await;
        clients.push(c);
    }
    let mut publisher = Client::connect(servers[1].local_addr()).await;
    let r = publisher
        .publish("same-name", json!("only on server 1"))
        .await;
    assert_eq!(r["delivered-to"], 1);
    assert_eq!(
        clients[1].recv_type("channel-message").await["data"],
        "only on server 1"
    );
    clients[0].roundtrip().await;
    clients[2].roundtrip().await;
    assert_eq!(servers[0].broadcast(obj(json!({"type": "hello"}))).await, 1);
    assert_eq!(
        clients[0].recv().await,
        json!({"type": "hello", "broadcast": true})
    );
    clients[1].roundtrip().await;
    for (i, s) in servers.iter().enumerate() {
        let st = stats(s.local_addr()).await;
        let want = if i == 1 { 2 } else { 1 };
        assert_eq!(st["active-connections"], want, "server {i}: {st}");
        let tel: Vec<&String> = st["telemetry-stats"].as_object().unwrap().keys().collect();
        assert_eq!(tel, [&format!("server-{i}")]);
    }
    // Stopping one leaves the others running.
    let first = servers.remove(0);
    drop(clients.remove(0));
    first.stop().await;
    for (s, c) in servers.iter().zip(clients.iter_mut()) {
        assert_eq!(http_get(s.local_addr(), "/health").await.0, 200);
        c.roundtrip().await;
    }
}

/// PROTOCOL.md: the first frame on every connection is `welcome`, even
/// while broadcasts are going on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_comes_first_even_during_broadcasts() {
    let server = std::sync::Arc::new(start_default().await);
    let addr = server.local_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let broadcaster = {
        let (server, stop) = (server.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                server
                    .broadcast(obj(json!({"type": "tick", "n": sent})))
                    .await;
                sent += 1;
                tokio::task::yield_now().await;
            }
            sent
        })
    };
    for _ in 0..30 {
        // Client::connect asserts the first frame is `welcome`.
        let mut c = Client::connect(addr).await;
        let next = c.recv().await;
        assert_eq!(next["type"], "tick", "{next}");
        assert_eq!(next["broadcast"], true);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(within("the broadcaster", broadcaster).await.unwrap() > 0);
}

#[tokio::test]
async fn delete_channel_unsubscribes_everyone() {
    let server = start_default().await;
    let mut a = Client::connect(server.local_addr()).await;
    a.subscribe("doomed").await;
    a.subscribe("kept").await;
    assert_eq!(server.channels().delete_channel("doomed").await.unwrap(), 1);
    a.send(json!({"type": "get-subscriptions"})).await;
    assert_eq!(
        a.recv_type("subscription-list").await,
        json!({"type": "subscription-list", "subscriptions": ["kept"]})
    );
    a.send(json!({"type": "unsubscribe", "channel-id": "doomed"}))
        .await;
    assert_eq!(
        a.recv_type("unsubscription-result").await["reason"],
        "not-subscribed"
    );
    // A publish re-creates it (auto-create) without old subscribers.
    let mut b = Client::connect(server.local_addr()).await;
    assert_eq!(b.publish("doomed", json!(1)).await["delivered-to"], 0);
    a.roundtrip().await;
    let s = stats(server.local_addr()).await;
    assert_eq!(s["channel-stats"]["total-subscriptions"], 1, "{s}");
}

/// `send_to_connection` tells a full queue (`slow-consumer`: the transport
/// is closing that client) from a connection that is not there
/// (`connection-not-found`), which it used to report for both.
#[tokio::test]
async fn send_to_a_full_connection_is_slow_consumer_not_not_found() {
    let mut config = config();
    config.websocket.max_message_bytes = 64 * 1024;
    config.websocket.max_outbound_bytes = 256 * 1024;
    config.websocket.max_outbound_frames = 64;
    let server = start(config).await;
    // Never reads, with a small receive buffer: its queue fills.
    let stuck = Client::connect_small_buffer(server.local_addr(), 4096).await;
    let msg = json!({"type": "bulk", "pad": "x".repeat(32 * 1024)});
    let mut first_error = None;
    for _ in 0..10_000 {
        if let Err(e) = server.send_to_connection(&stuck.conn_id, &msg).await {
            first_error = Some(e.reason());
            break;
        }
    }
    assert_eq!(
        first_error,
        Some(sente_lite_protocol::Reason::SlowConsumer),
        "the send that found the queue full"
    );
    // From then on the connection is closing or gone.
    let later = server.send_to_connection(&stuck.conn_id, &msg).await;
    assert_eq!(
        later.unwrap_err().reason(),
        sente_lite_protocol::Reason::ConnectionNotFound
    );
    server.stop().await;
}
