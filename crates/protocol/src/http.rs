//! JSON bodies of the HTTP endpoints `GET /health`, `GET /stats` and
//! `GET /channels`, and of HTTP errors.

use crate::ChannelSummary;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `GET /health`: 200 when `status` is `"healthy"`, 503 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Health {
    pub status: String,
    pub connections: usize,
    pub channels: usize,
    pub system_health: SystemHealth,
    pub uptime_ms: u64,
    /// The broker that joins this node to others, and what it sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerStatus>,
}

/// The broker's state (`broker` in `/health` and `/stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BrokerStatus {
    /// `local` or `redis`.
    pub kind: String,
    /// Whether it can serve now.
    pub healthy: bool,
    /// `in-process`, `connecting`, `connected` or `reconnecting`.
    pub state: String,
    /// This node's id (`null` with the local broker).
    pub node_id: Option<String>,
    /// The live nodes it sees, this one included.
    pub nodes: Vec<String>,
    /// Its last error while it is not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its running totals since start (`reconnects`, ...); empty for the
    /// local broker.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
}

/// The engine's view of its own health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SystemHealth {
    pub healthy: bool,
    pub total_channels: usize,
    pub total_subscriptions: usize,
    pub pending_rpc_requests: usize,
    /// Pending requests already past their timeout (the sweeper has not run
    /// yet). Normally 0.
    pub old_rpc_requests: usize,
}

/// `GET /stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Stats {
    pub active_connections: usize,
    /// Client frames received since start.
    pub total_messages: u64,
    /// The running configuration (at least `port` and `host`).
    pub server_config: Value,
    pub channel_stats: ChannelStats,
    /// Per telemetry handler id.
    pub telemetry_stats: BTreeMap<String, HandlerStats>,
    /// Connection-level counters; absent in the seed's example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportStats>,
    /// The broker's state; absent in the seed's example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerStatus>,
}

/// The channel engine's statistics (`channel-stats` in `/stats`). The
/// counters of the engine's limits (`rejected`, `retained-*`,
/// `idle-channels-removed`) are left out while they are 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChannelStats {
    pub channels: BTreeMap<String, ChannelStatsEntry>,
    pub total_channels: usize,
    pub total_subscriptions: usize,
    pub pending_rpc_requests: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_connections: Option<usize>,
    /// Operations refused since start, by reason (`max-subscribers-reached`,
    /// `max-channels-reached`, ...); reasons never seen are left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected: BTreeMap<crate::Reason, u64>,
    /// Bytes of retained messages this node holds now (0 on a Redis node:
    /// they live in Redis).
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub retained_bytes: usize,
    /// Retained messages dropped early to keep `channels.max-retained-bytes`
    /// or `channels.max-retained-bytes-total`.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub retained_evicted: u64,
    /// Retained messages left out of subscribers' replays
    /// (`retained-omitted`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub retained_omitted: u64,
    /// Auto-created channels removed after `channels.idle-channel-ttl-ms`
    /// with no subscriber.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub idle_channels_removed: u64,
    /// Missed messages sent to subscribers that recovered
    /// (`subscribe` with `recover`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub recovered: u64,
    /// Subscribes with `recover` answered `recovered: false`
    /// (`epoch-changed`, `too-far-behind`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub recoveries_missed: u64,
    /// `rpc-dispatch = one` requests sent to another worker after theirs
    /// left the channel unanswered.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub rpc_redispatched: u64,
}

fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// One channel in [`ChannelStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChannelStatsEntry {
    pub subscriber_count: usize,
    pub message_count: u64,
    pub created_at: i64,
    pub retention_count: usize,
}

/// A telemetry handler's counters (`telemetry-stats` in `/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HandlerStats {
    pub processed: u64,
    pub queued: u64,
    pub dropped: u64,
    pub errors: u64,
    /// Signals held back by the per-connection warning throttle
    /// (`telemetry.max-warnings-per-connection-per-minute`). Left out while
    /// 0 (the seed's shape).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled: u64,
    /// Bytes the handler's queue holds now (a gauge, bounded by
    /// `telemetry.buffer-bytes`). Left out while 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub queued_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Connection-level counters of the transport, each a running total since
/// start unless named otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct TransportStats {
    pub connections_accepted: u64,
    pub connections_closed: u64,
    pub rejected_max_connections: u64,
    pub closed_slow_consumer: u64,
    pub closed_heartbeat_timeout: u64,
    pub closed_message_too_large: u64,
    pub frames_received: u64,
    pub frames_sent: u64,
    /// Flushes to sockets, each carrying one or more frames:
    /// `frames-sent / socket-writes` is the frames per write.
    pub socket_writes: u64,
    pub error_frames_sent: u64,
    /// TCP accepts that failed (out of file descriptors, say).
    pub accept_errors: u64,
    /// Connections closed for not sending their request head within
    /// `http.handshake-timeout-ms` (with TLS: or not finishing the TLS
    /// handshake within it).
    pub handshake_timeouts: u64,
    /// Sockets closed in their handshake (TLS, first request head) to make
    /// room for a newer one, `http.max-pending-handshakes` being pending.
    pub handshakes_evicted: u64,
    /// Sockets still in their handshake (TLS, first request head) now: a
    /// gauge, not a total.
    pub pending_handshakes: u64,
    /// TLS handshakes that failed (not TLS, no common cipher, ...).
    pub tls_handshake_failures: u64,
    /// Connections that opened with the HTTP/2 preface while `http.http2`
    /// is off (answered 505 `http2-not-enabled`).
    pub rejected_http2: u64,
    /// WebSocket upgrades refused for their `Origin` (HTTP 403
    /// `forbidden-origin`, `websocket.allowed-origins`).
    pub rejected_origin: u64,
    /// WebSocket upgrades refused because their client address had
    /// `websocket.max-connections-per-ip` already (HTTP 429
    /// `max-connections-per-ip-reached`).
    pub rejected_max_connections_per_ip: u64,
    /// Client frames refused with an `error` `rate-limited` (over
    /// `websocket.max-frames-per-second`), not processed.
    pub frames_rate_limited: u64,
    /// Connections closed with 1008 `rate-limited` (more refused frames
    /// within a second than `websocket.max-refused-frames-per-second`).
    pub closed_rate_limited: u64,
    /// Admin requests (`/stats`, `/channels`) refused with HTTP 401 for a
    /// missing or wrong `http.admin-token`, and WebSocket upgrades the
    /// authorizer refused (HTTP 401 for a refused token, 403 `forbidden`).
    pub rejected_unauthorized: u64,
    /// Connections closed as slow consumers (1008 `slow-consumer`, also
    /// counted in `closed-slow-consumer`) because the queued bytes of all
    /// connections passed `websocket.max-outbound-bytes-total`.
    pub closed_outbound_total: u64,
    /// Queued `channel-message` frames of `on-slow-consumer = latest`
    /// channels replaced by a newer one of the same channel (conflation),
    /// instead of closing their subscriber.
    #[serde(default)]
    pub conflated: u64,
    /// Now, not a total: bytes waiting in the outbound queues of all
    /// connections.
    pub outbound_queued_bytes: u64,
    /// The most bytes all outbound queues may hold together (the
    /// resolved `websocket.max-outbound-bytes-total`).
    pub outbound_queued_bytes_limit: u64,
}

/// `GET /channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channels {
    pub channels: BTreeMap<String, ChannelSummary>,
    /// Present when more channels follow: `GET /channels?cursor=<it>`.
    #[serde(
        default,
        rename = "next-cursor",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_cursor: Option<String>,
}

/// The body of every HTTP error response (404, 503, ...).
///
/// `{"error":"not-found","reason":"not-found","message":"no route for GET /x"}`
/// or, for a WebSocket upgrade refused at `max-connections`,
/// `{"error":"service-unavailable","reason":"max-connections-reached",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HttpError {
    /// The HTTP status as a kebab-case name: `not-found`,
    /// `service-unavailable`, ...
    pub error: String,
    /// A stable kebab-case reason: a [`crate::Reason`] spelling, or
    /// `not-found` for an unknown path.
    pub reason: String,
    /// For humans.
    pub message: String,
}
