//! Every frame and every reason of docs/PROTOCOL.md, over a real WebSocket
//! against a real server.

#![allow(clippy::unwrap_used)]

use sente_lite_protocol::ChannelConfig;
use sente_lite_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn welcome_is_the_first_frame_with_conn_id_and_server_time() {
    let server = start_default().await;
    let before = now_ms();
    let a = Client::connect(server.local_addr()).await;
    let b = Client::connect(server.local_addr()).await;
    for c in [&a, &b] {
        assert_keys(&c.welcome, &["type", "conn-id", "server-time"]);
        assert!(!c.conn_id.is_empty());
        let t = c.welcome["server-time"].as_i64().unwrap();
        assert!(t >= before - 1 && t <= now_ms() + 1, "{}", c.welcome);
    }
    assert_ne!(a.conn_id, b.conn_id, "conn-ids are unique");
    // The id in welcome is the one the server knows the connection by.
    assert!(server.channels().resolve(&a.conn_id).is_ok());
}

#[tokio::test]
async fn subscribe_unsubscribe_results() {
    let server = start_default().await;
    let mut a = Client::connect(server.local_addr()).await;
    let mut b = Client::connect(server.local_addr()).await;

    let r = a.subscribe("room").await;
    // The stream position it starts after: offset 0 of the new stream.
    let epoch = r["epoch"].as_str().expect("an epoch").to_owned();
    assert!(!epoch.is_empty());
    assert_eq!(
        r,
        json!({"type": "subscription-result", "channel-id": "room", "success": true,
               "subscriber-count": 1, "retained-messages": [], "offset": 0,
               "epoch": epoch})
    );
    let r = b.subscribe("room").await;
    assert_eq!(r["subscriber-count"], 2, "{r}");

    // Subscribing again succeeds and changes nothing.
    let r = a.subscribe("room").await;
    assert_eq!(r["subscriber-count"], 2, "{r}");
    assert_eq!(r["retained-messages"], json!([]), "{r}");

    a.send(json!({"type": "unsubscribe", "channel-id": "room"}))
        .await;
    assert_eq!(
        a.recv_type("unsubscription-result").await,
        json!({"type": "unsubscription-result", "channel-id": "room", "success": true})
    );
    // Again: not subscribed any more.
    a.send(json!({"type": "unsubscribe", "channel-id": "room"}))
        .await;
    assert_eq!(
        a.recv_type("unsubscription-result").await,
        json!({"type": "unsubscription-result", "channel-id": "room", "success": false,
               "reason": "not-subscribed"})
    );
    // A channel that does not exist: not-subscribed too.
    a.send(json!({"type": "unsubscribe", "channel-id": "nowhere"}))
        .await;
    assert_eq!(
        a.recv_type("unsubscription-result").await,
        json!({"type": "unsubscription-result", "channel-id": "nowhere", "success": false,
               "reason": "not-subscribed"})
    );
    // b is still the only subscriber.
    assert_eq!(
        server
            .channels()
            .channel_info("room")
            .await
            .unwrap()
            .subscribers,
        vec![b.conn_id.clone()]
    );
}

#[tokio::test]
async fn channel_not_found_when_auto_create_is_off() {
    let mut config = config();
    config.channels.auto_create = false;
    let server = start(config).await;
    server
        .channels()
        .create_channel("exists", None)
        .await
        .unwrap();
    let mut a = Client::connect(server.local_addr()).await;

    a.send(json!({"type": "subscribe", "channel-id": "missing"}))
        .await;
    assert_eq!(
        a.recv_type("subscription-result").await,
        json!({"type": "subscription-result", "channel-id": "missing", "success": false,
               "reason": "channel-not-found"})
    );
    a.send(json!({"type": "publish", "channel-id": "missing", "data": 1}))
        .await;
    assert_eq!(
        a.recv_type("publish-result").await,
        json!({"type": "publish-result", "channel-id": "missing", "success": false,
               "reason": "channel-not-found"})
    );
    a.send(json!({"type": "rpc-request", "channel-id": "missing", "data": 1}))
        .await;
    assert_eq!(
        a.recv_type("rpc-request-result").await,
        json!({"type": "rpc-request-result", "channel-id": "missing",
               "delivery": {"success": false, "delivered-to": 0, "reason": "channel-not-found"}})
    );
    a.send(json!({"type": "unsubscribe", "channel-id": "missing"}))
        .await;
    assert_eq!(
        a.recv_type("unsubscription-result").await,
        json!({"type": "unsubscription-result", "channel-id": "missing", "success": false,
               "reason": "not-subscribed"})
    );
    // Nothing was created; the existing channel works.
    assert_eq!(server.channels().channel_count(), 1);
    a.subscribe("exists").await;
}

#[tokio::test]
async fn max_subscribers_reached() {
    let server = start_default().await;
    let cfg = ChannelConfig {
        max_subscribers: 1,
        ..ChannelConfig::default()
    };
    server
        .channels()
        .create_channel("solo", Some(cfg))
        .await
        .unwrap();
    let mut a = Client::connect(server.local_addr()).await;
    let mut b = Client::connect(server.local_addr()).await;
    a.subscribe("solo").await;
    b.send(json!({"type": "subscribe", "channel-id": "solo"}))
        .await;
    assert_eq!(
        b.recv_type("subscription-result").await,
        json!({"type": "subscription-result", "channel-id": "solo", "success": false,
               "reason": "max-subscribers-reached"})
    );
    // The place frees up when a leaves.
    a.send(json!({"type": "unsubscribe", "channel-id": "solo"}))
        .await;
    a.recv_type("unsubscription-result").await;
    let r = b.subscribe("solo").await;
    assert_eq!(r["subscriber-count"], 1);
}

#[tokio::test]
async fn invalid_channel_id_on_subscribe_and_publish() {
    let server = start_default().await; // max-channel-id-bytes 256
    let mut a = Client::connect(server.local_addr()).await;
    let long = "x".repeat(257);
    for id in ["", long.as_str()] {
        a.send(json!({"type": "subscribe", "channel-id": id})).await;
        assert_eq!(
            a.recv_type("subscription-result").await,
            json!({"type": "subscription-result", "channel-id": id, "success": false,
                   "reason": "invalid-channel-id"})
        );
        a.send(json!({"type": "publish", "channel-id": id, "data": 1}))
            .await;
        assert_eq!(
            a.recv_type("publish-result").await,
            json!({"type": "publish-result", "channel-id": id, "success": false,
                   "reason": "invalid-channel-id"})
        );
    }
    // 256 bytes is allowed.
    a.subscribe(&"y".repeat(256)).await;
    assert_eq!(server.channels().channel_count(), 1);
}

/// PROTOCOL.md's reasons table lists `invalid-channel-id` as carried by
/// `rpc-request-result` ("the channel id is empty or longer than the server
/// allows").
#[tokio::test]
async fn invalid_channel_id_on_rpc_request() {
    let server = start_default().await;
    let mut a = Client::connect(server.local_addr()).await;
    let long = "x".repeat(257);
    for id in ["", long.as_str()] {
        a.send(json!({"type": "rpc-request", "channel-id": id, "data": 1}))
            .await;
        assert_eq!(
            a.recv_type("rpc-request-result").await,
            json!({"type": "rpc-request-result", "channel-id": id,
                   "delivery": {"success": false, "delivered-to": 0, "reason": "invalid-channel-id"}})
        );
    }
}

#[tokio::test]
async fn max_channels_reached() {
    let mut config = config();
    config.channels.max_channels = 2;
    let server = start(config).await;
    let mut a = Client::connect(server.local_addr()).await;
    a.subscribe("one").await;
    a.publish("two", json!("creates two")).await;
    a.send(json!({"type": "subscribe", "channel-id": "three"}))
        .await;
    assert_eq!(
        a.recv_type("subscription-result").await,
        json!({"type": "subscription-result", "channel-id": "three", "success": false,
               "reason": "max-channels-reached"})
    );
    a.send(json!({"type": "publish", "channel-id": "three", "data": null}))
        .await;
    assert_eq!(
        a.recv_type("publish-result").await,
        json!({"type": "publish-result", "channel-id": "three", "success": false,
               "reason": "max-channels-reached"})
    );
    assert_eq!(server.channels().channel_count(), 2);
    // Existing channels keep working.
    let mut b = Client::connect(server.local_addr()).await;
    b.subscribe("two").await;
}

#[tokio::test]
async fn publish_result_and_channel_message_fields_are_exact() {
    let server = start_default().await;
    let mut sub = Client::connect(server.local_addr()).await;
    let mut publisher = Client::connect(server.local_addr()).await;
    sub.subscribe("chat").await;

    let data = json!({"message": "Hello everyone!", "user": "alice", "n": [1, 2.5, null]});
    let before = now_ms();
    let r = publisher.publish("chat", data.clone()).await;
    assert_keys(
        &r,
        &[
            "type",
            "channel-id",
            "success",
            "message-id",
            "delivered-to",
        ],
    );
    assert_eq!(r["channel-id"], "chat");
    assert_eq!(r["delivered-to"], 1, "{r}");
    let message_id = r["message-id"].as_str().unwrap().to_owned();

    let m = sub.recv_type("channel-message").await;
    assert_keys(
        &m,
        &[
            "type",
            "channel-id",
            "message-id",
            "data",
            "sender-conn-id",
            "published-at",
            "offset",
            "epoch",
        ],
    );
    assert_eq!(m["offset"], 1, "the channel's first message");
    assert!(m["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{m}");
    assert_eq!(m["channel-id"], "chat");
    assert_eq!(m["message-id"], message_id.as_str());
    assert_eq!(m["data"], data);
    assert_eq!(m["sender-conn-id"], publisher.conn_id.as_str());
    let at = m["published-at"].as_i64().unwrap();
    assert!(at >= before && at <= now_ms(), "{m}");

    // data may be null.
    let r = publisher.publish("chat", Value::Null).await;
    assert_eq!(r["delivered-to"], 1);
    let m = sub.recv_type("channel-message").await;
    assert_eq!(m["data"], Value::Null);
    assert_ne!(
        m["message-id"],
        message_id.as_str(),
        "message ids are unique"
    );

    // The publisher need not be subscribed; a channel without subscribers
    // delivers to nobody.
    let r = publisher.publish("empty-room", json!(1)).await;
    assert_eq!(r["delivered-to"], 0, "{r}");
}

#[tokio::test]
async fn exclude_sender_defaults_to_false() {
    let server = start_default().await;
    let mut a = Client::connect(server.local_addr()).await;
    let mut b = Client::connect(server.local_addr()).await;
    a.subscribe("room").await;
    b.subscribe("room").await;

    // Default: the subscribed publisher receives its own message. There is
    // no order between its publish-result and its channel-message.
    a.send(json!({"type": "publish", "channel-id": "room", "data": "first"}))
        .await;
    let mut got = vec![a.recv().await, a.recv().await];
    got.sort_by_key(|v| v["type"].as_str().unwrap().to_owned());
    assert_eq!(got[0]["type"], "channel-message", "{got:?}");
    assert_eq!(got[0]["data"], "first");
    assert_eq!(got[0]["sender-conn-id"], a.conn_id.as_str());
    assert_eq!(got[1]["type"], "publish-result");
    assert_eq!(got[1]["delivered-to"], 2);
    assert_eq!(got[1]["message-id"], got[0]["message-id"]);

    // exclude-sender: the publisher does not receive it; others do.
    a.send(
        json!({"type": "publish", "channel-id": "room", "data": "second",
                  "exclude-sender": true}),
    )
    .await;
    let r = a.recv_type("publish-result").await;
    assert_eq!(r["delivered-to"], 1, "{r}");
    // The next frame a sees is the pong: no channel-message for "second".
    a.roundtrip().await;

    // Explicit false behaves like the default.
    a.send(
        json!({"type": "publish", "channel-id": "room", "data": "third",
                  "exclude-sender": false}),
    )
    .await;
    let mut got = vec![a.recv().await, a.recv().await];
    got.sort_by_key(|v| v["type"].as_str().unwrap().to_owned());
    assert_eq!(got[0]["data"], "third", "{got:?}");
    assert_eq!(got[1]["delivered-to"], 2);

    // b got all three, in order.
    for want in ["first", "second", "third"] {
        let m = b.recv_type("channel-message").await;
        assert_eq!(m["data"], want);
        assert_eq!(m["sender-conn-id"], a.conn_id.as_str());
    }
}

#[tokio::test]
async fn retained_messages_replayed_oldest_first_from_create_channel() {
    let server = start_default().await;
    let cfg = ChannelConfig {
        message_retention: 3,
        ..ChannelConfig::default()
    };
    server
        .channels()
        .create_channel("news", Some(cfg))
        .await
        .unwrap();
    let mut live = Client::connect(server.local_addr()).await;
    live.subscribe("news").await;
    let mut publisher = Client::connect(server.local_addr()).await;
    for i in 0..5 {
        publisher.publish("news", json!({"n": i})).await;
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(live.recv_type("channel-message").await);
    }

    let mut late = Client::connect(server.local_addr()).await;
    let r = late.subscribe("news").await;
    assert_eq!(r["subscriber-count"], 2);
    // The last three, oldest first, as complete channel-message frames,
    // identical to what the live subscriber got.
    assert_eq!(r["retained-messages"], json!(seen[2..].to_vec()), "{r}");
    // Subscribing again: the connection has seen them.
    let r = late.subscribe("news").await;
    assert_eq!(r["retained-messages"], json!([]));
}

#[tokio::test]
async fn retained_messages_from_the_default_channel_config() {
    let mut config = config();
    config.channels.default_config.message_retention = 2;
    let server = start(config).await;
    let mut publisher = Client::connect(server.local_addr()).await;
    for i in 0..3 {
        publisher.publish("auto", json!(i)).await;
    }
    let mut late = Client::connect(server.local_addr()).await;
    let r = late.subscribe("auto").await;
    let retained = r["retained-messages"].as_array().unwrap();
    let data: Vec<&Value> = retained.iter().map(|m| &m["data"]).collect();
    assert_eq!(data, [&json!(1), &json!(2)], "{r}");
    for m in retained {
        assert_eq!(m["type"], "channel-message");
        assert_eq!(m["channel-id"], "auto");
        assert_eq!(m["sender-conn-id"], publisher.conn_id.as_str());
        assert_recent(&m["published-at"]);
    }
}

/// A requester subscribed to its own service channel, two workers.
#[tokio::test]
async fn rpc_request_response_round_trip() {
    let server = start_default().await;
    let addr = server.local_addr();
    let mut requester = Client::connect(addr).await;
    let mut w1 = Client::connect(addr).await;
    let mut w2 = Client::connect(addr).await;
    requester.subscribe("api").await;
    w1.subscribe("api").await;
    w2.subscribe("api").await;

    let data = json!({"action": "get-user-profile", "params": {"userId": 123}});
    requester
        .send(
            json!({"type": "rpc-request", "channel-id": "api", "data": data.clone(),
                     "timeout-ms": 5000}),
        )
        .await;
    // The requester's very next frame is the result: it never receives its
    // own request.
    let r = requester.recv_type("rpc-request-result").await;
    assert_keys(&r, &["type", "request-id", "channel-id", "delivery"]);
    assert_eq!(r["channel-id"], "api");
    let request_id = r["request-id"].as_str().unwrap().to_owned();
    assert_keys(&r["delivery"], &["success", "delivered-to", "subscribers"]);
    assert_eq!(r["delivery"]["success"], true);
    assert_eq!(r["delivery"]["delivered-to"], 2);
    let mut subs: Vec<String> = r["delivery"]["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    subs.sort();
    let mut want = vec![w1.conn_id.clone(), w2.conn_id.clone()];
    want.sort();
    assert_eq!(subs, want);

    let expected_req = json!({"type": "rpc-request", "request-id": request_id.as_str(),
        "channel-id": "api", "data": data, "sender-conn-id": requester.conn_id.as_str(),
        "timeout-ms": 5000});
    assert_eq!(w1.recv_type("rpc-request").await, expected_req);
    assert_eq!(w2.recv_type("rpc-request").await, expected_req);

    // The first answer goes to the requester.
    let answer = json!({"user": {"id": 123, "name": "Alice"}});
    w2.send(
        json!({"type": "rpc-response", "request-id": request_id.as_str(),
                   "data": answer.clone(), "error": true}),
    )
    .await;
    assert_eq!(
        w2.recv_type("rpc-response-result").await,
        json!({"type": "rpc-response-result", "request-id": request_id.as_str(), "success": true})
    );
    assert_eq!(
        requester.recv_type("rpc-response").await,
        json!({"type": "rpc-response", "request-id": request_id.as_str(),
               "data": answer, "error": true,
               "responder-conn-id": w2.conn_id.as_str()})
    );
    // The second answer is too late.
    w1.send(json!({"type": "rpc-response", "request-id": request_id.as_str(), "data": "late"}))
        .await;
    assert_eq!(
        w1.recv_type("rpc-response-result").await,
        json!({"type": "rpc-response-result", "request-id": request_id.as_str(),
               "success": false, "reason": "request-not-found"})
    );
    // The requester gets nothing more (no second response, no timeout).
    requester.roundtrip().await;

    // `error` defaults to false; `data` may be null; the default timeout
    // is the channel's rpc-timeout-ms (30000).
    requester
        .send(json!({"type": "rpc-request", "channel-id": "api", "data": null}))
        .await;
    let r = requester.recv_type("rpc-request-result").await;
    let id2 = r["request-id"].as_str().unwrap().to_owned();
    assert_ne!(id2, request_id);
    let req = w1.recv_type("rpc-request").await;
    assert_eq!(req["timeout-ms"], 30000, "{req}");
    assert_eq!(req["data"], Value::Null);
    w2.recv_type("rpc-request").await;
    w1.send(json!({"type": "rpc-response", "request-id": id2.as_str(), "data": null}))
        .await;
    w1.recv_type("rpc-response-result").await;
    assert_eq!(
        requester.recv_type("rpc-response").await,
        json!({"type": "rpc-response", "request-id": id2.as_str(), "data": null, "error": false,
               "responder-conn-id": w1.conn_id.as_str()})
    );
    assert_eq!(server.channels().pending_rpc_requests(), 0);
}

#[tokio::test]
async fn rpc_unknown_request_and_no_subscribers() {
    let server = start_default().await;
    let mut a = Client::connect(server.local_addr()).await;
    a.send(json!({"type": "rpc-response", "request-id": "req-1-deadbeef", "data": 1}))
        .await;
    assert_eq!(
        a.recv_type("rpc-response-result").await,
        json!({"type": "rpc-response-result", "request-id": "req-1-deadbeef",
               "success": false, "reason": "request-not-found"})
    );
    // A channel whose only subscriber is the requester.
    a.subscribe("lonely").await;
    a.send(json!({"type": "rpc-request", "channel-id": "lonely", "data": 1}))
        .await;
    assert_eq!(
        a.recv_type("rpc-request-result").await,
        json!({"type": "rpc-request-result", "channel-id": "lonely",
               "delivery": {"success": false, "delivered-to": 0, "reason": "no-subscribers"}})
    );
    // A channel that does not exist (auto-create on): no subscribers either.
    a.send(json!({"type": "rpc-request", "channel-id": "ghost", "data": 1}))
        .await;
    let r = a.recv_type("rpc-request-result").await;
    assert_eq!(r["delivery"]["reason"], "no-subscribers", "{r}");
    assert!(r.get("request-id").is_none(), "{r}");
    // Nothing pending.
    assert_eq!(server.channels().pending_rpc_requests(), 0);
    a.roundtrip().await;
}

#[tokio::test]
async fn rpc_max_pending_per_connection() {
    let mut config = config();
    config.channels.max_pending_rpc_per_connection = 1;
    let server = start(config).await;
    let mut a = Client::connect(server.local_addr()).await;
    let mut w = Client::connect(server.local_addr()).await;
    w.subscribe("svc").await;
    a.send(json!({"type": "rpc-request", "channel-id": "svc", "data": 1}))
        .await;
    let first = a.recv_type("rpc-request-result").await;
    assert_eq!(first["delivery"]["success"], true, "{first}");
    a.send(json!({"type": "rpc-request", "channel-id": "svc", "data": 2}))
        .await;
    assert_eq!(
        a.recv_type("rpc-request-result").await,
        json!({"type": "rpc-request-result", "channel-id": "svc",
               "delivery": {"success": false, "delivered-to": 0, "reason": "max-pending-rpc-reached"}})
    );
    // The worker saw only the first.
    let req = w.recv_type("rpc-request").await;
    assert_eq!(req["data"], 1);
    w.roundtrip().await;
}

/// `timeout-ms` is clamped to `max-rpc-timeout-ms`; workers see the
/// effective timeout, and the request expires at it.
#[tokio::test]
async fn rpc_timeout_is_clamped_to_max_rpc_timeout_ms() {
    let mut config = config();
    config.channels.max_rpc_timeout_ms = 200;
    let server = start(config).await;
    let mut a = Client::connect(server.local_addr()).await;
    let mut w = Client::connect(server.local_addr()).await;
    w.subscribe("svc").await;
    let t0 = Instant::now();
    a.send(json!({"type": "rpc-request", "channel-id": "svc", "data": 1, "timeout-ms": 60000}))
        .await;
    let r = a.recv_type("rpc-request-result").await;
    let req = w.recv_type("rpc-request").await;
    assert_eq!(req["timeout-ms"], 200, "{req}");
    let e = a.recv_type("error").await;
    assert_eq!(e["reason"], "rpc-timeout");
    assert_eq!(e["request-id"], r["request-id"]);
    assert!(
        t0.elapsed() < Duration::from_millis(2_000),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn rpc_timeout_error_arrives_on_time() {
    let server = start_default().await;
    let mut a = Client::connect(server.local_addr()).await;
    let mut w = Client::connect(server.local_addr()).await;
    w.subscribe("slow-svc").await;
    let timeout_ms = 300u64;
    let t0 = Instant::now();
    a.send(
        json!({"type": "rpc-request", "channel-id": "slow-svc", "data": "?",
                  "timeout-ms": timeout_ms}),
    )
    .await;
    let r = a.recv_type("rpc-request-result").await;
    let request_id = r["request-id"].as_str().unwrap().to_owned();
    let e = a.recv_type("error").await;
    let elapsed = t0.elapsed();
    assert_keys(
        &e,
        &["type", "message", "reason", "timestamp", "request-id"],
    );
    assert_eq!(e["reason"], "rpc-timeout");
    assert_eq!(e["request-id"], request_id.as_str());
    assert_eq!(e["message"], "no rpc-response within 300 ms");
    assert_recent(&e["timestamp"]);
    assert!(
        elapsed >= Duration::from_millis(timeout_ms),
        "timeout after only {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_millis(timeout_ms + 100),
        "timeout error arrived after {elapsed:?}, more than {timeout_ms} + 100 ms"
    );
    // The worker got the request; its late answer is refused.
    let req = w.recv_type("rpc-request").await;
    w.send(json!({"type": "rpc-response", "request-id": req["request-id"], "data": 1}))
        .await;
    let rr = w.recv_type("rpc-response-result").await;
    assert_eq!(rr["success"], false);
    assert_eq!(rr["reason"], "request-not-found");
    // And the requester receives no rpc-response.
    a.roundtrip().await;
}

#[tokio::test]
async fn ping_pong_echoes_the_original_timestamp() {
    let server = start_default().await;
    let mut a = Client::connect(server.local_addr()).await;
    for stamp in [
        json!(1729825712600_i64),
        json!("a string"),
        json!({"nested": [1, {"x": null}]}),
        json!(-3.5),
    ] {
        a.send(json!({"type": "ping", "timestamp": stamp.clone()}))
            .await;
        let pong = a.recv_type("pong").await;
        assert_keys(&pong, &["type", "timestamp", "original-timestamp"]);
        assert_eq!(pong["original-timestamp"], stamp);
        assert_recent(&pong["timestamp"]);
    }
    for ping in [
        json!({"type": "ping"}),
        json!({"type": "ping", "timestamp": null}),
    ] {
        a.send(ping).await;
        let pong = a.recv_type("pong").await;
        assert_keys(&pong, &["type", "timestamp"]);
        assert_recent(&pong["timestamp"]);
    }
}

#[tokio::test]
async fn list_channels_and_get_subscriptions() {
    let server = start_default().await;
    let cfg = ChannelConfig {
        max_subscribers: 100,
        message_retention: 10,
        rpc_timeout_ms: 5000,
        telemetry_enabled: false,
        ..ChannelConfig::default()
    };
    server
        .channels()
        .create_channel("chat-room", Some(cfg))
        .await
        .unwrap();
    let mut a = Client::connect(server.local_addr()).await;
    let mut b = Client::connect(server.local_addr()).await;

    a.send(json!({"type": "get-subscriptions"})).await;
    assert_eq!(
        a.recv_type("subscription-list").await,
        json!({"type": "subscription-list", "subscriptions": []})
    );
    a.subscribe("chat-room").await;
    a.subscribe("notifications").await;
    b.subscribe("chat-room").await;
    let mut c = Client::connect(server.local_addr()).await;
    c.publish("chat-room", json!("x")).await;
    c.publish("chat-room", json!("y")).await;

    a.send(json!({"type": "get-subscriptions"})).await;
    let r = a.recv_until("subscription-list").await.0;
    let mut subs: Vec<&str> = r["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    subs.sort_unstable();
    assert_eq!(subs, ["chat-room", "notifications"]);

    a.send(json!({"type": "list-channels"})).await;
    let list = a.recv_until("channel-list").await.0;
    assert_keys(&list, &["type", "channels"]);
    let channels = list["channels"].as_object().unwrap();
    assert_eq!(channels.len(), 2, "{list}");
    let chat = &channels["chat-room"];
    assert_keys(
        chat,
        &["config", "created-at", "message-count", "subscriber-count"],
    );
    assert_eq!(
        chat["config"],
        json!({"max-subscribers": 100, "message-retention": 10, "rpc-timeout-ms": 5000,
               "telemetry-enabled": false, "history-size": 0, "history-ttl-ms": 0,
               "presence": false, "join-leave": false, "rpc-dispatch": "all",
               "on-slow-consumer": "close"})
    );
    assert_eq!(chat["message-count"], 2);
    assert_eq!(chat["subscriber-count"], 2);
    assert_recent(&chat["created-at"]);
    let n = &channels["notifications"];
    assert_eq!(
        n["config"],
        json!({"max-subscribers": 1000, "message-retention": 0, "rpc-timeout-ms": 30000,
               "telemetry-enabled": true, "history-size": 0, "history-ttl-ms": 0,
               "presence": false, "join-leave": false, "rpc-dispatch": "all",
               "on-slow-consumer": "close"})
    );
    assert_eq!(n["message-count"], 0);
    assert_eq!(n["subscriber-count"], 1);

    // /channels is the same map without `type`.
    let (status, body) = http_get(server.local_addr(), "/channels").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"channels": list["channels"]}));
}

/// Every decode error of PROTOCOL.md's table; after each, the same
/// connection still works.
#[tokio::test]
async fn error_frames_for_frames_that_cannot_be_understood() {
    let server = start_default().await;
    let mut a = Client::connect(server.local_addr()).await;
    let cases: [(&str, &str, &str); 8] = [
        (
            r#"{"type":"subscribe""#,
            "invalid-json",
            "frame is not valid JSON",
        ),
        ("not json at all", "invalid-json", "frame is not valid JSON"),
        (
            "[1,2]",
            "invalid-message",
            "frame must be a JSON object, got an array",
        ),
        (
            r#"{"channel-id":"x"}"#,
            "invalid-message",
            "missing field `type`",
        ),
        (
            r#"{"type":"subscribe"}"#,
            "invalid-message",
            "missing field `channel-id`",
        ),
        (
            r#"{"type":"publish","channel-id":"x"}"#,
            "invalid-message",
            "missing field `data`",
        ),
        (
            r#"{"type":"rpc-request","channel-id":"x","data":1,"timeout-ms":"5s"}"#,
            "invalid-message",
            "field `timeout-ms` must be a non-negative integer, got a string",
        ),
        (
            r#"{"type":"shout"}"#,
            "unknown-message-type",
            "unknown message type `shout`",
        ),
    ];
    for (frame, reason, message) in cases {
        a.send_text(frame).await;
        let e = a.recv_type("error").await;
        assert_keys(&e, &["type", "message", "reason", "timestamp"]);
        assert_eq!(e["reason"], reason, "for {frame}: {e}");
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains(message),
            "for {frame}: message {msg:?} lacks {message:?}"
        );
        assert_recent(&e["timestamp"]);
        a.roundtrip().await;
    }
    // Wrong field types are invalid-message naming the field.
    for (frame, field) in [
        (json!({"type": "subscribe", "channel-id": 5}), "channel-id"),
        (
            json!({"type": "publish", "channel-id": "x", "data": 1, "exclude-sender": "yes"}),
            "exclude-sender",
        ),
        (
            json!({"type": "rpc-response", "request-id": "r", "data": 1, "error": 0}),
            "error",
        ),
        (
            json!({"type": "rpc-request", "channel-id": "x", "data": 1, "timeout-ms": -1}),
            "timeout-ms",
        ),
    ] {
        a.send(frame.clone()).await;
        let e = a.recv_type("error").await;
        assert_eq!(e["reason"], "invalid-message", "for {frame}: {e}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "for {frame}: {e}"
        );
        a.roundtrip().await;
    }
    // Unknown fields are ignored.
    a.send(json!({"type": "subscribe", "channel-id": "ok", "timestamp": 1, "extra": [1]}))
        .await;
    assert_eq!(a.recv_type("subscription-result").await["success"], true);

    // Binary frames.
    within(
        "send binary",
        futures::SinkExt::send(&mut a.ws, Message::binary(vec![1u8, 2, 3])),
    )
    .await
    .unwrap();
    let e = a.recv_type("error").await;
    assert_keys(&e, &["type", "message", "reason", "timestamp"]);
    assert_eq!(e["reason"], "binary-not-supported");
    a.roundtrip().await;
    // Still subscribed and served.
    let mut b = Client::connect(server.local_addr()).await;
    b.publish("ok", json!("still here")).await;
    assert_eq!(a.recv_type("channel-message").await["data"], "still here");

    let s = stats(server.local_addr()).await;
    assert_eq!(s["transport"]["error-frames-sent"], 13, "{s}");
}

/// A relay does not change what it relays: `data` arrives byte for byte
/// (key order, `1.10`, a 30-digit integer, escapes), live, in the retained
/// replay, and in both directions of RPC.
#[tokio::test]
async fn data_is_relayed_byte_for_byte() {
    let mut cfg = config();
    cfg.channels.default_config.message_retention = 5;
    let server = start(cfg).await;
    let addr = server.local_addr();
    let data = r#"{"z":1,"a":1.10,"big":123456789012345678901234567890,"s":"caf\u00e9"}"#;
    let mut sub = Client::connect(addr).await;
    sub.subscribe("raw").await;
    let mut publisher = Client::connect(addr).await;
    publisher
        .send_text(&format!(
            r#"{{"type":"publish","channel-id":"raw","data":{data}}}"#
        ))
        .await;
    let live = next_text(&mut sub.ws).await;
    assert!(live.contains(&format!(r#""data":{data}"#)), "{live}");
    publisher.recv_type("publish-result").await;

    let mut late = Client::connect(addr).await;
    late.send_text(r#"{"type":"subscribe","channel-id":"raw"}"#)
        .await;
    let result = next_text(&mut late.ws).await;
    assert!(
        result.contains(&format!(r#""data":{data}"#)),
        "retained: {result}"
    );

    // RPC: the request's data reaches the worker, the response's data the
    // requester, both unchanged.
    publisher
        .send_text(&format!(
            r#"{{"type":"rpc-request","channel-id":"raw","data":{data}}}"#
        ))
        .await;
    let request = next_text(&mut sub.ws).await;
    assert!(request.contains(&format!(r#""data":{data}"#)), "{request}");
    let id = serde_json::from_str::<Value>(&request).unwrap()["request-id"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = r#"[1.50,{"y":2,"x":1}]"#;
    sub.send_text(&format!(
        r#"{{"type":"rpc-response","request-id":"{id}","data":{answer}}}"#
    ))
    .await;
    publisher.recv_type("rpc-request-result").await;
    let response = next_text(&mut publisher.ws).await;
    assert!(
        response.contains(&format!(r#""data":{answer}"#)),
        "{response}"
    );
    server.stop().await;
}
