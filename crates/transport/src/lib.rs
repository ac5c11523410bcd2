//! sente-lite-transport: WebSocket and HTTP for the channel engine.
//!
//! The only crate of sente-lite that imports warp (and hyper and
//! tungstenite). It moves bytes and upgrades; what the frames mean is the
//! [`Session`](sente_lite_session::Session)'s business. It serves:
//!
//! - `GET /` with a WebSocket upgrade: one task per connection reads text
//!   frames into its session. What the engine and the session offer goes
//!   into the connection's bounded outbound queue
//!   ([`TransportConfig::max_outbound_frames`],
//!   [`TransportConfig::max_outbound_bytes`]) as a WebSocket frame whose
//!   payload every recipient shares, and is written by a writer task (one
//!   per two cores; one `writev` of all a connection has queued); the connection's
//!   task writes only what the socket did not take at once, and the
//!   queues of TLS connections.
//! - `GET`/`HEAD /health`, `GET /stats`, `GET /channels` (these two need
//!   `Authorization: Bearer` when [`TransportConfig::admin_token`] is set),
//!   the routes added with [`Hooks::routes`], and a JSON 404 for
//!   everything else. Every HTTP error has a JSON body, including requests
//!   too malformed for hyper (the accept loop reads each connection's first
//!   request head itself).
//!
//! With [`TransportConfig::tls`], the same port serves `https://` and
//! `wss://` (rustls). HTTP/1.1 only unless [`TransportConfig::http2`].
//!
//! Admission, before any request is read: at most
//! `max-pending-handshakes` sockets at once may be in their TLS handshake
//! or first request head (a new one past it closes the oldest), and both
//! must finish
//! within `http.handshake-timeout-ms`. A failed `accept` (out of file
//! descriptors) is counted, logged, paused on briefly, and survived.
//! Before an upgrade: the browser's `Origin` must match `allowed-origins`
//! (HTTP 403 `forbidden-origin`), and the client's address (the peer's, or
//! what a trusted proxy's `X-Forwarded-For` / `X-Real-IP` says) must have
//! fewer than `max-connections-per-ip` connections (HTTP 429).
//!
//! Limits: `max-connections` (HTTP 503 before the upgrade), heartbeat pings
//! with a close after two silent intervals, slow consumers closed with 1008
//! (outbound queue overflow, a write that cannot finish within
//! `message-timeout`, or the most queued when all connections' queued bytes
//! pass [`TransportConfig::max_outbound_bytes_total`]), a frame rate per
//! connection ([`TransportConfig::max_frames_per_second`]: `error`
//! `rate-limited`, then 1008 `rate-limited`), frames over
//! `max-message-bytes` refused from their header with 1009, request heads
//! that do not arrive within `http.handshake-timeout-ms` closed (the first
//! by our accept loop, later ones by hyper).
//! Every close, for any reason, ends the connection's session, which takes
//! it out of every channel and drops its pending RPCs.
//!
//! [`Transport::serve`] runs until [`Transport::shutdown`], then closes
//! every WebSocket with 1001 after draining its queue (up to
//! [`TransportConfig::shutdown_drain`]) and returns once every connection
//! task has ended.

mod accept;
mod admission;
mod admit;
mod config;
mod conn;
mod endpoints;
pub mod events;
mod rate;
mod reply;
mod routes;
mod shared;
mod sink;
mod stats;
mod tls;
mod upgrade;
mod wire;
mod writer;

pub use config::{
    IpNet, IpNetError, OriginPattern, Secret, Tls, TlsError, TransportConfig,
    DEFAULT_OUTBOUND_BYTES_TOTAL,
};
/// The `http` crate whose types [`Routes`] speaks, so an embedder needs no
/// dependency of its own to write one.
pub use http;
pub use routes::{RouteFuture, Routes, MAX_ROUTE_BODY};
/// Passwords in URLs made safe to show (the protocol crate's, re-exported).
pub use sente_lite_protocol::{redact_credentials, REDACTED};

use parking_lot::Mutex;
use sente_lite_channels::Engine;
use sente_lite_session::{AllowAll, Authorizer};
use serde_json::Value;
use shared::Shared;
use sink::Signal;
use stats::Counters;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use telemere_lite::Telemetry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// What an embedder plugs into a transport.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Who connections are and what they may do. `None` (the default):
    /// [`AllowAll`] for a bare transport; the server uses the one its
    /// configuration describes (`auth.*`, namespace permissions).
    pub authorizer: Option<Arc<dyn Authorizer>>,
    /// HTTP routes served next to the built-in ones, tried in order.
    pub routes: Vec<Arc<dyn Routes>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("routes", &self.routes.len())
            .finish()
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
    /// A transport for `engine` with the default hooks. `server_config` is
    /// shown as `server-config` in `/stats`; `telemetry` receives the
    /// transport's signals and its handler stats are `telemetry-stats`.
    pub fn new(
        engine: Engine,
        telemetry: Telemetry,
        config: TransportConfig,
        server_config: Value,
    ) -> Transport {
        Transport::with_hooks(engine, telemetry, config, server_config, Hooks::default())
    }

    /// A transport with an authorizer and added routes.
    pub fn with_hooks(
        engine: Engine,
        telemetry: Telemetry,
        config: TransportConfig,
        server_config: Value,
        hooks: Hooks,
    ) -> Transport {
        let (stop, shutdown) = watch::channel(false);
        let tls = config.tls.as_ref().map(|t| t.acceptor(config.http2));
        let sinks = sink::Registry::new(config.max_outbound_bytes_total);
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
                sinks,
                authorizer: hooks.authorizer.unwrap_or_else(|| Arc::new(AllowAll)),
                routes: hooks.routes,
                pending: Mutex::new(accept::PendingSet::default()),
                per_ip: admit::PerIp::default(),
                tls,
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

    /// The `/stats` body (`broker-unavailable` when the broker cannot be
    /// read).
    pub async fn stats(
        &self,
    ) -> Result<sente_lite_protocol::http::Stats, sente_lite_channels::EngineError> {
        endpoints::stats(&self.shared).await
    }

    /// The `/health` body.
    pub fn health(&self) -> sente_lite_protocol::http::Health {
        endpoints::health(&self.shared)
    }

    /// Open WebSocket connections (admitted and not yet closed).
    pub fn active_connections(&self) -> usize {
        self.shared.admitted.load(Ordering::Relaxed)
    }

    /// Serves HTTP and WebSocket on `listener` until [`Transport::shutdown`]
    /// is called; then stops accepting, closes every WebSocket with 1001
    /// after draining its queue, and returns once all connection tasks have
    /// ended.
    pub async fn serve(&self, listener: TcpListener) {
        let service = warp::service(endpoints::routes(Arc::clone(&self.shared)));
        let writers: Vec<_> = self
            .shared
            .sinks
            .shards()
            .iter()
            .map(|shard| tokio::spawn(Arc::clone(shard).run()))
            .collect();
        let run = tokio::spawn(accept::serve(
            listener,
            Arc::clone(&self.shared),
            service,
            self.shared.shutdown.clone(),
        ));
        let mut stop = self.shared.shutdown.clone();
        // One heartbeat for every connection: each then pings its client, or
        // closes it after two silent intervals.
        let period = self
            .shared
            .config
            .heartbeat_interval
            .max(Duration::from_millis(1));
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = beat.tick() => self.shared.signal_all(Signal::Beat),
            }
        }
        // The listener closes; HTTP requests in flight finish. Upgraded
        // connections are ours to close.
        let _ = run.await;
        self.wait_for_connections().await;
        for shard in self.shared.sinks.shards() {
            shard.stop();
        }
        for writer in writers {
            let _ = writer.await;
        }
    }

    /// Starts a graceful shutdown: no new connections, every WebSocket closes
    /// with 1001 after draining. [`serve`](Self::serve) returns when done.
    pub fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
        self.shared.signal_all(Signal::Stop);
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

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
