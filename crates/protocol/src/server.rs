//! Server → client messages.

use crate::{ChannelConfig, Data, Reason};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A message published to a channel, as every subscriber receives it and as
/// `retained-messages` replays it.
///
/// On its own this struct serializes without `type`; the frame on the wire is
/// [`ServerMessage::ChannelMessage`], which adds `"type": "channel-message"`.
/// Each entry of `retained-messages` carries that `type` too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChannelMessage {
    pub channel_id: String,
    pub message_id: String,
    /// The publisher's `data`, byte for byte as it was sent.
    pub data: Data,
    /// The publishing connection; `null` for a server-side publish.
    pub sender_conn_id: Option<String>,
    pub published_at: i64,
    /// The message's position in its channel's stream: 1 for the first
    /// message of an epoch, one more for each message after it. 0 (left out
    /// on the wire) only for messages from servers that had no streams.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// The stream's epoch: it changes when the channel's history is lost
    /// (the channel was deleted and created again, or its broker lost it),
    /// so that an `offset` is only compared within one epoch. Empty (left
    /// out) together with offset 0.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
}

impl ChannelMessage {
    /// Reads a `channel-message` frame (or a `retained-messages` entry)
    /// keeping its `data` byte for byte, as the sender spelled it. (The
    /// derived `Deserialize` reads `data` through a tree, which is right
    /// for any deserializer but normalizes its spelling.) The `type` key
    /// and unknown keys are ignored.
    pub fn from_frame(text: &str) -> Result<ChannelMessage, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct Frame<'a> {
            channel_id: String,
            message_id: String,
            #[serde(borrow)]
            data: &'a serde_json::value::RawValue,
            sender_conn_id: Option<String>,
            published_at: i64,
            #[serde(default)]
            offset: u64,
            #[serde(default)]
            epoch: String,
        }
        let f: Frame<'_> = serde_json::from_str(text)?;
        Ok(ChannelMessage {
            channel_id: f.channel_id,
            message_id: f.message_id,
            data: Data::from_raw(f.data.to_owned()),
            sender_conn_id: f.sender_conn_id,
            published_at: f.published_at,
            offset: f.offset,
            epoch: f.epoch,
        })
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

/// An `rpc-request` as the channel's workers receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RpcRequestDelivery {
    pub request_id: String,
    pub channel_id: String,
    /// The requester's `data`, byte for byte.
    pub data: Data,
    pub sender_conn_id: String,
    pub timeout_ms: u64,
}

/// The `delivery` object of an `rpc-request-result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Delivery {
    pub success: bool,
    pub delivered_to: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// One subscribed connection in `presence-result`: its user and the
/// `info` of its token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClientInfo {
    /// The connection's user id (`null` for an anonymous connection).
    pub user_id: Option<String>,
    /// The token's `info` claim, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

/// One channel in `channel-list` and `GET /channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChannelSummary {
    pub config: ChannelConfig,
    pub created_at: i64,
    pub message_count: u64,
    pub subscriber_count: usize,
}

/// The `error` frame: sent only for frames the server could not understand
/// or refused before processing them (`unauthorized`, `token-expired`,
/// `rate-limited`), and for RPC timeouts (with `request-id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ErrorFrame {
    pub message: String,
    pub reason: Reason,
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Every typed message the server sends. Broadcasts from the Rust API carry
/// the caller's own JSON object instead; see [`broadcast_frame`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// First frame on every connection; `user-id` when the upgrade carried
    /// an accepted token.
    #[serde(rename_all = "kebab-case")]
    Welcome {
        conn_id: String,
        server_time: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    /// Answer to `authenticate`. On success: `user-id` and, when the token
    /// has an `exp`, `expires-at` (ms since the epoch). On failure: `reason`.
    #[serde(rename_all = "kebab-case")]
    AuthenticateResult {
        success: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    /// Answer to `subscribe`. On success: `subscriber-count` and the retained
    /// messages, oldest first. On failure: `reason`.
    #[serde(rename_all = "kebab-case")]
    SubscriptionResult {
        channel_id: String,
        success: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscriber_count: Option<usize>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            serialize_with = "retained::serialize"
        )]
        retained_messages: Option<Vec<ChannelMessage>>,
        /// Retained messages left out of `retained-messages` because the
        /// replay would not fit the subscriber's outbound queue (the newest
        /// are kept). Only present when more than 0.
        #[serde(default, skip_serializing_if = "is_zero_usize")]
        retained_omitted: usize,
        /// The channel's stream position the subscription starts after
        /// (on success): keep it, with each message's own, to `recover`
        /// later.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// The epoch of `offset`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        /// Only when the subscribe asked to `recover`: whether every
        /// message after the given position follows this frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// How many `channel-message` frames follow, recovered (when
        /// `recovered` is true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered_count: Option<usize>,
        /// Why it could not recover (when `recovered` is false):
        /// `epoch-changed` or `too-far-behind`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recover_reason: Option<Reason>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    /// Answer to `unsubscribe`.
    #[serde(rename_all = "kebab-case")]
    UnsubscriptionResult {
        channel_id: String,
        success: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    /// Answer to `publish`.
    #[serde(rename_all = "kebab-case")]
    PublishResult {
        channel_id: String,
        success: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered_to: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    /// Answer to `rpc-request`.
    #[serde(rename_all = "kebab-case")]
    RpcRequestResult {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        channel_id: String,
        delivery: Delivery,
    },
    /// Answer to `rpc-response`, sent to the worker that responded.
    #[serde(rename_all = "kebab-case")]
    RpcResponseResult {
        request_id: String,
        success: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    /// Answer to `ping`.
    #[serde(rename_all = "kebab-case")]
    Pong {
        timestamp: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        original_timestamp: Option<Value>,
    },
    /// Answer to `list-channels`.
    #[serde(rename_all = "kebab-case")]
    ChannelList {
        channels: BTreeMap<String, ChannelSummary>,
        /// Present when more channels follow: send it back as `cursor`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_cursor: Option<String>,
    },
    /// Answer to `get-subscriptions`.
    #[serde(rename_all = "kebab-case")]
    SubscriptionList { subscriptions: Vec<String> },
    /// Answer to `history`. On success: `messages` (complete
    /// `channel-message` frames, oldest first) and the channel's current
    /// `offset` and `epoch`. On failure: `reason`, and the channel's
    /// `offset` and `epoch` when the failure was about the position
    /// (`epoch-changed`, `too-far-behind`).
    #[serde(rename_all = "kebab-case")]
    HistoryResult {
        channel_id: String,
        success: bool,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            serialize_with = "retained::serialize"
        )]
        messages: Option<Vec<ChannelMessage>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    /// Answer to `presence`: the channel's subscribed connections, by
    /// connection id, on every node.
    #[serde(rename_all = "kebab-case")]
    PresenceResult {
        channel_id: String,
        success: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clients: Option<BTreeMap<String, ClientInfo>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    /// Answer to `presence-stats`: how many connections are subscribed and
    /// how many distinct users they are (anonymous connections are no
    /// user).
    #[serde(rename_all = "kebab-case")]
    PresenceStatsResult {
        channel_id: String,
        success: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clients: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        users: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Reason>,
    },
    /// A connection subscribed to a `join-leave` channel.
    #[serde(rename_all = "kebab-case")]
    Join {
        channel_id: String,
        conn_id: String,
        user_id: Option<String>,
    },
    /// A connection left a `join-leave` channel (unsubscribed,
    /// disconnected, or its node died).
    #[serde(rename_all = "kebab-case")]
    Leave {
        channel_id: String,
        conn_id: String,
        user_id: Option<String>,
    },
    /// A message published to a subscribed channel.
    ChannelMessage(ChannelMessage),
    /// An RPC request for a worker subscribed to the channel.
    RpcRequest(RpcRequestDelivery),
    /// The worker's answer, routed to the requester.
    #[serde(rename_all = "kebab-case")]
    RpcResponse {
        request_id: String,
        /// The worker's `data`, byte for byte.
        data: Data,
        error: bool,
        /// The connection that answered (`conn-…`, `@node` in a cluster).
        /// Absent only in frames from servers that did not name it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        responder_conn_id: Option<String>,
        /// The answering connection's user id, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        responder_user_id: Option<String>,
    },
    /// A frame the server could not understand, or an RPC timeout.
    Error(ErrorFrame),
}

/// `retained-messages` is an array of complete `channel-message` frames, so
/// that a client handles a replayed message exactly like a live one. The
/// derived `Deserialize` of [`ChannelMessage`] ignores the `type` key.
mod retained {
    use super::ChannelMessage;
    use serde::{Serialize, Serializer};

    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "kebab-case")]
    enum Tagged<'a> {
        ChannelMessage(&'a ChannelMessage),
    }

    pub(super) fn serialize<S: Serializer>(
        messages: &Option<Vec<ChannelMessage>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match messages {
            Some(list) => serializer.collect_seq(list.iter().map(Tagged::ChannelMessage)),
            None => serializer.serialize_none(),
        }
    }
}

impl ServerMessage {
    /// Serializes the frame. Our types always serialize (every map key is a
    /// string), so this cannot fail.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // Unreachable for these types; answer with a well-formed frame
            // rather than panic.
            format!(
                r#"{{"type":"error","reason":"invalid-message","message":"encode failed: {}","timestamp":{}}}"#,
                e.to_string().replace('"', "'"),
                crate::now_ms()
            )
        })
    }

    /// An error frame with the current time.
    pub fn error(reason: Reason, message: impl Into<String>, request_id: Option<String>) -> Self {
        ServerMessage::Error(ErrorFrame {
            message: message.into(),
            reason,
            timestamp: crate::now_ms(),
            request_id,
        })
    }
}

impl From<crate::DecodeError> for ServerMessage {
    fn from(e: crate::DecodeError) -> Self {
        ServerMessage::error(e.reason, e.message, None)
    }
}

/// The frame of a server broadcast to every connection: the caller's object
/// with `"broadcast": true` added.
pub fn broadcast_frame(mut message: Map<String, Value>) -> Map<String, Value> {
    message.insert("broadcast".to_owned(), Value::Bool(true));
    message
}

/// The frame of a server broadcast to one channel's subscribers: the caller's
/// object with `channel-id` and `broadcast-time` added.
pub fn channel_broadcast_frame(
    mut message: Map<String, Value>,
    channel_id: &str,
    broadcast_time: i64,
) -> Map<String, Value> {
    message.insert(
        "channel-id".to_owned(),
        Value::String(channel_id.to_owned()),
    );
    message.insert("broadcast-time".to_owned(), Value::from(broadcast_time));
    message
}
