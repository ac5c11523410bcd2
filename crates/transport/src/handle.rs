//! Routing one client text frame to the engine and answering it.

use crate::conn::ConnSink;
use crate::stats::Counters;
use crate::{events, Shared};
use sente_lite_channels::{ConnId, Frame, RpcSent, Subscribed};
use sente_lite_protocol::{decode_client, now_ms, ClientMessage, Delivery, ServerMessage};
use std::sync::atomic::Ordering;
use telemere_lite::{event, Level};

/// Handles one text frame from `conn`. Every reply goes through the
/// connection's own queue, so it is ordered with the deliveries around it.
pub(crate) fn text(shared: &Shared, conn: ConnId, sink: &ConnSink, text: &str) {
    Counters::bump(&shared.counters.frames_received);
    let tel = &shared.telemetry;
    event!(tel: tel, level: Level::Trace, events::WEBSOCKET_MESSAGE_RECEIVED,
        serde_json::json!({"conn-id": conn.to_string(), "bytes": text.len()}));
    let msg = match decode_client(text) {
        Ok(m) => m,
        Err(e) => {
            shared
                .counters
                .error_frames_sent
                .fetch_add(1, Ordering::Relaxed);
            event!(tel: tel, level: Level::Debug, events::MESSAGE_PROCESSED, serde_json::json!({
                "conn-id": conn.to_string(), "error": e.reason, "message": &e.message}));
            sink.reply(&ServerMessage::from(e));
            return;
        }
    };
    let ty = msg.type_name();
    event!(tel: tel, level: Level::Trace, events::MESSAGE_ROUTING,
        serde_json::json!({"conn-id": conn.to_string(), "type": ty}));
    let reply = route(shared, conn, msg);
    event!(tel: tel, level: Level::Trace, events::MESSAGE_PROCESSED, serde_json::json!({
        "conn-id": conn.to_string(), "type": ty}));
    if let Some(reply) = reply {
        sink.reply(&reply);
    }
}

fn route(shared: &Shared, conn: ConnId, msg: ClientMessage) -> Option<ServerMessage> {
    let engine = &shared.engine;
    match msg {
        ClientMessage::Subscribe { channel_id } => {
            let ok = |s: &Subscribed| {
                Frame::new(
                    ServerMessage::SubscriptionResult {
                        channel_id: channel_id.clone(),
                        success: true,
                        subscriber_count: Some(s.subscriber_count),
                        retained_messages: Some(s.retained_messages.clone()),
                        reason: None,
                    }
                    .to_json(),
                )
            };
            // On success the engine queues the result itself, before any
            // message published after the subscription.
            match engine.subscribe_with_reply(conn, &channel_id, Some(&ok)) {
                Ok(_) => None,
                Err(e) => Some(ServerMessage::SubscriptionResult {
                    channel_id,
                    success: false,
                    subscriber_count: None,
                    retained_messages: None,
                    reason: Some(e.reason()),
                }),
            }
        }
        ClientMessage::Unsubscribe { channel_id } => {
            let r = engine.unsubscribe(conn, &channel_id);
            Some(ServerMessage::UnsubscriptionResult {
                channel_id,
                success: r.is_ok(),
                reason: r.err().map(|e| e.reason()),
            })
        }
        ClientMessage::Publish {
            channel_id,
            data,
            exclude_sender,
        } => Some(
            match engine.publish(Some(conn), &channel_id, data, exclude_sender) {
                Ok(p) => ServerMessage::PublishResult {
                    channel_id,
                    success: true,
                    message_id: Some(p.message_id),
                    delivered_to: Some(p.delivered_to),
                    reason: None,
                },
                Err(e) => ServerMessage::PublishResult {
                    channel_id,
                    success: false,
                    message_id: None,
                    delivered_to: None,
                    reason: Some(e.reason()),
                },
            },
        ),
        ClientMessage::RpcRequest {
            channel_id,
            data,
            timeout_ms,
        } => {
            let ok = |sent: &RpcSent| {
                Frame::new(
                    ServerMessage::RpcRequestResult {
                        request_id: Some(sent.request_id.clone()),
                        channel_id: channel_id.clone(),
                        delivery: Delivery {
                            success: true,
                            delivered_to: sent.delivered_to,
                            subscribers: Some(sent.subscribers.clone()),
                            reason: None,
                        },
                    }
                    .to_json(),
                )
            };
            // On success the engine queues the result itself, before any
            // response or timeout of the request can reach us.
            match engine.send_rpc_request_with_reply(conn, &channel_id, data, timeout_ms, Some(&ok))
            {
                Ok(_) => None,
                Err(e) => Some(ServerMessage::RpcRequestResult {
                    request_id: None,
                    channel_id,
                    delivery: Delivery {
                        success: false,
                        delivered_to: 0,
                        subscribers: None,
                        reason: Some(e.reason()),
                    },
                }),
            }
        }
        ClientMessage::RpcResponse {
            request_id,
            data,
            error,
        } => {
            let r = engine.send_rpc_response(&request_id, data, error);
            Some(ServerMessage::RpcResponseResult {
                request_id,
                success: r.is_ok(),
                reason: r.err().map(|e| e.reason()),
            })
        }
        ClientMessage::Ping { timestamp } => Some(ServerMessage::Pong {
            timestamp: now_ms(),
            original_timestamp: timestamp,
        }),
        ClientMessage::ListChannels => Some(ServerMessage::ChannelList {
            channels: engine.list_channels(),
        }),
        ClientMessage::GetSubscriptions => {
            // The connection is registered for as long as its task runs.
            let subscriptions = engine.subscriptions(conn).unwrap_or_default();
            Some(ServerMessage::SubscriptionList { subscriptions })
        }
    }
}
