//! The engine's own snapshot types. The transport maps them to the HTTP
//! bodies of `sente-lite-protocol`; the engine knows nothing of HTTP.

use crate::broker::BrokerHealth;
use sente_lite_protocol::Reason;
use std::collections::BTreeMap;

/// Running totals since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Messages published (client and server side).
    pub published: u64,
    /// Frames accepted by subscribers' sinks (publishes, broadcasts, RPC).
    pub deliveries: u64,
    /// Frames a sink refused because its queue was full.
    pub deliveries_full: u64,
    /// RPC requests delivered to at least one worker.
    pub rpc_requests: u64,
    /// RPC responses routed to their requester.
    pub rpc_responses: u64,
    /// RPC requests that timed out.
    pub rpc_expired: u64,
}

/// What the engine's memory limits did, for `/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitStats {
    /// Bytes of retained messages held now (this node's; a Redis node
    /// keeps none).
    pub retained_bytes: usize,
    /// Retained messages dropped early to keep `max-retained-bytes` or
    /// `max-retained-bytes-total`.
    pub retained_evicted: u64,
    /// Retained messages left out of joins' replays (they did not fit the
    /// subscriber's queue, or passed `max-retained-bytes`).
    pub retained_omitted: u64,
    /// Auto-created channels removed after `idle-channel-ttl-ms` with no
    /// subscriber.
    pub idle_channels_removed: u64,
    /// Missed messages sent to subscribers that recovered.
    pub recovered: u64,
    /// Recoveries that could not be made (`epoch-changed`,
    /// `too-far-behind`: past `max-recovery-messages`, out of the history,
    /// or more than the subscriber's queue takes).
    pub recoveries_missed: u64,
    /// `rpc-dispatch = one` requests sent to another worker after theirs
    /// left.
    pub rpc_redispatched: u64,
}

/// One channel's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelStat {
    /// Subscribers now.
    pub subscriber_count: usize,
    /// Messages published to it.
    pub message_count: u64,
    /// When it was created (ms since the Unix epoch).
    pub created_at: i64,
    /// Its `message-retention`.
    pub retention_count: usize,
}

/// Statistics per channel and in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    /// Per channel, by id.
    pub channels: BTreeMap<String, ChannelStat>,
    /// Channels now.
    pub total_channels: usize,
    /// Subscriptions now, across channels.
    pub total_subscriptions: usize,
    /// RPC requests waiting for a response.
    pub pending_rpc_requests: usize,
    /// Connections of this node.
    pub active_connections: usize,
    /// Operations refused since start, by reason (reasons never seen left
    /// out): the stat of every engine limit.
    pub rejected: BTreeMap<Reason, u64>,
    /// What the memory limits did.
    pub limits: LimitStats,
}

/// The engine's view of its own health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineHealth {
    /// Whether it serves as it should: the broker is up and RPC timeouts
    /// keep up.
    pub healthy: bool,
    /// Channels now.
    pub total_channels: usize,
    /// Subscriptions now, across channels.
    pub total_subscriptions: usize,
    /// RPC requests waiting for a response.
    pub pending_rpc_requests: usize,
    /// Pending requests more than a second past their deadline (the timer
    /// is not keeping up). Normally 0.
    pub old_rpc_requests: usize,
    /// The broker's state.
    pub broker: BrokerHealth,
}
