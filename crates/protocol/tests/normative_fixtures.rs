//! Frames the seed has no example of but issue 2 specifies, one file each
//! under `tests/fixtures/normative/`: they decode to the expected typed value
//! and re-encode to the same JSON. Also the broadcast frame builders.

mod common;

use common::{fixture, reencoded, server_fixture};
use sente_lite_protocol::http::{HttpError, Stats, TransportStats};
use sente_lite_protocol::{
    broadcast_frame, channel_broadcast_frame, decode_client, ChannelMessage, Delivery, ErrorFrame,
    Reason, RpcRequestDelivery, ServerMessage,
};
use serde_json::{json, Map, Value};

fn server_round_trip(name: &str, expected: ServerMessage) {
    let path = format!("normative/{name}");
    let (value, msg) = server_fixture(&path);
    assert_eq!(msg, expected, "{name}: decoded value");
    assert_eq!(reencoded(&msg), value, "{name}: re-encoded JSON");
}

#[test]
fn channel_message() {
    server_round_trip(
        "channel-message",
        ServerMessage::ChannelMessage(ChannelMessage {
            channel_id: "chat-room".into(),
            message_id: "msg-1234".into(),
            data: json!({"message": "Hello everyone!", "user": "alice"}).into(),
            sender_conn_id: Some("conn-1729825712324-8472".into()),
            published_at: 1_729_825_712_500,
            offset: 42,
            epoch: "k3x9q1".into(),
        }),
    );
}

/// A publish from the server's Rust API has no sender: `sender-conn-id` is
/// present and `null`, not absent.
#[test]
fn channel_message_server_publish() {
    let (value, _) = server_fixture("normative/channel-message-server-publish");
    assert_eq!(value.get("sender-conn-id"), Some(&Value::Null));
    server_round_trip(
        "channel-message-server-publish",
        ServerMessage::ChannelMessage(ChannelMessage {
            channel_id: "notifications".into(),
            message_id: "msg-1235".into(),
            data: json!("maintenance at 22:00").into(),
            sender_conn_id: None,
            published_at: 1_729_825_712_501,
            offset: 43,
            epoch: "k3x9q1".into(),
        }),
    );
}

#[test]
fn rpc_request_delivery() {
    server_round_trip(
        "rpc-request-delivery",
        ServerMessage::RpcRequest(RpcRequestDelivery {
            request_id: "req-1729825712500-1234".into(),
            channel_id: "api-service".into(),
            data: json!({"action": "get-user-profile", "params": {"userId": 123}}).into(),
            sender_conn_id: "conn-1729825712324-8472".into(),
            timeout_ms: 5000,
        }),
    );
}

/// The delivered `rpc-request` is not a valid client `rpc-request` echo: a
/// client that sends it back as-is still gets a well-formed request (the
/// extra `request-id` and `sender-conn-id` are ignored).
#[test]
fn rpc_request_delivery_sent_back_decodes_as_client_request() {
    let (text, _) = fixture("normative/rpc-request-delivery");
    let msg = decode_client(&text).expect("decodes");
    assert_eq!(
        msg,
        sente_lite_protocol::ClientMessage::RpcRequest {
            channel_id: "api-service".into(),
            data: json!({"action": "get-user-profile", "params": {"userId": 123}}).into(),
            timeout_ms: Some(5000),
        }
    );
}

#[test]
fn rpc_response_delivery() {
    server_round_trip(
        "rpc-response-delivery",
        ServerMessage::RpcResponse {
            request_id: "req-1729825712500-1234".into(),
            data: json!({"user": {"id": 123, "name": "Alice"}}).into(),
            error: false,
            responder_conn_id: None,
            responder_user_id: None,
        },
    );
}

#[test]
fn rpc_timeout_error() {
    server_round_trip(
        "rpc-timeout-error",
        ServerMessage::Error(ErrorFrame {
            message: "no rpc-response within 5000 ms".into(),
            reason: Reason::RpcTimeout,
            timestamp: 1_729_825_717_500,
            request_id: Some("req-1729825712500-1234".into()),
        }),
    );
}

/// No other subscriber: nothing is pending, so there is no `request-id`.
#[test]
fn rpc_request_result_no_subscribers() {
    server_round_trip(
        "rpc-request-result-no-subscribers",
        ServerMessage::RpcRequestResult {
            request_id: None,
            channel_id: "api-service".into(),
            delivery: Delivery {
                success: false,
                delivered_to: 0,
                subscribers: None,
                reason: Some(Reason::NoSubscribers),
            },
        },
    );
}

#[test]
fn subscription_result_failure() {
    server_round_trip(
        "subscription-result-failure",
        ServerMessage::SubscriptionResult {
            channel_id: "chat-room".into(),
            success: false,
            subscriber_count: None,
            retained_messages: None,
            retained_omitted: 0,
            offset: None,
            epoch: None,
            recovered: None,
            recovered_count: None,
            recover_reason: None,
            reason: Some(Reason::MaxSubscribersReached),
        },
    );
}

#[test]
fn unsubscription_result_failure() {
    server_round_trip(
        "unsubscription-result-failure",
        ServerMessage::UnsubscriptionResult {
            channel_id: "chat-room".into(),
            success: false,
            reason: Some(Reason::NotSubscribed),
        },
    );
}

#[test]
fn publish_result_failure() {
    server_round_trip(
        "publish-result-failure",
        ServerMessage::PublishResult {
            channel_id: "no-such-channel".into(),
            success: false,
            message_id: None,
            delivered_to: None,
            reason: Some(Reason::ChannelNotFound),
        },
    );
}

#[test]
fn rpc_response_result_failure() {
    server_round_trip(
        "rpc-response-result-failure",
        ServerMessage::RpcResponseResult {
            request_id: "req-1729825712500-9999".into(),
            success: false,
            reason: Some(Reason::RequestNotFound),
        },
    );
}

/// The error frame of an undecodable client frame is built from the
/// `DecodeError`: same reason, same message, no `request-id`.
#[test]
fn invalid_message_error() {
    let (value, msg) = server_fixture("normative/invalid-message-error");
    let err = decode_client(r#"{"type":"subscribe"}"#).expect_err("channel-id is missing");
    let ServerMessage::Error(from_decode) = ServerMessage::from(err) else {
        panic!("From<DecodeError> gives an error frame");
    };
    let ServerMessage::Error(fixture_frame) = &msg else {
        panic!("fixture is an error frame");
    };
    assert_eq!(from_decode.reason, fixture_frame.reason);
    assert_eq!(from_decode.message, fixture_frame.message);
    assert_eq!(from_decode.request_id, None);
    assert!(
        from_decode.timestamp > 1_700_000_000_000,
        "timestamp is now"
    );
    server_round_trip(
        "invalid-message-error",
        ServerMessage::Error(ErrorFrame {
            message: "missing field `channel-id`".into(),
            reason: Reason::InvalidMessage,
            timestamp: 1_729_825_712_500,
            request_id: None,
        }),
    );
    assert!(value.get("request-id").is_none());
}

/// A ping without `timestamp` (or with `null`) gets a pong without
/// `original-timestamp`.
#[test]
fn pong_without_timestamp() {
    server_round_trip(
        "pong-without-timestamp",
        ServerMessage::Pong {
            timestamp: 1_729_825_712_601,
            original_timestamp: None,
        },
    );
}

#[test]
fn http_errors() {
    for (name, expected) in [
        (
            "http-not-found",
            HttpError {
                error: "not-found".into(),
                reason: "not-found".into(),
                message: "no route for GET /nope".into(),
            },
        ),
        (
            "http-max-connections",
            HttpError {
                error: "service-unavailable".into(),
                reason: Reason::MaxConnectionsReached.as_str().into(),
                message: "the server has 1000 connections already".into(),
            },
        ),
    ] {
        let (text, value) = fixture(&format!("normative/{name}"));
        let body: HttpError = serde_json::from_str(&text).expect("decodes");
        assert_eq!(body, expected, "{name}");
        assert_eq!(reencoded(&body), value, "{name}");
    }
}

#[test]
fn http_stats_with_transport() {
    let (text, value) = fixture("normative/http-stats-with-transport");
    let stats: Stats = serde_json::from_str(&text).expect("decodes");
    assert_eq!(stats.channel_stats.active_connections, Some(2));
    assert_eq!(
        stats.transport,
        Some(TransportStats {
            connections_accepted: 5,
            connections_closed: 3,
            rejected_max_connections: 1,
            closed_slow_consumer: 0,
            closed_heartbeat_timeout: 1,
            closed_message_too_large: 0,
            frames_received: 10,
            frames_sent: 14,
            socket_writes: 12,
            error_frames_sent: 1,
            accept_errors: 0,
            handshake_timeouts: 0,
            handshakes_evicted: 0,
            pending_handshakes: 0,
            tls_handshake_failures: 0,
            rejected_http2: 0,
            rejected_origin: 0,
            rejected_max_connections_per_ip: 0,
            frames_rate_limited: 4,
            closed_rate_limited: 1,
            rejected_unauthorized: 2,
            closed_outbound_total: 0,
            conflated: 0,
            outbound_queued_bytes: 512,
            outbound_queued_bytes_limit: 8 << 20,
        })
    );
    assert!(stats.telemetry_stats.is_empty());
    assert_eq!(reencoded(&stats), value);
}

/// A transport section from an older or newer server with fewer or more
/// counters still decodes: missing counters are 0, unknown ones ignored.
#[test]
fn transport_stats_are_lenient() {
    let t: TransportStats =
        serde_json::from_value(json!({"frames-sent": 3, "future-counter": 9})).expect("decodes");
    assert_eq!(
        t,
        TransportStats {
            frames_sent: 3,
            ..TransportStats::default()
        }
    );
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn broadcast_to_all_adds_broadcast_true() {
    let frame = broadcast_frame(object(json!({"type": "announcement", "text": "hi"})));
    assert_eq!(
        Value::Object(frame),
        json!({"type": "announcement", "text": "hi", "broadcast": true})
    );
}

/// The server's flag wins over a caller's own `broadcast` key.
#[test]
fn broadcast_to_all_overrides_callers_broadcast_key() {
    let frame = broadcast_frame(object(json!({"broadcast": "yes"})));
    assert_eq!(Value::Object(frame), json!({"broadcast": true}));
}

#[test]
fn broadcast_to_channel_adds_channel_id_and_time() {
    let frame = channel_broadcast_frame(
        object(json!({"type": "price", "value": 42.5})),
        "prices",
        1_729_825_712_700,
    );
    assert_eq!(
        Value::Object(frame),
        json!({
            "type": "price",
            "value": 42.5,
            "channel-id": "prices",
            "broadcast-time": 1_729_825_712_700_i64
        })
    );
}

#[test]
fn every_normative_fixture_is_tested() {
    let tested = [
        "channel-message",
        "channel-message-server-publish",
        "http-max-connections",
        "http-not-found",
        "http-stats-with-transport",
        "invalid-message-error",
        "pong-without-timestamp",
        "publish-result-failure",
        "rpc-request-delivery",
        "rpc-request-result-no-subscribers",
        "rpc-response-delivery",
        "rpc-response-result-failure",
        "rpc-timeout-error",
        "subscription-result-failure",
        "unsubscription-result-failure",
    ];
    assert_eq!(common::fixture_names("normative"), tested);
}
