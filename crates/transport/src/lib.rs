//! sente-lite-transport: WebSocket and HTTP for the channel engine.
//!
//! The only crate of sente-lite that imports warp. It serves:
//!
//! - `GET /` with a WebSocket upgrade: one task per connection speaks the
//!   JSON protocol of docs/PROTOCOL.md, routing each frame to the
//!   [`Engine`] and writing what the engine offers to the connection's
//!   bounded outbound queue ([`TransportConfig::max_outbound_frames`],
//!   [`TransportConfig::max_outbound_bytes`]). Several queued frames go out
//!   in one write.
//! - `GET /health`, `GET /stats`, `GET /channels`, and a JSON 404 for
//!   everything else.
//!
//! Limits: `max-connections` (HTTP 503 before the upgrade), heartbeat pings
//! with a close after two silent intervals, slow consumers closed with 1008
//! (outbound queue overflow, or a write that cannot finish within
//! `message-timeout`), frames over `max-message-bytes` refused from their
//! header with 1009. Every close, for any reason, removes the connection from
//! the engine, which unsubscribes it everywhere and drops its pending RPCs.
//!
//! [`Transport::serve`] runs until its shutdown future resolves, then closes
//! every WebSocket with 1001 after draining its queue (up to
//! [`TransportConfig::shutdown_drain`]) and returns once every connection
//! task has ended.

mod conn;
pub mod events;
mod handle;
mod http;
mod stats;
mod upgrade;

use conn::ConnSink;
use parking_lot::Mutex;
use sente_lite_channels::Engine;
use serde_json::Value;
use slab::Slab;
use stats::Counters;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use telemere_lite::Telemetry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

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
        }
    }
}

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
    /// future per connection.
    pub(crate) sinks: Mutex<Slab<Arc<ConnSink>>>,
}

impl Shared {
    /// Registers a connection's sink; a connection that arrives during the
    /// shutdown is told to stop at once.
    pub(crate) fn register(&self, sink: &Arc<ConnSink>) -> usize {
        let key = self.sinks.lock().insert(Arc::clone(sink));
        if self.shutting_down.load(Ordering::SeqCst) {
            sink.signal(conn::Signal::Stop);
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
        t
    }

    fn signal_all(&self, signal: conn::Signal) {
        for (_, sink) in self.sinks.lock().iter() {
            sink.signal(signal);
        }
    }
}

/// The WebSocket + HTTP front of one engine.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("config", &self.shared.config)
            .field("admitted", &self.shared.admitted.load(Ordering::Relaxed))
            .finish()
    }
}

/// Binds a listener the way the transport wants it: `SO_REUSEADDR`, a deep
/// accept backlog, and `TCP_NODELAY` (inherited by accepted sockets on
/// Linux), so small frames are not held back by Nagle's algorithm.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4_096)
}

impl Transport {
    /// A transport for `engine`. `server_config` is shown as `server-config`
    /// in `/stats`; `telemetry` receives the transport's signals and its
    /// handler stats are `telemetry-stats`.
    pub fn new(
        engine: Engine,
        telemetry: Telemetry,
        config: TransportConfig,
        server_config: Value,
    ) -> Transport {
        let (stop, shutdown) = watch::channel(false);
        Transport {
            shared: Arc::new(Shared {
                engine,
                telemetry,
                config,
                server_config,
                started: Instant::now(),
                counters: Counters::default(),
                admitted: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                shutdown,
                conn_closed: Notify::new(),
                sinks: Mutex::new(Slab::new()),
            }),
            stop: Arc::new(stop),
        }
    }

    /// The engine behind this transport.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// The transport's running totals (the `transport` section of
    /// `/stats`).
    pub fn counters(&self) -> sente_lite_protocol::http::TransportStats {
        self.shared.transport_stats()
    }

    /// The `/stats` body.
    pub fn stats(&self) -> sente_lite_protocol::http::Stats {
        http::stats(&self.shared)
    }

    /// The `/health` body.
    pub fn health(&self) -> sente_lite_protocol::http::Health {
        http::health(&self.shared)
    }

    /// Open WebSocket connections (admitted and not yet closed).
    pub fn active_connections(&self) -> usize {
        self.shared.admitted.load(Ordering::Relaxed)
    }

    /// Serves HTTP and WebSocket on `listener` until `shutdown` resolves or
    /// [`Transport::shutdown`] is called; then stops accepting, closes every
    /// WebSocket with 1001 after draining its queue, and returns once all
    /// connection tasks have ended.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) {
        let routes = http::routes(Arc::clone(&self.shared));
        let mut stop_rx = self.shared.shutdown.clone();
        let server = warp::serve(routes).incoming(listener).graceful(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        });
        let run = tokio::spawn(server.run());
        let mut own_stop = self.shared.shutdown.clone();
        // One heartbeat for every connection: each then pings its client, or
        // closes it after two silent intervals.
        let period = self
            .shared
            .config
            .heartbeat_interval
            .max(Duration::from_millis(1));
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = own_stop.wait_for(|s| *s) => break,
                _ = beat.tick() => self.shared.signal_all(conn::Signal::Beat),
            }
        }
        self.begin_shutdown();
        // The listener closes; HTTP requests in flight finish. Upgraded
        // connections are ours to close.
        let _ = run.await;
        self.wait_for_connections().await;
    }

    /// Starts a graceful shutdown: no new connections, every WebSocket closes
    /// with 1001 after draining. [`serve`](Self::serve) returns when done.
    pub fn shutdown(&self) {
        self.begin_shutdown();
    }

    fn begin_shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
        self.shared.signal_all(conn::Signal::Stop);
    }

    /// Waits until every admitted connection has ended.
    async fn wait_for_connections(&self) {
        loop {
            let notified = self.shared.conn_closed.notified();
            tokio::pin!(notified);
            // Register before checking, so an end in between is not missed.
            notified.as_mut().enable();
            if self.shared.admitted.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}
