//! The transport's running totals (the `transport` section of `/stats`).

use sente_lite_protocol::http::TransportStats;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Running totals since the transport started. Every field only grows.
/// `frames_sent` and `socket_writes` hold closed connections' counts only;
/// open connections keep theirs in their sink (`Shared::transport_stats`
/// adds them up).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    pub(crate) rejected_max_connections: AtomicU64,
    pub(crate) closed_slow_consumer: AtomicU64,
    pub(crate) closed_heartbeat_timeout: AtomicU64,
    pub(crate) closed_message_too_large: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) socket_writes: AtomicU64,
    pub(crate) error_frames_sent: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) handshake_timeouts: AtomicU64,
    pub(crate) handshakes_evicted: AtomicU64,
    pub(crate) tls_handshake_failures: AtomicU64,
    pub(crate) rejected_http2: AtomicU64,
    pub(crate) rejected_origin: AtomicU64,
    pub(crate) rejected_max_connections_per_ip: AtomicU64,
    pub(crate) frames_rate_limited: AtomicU64,
    pub(crate) closed_rate_limited: AtomicU64,
    pub(crate) rejected_unauthorized: AtomicU64,
}

impl Counters {
    /// A consistent-enough snapshot (each counter read once).
    pub(crate) fn snapshot(&self) -> TransportStats {
        TransportStats {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_closed: self.connections_closed.load(Relaxed),
            rejected_max_connections: self.rejected_max_connections.load(Relaxed),
            closed_slow_consumer: self.closed_slow_consumer.load(Relaxed),
            closed_heartbeat_timeout: self.closed_heartbeat_timeout.load(Relaxed),
            closed_message_too_large: self.closed_message_too_large.load(Relaxed),
            frames_received: self.frames_received.load(Relaxed),
            frames_sent: self.frames_sent.load(Relaxed),
            socket_writes: self.socket_writes.load(Relaxed),
            error_frames_sent: self.error_frames_sent.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
            handshake_timeouts: self.handshake_timeouts.load(Relaxed),
            handshakes_evicted: self.handshakes_evicted.load(Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
            rejected_http2: self.rejected_http2.load(Relaxed),
            rejected_origin: self.rejected_origin.load(Relaxed),
            rejected_max_connections_per_ip: self.rejected_max_connections_per_ip.load(Relaxed),
            // A gauge, filled in by `Shared::transport_stats`.
            pending_handshakes: 0,
            frames_rate_limited: self.frames_rate_limited.load(Relaxed),
            closed_rate_limited: self.closed_rate_limited.load(Relaxed),
            rejected_unauthorized: self.rejected_unauthorized.load(Relaxed),
            // The registry's; `Shared::transport_stats` fills them in.
            closed_outbound_total: 0,
            conflated: 0,
            outbound_queued_bytes: 0,
            outbound_queued_bytes_limit: 0,
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}
