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
    /// Most bytes waiting in one connection's outbound queue. A single
    /// frame larger than this is still accepted into an empty queue (a
    /// channel message of a largest publish is a little larger than the
    /// publish), so a queue holds at most this or one frame.
    pub max_outbound_bytes: usize,
    /// Most bytes waiting in the outbound queues of all connections
    /// together. A frame that would pass it closes the connection with the
    /// most queued as a slow consumer (1008), until the total is under it.
    pub max_outbound_bytes_total: usize,
    /// Frames per second one connection may send, on average (a token
    /// bucket refilled at this rate).
    pub max_frames_per_second: u32,
    /// Frames one connection may send at once above the average: the token
    /// bucket's size, full when the connection opens.
    pub frames_burst: u32,
    /// Frames refused for the rate within one second past which the
    /// connection is closed (1008 `rate-limited`).
    pub max_refused_frames_per_second: u32,
    /// When set, `/stats`, `/channels` and every later admin route need
    /// `Authorization: Bearer <token>` (HTTP 401 otherwise).
    pub admin_token: Option<Secret>,
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
            max_outbound_bytes: 1 << 20,
            max_outbound_bytes_total: DEFAULT_OUTBOUND_BYTES_TOTAL,
            max_frames_per_second: 5_000,
            frames_burst: 10_000,
            max_refused_frames_per_second: 100,
            admin_token: None,
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

/// [`TransportConfig::max_outbound_bytes_total`] when nothing better is
/// known (the server crate uses a quarter of the machine's memory): 1 GiB.
pub const DEFAULT_OUTBOUND_BYTES_TOTAL: usize = 1 << 30;

/// A secret string (a token, a key): its `Debug` never shows it, so a
/// configuration can be logged. Compare with [`Secret::matches`], which
/// takes the same time wherever the first difference is.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is the secret, in time that depends only on the
    /// two lengths, never on where they first differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<set>\"")
    }
}

/// Byte equality that reads every byte of both inputs whatever they hold.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Lengths differ: still walk the longer input, so the time says only
    // the lengths.
    let mut diff = u8::from(a.len() != b.len());
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_themselves_and_never_show() {
        let s = Secret::new("s3cret-token");
        assert!(s.matches(b"s3cret-token"));
        for other in [
            &b""[..],
            b"s3cret-toke",
            b"s3cret-token!",
            b"S3cret-token",
            b"x",
        ] {
            assert!(!s.matches(other), "{other:?}");
        }
        assert!(Secret::new("").matches(b""));
        assert_eq!(format!("{s:?}"), "\"<set>\"");
        let c = TransportConfig {
            admin_token: Some(s),
            ..TransportConfig::default()
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
