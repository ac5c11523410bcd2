//! What every connection task and HTTP handler shares.

use crate::admit::PerIp;
use crate::config::TransportConfig;
use crate::routes::Routes;
use crate::sink::{ConnSink, Registry, Signal};
use crate::stats::Counters;
use parking_lot::Mutex;
use sente_lite_channels::Engine;
use sente_lite_session::Authorizer;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use telemere_lite::Telemetry;
use tokio::sync::{watch, Notify};

/// What every connection task and HTTP handler shares.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) telemetry: Telemetry,
    pub(crate) config: TransportConfig,
    /// The running configuration, shown as `server-config` in `/stats`.
    pub(crate) server_config: Value,
    pub(crate) started: Instant,
    pub(crate) counters: Counters,
    /// Connections admitted (upgrading or open); bounded by max-connections.
    pub(crate) admitted: AtomicUsize,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Signalled by every connection task as it ends.
    pub(crate) conn_closed: Notify,
    /// The outbound sink of every open connection, so one heartbeat task
    /// and one shutdown can reach them all without a timer or a watch
    /// future per connection; and the bytes queued in all of them
    /// (`max-outbound-bytes-total`).
    pub(crate) sinks: Arc<Registry>,
    /// Who connections are and what they may do.
    pub(crate) authorizer: Arc<dyn Authorizer>,
    /// Routes added next to the built-in ones.
    pub(crate) routes: Vec<Arc<dyn Routes>>,
    /// Sockets accepted that have not finished their handshake (TLS, first
    /// request head); bounded by `max-pending-handshakes`.
    pub(crate) pending: Mutex<crate::accept::PendingSet>,
    /// Open connections per client address (`max-connections-per-ip`).
    pub(crate) per_ip: PerIp,
    /// With `tls.*`: every accepted socket's TLS handshake.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Shared {
    /// Registers a connection's sink; a connection that arrives during the
    /// shutdown is told to stop at once.
    pub(crate) fn register(&self, sink: &Arc<ConnSink>) -> usize {
        let key = self.sinks.lock().insert(Arc::clone(sink));
        if self.shutting_down.load(Ordering::SeqCst) {
            sink.signal(Signal::Stop);
        }
        key
    }

    /// Removes a connection's sink and adds its write counts to the
    /// totals, under the registry's lock, so `/stats` counts them once.
    pub(crate) fn unregister(&self, key: usize) {
        let mut sinks = self.sinks.lock();
        if let Some(sink) = sinks.try_remove(key) {
            let c = &self.counters;
            c.frames_sent
                .fetch_add(sink.frames_sent.load(Ordering::Relaxed), Ordering::Relaxed);
            c.socket_writes.fetch_add(
                sink.socket_writes.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
    }

    /// The transport's totals: closed connections' plus open ones'.
    pub(crate) fn transport_stats(&self) -> sente_lite_protocol::http::TransportStats {
        let sinks = self.sinks.lock();
        let mut t = self.counters.snapshot();
        for (_, sink) in sinks.iter() {
            t.frames_sent += sink.frames_sent.load(Ordering::Relaxed);
            t.socket_writes += sink.socket_writes.load(Ordering::Relaxed);
        }
        t.pending_handshakes = self.pending.lock().len() as u64;
        drop(sinks);
        t.closed_outbound_total = self.sinks.closed_over_total.load(Ordering::Relaxed);
        t.conflated = self.sinks.conflated.load(Ordering::Relaxed);
        t.outbound_queued_bytes = self.sinks.queued() as u64;
        t.outbound_queued_bytes_limit = self.sinks.limit() as u64;
        t
    }

    pub(crate) fn signal_all(&self, signal: Signal) {
        for (_, sink) in self.sinks.lock().iter() {
            sink.signal(signal);
        }
    }
}
