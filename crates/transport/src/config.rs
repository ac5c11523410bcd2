//! The transport's settings.

use std::time::Duration;

/// Connection-level settings. Every limit a client can push against is here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Most WebSocket connections at once; upgrades past it get HTTP 503.
    pub max_connections: usize,
    /// How often the server pings; a connection silent for two intervals is
    /// closed.
    pub heartbeat_interval: Duration,
    /// Longest a write to a client may take before the client is closed as
    /// a slow consumer.
    pub message_timeout: Duration,
    /// Largest client frame, in bytes.
    pub max_message_bytes: usize,
    /// Most frames waiting in one connection's outbound queue.
    pub max_outbound_frames: usize,
    /// Most bytes waiting in one connection's outbound queue.
    pub max_outbound_bytes: usize,
    /// At shutdown, how long connections may take to drain their queues.
    pub shutdown_drain: Duration,
    /// Longest a new TCP connection may take to send its first request
    /// head; then it is closed (`http.handshake-timeout-ms`).
    pub handshake_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_connections: 1_000,
            heartbeat_interval: Duration::from_millis(30_000),
            message_timeout: Duration::from_millis(5_000),
            max_message_bytes: 1 << 20,
            max_outbound_frames: 4_096,
            max_outbound_bytes: 8 << 20,
            shutdown_drain: Duration::from_millis(5_000),
            handshake_timeout: Duration::from_millis(10_000),
        }
    }
}
