//! Property tests: encoding then decoding is the identity, and the decoder
//! never panics and always answers with one of its three reasons.

use proptest::prelude::*;
use proptest::sample::select;
use sente_lite_protocol::{
    decode_client, ChannelConfig, ChannelMessage, ChannelSummary, ClientMessage, Delivery,
    ErrorFrame, Position, Reason, RpcDispatch, RpcRequestDelivery, ServerMessage,
    SlowConsumerPolicy,
};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;

// ---- strategies ----------------------------------------------------------

/// Floats with a short exact decimal form (n/4), so that the JSON text
/// round trip is exact without serde_json's `float_roundtrip` feature.
fn arb_float() -> impl Strategy<Value = Value> {
    (-1_000_000_i64..1_000_000)
        .prop_map(|n| Number::from_f64(n as f64 / 4.0).map_or(Value::Null, Value::Number))
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        arb_float(),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Any JSON value but `null` (a `null` ping timestamp means "none").
fn arb_non_null_json() -> impl Strategy<Value = Value> {
    arb_json().prop_filter("not null", |v| !v.is_null())
}

fn arb_id() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9-]{1,24}"]
}

fn arb_reason() -> impl Strategy<Value = Reason> {
    select(Reason::ALL.to_vec())
}

fn arb_client() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (arb_id(), prop::option::of((any::<u64>(), arb_id()))).prop_map(|(channel_id, recover)| {
            ClientMessage::Subscribe {
                channel_id,
                recover: recover.map(|(offset, epoch)| Position { offset, epoch }),
            }
        }),
        (
            arb_id(),
            prop::option::of((any::<u64>(), arb_id())),
            any::<Option<u64>>()
        )
            .prop_map(|(channel_id, since, limit)| ClientMessage::History {
                channel_id,
                since: since.map(|(offset, epoch)| Position { offset, epoch }),
                limit,
            }),
        arb_id().prop_map(|channel_id| ClientMessage::Unsubscribe { channel_id }),
        (arb_id(), arb_json(), any::<bool>()).prop_map(|(channel_id, data, exclude_sender)| {
            ClientMessage::Publish {
                channel_id,
                data: data.into(),
                exclude_sender,
            }
        }),
        (arb_id(), arb_json(), any::<Option<u64>>()).prop_map(|(channel_id, data, timeout_ms)| {
            ClientMessage::RpcRequest {
                channel_id,
                data: data.into(),
                timeout_ms,
            }
        }),
        (arb_id(), arb_json(), any::<bool>()).prop_map(|(request_id, data, error)| {
            ClientMessage::RpcResponse {
                request_id,
                data: data.into(),
                error,
            }
        }),
        prop::option::of(arb_non_null_json())
            .prop_map(|timestamp| ClientMessage::Ping { timestamp }),
        Just(ClientMessage::ListChannels {
            limit: None,
            cursor: None
        }),
        Just(ClientMessage::GetSubscriptions),
        arb_id().prop_map(|channel_id| ClientMessage::Presence { channel_id }),
        arb_id().prop_map(|channel_id| ClientMessage::PresenceStats { channel_id }),
    ]
}

fn arb_channel_message() -> impl Strategy<Value = ChannelMessage> {
    (
        arb_id(),
        arb_id(),
        arb_json(),
        prop::option::of(arb_id()),
        any::<i64>(),
        (1..u64::MAX, arb_id()),
    )
        .prop_map(
            |(channel_id, message_id, data, sender_conn_id, published_at, (offset, epoch))| {
                ChannelMessage {
                    channel_id,
                    message_id,
                    data: data.into(),
                    sender_conn_id,
                    published_at,
                    offset,
                    epoch,
                }
            },
        )
}

fn arb_config() -> impl Strategy<Value = ChannelConfig> {
    (
        (any::<usize>(), any::<usize>(), any::<u64>(), any::<bool>()),
        (any::<usize>(), any::<u64>(), any::<bool>(), any::<bool>()),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (max_subscribers, message_retention, rpc_timeout_ms, telemetry_enabled),
                (history_size, history_ttl_ms, presence, join_leave),
                (one, latest),
            )| ChannelConfig {
                max_subscribers,
                message_retention,
                rpc_timeout_ms,
                telemetry_enabled,
                history_size,
                history_ttl_ms,
                presence,
                join_leave,
                rpc_dispatch: if one {
                    RpcDispatch::One
                } else {
                    RpcDispatch::All
                },
                on_slow_consumer: if latest {
                    SlowConsumerPolicy::Latest
                } else {
                    SlowConsumerPolicy::Close
                },
            },
        )
}

fn arb_channels() -> impl Strategy<Value = BTreeMap<String, ChannelSummary>> {
    prop::collection::btree_map(
        arb_id(),
        (arb_config(), any::<i64>(), any::<u64>(), any::<usize>()).prop_map(
            |(config, created_at, message_count, subscriber_count)| ChannelSummary {
                config,
                created_at,
                message_count,
                subscriber_count,
            },
        ),
        0..4,
    )
}

fn arb_server() -> impl Strategy<Value = ServerMessage> {
    let opt_reason = || prop::option::of(arb_reason());
    prop_oneof![
        (arb_id(), any::<i64>()).prop_map(|(conn_id, server_time)| ServerMessage::Welcome {
            conn_id,
            server_time,
            user_id: None,
        }),
        (
            arb_id(),
            any::<bool>(),
            any::<Option<usize>>(),
            prop::option::of(prop::collection::vec(arb_channel_message(), 0..4)),
            opt_reason(),
        )
            .prop_map(
                |(channel_id, success, subscriber_count, retained_messages, reason)| {
                    ServerMessage::SubscriptionResult {
                        channel_id,
                        success,
                        subscriber_count,
                        retained_messages,
                        retained_omitted: 0,
                        offset: None,
                        epoch: None,
                        recovered: None,
                        recovered_count: None,
                        recover_reason: None,
                        reason,
                    }
                }
            ),
        (
            arb_id(),
            any::<u64>(),
            arb_id(),
            any::<Option<bool>>(),
            any::<Option<usize>>(),
            opt_reason(),
        )
            .prop_map(
                |(channel_id, offset, epoch, recovered, recovered_count, recover_reason)| {
                    ServerMessage::SubscriptionResult {
                        channel_id,
                        success: true,
                        subscriber_count: Some(1),
                        retained_messages: Some(Vec::new()),
                        retained_omitted: 0,
                        offset: Some(offset),
                        epoch: Some(epoch),
                        recovered,
                        recovered_count,
                        recover_reason,
                        reason: None,
                    }
                }
            ),
        (
            arb_id(),
            any::<bool>(),
            prop::option::of(prop::collection::vec(arb_channel_message(), 0..4)),
            any::<Option<u64>>(),
            prop::option::of(arb_id()),
            opt_reason(),
        )
            .prop_map(|(channel_id, success, messages, offset, epoch, reason)| {
                ServerMessage::HistoryResult {
                    channel_id,
                    success,
                    messages,
                    offset,
                    epoch,
                    reason,
                }
            }),
        (arb_id(), any::<bool>(), opt_reason()).prop_map(|(channel_id, success, reason)| {
            ServerMessage::UnsubscriptionResult {
                channel_id,
                success,
                reason,
            }
        }),
        (
            arb_id(),
            any::<bool>(),
            prop::option::of(arb_id()),
            any::<Option<usize>>(),
            opt_reason(),
        )
            .prop_map(|(channel_id, success, message_id, delivered_to, reason)| {
                ServerMessage::PublishResult {
                    channel_id,
                    success,
                    message_id,
                    delivered_to,
                    reason,
                }
            }),
        (
            prop::option::of(arb_id()),
            arb_id(),
            any::<bool>(),
            any::<usize>(),
            prop::option::of(prop::collection::vec(arb_id(), 0..4)),
            opt_reason(),
        )
            .prop_map(
                |(request_id, channel_id, success, delivered_to, subscribers, reason)| {
                    ServerMessage::RpcRequestResult {
                        request_id,
                        channel_id,
                        delivery: Delivery {
                            success,
                            delivered_to,
                            subscribers,
                            reason,
                        },
                    }
                }
            ),
        (arb_id(), any::<bool>(), opt_reason()).prop_map(|(request_id, success, reason)| {
            ServerMessage::RpcResponseResult {
                request_id,
                success,
                reason,
            }
        }),
        (any::<i64>(), prop::option::of(arb_non_null_json())).prop_map(
            |(timestamp, original_timestamp)| ServerMessage::Pong {
                timestamp,
                original_timestamp,
            }
        ),
        arb_channels().prop_map(|channels| ServerMessage::ChannelList {
            channels,
            next_cursor: None
        }),
        prop::collection::vec(arb_id(), 0..5)
            .prop_map(|subscriptions| ServerMessage::SubscriptionList { subscriptions }),
        arb_channel_message().prop_map(ServerMessage::ChannelMessage),
        (arb_id(), arb_id(), arb_json(), arb_id(), any::<u64>()).prop_map(
            |(request_id, channel_id, data, sender_conn_id, timeout_ms)| {
                ServerMessage::RpcRequest(RpcRequestDelivery {
                    request_id,
                    channel_id,
                    data: data.into(),
                    sender_conn_id,
                    timeout_ms,
                })
            }
        ),
        (arb_id(), arb_json(), any::<bool>()).prop_map(|(request_id, data, error)| {
            ServerMessage::RpcResponse {
                request_id,
                data: data.into(),
                error,
                responder_conn_id: None,
                responder_user_id: None,
            }
        }),
        (
            any::<String>(),
            arb_reason(),
            any::<i64>(),
            prop::option::of(arb_id())
        )
            .prop_map(
                |(message, reason, timestamp, request_id)| ServerMessage::Error(ErrorFrame {
                    message,
                    reason,
                    timestamp,
                    request_id,
                })
            ),
    ]
}

const CLIENT_TYPES: [&str; 8] = [
    "subscribe",
    "unsubscribe",
    "publish",
    "rpc-request",
    "rpc-response",
    "ping",
    "list-channels",
    "get-subscriptions",
];

const FIELDS: [&str; 7] = [
    "channel-id",
    "data",
    "exclude-sender",
    "timeout-ms",
    "request-id",
    "error",
    "timestamp",
];

/// JSON objects that look like client frames: a `type` that is mostly a
/// real one (or any JSON value, or absent) and known fields with random
/// values, so that the decoder's field checks are exercised, not only its
/// JSON parser.
fn arb_frame_like() -> impl Strategy<Value = String> {
    let ty = prop_oneof![
        4 => select(CLIENT_TYPES.to_vec()).prop_map(Value::from),
        1 => arb_json(),
    ];
    let field_value = prop_oneof![
        arb_json(),
        arb_id().prop_map(Value::String),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
    ];
    (
        prop::option::of(ty),
        prop::collection::btree_map(select(FIELDS.to_vec()), field_value, 0..7),
    )
        .prop_map(|(ty, fields)| {
            let mut obj: Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Some(ty) = ty {
                obj.insert("type".into(), ty);
            }
            Value::Object(obj).to_string()
        })
}

/// The decoder's answer is Ok or one of its three reasons, and an error's
/// message is not empty.
fn check_decode(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = decode_client(text) {
        prop_assert!(
            matches!(
                e.reason,
                Reason::InvalidJson | Reason::InvalidMessage | Reason::UnknownMessageType
            ),
            "unexpected reason {} for {text:?}",
            e.reason
        );
        prop_assert!(!e.message.is_empty());
    }
    Ok(())
}

// ---- properties ----------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A client message serialized with serde decodes back to itself.
    #[test]
    fn client_encode_decode_is_identity(msg in arb_client()) {
        let text = serde_json::to_string(&msg).expect("serializes");
        let back = decode_client(&text);
        prop_assert_eq!(back, Ok(msg));
    }

    /// A server message survives a serde round trip through JSON text, both
    /// with `serde_json::to_string` and with `to_json`.
    #[test]
    fn server_serde_round_trip(msg in arb_server()) {
        let text = serde_json::to_string(&msg).expect("serializes");
        let back: ServerMessage = serde_json::from_str(&text).expect("deserializes");
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(msg.to_json(), text);
    }

    /// Every server frame is a JSON object whose `type` is kebab-case.
    #[test]
    fn server_frames_are_tagged_objects(msg in arb_server()) {
        let value: Value = serde_json::from_str(&msg.to_json()).expect("JSON");
        let ty = value.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        prop_assert!(!ty.is_empty());
        prop_assert!(ty.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{}", ty);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_decode(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        check_decode(&text)?;
    }

    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        check_decode(&value.to_string())?;
    }

    #[test]
    fn frame_like_objects_never_panic(text in arb_frame_like()) {
        check_decode(&text)?;
    }

    /// Any prefix of a valid frame (cut at a character boundary) is refused
    /// as `invalid-json` or decodes (only the whole frame can).
    #[test]
    fn truncated_frames_are_invalid_json(msg in arb_client(), cut in any::<prop::sample::Index>()) {
        let text = serde_json::to_string(&msg).expect("serializes");
        let mut end = cut.index(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let prefix = &text[..end];
        match decode_client(prefix) {
            Ok(_) => prop_assert_eq!(prefix, text.as_str()),
            Err(e) => prop_assert_eq!(e.reason, Reason::InvalidJson),
        }
    }

    /// Extra unknown fields never change what a valid frame decodes to.
    #[test]
    fn unknown_fields_are_ignored(
        msg in arb_client(),
        extra in prop::collection::btree_map("x-[a-z]{1,8}", arb_json(), 1..4),
    ) {
        let mut value = serde_json::to_value(&msg).expect("serializes");
        let obj = value.as_object_mut().expect("object");
        for (k, v) in extra {
            obj.insert(k, v);
        }
        prop_assert_eq!(decode_client(&value.to_string()), Ok(msg));
    }

    /// Replacing a field of a valid frame by a JSON value of another kind is
    /// refused as `invalid-message` naming that field, except `data` and
    /// `timestamp`, which take any value.
    #[test]
    fn ill_typed_fields_are_named(msg in arb_client(), wrong in arb_json(), pick in any::<prop::sample::Index>()) {
        let mut value = serde_json::to_value(&msg).expect("serializes");
        let obj = value.as_object_mut().expect("object");
        let fields: Vec<String> = obj
            .keys()
            .filter(|k| !matches!(k.as_str(), "type" | "data" | "timestamp"))
            .cloned()
            .collect();
        prop_assume!(!fields.is_empty());
        let field = pick.get(&fields).clone();
        let old = obj.get(&field).cloned().unwrap_or(Value::Null);
        let same_kind = std::mem::discriminant(&old) == std::mem::discriminant(&wrong);
        // null for an optional field means "absent"; u64 for a u64 is fine.
        prop_assume!(!same_kind && !wrong.is_null());
        obj.insert(field.clone(), wrong);
        let err = decode_client(&value.to_string());
        prop_assert!(err.is_err(), "{} accepted", value);
        if let Err(e) = err {
            prop_assert_eq!(e.reason, Reason::InvalidMessage);
            prop_assert!(e.message.contains(&format!("`{field}`")), "{}", e.message);
        }
    }
}
