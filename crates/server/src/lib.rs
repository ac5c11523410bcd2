//! sente-lite-server: the sente-lite server as a Rust API, and the
//! `sente-lite` binary.
//!
//! A thin composition of the other crates: a [`Config`] becomes a telemetry
//! instance (`telemere-lite`), a channel [`Engine`]
//! (`sente-lite-channels`) and a [`Transport`] (`sente-lite-transport`)
//! serving them on one TCP listener. This is the only crate that reads the
//! environment, command-line flags and signals (in [`cli`] and
//! [`Config::load`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sente_lite_server::{Config, Server};
//! let server = Server::start(Config { port: 0, ..Config::default() }).await?;
//! println!("listening on {}", server.local_addr());
//! server.broadcast(serde_json::json!({"type": "announcement"}).as_object().cloned().unwrap_or_default()).await;
//! server.stop().await;
//! # Ok(()) }
//! ```
//!
//! Several servers may run in one process: each has its own engine,
//! transport and telemetry instance; nothing is global.

/// The `sente-lite` binary's command line: [`cli::main`] is its `main`.
pub mod cli;
mod config;
pub mod events;
mod limits;
mod memory;

pub use config::{
    env_name, AllowAnonymous, AuthConfig, BrokerConfig, BrokerKind, ChannelsConfig, Config,
    ConfigError, HttpConfig, NamespaceConfig, NodeConfig, Permission, TelemetryConfig,
    TelemetryFormat, TelemetryOutput, TlsConfig, WebsocketConfig, SECRET_KEYS, SECRET_SHOWN,
    SEED_ENV, URL_KEYS,
};
pub use memory::machine_memory;
pub use sente_lite_auth::{JwtAuthorizer, Policy, Rules, Who};
pub use sente_lite_channels::{ConnAddr, ConnId, Engine, EngineError, Frame, Offer};
pub use sente_lite_session::{AllowAll, Authorizer, ConnectInfo, Identity, Refusal};
pub use sente_lite_transport::{http, Hooks, RouteFuture, Routes, Transport};

use sente_lite_protocol::http::{Health, Stats};
use serde_json::{Map, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use telemere_lite::{
    event, ConsoleHandler, FileHandler, HandlerOptions, Level, Mode, Telemetry, Throttle,
};

use tokio::task::JoinHandle;

/// The data fields naming the connection a signal is about (the engine's
/// and the transport's signals use them).
const CONN_ID: &str = "conn-id";
const SENDER_CONN_ID: &str = "sender-conn-id";

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("telemetry: {0}")]
    Telemetry(#[from] telemere_lite::TelemetryError),
    #[error(transparent)]
    Runtime(#[from] sente_lite_channels::NoRuntime),
    #[error("broker: {0}")]
    Broker(#[from] sente_lite_redis::RedisBrokerError),
}

/// A running server. Dropping it without [`Server::stop`] leaves it running
/// in the background until the runtime ends.
#[derive(Debug)]
pub struct Server {
    config: Config,
    local_addr: SocketAddr,
    engine: Engine,
    transport: Transport,
    telemetry: Telemetry,
    serving: JoinHandle<()>,
}

impl Server {
    /// Starts a server. Returns once the listener is bound, so connecting
    /// to [`local_addr`](Self::local_addr) right after cannot be refused.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Server::start_with(config, Hooks::default()).await
    }

    /// Starts a server with added HTTP [`Routes`] and, when
    /// `hooks.authorizer` is set, that [`Authorizer`] in place of the one
    /// the configuration describes ([`Config::authorizer`]).
    pub async fn start_with(config: Config, hooks: Hooks) -> Result<Server, StartError> {
        config.validate()?;
        // Before anything is bound: a bad certificate or key stops the
        // start, naming the key and the file.
        let tls = config.tls()?;
        let telemetry = telemetry_for(&config)?;
        event!(tel: &telemetry, events::SERVER_STARTING,
            serde_json::json!({"host": &config.host, "port": config.port}));
        limits::raise_nofile(&telemetry, config.websocket.max_connections);
        let addr = SocketAddr::new(config.bind_ip()?, config.port);
        let listener =
            sente_lite_transport::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let engine = match config.broker.kind {
            BrokerKind::Local => Engine::with_telemetry(config.engine(), telemetry.clone())?,
            BrokerKind::Redis => {
                let node_id = if config.node.id.is_empty() {
                    sente_lite_redis::random_node_id()
                } else {
                    config.node.id.clone()
                };
                let broker = sente_lite_redis::RedisBroker::new(
                    config.engine(),
                    config.redis(&node_id),
                    telemetry.clone(),
                )?;
                Engine::with_broker(
                    config.engine(),
                    telemetry.clone(),
                    std::sync::Arc::new(broker),
                )?
            }
        };
        // Secrets shown as "<set>", URL passwords redacted.
        let mut shown = serde_json::to_value(config.redacted()).unwrap_or(Value::Null);
        if let Some(m) = shown.as_object_mut() {
            m.insert("port".to_owned(), Value::from(local_addr.port()));
        }
        let mut hooks = hooks;
        if hooks.authorizer.is_none() {
            hooks.authorizer = config.authorizer()?.map(|a| {
                std::sync::Arc::new(a) as std::sync::Arc<dyn sente_lite_session::Authorizer>
            });
        }
        let mut transport_config = config.transport();
        transport_config.tls = tls;
        let transport = Transport::with_hooks(
            engine.clone(),
            telemetry.clone(),
            transport_config,
            shown,
            hooks,
        );
        let t = transport.clone();
        let serving = tokio::spawn(async move { t.serve(listener).await });
        event!(tel: &telemetry, events::SERVER_STARTED,
            serde_json::json!({"address": local_addr.to_string(),
                "node-id": engine.broker().node().map(|n| n.to_string()),
                "broker": config.broker.kind.as_str(),
                "tls": !config.tls.cert_file.trim().is_empty()}));
        Ok(Server {
            config,
            local_addr,
            engine,
            transport,
            telemetry,
            serving,
        })
    }

    /// The bound address (the real port when the config asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id in its cluster (`None` with the local broker).
    pub fn node_id(&self) -> Option<&str> {
        self.engine.broker().node().map(|n| &**n)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The channel engine: create/delete channels, subscribe, publish, RPC,
    /// statistics (the seed's `channels/*` API).
    pub fn channels(&self) -> &Engine {
        &self.engine
    }

    /// The server's telemetry instance (add your own handlers to it).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The `GET /stats` body.
    pub async fn stats(&self) -> Result<Stats, EngineError> {
        self.transport.stats().await
    }

    /// The connection-level counters (`transport` in `/stats`), without the
    /// rest of `/stats`.
    pub fn transport_stats(&self) -> sente_lite_protocol::http::TransportStats {
        self.transport.counters()
    }

    /// The `GET /health` body.
    pub fn health(&self) -> Health {
        self.transport.health()
    }

    /// Sends `message` with `"broadcast": true` to every connection;
    /// returns how many accepted it.
    pub async fn broadcast(&self, message: Map<String, Value>) -> usize {
        self.engine.broadcast(message).await
    }

    /// Sends `message` with `channel-id` and `broadcast-time` to a channel's
    /// subscribers; returns how many accepted it.
    pub async fn broadcast_to_channel(
        &self,
        channel_id: &str,
        message: Map<String, Value>,
    ) -> Result<usize, EngineError> {
        self.engine.broadcast_to_channel(channel_id, message).await
    }

    /// Sends `message` unchanged to the connection with the wire id
    /// `conn_id` (as in its `welcome`). `connection-not-found` when there is
    /// none (or it is closing); `slow-consumer` when its queue is full (the
    /// transport is closing it).
    pub async fn send_to_connection(
        &self,
        conn_id: &str,
        message: &Value,
    ) -> Result<(), EngineError> {
        let to = self.engine.resolve(conn_id)?;
        match self.engine.send_json(&to, message).await? {
            Offer::Queued => Ok(()),
            Offer::Full => Err(EngineError::ConnectionFull(conn_id.to_owned())),
            Offer::Closed => Err(EngineError::ConnectionNotFound(conn_id.to_owned())),
        }
    }

    /// Stops gracefully: no new connections, every client gets its queued
    /// frames (up to `websocket.shutdown-drain-ms`) and a close 1001, then
    /// telemetry is flushed.
    pub async fn stop(self) {
        event!(tel: &self.telemetry, events::SERVER_STOPPING,
            serde_json::json!({"connections": self.transport.active_connections()}));
        self.transport.shutdown();
        let _ = self.serving.await;
        event!(tel: &self.telemetry, events::SERVER_STOPPED, serde_json::json!({
            "uptime-ms": self.transport.health().uptime_ms}));
        // Bounded even when the log sink blocks (a full pipe, a stalled
        // disk): a worker stuck writing is left behind, the process goes on.
        let _ = self.telemetry.shutdown(Duration::from_millis(
            self.config.telemetry.shutdown_timeout_ms,
        ));
    }
}

/// Runs a server until `shutdown` resolves, then stops it gracefully (the
/// binary's whole life). `on_ready` is called with the started server.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Server),
) -> Result<(), StartError> {
    let server = Server::start(config).await?;
    on_ready(&server);
    shutdown.await;
    server.stop().await;
    Ok(())
}

/// The telemetry instance of one server, with the handler its config asks
/// for. The handler is async (Dropping), so a slow stderr or disk never
/// slows message handling; what it drops is counted in `/stats`. Its queue
/// is bounded in signals and in bytes, every string in a signal is cut to
/// `telemetry.max-field-bytes`, and warnings naming a connection (`conn-id`
/// or `sender-conn-id` in their data) are throttled per connection.
fn telemetry_for(config: &Config) -> Result<Telemetry, StartError> {
    let tel = Telemetry::new();
    let t = &config.telemetry;
    tel.set_max_field_bytes(t.max_field_bytes);
    if !t.enabled {
        return Ok(tel);
    }
    let level: Level = t.min_level;
    tel.set_min_level(level);
    let mut opts = HandlerOptions::async_()
        .mode(Mode::Dropping)
        .buffer_size(t.buffer_size)
        .buffer_bytes(t.buffer_bytes);
    if t.max_warnings_per_connection_per_minute > 0 {
        // One entry per connection that warned; a server at its
        // connection limit keeps them all.
        let max_keys = config.websocket.max_connections.clamp(1_024, 1 << 20);
        opts = opts.throttle(
            Throttle::by_field(
                CONN_ID,
                t.max_warnings_per_connection_per_minute,
                Duration::from_secs(60),
            )
            .or_field(SENDER_CONN_ID)
            .min_level(Level::Warn)
            .max_keys(max_keys),
        );
    }
    match t.output {
        TelemetryOutput::File => {
            tel.add_handler(t.handler_id.clone(), FileHandler::new(&t.file)?, opts)?
        }
        TelemetryOutput::None => {
            tel.add_handler(t.handler_id.clone(), |_: &telemere_lite::Signal| {}, opts)?
        }
        TelemetryOutput::Console => {
            let console = match t.format {
                TelemetryFormat::Text => ConsoleHandler::stderr(),
                TelemetryFormat::Json => ConsoleHandler::stderr().json(),
            };
            tel.add_handler(t.handler_id.clone(), console, opts)?
        }
    }
    Ok(tel)
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
