//! Unit-level tests of every engine operation and failure reason.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::Inbox;
use sente_lite_channels::{ConnId, Engine, EngineConfig, EngineError, Frame, Offer};
use sente_lite_protocol::{ChannelConfig, Reason};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;

fn engine() -> Engine {
    Engine::new(EngineConfig::default()).unwrap()
}

fn engine_with(f: impl FnOnce(&mut EngineConfig)) -> Engine {
    let mut c = EngineConfig::default();
    f(&mut c);
    Engine::new(c).unwrap()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[tokio::test]
async fn new_outside_a_runtime_is_a_typed_error() {
    let r = std::thread::spawn(|| Engine::new(EngineConfig::default()).map(|_| ()))
        .join()
        .unwrap();
    assert!(r.is_err());
}

#[tokio::test]
async fn publish_reaches_every_subscriber_with_the_protocol_shape() {
    let e = engine();
    let (a, b, p) = (Inbox::new(), Inbox::new(), Inbox::new());
    let ca = e.connect(a.clone()).unwrap();
    let cb = e.connect(b.clone()).unwrap();
    let cp = e.connect(p.clone()).unwrap();
    assert_eq!(e.subscribe(ca, "chat").await.unwrap().subscriber_count, 1);
    assert_eq!(e.subscribe(cb, "chat").await.unwrap().subscriber_count, 2);

    let out = e
        .publish(Some(cp), "chat", json!({"text": "hi"}), false)
        .await
        .unwrap();
    assert_eq!(out.delivered_to, 2);
    assert_eq!(out.full, 0);
    assert!(
        p.json().is_empty(),
        "a non-subscribed publisher gets nothing"
    );
    for inbox in [&a, &b] {
        let got = inbox.json();
        assert_eq!(got.len(), 1);
        let m = &got[0];
        assert_eq!(m["type"], "channel-message");
        assert_eq!(m["channel-id"], "chat");
        assert_eq!(m["message-id"], out.message_id.as_str());
        assert_eq!(m["data"], json!({"text": "hi"}));
        assert_eq!(m["sender-conn-id"], cp.to_string().as_str());
        assert!(m["published-at"].as_i64().unwrap() > 1_600_000_000_000);
    }
    // One serialization shared by all: both inboxes hold the same bytes.
    assert_eq!(a.raw()[0].bytes().as_ptr(), b.raw()[0].bytes().as_ptr());
    assert_eq!(e.counters().deliveries, 2);
}

#[tokio::test]
async fn sender_exclusion_is_opt_in() {
    let e = engine();
    let (a, b) = (Inbox::new(), Inbox::new());
    let ca = e.connect(a.clone()).unwrap();
    let cb = e.connect(b.clone()).unwrap();
    e.subscribe(ca, "c").await.unwrap();
    e.subscribe(cb, "c").await.unwrap();
    assert_eq!(
        e.publish(Some(ca), "c", json!(1), false)
            .await
            .unwrap()
            .delivered_to,
        2
    );
    assert_eq!(
        e.publish(Some(ca), "c", json!(2), true)
            .await
            .unwrap()
            .delivered_to,
        1
    );
    assert_eq!(a.json().len(), 1);
    assert_eq!(b.json().len(), 2);
    // A server-side publish has a null sender and excludes no one.
    let out = e.publish(None, "c", json!(3), true).await.unwrap();
    assert_eq!(out.delivered_to, 2);
    assert_eq!(b.json()[2]["sender-conn-id"], Value::Null);
}

#[tokio::test]
async fn retention_replays_the_last_n_oldest_first() {
    let e = engine();
    e.create_channel(
        "news",
        Some(ChannelConfig {
            message_retention: 2,
            ..ChannelConfig::default()
        }),
    )
    .await
    .unwrap();
    for i in 1..=3 {
        e.publish(None, "news", json!(i), false).await.unwrap();
    }
    let late = e.connect(Inbox::new()).unwrap();
    let sub = e.subscribe(late, "news").await.unwrap();
    let data: Vec<Value> = sub
        .retained_messages
        .iter()
        .map(|m| m.data.to_value())
        .collect();
    assert_eq!(data, vec![json!(2), json!(3)]);
    // Subscribing again is idempotent and does not replay.
    let again = e.subscribe(late, "news").await.unwrap();
    assert!(again.already_subscribed);
    assert!(again.retained_messages.is_empty());
    assert_eq!(again.subscriber_count, 1);
    let info = e.channel_info("news").await.unwrap();
    assert_eq!(info.message_count, 3);
    assert_eq!(info.retained_messages.len(), 2);
    assert_eq!(info.subscribers, vec![late.to_string()]);
}

#[tokio::test]
async fn auto_create_on_publish_keeps_retention_for_later_subscribers() {
    let e = engine_with(|c| c.default_channel.message_retention = 5);
    e.publish(None, "fresh", json!("first"), false)
        .await
        .unwrap();
    let c = e.connect(Inbox::new()).unwrap();
    let sub = e.subscribe(c, "fresh").await.unwrap();
    assert_eq!(sub.retained_messages.len(), 1);
    assert_eq!(sub.retained_messages[0].data, json!("first"));
}

#[tokio::test]
async fn without_auto_create_unknown_channels_are_not_found() {
    let e = engine_with(|c| c.auto_create = false);
    let c = e.connect(Inbox::new()).unwrap();
    let err = e.subscribe(c, "nope").await.unwrap_err();
    assert_eq!(err.reason(), Reason::ChannelNotFound);
    assert_eq!(
        e.publish(Some(c), "nope", json!(1), false)
            .await
            .unwrap_err()
            .reason(),
        Reason::ChannelNotFound
    );
    assert_eq!(
        e.send_rpc_request(c, "nope", json!(1), None)
            .await
            .unwrap_err()
            .reason(),
        Reason::ChannelNotFound
    );
    assert_eq!(e.channel_count(), 0);
    e.create_channel("nope", None).await.unwrap();
    assert!(e.subscribe(c, "nope").await.is_ok());
    assert_eq!(
        e.create_channel("nope", None).await.unwrap_err().reason(),
        Reason::ChannelExists
    );
}

#[tokio::test]
async fn max_subscribers_is_enforced() {
    let e = engine();
    e.create_channel(
        "small",
        Some(ChannelConfig {
            max_subscribers: 2,
            ..ChannelConfig::default()
        }),
    )
    .await
    .unwrap();
    let ids: Vec<ConnId> = (0..3).map(|_| e.connect(Inbox::new()).unwrap()).collect();
    e.subscribe(ids[0], "small").await.unwrap();
    e.subscribe(ids[1], "small").await.unwrap();
    let err = e.subscribe(ids[2], "small").await.unwrap_err();
    assert_eq!(err.reason(), Reason::MaxSubscribersReached);
    assert_eq!(e.channel_info("small").await.unwrap().subscribers.len(), 2);
    assert!(e.subscriptions(ids[2]).unwrap().is_empty());
    // A place frees up when someone leaves.
    e.unsubscribe(ids[0], "small").await.unwrap();
    assert!(e.subscribe(ids[2], "small").await.is_ok());
}

#[tokio::test]
async fn channel_ids_and_channel_count_are_bounded() {
    let e = engine_with(|c| {
        c.max_channels = 2;
        c.max_channel_id_bytes = 8;
    });
    let c = e.connect(Inbox::new()).unwrap();
    assert_eq!(
        e.subscribe(c, "").await.unwrap_err().reason(),
        Reason::InvalidChannelId
    );
    assert_eq!(
        e.subscribe(c, "123456789").await.unwrap_err().reason(),
        Reason::InvalidChannelId
    );
    e.subscribe(c, "a").await.unwrap();
    e.publish(None, "b", json!(1), false).await.unwrap();
    assert_eq!(
        e.subscribe(c, "c").await.unwrap_err().reason(),
        Reason::MaxChannelsReached
    );
    assert_eq!(
        e.create_channel("c", None).await.unwrap_err().reason(),
        Reason::MaxChannelsReached
    );
    assert_eq!(e.channel_count(), 2);
}

#[tokio::test]
async fn unsubscribe_and_subscriptions() {
    let e = engine();
    let inbox = Inbox::new();
    let c = e.connect(inbox.clone()).unwrap();
    e.subscribe(c, "b").await.unwrap();
    e.subscribe(c, "a").await.unwrap();
    assert_eq!(e.subscriptions(c).unwrap(), vec!["a", "b"]);
    assert_eq!(e.total_subscriptions(), 2);
    e.unsubscribe(c, "a").await.unwrap();
    assert_eq!(
        e.unsubscribe(c, "a").await.unwrap_err().reason(),
        Reason::NotSubscribed
    );
    assert_eq!(
        e.unsubscribe(c, "never").await.unwrap_err().reason(),
        Reason::NotSubscribed
    );
    assert_eq!(e.subscriptions(c).unwrap(), vec!["b"]);
    e.publish(None, "a", json!(1), false).await.unwrap();
    assert!(inbox.json().is_empty(), "unsubscribed: nothing delivered");
    assert_eq!(e.unsubscribe_all(c).await, 1);
    assert_eq!(e.total_subscriptions(), 0);
}

#[tokio::test]
async fn delete_channel_unsubscribes_everyone() {
    let e = engine();
    let ids: Vec<ConnId> = (0..3).map(|_| e.connect(Inbox::new()).unwrap()).collect();
    for &c in &ids {
        e.subscribe(c, "gone").await.unwrap();
        e.subscribe(c, "stays").await.unwrap();
    }
    assert_eq!(e.delete_channel("gone").await.unwrap(), 3);
    assert_eq!(
        e.delete_channel("gone").await.unwrap_err().reason(),
        Reason::ChannelNotFound
    );
    for &c in &ids {
        assert_eq!(e.subscriptions(c).unwrap(), vec!["stays"]);
    }
    assert_eq!(e.total_subscriptions(), 3);
    assert!(e.channel_info("gone").await.is_err());
}

#[tokio::test]
async fn disconnect_cleans_up_and_stale_ids_never_reach_the_new_owner() {
    let e = engine();
    let old_inbox = Inbox::new();
    let old = e.connect(old_inbox.clone()).unwrap();
    e.subscribe(old, "c").await.unwrap();
    assert!(e.disconnect(old).await);
    assert!(!e.disconnect(old).await, "second disconnect is a no-op");
    assert_eq!(e.channel_info("c").await.unwrap().subscribers.len(), 0);
    assert_eq!(e.total_subscriptions(), 0);

    let new_inbox = Inbox::new();
    let new = e.connect(new_inbox.clone()).unwrap();
    assert_eq!(new.slot(), old.slot(), "the slab slot is reused");
    assert_ne!(new, old);
    let frame = Frame::new(r#"{"x":1}"#.to_owned());
    assert_eq!(
        e.send_to_connection(&e.addr(old), &frame)
            .await
            .unwrap_err()
            .reason(),
        Reason::ConnectionNotFound
    );
    assert_eq!(
        e.subscribe(old, "c").await.unwrap_err().reason(),
        Reason::ConnectionNotFound
    );
    assert_eq!(
        e.resolve(&old.to_string()).unwrap_err().reason(),
        Reason::ConnectionNotFound
    );
    assert!(new_inbox.json().is_empty());
    assert_eq!(e.resolve(&new.to_string()).unwrap(), e.addr(new));
    assert_eq!(
        e.send_to_connection(&e.addr(new), &frame).await.unwrap(),
        Offer::Queued
    );
    assert_eq!(new_inbox.json(), vec![json!({"x": 1})]);
}

#[tokio::test]
async fn max_connections_is_enforced() {
    let e = engine_with(|c| c.max_connections = 2);
    let a = e.connect(Inbox::new()).unwrap();
    e.connect(Inbox::new()).unwrap();
    let err = e.connect(Inbox::new()).unwrap_err();
    assert_eq!(err.reason(), Reason::MaxConnectionsReached);
    e.disconnect(a).await;
    assert!(e.connect(Inbox::new()).is_ok());
}

#[tokio::test]
async fn a_full_sink_is_reported_and_counted_not_waited_on() {
    let e = engine();
    let (ok, full) = (Inbox::new(), Inbox::new());
    full.full.store(true, Ordering::SeqCst);
    let a = e.connect(ok.clone()).unwrap();
    let b = e.connect(full.clone()).unwrap();
    e.subscribe(a, "c").await.unwrap();
    e.subscribe(b, "c").await.unwrap();
    let out = e.publish(None, "c", json!(1), false).await.unwrap();
    assert_eq!((out.delivered_to, out.full), (1, 1));
    assert_eq!(e.counters().deliveries_full, 1);
    assert_eq!(ok.json().len(), 1);
    assert!(full.json().is_empty());
}

#[tokio::test]
async fn server_side_sends_have_the_protocol_shapes() {
    let e = engine();
    let (a, b) = (Inbox::new(), Inbox::new());
    let ca = e.connect(a.clone()).unwrap();
    let _cb = e.connect(b.clone()).unwrap();
    e.subscribe(ca, "alerts").await.unwrap();

    assert_eq!(
        e.broadcast(obj(json!({"type": "announcement", "message": "m"})))
            .await,
        2
    );
    assert_eq!(
        b.json(),
        vec![json!({"type": "announcement", "message": "m", "broadcast": true})]
    );

    let n = e
        .broadcast_to_channel("alerts", obj(json!({"type": "system-alert"})))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let got = a.json();
    let last = got.last().unwrap();
    assert_eq!(last["type"], "system-alert");
    assert_eq!(last["channel-id"], "alerts");
    assert!(last["broadcast-time"].as_i64().unwrap() > 0);
    assert_eq!(
        e.channel_info("alerts").await.unwrap().message_count,
        0,
        "not a publish"
    );
    assert_eq!(
        e.broadcast_to_channel("nope", Map::new())
            .await
            .unwrap_err()
            .reason(),
        Reason::ChannelNotFound
    );

    let unchanged = json!({"type": "private-message", "content": "Hello there!"});
    e.send_json(&e.addr(ca), &unchanged).await.unwrap();
    assert_eq!(a.json().last().unwrap(), &unchanged);
}

#[tokio::test]
async fn stats_and_health_add_up() {
    let e = engine_with(|c| c.default_channel.message_retention = 3);
    let ids: Vec<ConnId> = (0..3).map(|_| e.connect(Inbox::new()).unwrap()).collect();
    e.subscribe(ids[0], "x").await.unwrap();
    e.subscribe(ids[1], "x").await.unwrap();
    e.subscribe(ids[2], "y").await.unwrap();
    e.publish(None, "x", json!(1), false).await.unwrap();
    let s = e.channel_stats().await.unwrap();
    assert_eq!(s.total_channels, 2);
    assert_eq!(s.total_subscriptions, 3);
    assert_eq!(s.active_connections, 3);
    assert_eq!(s.channels["x"].subscriber_count, 2);
    assert_eq!(s.channels["x"].message_count, 1);
    assert_eq!(s.channels["x"].retention_count, 3);
    let list = e.list_channels().await.unwrap();
    assert_eq!(list["y"].subscriber_count, 1);
    let h = e.health();
    assert!(h.healthy);
    assert_eq!((h.total_channels, h.total_subscriptions), (2, 3));
}

#[test]
fn engine_errors_map_to_their_wire_reasons() {
    let cases = [
        (
            EngineError::ChannelNotFound("c".into()),
            "channel-not-found",
        ),
        (EngineError::NotSubscribed("c".into()), "not-subscribed"),
        (EngineError::NoSubscribers("c".into()), "no-subscribers"),
        (
            EngineError::RequestNotFound("r".into()),
            "request-not-found",
        ),
        (EngineError::MaxChannelsReached(1), "max-channels-reached"),
        (
            EngineError::MaxPendingRpcReached(1),
            "max-pending-rpc-reached",
        ),
    ];
    for (err, reason) in cases {
        assert_eq!(err.reason().as_str(), reason);
    }
}

#[tokio::test]
async fn greeting_and_subscribe_reply_come_before_anything_else() {
    let e = engine();
    let inbox = Inbox::new();
    let c = e
        .connect_with_greeting(inbox.clone(), |id| {
            Frame::new(json!({"type": "welcome", "conn-id": id.to_string()}).to_string())
        })
        .unwrap();
    e.publish(None, "c", json!("before"), false).await.unwrap();
    let reply = |s: &sente_lite_channels::Subscribed| {
        Frame::new(json!({"type": "subscription-result", "n": s.subscriber_count}).to_string())
    };
    e.subscribe_with_reply(c, "c", Some(&reply)).await.unwrap();
    e.publish(None, "c", json!("after"), false).await.unwrap();
    let types: Vec<Value> = inbox.json().iter().map(|m| m["type"].clone()).collect();
    assert_eq!(
        types,
        vec![
            json!("welcome"),
            json!("subscription-result"),
            json!("channel-message")
        ]
    );
    assert_eq!(inbox.json()[0]["conn-id"], c.to_string().as_str());
}

#[tokio::test]
async fn totals_outlive_a_deleted_channel() {
    let e = engine();
    let c = e.connect(Inbox::new()).unwrap();
    e.subscribe(c, "short-lived").await.unwrap();
    e.publish(None, "short-lived", json!(1), false)
        .await
        .unwrap();
    e.publish(None, "other", json!(2), false).await.unwrap();
    e.delete_channel("short-lived").await.unwrap();
    let t = e.counters();
    assert_eq!((t.published, t.deliveries), (2, 1));
}

#[tokio::test]
async fn refused_operations_are_counted_by_reason() {
    let e = engine_with(|c| {
        c.max_channels = 1;
        c.default_channel.max_subscribers = 1;
    });
    let a = e.connect(Inbox::new()).unwrap();
    let b = e.connect(Inbox::new()).unwrap();
    e.subscribe(a, "only").await.unwrap();
    assert!(e.subscribe(b, "only").await.is_err()); // max-subscribers-reached
    assert!(e.subscribe(b, "second").await.is_err()); // max-channels-reached
    assert!(e.publish(None, "", json!(1), false).await.is_err()); // invalid-channel-id
    assert!(e.unsubscribe(b, "only").await.is_err()); // not-subscribed
    assert!(e.unsubscribe(b, "only").await.is_err());
    assert!(e
        .send_rpc_response(a, None, "req-x", json!(1), false)
        .await
        .is_err()); // request-not-found
    let want: std::collections::BTreeMap<Reason, u64> = [
        (Reason::MaxSubscribersReached, 1),
        (Reason::MaxChannelsReached, 1),
        (Reason::InvalidChannelId, 1),
        (Reason::NotSubscribed, 2),
        (Reason::RequestNotFound, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(e.rejections(), want);
    assert_eq!(e.channel_stats().await.unwrap().rejected, want);
}

/// Every channel message carries its stream position: offsets count from 1
/// in one epoch, a deleted and re-created channel starts a new epoch, and
/// message ids are not one process's `msg-<n>`.
#[tokio::test]
async fn messages_carry_offset_and_epoch() {
    let e = engine_with(|c| c.default_channel.message_retention = 10);
    let a = Inbox::new();
    let ca = e.connect(a.clone()).unwrap();
    e.subscribe(ca, "s").await.unwrap();
    let p1 = e.publish(None, "s", json!(1), false).await.unwrap();
    let p2 = e.publish(None, "s", json!(2), false).await.unwrap();
    assert_eq!((p1.position.offset, p2.position.offset), (1, 2));
    assert_eq!(p1.position.epoch, p2.position.epoch);
    let got = a.of_type("channel-message");
    assert_eq!(got[0]["offset"], 1);
    assert_eq!(got[1]["offset"], 2);
    assert_eq!(got[0]["epoch"], p1.position.epoch.as_ref());
    let id = got[0]["message-id"].as_str().unwrap();
    assert!(
        id.starts_with("msg-") && id.matches('-').count() == 2,
        "{id}"
    );
    assert_ne!(p1.message_id, p2.message_id);
    // Retained messages keep their positions.
    let late = e.connect(Inbox::new()).unwrap();
    let sub = e.subscribe(late, "s").await.unwrap();
    assert_eq!(sub.position.offset, 2);
    let offsets: Vec<u64> = sub.retained_messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [1, 2]);
    // History lost: a new epoch, offsets from 1 again.
    e.delete_channel("s").await.unwrap();
    let p3 = e.publish(None, "s", json!(3), false).await.unwrap();
    assert_eq!(p3.position.offset, 1);
    assert_ne!(p3.position.epoch, p1.position.epoch);
}

/// `data` reaches subscribers and the retained replay byte for byte.
#[tokio::test]
async fn data_is_relayed_byte_for_byte() {
    let e = engine_with(|c| c.default_channel.message_retention = 1);
    let a = Inbox::new();
    let ca = e.connect(a.clone()).unwrap();
    e.subscribe(ca, "raw").await.unwrap();
    let text = r#"{"z":1,"a":1.10,"big":123456789012345678901234567890}"#;
    let data = sente_lite_protocol::Data::from_json(text.to_owned()).unwrap();
    e.publish(None, "raw", data, false).await.unwrap();
    let frame = a.raw().pop().unwrap();
    assert!(
        frame.as_str().contains(&format!(r#""data":{text}"#)),
        "{frame:?}"
    );
    let late = e.connect(Inbox::new()).unwrap();
    let sub = e.subscribe(late, "raw").await.unwrap();
    assert_eq!(sub.retained_messages[0].data.as_json(), text);
}
