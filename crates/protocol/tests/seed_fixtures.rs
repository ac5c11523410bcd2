//! Every JSON example of the seed design's "WebSocket Protocol", "HTTP
//! Endpoints" and "Error Response Format" sections, one file each under
//! `tests/fixtures/`, decodes to the right typed value and re-encodes to the
//! same JSON (equal as `serde_json::Value`, key order irrelevant).
//!
//! The seed writes client frames as JavaScript object literals
//! (`ws.send(JSON.stringify({type: "subscribe", ...}))`); the fixtures are the
//! JSON those literals stringify to. Placeholders of the seed are replaced by
//! concrete values, each noted at its test below and in
//! `tests/fixtures/README.md`.

mod common;

use common::{decode_fixture, fixture, reencoded, server_fixture};
use sente_lite_protocol::http::{
    ChannelStats, ChannelStatsEntry, Channels, HandlerStats, Health, Stats, SystemHealth,
};
use sente_lite_protocol::{
    decode_client, ChannelConfig, ChannelMessage, ChannelSummary, ClientMessage, Delivery,
    ErrorFrame, Reason, ServerMessage,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Decodes a client fixture, checks the typed value and that serializing it
/// gives back the fixture's JSON.
fn client_round_trip(name: &str, expected: ClientMessage) {
    let (text, value) = fixture(name);
    let msg = decode_fixture(name, &text);
    assert_eq!(msg, expected, "{name}: decoded value");
    assert_eq!(reencoded(&msg), value, "{name}: re-encoded JSON");
}

/// Decodes a server fixture with serde, checks the typed value and that
/// serializing it gives back the fixture's JSON.
fn server_round_trip(name: &str, expected: ServerMessage) {
    let (value, msg) = server_fixture(name);
    assert_eq!(msg, expected, "{name}: decoded value");
    assert_eq!(reencoded(&msg), value, "{name}: re-encoded JSON");
    // `to_json` is what the server writes on the socket.
    let on_wire: Value = serde_json::from_str(&msg.to_json()).expect("to_json is JSON");
    assert_eq!(on_wire, value, "{name}: to_json");
}

// ---- Message Format ------------------------------------------------------

/// The seed's generic "Message Format" example is a template, not a message:
/// its `type` is literally `"message-type"`, which no message has, so it is
/// refused with `unknown-message-type`. Its other point, that a frame may
/// carry extra fields such as `timestamp`, holds: the same object with a real
/// `type` decodes and the extra fields are dropped.
#[test]
fn message_format() {
    let (text, value) = fixture("message-format");
    let err = decode_client(&text).expect_err("template type is unknown");
    assert_eq!(err.reason, Reason::UnknownMessageType);
    assert!(err.message.contains("message-type"), "{}", err.message);

    let mut obj = value.as_object().expect("object").clone();
    obj.insert("type".into(), json!("get-subscriptions"));
    let text = Value::Object(obj).to_string();
    let msg = decode_client(&text).expect("extra fields are ignored");
    assert_eq!(msg, ClientMessage::GetSubscriptions);
    // Re-encoding drops exactly the two extra fields.
    assert_eq!(reencoded(&msg), json!({"type": "get-subscriptions"}));
}

// ---- Connection Lifecycle ------------------------------------------------

#[test]
fn welcome() {
    server_round_trip(
        "welcome",
        ServerMessage::Welcome {
            conn_id: "conn-1729825712324-8472".into(),
            server_time: 1_729_825_712_324,
            user_id: None,
        },
    );
}

// ---- Channel Operations --------------------------------------------------

#[test]
fn subscribe() {
    client_round_trip(
        "subscribe",
        ClientMessage::Subscribe {
            channel_id: "chat-room".into(),
            recover: None,
        },
    );
}

/// Placeholder: the seed's `"retained-messages": [...]` is replaced by two
/// `channel-message` frames, oldest first, as issue 2 specifies.
#[test]
fn subscription_result() {
    let retained = vec![
        ChannelMessage {
            channel_id: "chat-room".into(),
            message_id: "msg-1233".into(),
            data: json!({"message": "Is anyone here?", "user": "bob"}).into(),
            sender_conn_id: Some("conn-1729825712100-1111".into()),
            published_at: 1_729_825_712_400,
            offset: 0,
            epoch: String::new(),
        },
        ChannelMessage {
            channel_id: "chat-room".into(),
            message_id: "msg-1234".into(),
            data: json!({"message": "Hello everyone!", "user": "alice"}).into(),
            sender_conn_id: Some("conn-1729825712324-8472".into()),
            published_at: 1_729_825_712_500,
            offset: 0,
            epoch: String::new(),
        },
    ];
    server_round_trip(
        "subscription-result",
        ServerMessage::SubscriptionResult {
            channel_id: "chat-room".into(),
            success: true,
            subscriber_count: Some(5),
            retained_messages: Some(retained),
            retained_omitted: 0,
            offset: None,
            epoch: None,
            recovered: None,
            recovered_count: None,
            recover_reason: None,
            reason: None,
        },
    );
}

/// Each retained message is a complete `channel-message` frame, `type`
/// included, so a client can hand it to the same handler as live messages.
#[test]
fn retained_messages_are_channel_message_frames() {
    let (value, msg) = server_fixture("subscription-result");
    let ServerMessage::SubscriptionResult {
        retained_messages: Some(retained),
        ..
    } = msg
    else {
        panic!("not a subscription-result with retained messages");
    };
    let encoded = reencoded(&ServerMessage::SubscriptionResult {
        channel_id: "chat-room".into(),
        success: true,
        subscriber_count: Some(5),
        retained_messages: Some(retained.clone()),
        retained_omitted: 0,
        offset: None,
        epoch: None,
        recovered: None,
        recovered_count: None,
        recover_reason: None,
        reason: None,
    });
    for (i, item) in encoded["retained-messages"]
        .as_array()
        .expect("array")
        .iter()
        .enumerate()
    {
        assert_eq!(item["type"], "channel-message");
        assert_eq!(item, &value["retained-messages"][i]);
        // ... and exactly what a live delivery of the same message looks like.
        let live = reencoded(&ServerMessage::ChannelMessage(retained[i].clone()));
        assert_eq!(item, &live);
    }
}

#[test]
fn unsubscribe() {
    client_round_trip(
        "unsubscribe",
        ClientMessage::Unsubscribe {
            channel_id: "chat-room".into(),
        },
    );
}

#[test]
fn unsubscription_result() {
    server_round_trip(
        "unsubscription-result",
        ServerMessage::UnsubscriptionResult {
            channel_id: "chat-room".into(),
            success: true,
            reason: None,
        },
    );
}

#[test]
fn publish() {
    client_round_trip(
        "publish",
        ClientMessage::Publish {
            channel_id: "chat-room".into(),
            data: json!({"message": "Hello everyone!", "user": "alice"}).into(),
            exclude_sender: false,
        },
    );
}

/// The seed's Quick Start publishes without `exclude-sender`: it defaults to
/// false, and re-encoding adds it explicitly (the only difference).
#[test]
fn quick_start_publish() {
    let (text, value) = fixture("quick-start-publish");
    assert!(value.get("exclude-sender").is_none());
    let msg = decode_fixture("quick-start-publish", &text);
    assert_eq!(
        msg,
        ClientMessage::Publish {
            channel_id: "chat-room".into(),
            data: json!({"message": "Hello everyone!", "user": "alice"}).into(),
            exclude_sender: false,
        }
    );
    let mut expected = value;
    expected["exclude-sender"] = json!(false);
    assert_eq!(reencoded(&msg), expected);
}

#[test]
fn publish_result() {
    server_round_trip(
        "publish-result",
        ServerMessage::PublishResult {
            channel_id: "chat-room".into(),
            success: true,
            message_id: Some("msg-1234".into()),
            delivered_to: Some(8),
            reason: None,
        },
    );
}

// ---- RPC Communication ---------------------------------------------------

#[test]
fn rpc_request() {
    client_round_trip(
        "rpc-request",
        ClientMessage::RpcRequest {
            channel_id: "api-service".into(),
            data: json!({"action": "get-user-profile", "params": {"userId": 123}}).into(),
            timeout_ms: Some(5000),
        },
    );
}

#[test]
fn rpc_request_result() {
    server_round_trip(
        "rpc-request-result",
        ServerMessage::RpcRequestResult {
            request_id: Some("req-1729825712500-1234".into()),
            channel_id: "api-service".into(),
            delivery: Delivery {
                success: true,
                delivered_to: 1,
                subscribers: Some(vec!["service-worker-001".into()]),
                reason: None,
            },
        },
    );
}

/// Placeholder: the seed's `preferences: {...}` is replaced by
/// `{"theme": "dark", "language": "en"}`.
#[test]
fn rpc_response() {
    client_round_trip(
        "rpc-response",
        ClientMessage::RpcResponse {
            request_id: "req-1729825712500-1234".into(),
            data: json!({
                "user": {"id": 123, "name": "Alice"},
                "preferences": {"theme": "dark", "language": "en"}
            })
            .into(),
            error: false,
        },
    );
}

/// The seed labels this "Server → Original Client"; with us it goes to the
/// worker that sent the `rpc-response` (the requester gets the
/// `rpc-response` itself). The frame's shape is the seed's.
#[test]
fn rpc_response_result() {
    server_round_trip(
        "rpc-response-result",
        ServerMessage::RpcResponseResult {
            request_id: "req-1729825712500-1234".into(),
            success: true,
            reason: None,
        },
    );
}

// ---- Utility Operations --------------------------------------------------

/// Placeholder: the seed's `timestamp: Date.now()` is replaced by
/// 1729825712600, the `original-timestamp` of the seed's pong.
#[test]
fn ping() {
    client_round_trip(
        "ping",
        ClientMessage::Ping {
            timestamp: Some(json!(1_729_825_712_600_i64)),
        },
    );
}

#[test]
fn pong() {
    server_round_trip(
        "pong",
        ServerMessage::Pong {
            timestamp: 1_729_825_712_601,
            original_timestamp: Some(json!(1_729_825_712_600_i64)),
        },
    );
}

#[test]
fn list_channels() {
    client_round_trip(
        "list-channels",
        ClientMessage::ListChannels {
            limit: None,
            cursor: None,
        },
    );
}

fn chat_room_config() -> ChannelConfig {
    ChannelConfig {
        max_subscribers: 100,
        message_retention: 10,
        rpc_timeout_ms: 5000,
        telemetry_enabled: true,
        ..ChannelConfig::default()
    }
}

/// Placeholder: the seed's `"config": {...}` is replaced by the complete
/// config of the seed's `/channels` example for the same channel, with
/// `telemetry-enabled` (always present on the wire, see `http_channels`).
#[test]
fn channel_list() {
    let mut channels = BTreeMap::new();
    channels.insert(
        "chat-room".to_owned(),
        ChannelSummary {
            config: chat_room_config(),
            created_at: 1_729_825_712_000,
            message_count: 245,
            subscriber_count: 8,
        },
    );
    server_round_trip(
        "channel-list",
        ServerMessage::ChannelList {
            channels,
            next_cursor: None,
        },
    );
}

#[test]
fn get_subscriptions() {
    client_round_trip("get-subscriptions", ClientMessage::GetSubscriptions);
}

#[test]
fn subscription_list() {
    server_round_trip(
        "subscription-list",
        ServerMessage::SubscriptionList {
            subscriptions: vec!["chat-room".into(), "notifications".into()],
        },
    );
}

// ---- Error Response Format -----------------------------------------------

#[test]
fn error_response_format() {
    server_round_trip(
        "error-response-format",
        ServerMessage::Error(ErrorFrame {
            message: "Operation failed".into(),
            reason: Reason::ChannelNotFound,
            timestamp: 1_729_825_712_500,
            request_id: Some("optional-correlation-id".into()),
        }),
    );
}

// ---- HTTP Endpoints ------------------------------------------------------

#[test]
fn http_health() {
    let (text, value) = fixture("http-health");
    let health: Health = serde_json::from_str(&text).expect("decodes");
    assert_eq!(
        health,
        Health {
            status: "healthy".into(),
            connections: 15,
            channels: 8,
            system_health: SystemHealth {
                healthy: true,
                total_channels: 8,
                total_subscriptions: 42,
                pending_rpc_requests: 2,
                old_rpc_requests: 0,
            },
            uptime_ms: 125_000,
            broker: None,
        }
    );
    assert_eq!(reencoded(&health), value);
}

/// `":my-server"` (a Clojure keyword in the seed) stays a plain map key
/// string. The optional `transport` section is absent, as in the seed.
#[test]
fn http_stats() {
    let (text, value) = fixture("http-stats");
    let stats: Stats = serde_json::from_str(&text).expect("decodes");
    let mut channels = BTreeMap::new();
    channels.insert(
        "chat-room".to_owned(),
        ChannelStatsEntry {
            subscriber_count: 8,
            message_count: 245,
            created_at: 1_729_825_712_000,
            retention_count: 10,
        },
    );
    let mut telemetry = BTreeMap::new();
    telemetry.insert(
        ":my-server".to_owned(),
        HandlerStats {
            processed: 1847,
            queued: 0,
            dropped: 0,
            errors: 0,
            throttled: 0,
            queued_bytes: 0,
        },
    );
    assert_eq!(
        stats,
        Stats {
            active_connections: 15,
            total_messages: 1847,
            server_config: json!({"port": 3000, "host": "localhost"}),
            channel_stats: ChannelStats {
                channels,
                total_channels: 8,
                total_subscriptions: 42,
                pending_rpc_requests: 2,
                active_connections: None,
                rejected: BTreeMap::new(),
                retained_bytes: 0,
                retained_evicted: 0,
                retained_omitted: 0,
                idle_channels_removed: 0,
                recovered: 0,
                recoveries_missed: 0,
                rpc_redispatched: 0,
            },
            telemetry_stats: telemetry,
            transport: None,
            broker: None,
        }
    );
    assert_eq!(reencoded(&stats), value);
}

/// Placeholder: the seed's `"config": {...}` of `notifications` is replaced by
/// the default channel config (all four keys).
///
/// Deliberate difference: the seed's `chat-room` config lists three keys;
/// [`ChannelConfig`] always writes all four, so re-encoding adds
/// `"telemetry-enabled": true` (the default) there and nothing else.
#[test]
fn http_channels() {
    let (text, value) = fixture("http-channels");
    let channels: Channels = serde_json::from_str(&text).expect("decodes");
    let mut expected = BTreeMap::new();
    expected.insert(
        "chat-room".to_owned(),
        ChannelSummary {
            config: chat_room_config(),
            created_at: 1_729_825_712_000,
            message_count: 245,
            subscriber_count: 8,
        },
    );
    expected.insert(
        "notifications".to_owned(),
        ChannelSummary {
            config: ChannelConfig::default(),
            created_at: 1_729_825_713_000,
            message_count: 89,
            subscriber_count: 15,
        },
    );
    assert_eq!(channels.channels, expected);

    assert!(value["channels"]["chat-room"]["config"]
        .get("telemetry-enabled")
        .is_none());
    // The seed's example lacks `telemetry-enabled` and the later keys: on
    // the wire every key is there, at its default.
    let mut with_default = value;
    let defaults = serde_json::to_value(ChannelConfig::default()).expect("a config");
    for (key, v) in defaults.as_object().expect("an object") {
        let config = &mut with_default["channels"]["chat-room"]["config"];
        if config.get(key).is_none() {
            config[key] = v.clone();
        }
    }
    assert_eq!(reencoded(&channels), with_default);
}

/// Every fixture file has a test above (guards against a fixture added
/// without one, or a test reading a misspelled file).
#[test]
fn every_seed_fixture_is_tested() {
    let tested = [
        "channel-list",
        "error-response-format",
        "get-subscriptions",
        "http-channels",
        "http-health",
        "http-stats",
        "list-channels",
        "message-format",
        "ping",
        "pong",
        "publish",
        "publish-result",
        "quick-start-publish",
        "rpc-request",
        "rpc-request-result",
        "rpc-response",
        "rpc-response-result",
        "subscribe",
        "subscription-list",
        "subscription-result",
        "unsubscribe",
        "unsubscription-result",
        "welcome",
    ];
    assert_eq!(common::fixture_names(""), tested);
}
