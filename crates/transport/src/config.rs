//! The transport's settings.

use std::time::Duration;

pub use crate::admit::{IpNet, IpNetError, OriginPattern};
pub use crate::tls::{Tls, TlsError};

/// Connection-level settings. Every limit a client can push against is here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Most WebSocket connections at once; upgrades past it get HTTP 503.
    pub max_connections: usize,
    /// Most WebSocket connections from one client address at once; 0: no
    /// limit. Upgrades past it get HTTP 429
    /// (`websocket.max-connections-per-ip`).
    pub max_connections_per_ip: usize,
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
    /// Longest a new TCP connection may take to finish its TLS handshake
    /// (with TLS) and send its first request head; then it is closed
    /// (`http.handshake-timeout-ms`).
    pub handshake_timeout: Duration,
    /// Most TCP connections at once that have not finished their first
    /// request head (or TLS handshake); a socket accepted past it is closed
    /// at once (`http.max-pending-handshakes`).
    pub max_pending_handshakes: usize,
    /// The `Origin`s a browser's WebSocket upgrade may come from
    /// (`websocket.allowed-origins`); an upgrade without `Origin` passes.
    pub allowed_origins: Vec<OriginPattern>,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` name the client
    /// (`http.trusted-proxies`); from any other peer those headers are
    /// ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// Serve HTTP/2 too (cleartext prior knowledge, or `h2` by ALPN over
    /// TLS) for the HTTP endpoints (`http.http2`). Off: HTTP/1.1 only.
    pub http2: bool,
    /// Serve `https://` and `wss://` with this certificate and key.
    pub tls: Option<Tls>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_connections: 1_000,
            max_connections_per_ip: 0,
            heartbeat_interval: Duration::from_millis(30_000),
            message_timeout: Duration::from_millis(5_000),
            max_message_bytes: 1 << 20,
            max_outbound_frames: 4_096,
            max_outbound_bytes: 8 << 20,
            shutdown_drain: Duration::from_millis(5_000),
            handshake_timeout: Duration::from_millis(10_000),
            max_pending_handshakes: 1_024,
            allowed_origins: vec![OriginPattern::any()],
            trusted_proxies: Vec::new(),
            http2: false,
            tls: None,
        }
    }
}
