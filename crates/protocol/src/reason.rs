use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an operation failed or a frame was refused.
///
/// Each variant is a stable kebab-case string on the wire (the `reason` field
/// of error frames and of `"success": false` results). New reasons may be
/// added; existing ones never change spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The text frame is not JSON.
    InvalidJson,
    /// JSON, but not a valid message: not an object, or a field is missing or
    /// has the wrong type (the error's `message` names the field).
    InvalidMessage,
    /// The `type` field names no message this server knows.
    UnknownMessageType,
    /// A binary WebSocket frame; only text frames are accepted.
    BinaryNotSupported,
    /// A frame larger than the server's `max-message-bytes`.
    MessageTooLarge,
    /// The channel does not exist and auto-create is off.
    ChannelNotFound,
    /// The channel already exists (Rust API `create_channel` only).
    ChannelExists,
    /// A channel id that is empty or longer than the server allows.
    InvalidChannelId,
    /// The channel has its `max-subscribers` already.
    MaxSubscribersReached,
    /// Creating the channel would pass the server's `max-channels`.
    MaxChannelsReached,
    /// The connection has `max-subscriptions-per-connection` already.
    MaxSubscriptionsReached,
    /// Unsubscribe from a channel the connection is not subscribed to.
    NotSubscribed,
    /// An `rpc-response` for a request that is unknown, answered or expired.
    RequestNotFound,
    /// An `rpc-request` to a channel with no subscriber but the requester.
    NoSubscribers,
    /// Too many RPC requests in flight, for the requester or for the whole
    /// server.
    MaxPendingRpcReached,
    /// No `rpc-response` arrived within the request's `timeout-ms`.
    RpcTimeout,
    /// The server has `max-connections` already.
    MaxConnectionsReached,
    /// The client's address has `max-connections-per-ip` already (an
    /// upgrade refused with HTTP 429).
    MaxConnectionsPerIpReached,
    /// A browser's WebSocket upgrade whose `Origin` is not in the server's
    /// `allowed-origins` (HTTP 403).
    ForbiddenOrigin,
    /// The connection did not read its messages fast enough and was closed.
    SlowConsumer,
    /// The client sent more than it is allowed to.
    RateLimited,
    /// Authentication is required.
    Unauthorized,
    /// The client may not do this.
    Forbidden,
    /// The target connection does not exist (Rust API `send_to_connection`).
    ConnectionNotFound,
    /// The broker that joins the server's nodes (Redis) cannot be reached
    /// now; the operation did not happen. Retry later.
    BrokerUnavailable,
    /// The connection's token expired (close code 4002).
    TokenExpired,
    /// A stream position (`recover`, `since`) of another epoch than the
    /// channel's: the history it was taken in is gone.
    EpochChanged,
    /// A stream position older than the channel's history reaches back
    /// (trimmed, expired, or more than `max-recovery-messages` behind).
    TooFarBehind,
    /// `presence` or `presence-stats` for a channel whose `presence` is off.
    PresenceDisabled,
}

impl Reason {
    /// The wire spelling, e.g. `"channel-not-found"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid-json",
            Reason::InvalidMessage => "invalid-message",
            Reason::UnknownMessageType => "unknown-message-type",
            Reason::BinaryNotSupported => "binary-not-supported",
            Reason::MessageTooLarge => "message-too-large",
            Reason::ChannelNotFound => "channel-not-found",
            Reason::ChannelExists => "channel-exists",
            Reason::InvalidChannelId => "invalid-channel-id",
            Reason::MaxSubscribersReached => "max-subscribers-reached",
            Reason::MaxChannelsReached => "max-channels-reached",
            Reason::MaxSubscriptionsReached => "max-subscriptions-reached",
            Reason::NotSubscribed => "not-subscribed",
            Reason::RequestNotFound => "request-not-found",
            Reason::NoSubscribers => "no-subscribers",
            Reason::MaxPendingRpcReached => "max-pending-rpc-reached",
            Reason::RpcTimeout => "rpc-timeout",
            Reason::MaxConnectionsReached => "max-connections-reached",
            Reason::MaxConnectionsPerIpReached => "max-connections-per-ip-reached",
            Reason::ForbiddenOrigin => "forbidden-origin",
            Reason::SlowConsumer => "slow-consumer",
            Reason::RateLimited => "rate-limited",
            Reason::Unauthorized => "unauthorized",
            Reason::Forbidden => "forbidden",
            Reason::ConnectionNotFound => "connection-not-found",
            Reason::BrokerUnavailable => "broker-unavailable",
            Reason::TokenExpired => "token-expired",
            Reason::EpochChanged => "epoch-changed",
            Reason::TooFarBehind => "too-far-behind",
            Reason::PresenceDisabled => "presence-disabled",
        }
    }

    /// Every reason, for documentation and exhaustive tests.
    pub const ALL: [Reason; 29] = [
        Reason::InvalidJson,
        Reason::InvalidMessage,
        Reason::UnknownMessageType,
        Reason::BinaryNotSupported,
        Reason::MessageTooLarge,
        Reason::ChannelNotFound,
        Reason::ChannelExists,
        Reason::InvalidChannelId,
        Reason::MaxSubscribersReached,
        Reason::MaxChannelsReached,
        Reason::MaxSubscriptionsReached,
        Reason::NotSubscribed,
        Reason::RequestNotFound,
        Reason::NoSubscribers,
        Reason::MaxPendingRpcReached,
        Reason::RpcTimeout,
        Reason::MaxConnectionsReached,
        Reason::MaxConnectionsPerIpReached,
        Reason::ForbiddenOrigin,
        Reason::SlowConsumer,
        Reason::RateLimited,
        Reason::Unauthorized,
        Reason::Forbidden,
        Reason::ConnectionNotFound,
        Reason::BrokerUnavailable,
        Reason::TokenExpired,
        Reason::EpochChanged,
        Reason::TooFarBehind,
        Reason::PresenceDisabled,
    ];
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde_spelling() {
        for r in Reason::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            let back: Reason = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r);
        }
    }
}
