//! The server's configuration: the seed's keys and defaults, loaded from
//! defaults < TOML file < environment < command-line flags.
//!
//! Every key has a dotted name (`websocket.max-connections`) used in files
//! (as TOML tables), in error messages, in `--set KEY=VALUE`, and, upper-cased
//! with `_` for `.` and `-`, in `SENTE_LITE_*` environment variables
//! (`SENTE_LITE_WEBSOCKET_MAX_CONNECTIONS`). The seed's own variables (PORT,
//! HOST, ...) are honoured too.

use sente_lite_channels::EngineConfig;
use sente_lite_protocol::ChannelConfig;
use sente_lite_transport::TransportConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::Path;
use std::time::Duration;
use telemere_lite::Level;

/// The whole configuration. See docs/CONFIGURATION.md for every key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct Config {
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// Address to bind: an IP, or `localhost` (127.0.0.1).
    pub host: String,
    pub telemetry: TelemetryConfig,
    pub websocket: WebsocketConfig,
    pub channels: ChannelsConfig,
    pub http: HttpConfig,
    pub broker: BrokerConfig,
    pub node: NodeConfig,
}

/// `broker.kind`: what joins this node to others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// In-process: one node, nothing else needed (the default).
    Local,
    /// Redis at `broker.redis-url`: every node on it acts as one server.
    Redis,
}

impl BrokerKind {
    /// Every kind, as named in the configuration.
    pub const ALL: [BrokerKind; 2] = [BrokerKind::Local, BrokerKind::Redis];

    /// The name in the configuration (`"local"`), as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            BrokerKind::Local => "local",
            BrokerKind::Redis => "redis",
        }
    }
}

/// `[broker]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub kind: BrokerKind,
    /// Where Redis is (`redis://host:port/db`, `unix:///path`).
    pub redis_url: String,
    /// Every Redis key and pub/sub channel starts with it.
    pub key_prefix: String,
    /// A node that has not refreshed its liveness for this long stops
    /// being counted (killed nodes).
    pub node_ttl_ms: u64,
    /// Messages kept per channel stream in Redis (at least the channel's
    /// retention), for filling gaps after a reconnect.
    pub stream_size: usize,
    /// A channel stream with no publish for this long expires.
    pub stream_ttl_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let r = sente_lite_redis::RedisConfig::default();
        BrokerConfig {
            kind: BrokerKind::Local,
            redis_url: r.url,
            key_prefix: r.key_prefix,
            node_ttl_ms: millis(r.node_ttl),
            stream_size: r.stream_size,
            stream_ttl_ms: millis(r.stream_ttl),
        }
    }
}

/// `[node]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name in the cluster; empty: a random `node-xxxxxxxx`
    /// chosen at start.
    pub id: String,
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Longest a new TCP connection may take to send its whole first
    /// request head (an HTTP request or a WebSocket upgrade); then it is
    /// closed.
    pub handshake_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            handshake_timeout_ms: millis(TransportConfig::default().handshake_timeout),
        }
    }
}

/// `[telemetry]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Install the server's telemetry handler.
    pub enabled: bool,
    /// Id of that handler (its key in `/stats` `telemetry-stats`).
    pub handler_id: String,
    /// Minimum level: trace, debug, info, warn, error, fatal, report.
    pub min_level: Level,
    /// Where signals go.
    pub output: TelemetryOutput,
    /// Format of the console output.
    pub format: TelemetryFormat,
    /// JSON-lines file for `output = "file"`.
    pub file: String,
    /// Queue of the async handler.
    pub buffer_size: usize,
}

/// `telemetry.output`: where the server's telemetry handler sends signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelemetryOutput {
    /// Stderr, in [`TelemetryFormat`].
    Console,
    /// JSON lines appended to `telemetry.file`.
    File,
    /// Nowhere: signals are only counted (`/stats` `telemetry-stats`).
    None,
}

impl TelemetryOutput {
    /// Every output, as named in the configuration.
    pub const ALL: [TelemetryOutput; 3] = [
        TelemetryOutput::Console,
        TelemetryOutput::File,
        TelemetryOutput::None,
    ];

    /// The name in the configuration (`"console"`), as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            TelemetryOutput::Console => "console",
            TelemetryOutput::File => "file",
            TelemetryOutput::None => "none",
        }
    }
}

impl Display for TelemetryOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// `telemetry.format`: how console output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelemetryFormat {
    /// One human-readable line per signal.
    Text,
    /// One JSON object per line.
    Json,
}

impl TelemetryFormat {
    /// Every format, as named in the configuration.
    pub const ALL: [TelemetryFormat; 2] = [TelemetryFormat::Text, TelemetryFormat::Json];

    /// The name in the configuration (`"text"`), as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            TelemetryFormat::Text => "text",
            TelemetryFormat::Json => "json",
        }
    }
}

impl Display for TelemetryFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// `[websocket]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct WebsocketConfig {
    pub max_connections: usize,
    pub heartbeat_interval_ms: u64,
    pub message_timeout_ms: u64,
    pub max_message_bytes: usize,
    pub max_outbound_frames: usize,
    pub max_outbound_bytes: usize,
    pub shutdown_drain_ms: u64,
    pub max_subscriptions_per_connection: usize,
}

/// `[channels]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct ChannelsConfig {
    pub auto_create: bool,
    pub max_channels: usize,
    pub max_channel_id_bytes: usize,
    pub max_pending_rpc: usize,
    pub max_pending_rpc_per_connection: usize,
    pub max_rpc_timeout_ms: u64,
    pub idle_channel_ttl_ms: u64,
    pub max_retained_bytes: usize,
    pub max_retained_bytes_total: usize,
    pub default_config: ChannelConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 3000,
            host: "localhost".to_owned(),
            telemetry: TelemetryConfig::default(),
            websocket: WebsocketConfig::default(),
            channels: ChannelsConfig::default(),
            http: HttpConfig::default(),
            broker: BrokerConfig::default(),
            node: NodeConfig::default(),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: true,
            handler_id: "sente-lite".to_owned(),
            min_level: Level::Info,
            output: TelemetryOutput::Console,
            format: TelemetryFormat::Text,
            file: "sente-lite.log".to_owned(),
            buffer_size: 1024,
        }
    }
}

impl Default for WebsocketConfig {
    fn default() -> Self {
        let t = TransportConfig::default();
        WebsocketConfig {
            max_connections: t.max_connections,
            heartbeat_interval_ms: millis(t.heartbeat_interval),
            message_timeout_ms: millis(t.message_timeout),
            max_message_bytes: t.max_message_bytes,
            max_outbound_frames: t.max_outbound_frames,
            max_outbound_bytes: t.max_outbound_bytes,
            shutdown_drain_ms: millis(t.shutdown_drain),
            max_subscriptions_per_connection: EngineConfig::default()
                .max_subscriptions_per_connection,
        }
    }
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        let e = EngineConfig::default();
        ChannelsConfig {
            auto_create: e.auto_create,
            max_channels: e.max_channels,
            max_channel_id_bytes: e.max_channel_id_bytes,
            max_pending_rpc: e.max_pending_rpc,
            max_pending_rpc_per_connection: e.max_pending_rpc_per_connection,
            max_rpc_timeout_ms: e.max_rpc_timeout_ms,
            idle_channel_ttl_ms: e.idle_channel_ttl_ms,
            max_retained_bytes: e.max_retained_bytes,
            max_retained_bytes_total: e.max_retained_bytes_total,
            default_config: e.default_channel,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A configuration that cannot be used. Every variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("unknown config key `{key}` (from {origin}){}", did_you_mean(.suggestion))]
    UnknownKey {
        key: String,
        origin: String,
        /// The key it is nearest to, when that looks like a typo.
        suggestion: Option<String>,
    },
    /// A `SENTE_LITE_*` variable that is no key's: a misspelled variable
    /// would otherwise be silently ignored.
    #[error(
        "unknown environment variable `{name}`: no config key of that name{}",
        did_you_mean(.suggestion)
    )]
    UnknownVariable {
        name: String,
        /// The variable it is nearest to, when that looks like a typo.
        suggestion: Option<String>,
    },
    #[error("bad value {value:?} for `{key}` (from {origin}): expected {expected}")]
    BadValue {
        key: String,
        value: String,
        origin: String,
        expected: String,
    },
    /// The merged values did not make a [`Config`]. Every value is checked
    /// against its key's type where it is read (and a [`BadValue`] names
    /// it), so this is a bug in those checks, never a user's mistake.
    ///
    /// [`BadValue`]: ConfigError::BadValue
    #[error(
        "internal error, please report it: the checked configuration does not deserialize: {0}"
    )]
    Type(String),
    /// A value of the right type that breaks a rule ([`Config::validate`]).
    #[error("`{key}` = {value:?} (from {origin}): {message}")]
    Invalid {
        key: String,
        value: String,
        /// Where the value came from, as in [`BadValue`](ConfigError::BadValue);
        /// `default`, or `the Rust API` for a `Config` built in code.
        origin: String,
        message: String,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

/// Where each key's value came from (key → source), for errors. A key not
/// in it has its default.
type Origins = BTreeMap<String, String>;

/// The source of a default value.
const DEFAULT_ORIGIN: &str = "default";

/// The source of a value set on a `Config` in Rust code.
const CODE_ORIGIN: &str = "the Rust API";

/// The prefix of the environment variables of the keys. Every variable
/// with it must be one of them; no other code reads such a variable.
const ENV_PREFIX: &str = "SENTE_LITE_";

/// The seed's environment variables and the keys they set.
pub const SEED_ENV: [(&str, &str); 7] = [
    ("PORT", "port"),
    ("HOST", "host"),
    ("TELEMETRY_ENABLED", "telemetry.enabled"),
    ("APP_NAME", "telemetry.handler-id"),
    ("AUTO_CREATE_CHANNELS", "channels.auto-create"),
    ("MAX_SUBSCRIBERS", "channels.default-config.max-subscribers"),
    (
        "MESSAGE_RETENTION",
        "channels.default-config.message-retention",
    ),
];

/// The `SENTE_LITE_*` variable of a dotted key.
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace(['.', '-'], "_")
    )
}

impl Config {
    /// Every dotted key, in file order.
    pub fn keys() -> Vec<String> {
        leaves(&Config::default()).into_keys().collect()
    }

    /// Loads: defaults, then `file` (TOML), then the environment `env`
    /// (name → value), then `overrides` (dotted key → value, from flags).
    /// Each later source wins. Then validates.
    ///
    /// Every error names its source. An unknown key, a `SENTE_LITE_*`
    /// variable that is no key's, and a value its key's type cannot hold are
    /// refused where they are read; the rules of [`validate`](Self::validate)
    /// apply to the merged values. Variables without the `SENTE_LITE_`
    /// prefix other than the seed's ([`SEED_ENV`]) are ignored.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut table = match toml::Value::try_from(Config::default()) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        let mut origins = Origins::new();
        if let Some(path) = file {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: origin.clone(),
                source,
            })?;
            let file_table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: origin.clone(),
                message: e.to_string(),
            })?;
            merge(&mut table, &file_table, "", &origin, &mut origins)?;
        }
        let keys = Config::keys();
        let names: Vec<String> = keys.iter().map(|k| env_name(k)).collect();
        if let Some((name, _)) = env
            .iter()
            .find(|(n, _)| n.starts_with(ENV_PREFIX) && !names.contains(n))
        {
            let tail = |n: &str| n.strip_prefix(ENV_PREFIX).unwrap_or(n).to_owned();
            let tails: Vec<String> = names.iter().map(|n| tail(n)).collect();
            return Err(ConfigError::UnknownVariable {
                name: name.clone(),
                suggestion: closest(&tail(name), &tails).map(|t| format!("{ENV_PREFIX}{t}")),
            });
        }
        for key in &keys {
            let name = env_name(key);
            if let Some((_, v)) = env.iter().find(|(n, _)| *n == name) {
                set(
                    &mut table,
                    key,
                    v,
                    &format!("environment {name}"),
                    &mut origins,
                )?;
            }
        }
        for (name, key) in SEED_ENV {
            // A SENTE_LITE_* variable for the same key wins over the seed's.
            let ours = env_name(key);
            if env.iter().any(|(n, _)| *n == ours) {
                continue;
            }
            if let Some((_, v)) = env.iter().find(|(n, _)| n == name) {
                set(
                    &mut table,
                    key,
                    v,
                    &format!("environment {name}"),
                    &mut origins,
                )?;
            }
        }
        for (key, v) in overrides {
            set(&mut table, key, v, "command line", &mut origins)?;
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    ConfigError::Type(e.to_string().trim().replace('\n', " "))
                })?;
        config.check(&|key| {
            origins
                .get(key)
                .map_or(DEFAULT_ORIGIN, String::as_str)
                .to_owned()
        })?;
        Ok(config)
    }

    /// Checks what the types alone cannot ([`Server::start`] does it too).
    ///
    /// A `Config` built in Rust does not record where its values came from:
    /// an error names a value that differs from the default as set through
    /// `the Rust API`, and one that does not as the `default`.
    /// ([`Config::load`] names the real source: a file, a variable, a flag.)
    ///
    /// [`Server::start`]: crate::Server::start
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mine = leaves(self);
        let defaults = leaves(&Config::default());
        self.check(&|key| {
            if mine.get(key) == defaults.get(key) {
                DEFAULT_ORIGIN.to_owned()
            } else {
                CODE_ORIGIN.to_owned()
            }
        })
    }

    /// The rules of [`validate`](Self::validate); `origin` names each key's
    /// source.
    fn check(&self, origin: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: &dyn Display, message: &str| ConfigError::Invalid {
            key: key.to_owned(),
            value: value.to_string(),
            origin: origin(key),
            message: message.to_owned(),
        };
        if self.host_ip().is_none() {
            return Err(invalid(
                "host",
                &self.host,
                "expected an IP address or localhost",
            ));
        }
        // A 0 in any of these would refuse or time out everything.
        let c = &self.channels;
        let positive: [(&str, u64); 22] = [
            ("broker.node-ttl-ms", self.broker.node_ttl_ms),
            ("broker.stream-size", self.broker.stream_size as u64),
            ("broker.stream-ttl-ms", self.broker.stream_ttl_ms),
            ("http.handshake-timeout-ms", self.http.handshake_timeout_ms),
            ("telemetry.buffer-size", self.telemetry.buffer_size as u64),
            (
                "websocket.max-connections",
                self.websocket.max_connections as u64,
            ),
            (
                "websocket.heartbeat-interval-ms",
                self.websocket.heartbeat_interval_ms,
            ),
            (
                "websocket.message-timeout-ms",
                self.websocket.message_timeout_ms,
            ),
            (
                "websocket.max-message-bytes",
                self.websocket.max_message_bytes as u64,
            ),
            (
                "websocket.max-outbound-frames",
                self.websocket.max_outbound_frames as u64,
            ),
            (
                "websocket.max-outbound-bytes",
                self.websocket.max_outbound_bytes as u64,
            ),
            ("channels.max-channels", self.channels.max_channels as u64),
            (
                "channels.max-channel-id-bytes",
                self.channels.max_channel_id_bytes as u64,
            ),
            (
                "channels.max-pending-rpc",
                self.channels.max_pending_rpc as u64,
            ),
            (
                "channels.max-pending-rpc-per-connection",
                self.channels.max_pending_rpc_per_connection as u64,
            ),
            // Every RPC would time out the moment it is sent.
            ("channels.max-rpc-timeout-ms", c.max_rpc_timeout_ms),
            // No connection could subscribe to anything.
            (
                "websocket.max-subscriptions-per-connection",
                self.websocket.max_subscriptions_per_connection as u64,
            ),
            // Every auto-created channel would go at once.
            ("channels.idle-channel-ttl-ms", c.idle_channel_ttl_ms),
            ("channels.max-retained-bytes", c.max_retained_bytes as u64),
            (
                "channels.max-retained-bytes-total",
                c.max_retained_bytes_total as u64,
            ),
            // No one could ever subscribe to a channel.
            (
                "channels.default-config.max-subscribers",
                c.default_config.max_subscribers as u64,
            ),
            // Every RPC naming no timeout would time out at once.
            (
                "channels.default-config.rpc-timeout-ms",
                c.default_config.rpc_timeout_ms,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(invalid(key, &v, "must be at least 1"));
            }
        }
        if self.websocket.max_connections > u32::MAX as usize {
            return Err(invalid(
                "websocket.max-connections",
                &self.websocket.max_connections,
                "must fit in 32 bits",
            ));
        }
        if self.websocket.max_outbound_bytes < self.websocket.max_message_bytes {
            let other = "websocket.max-message-bytes";
            return Err(invalid(
                "websocket.max-outbound-bytes",
                &self.websocket.max_outbound_bytes,
                &format!(
                    "must be at least `{other}` = {} (from {}), or a client's largest message \
                     could never be delivered",
                    self.websocket.max_message_bytes,
                    origin(other)
                ),
            ));
        }
        if self.telemetry.output == TelemetryOutput::File && self.telemetry.file.trim().is_empty() {
            return Err(invalid(
                "telemetry.file",
                &self.telemetry.file,
                "must not be empty when telemetry.output is file",
            ));
        }
        if !self.node.id.is_empty() && !sente_lite_redis::valid_node_id(&self.node.id) {
            return Err(invalid(
                "node.id",
                &self.node.id,
                "expected 1 to 64 letters, digits, `.`, `_` or `-` (or empty for a random id)",
            ));
        }
        if self.broker.key_prefix.is_empty() {
            return Err(invalid(
                "broker.key-prefix",
                &self.broker.key_prefix,
                "must not be empty",
            ));
        }
        let url = &self.broker.redis_url;
        if !(url.starts_with("redis://") || url.starts_with("unix://")) {
            return Err(invalid(
                "broker.redis-url",
                url,
                "expected redis://host:port/db or unix:///path (TLS, rediss://, is not built in)",
            ));
        }
        if self.telemetry.handler_id.trim().is_empty() {
            return Err(invalid(
                "telemetry.handler-id",
                &self.telemetry.handler_id,
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// The IP to bind (`localhost` is 127.0.0.1).
    pub fn bind_ip(&self) -> Result<std::net::IpAddr, ConfigError> {
        self.host_ip().ok_or_else(|| ConfigError::Invalid {
            key: "host".to_owned(),
            value: self.host.clone(),
            origin: CODE_ORIGIN.to_owned(),
            message: "expected an IP address or localhost".to_owned(),
        })
    }

    fn host_ip(&self) -> Option<std::net::IpAddr> {
        if self.host.eq_ignore_ascii_case("localhost") {
            return Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        }
        self.host.parse().ok()
    }

    /// The engine's part.
    pub fn engine(&self) -> EngineConfig {
        let c = &self.channels;
        EngineConfig {
            auto_create: c.auto_create,
            default_channel: c.default_config,
            max_channels: c.max_channels,
            max_channel_id_bytes: c.max_channel_id_bytes,
            max_connections: self.websocket.max_connections,
            max_pending_rpc: c.max_pending_rpc,
            max_pending_rpc_per_connection: c.max_pending_rpc_per_connection,
            max_rpc_timeout_ms: c.max_rpc_timeout_ms,
            max_subscriptions_per_connection: self.websocket.max_subscriptions_per_connection,
            idle_channel_ttl_ms: c.idle_channel_ttl_ms,
            max_retained_bytes: c.max_retained_bytes,
            max_retained_bytes_total: c.max_retained_bytes_total,
        }
    }

    /// The Redis broker's part, with `node_id` (this node's id, already
    /// chosen when `node.id` is empty).
    pub fn redis(&self, node_id: &str) -> sente_lite_redis::RedisConfig {
        let b = &self.broker;
        sente_lite_redis::RedisConfig {
            url: b.redis_url.clone(),
            key_prefix: b.key_prefix.clone(),
            node_id: node_id.to_owned(),
            command_timeout: Duration::from_millis(self.websocket.message_timeout_ms),
            node_ttl: Duration::from_millis(b.node_ttl_ms),
            stream_size: b.stream_size,
            stream_ttl: Duration::from_millis(b.stream_ttl_ms),
        }
    }

    /// The transport's part.
    pub fn transport(&self) -> TransportConfig {
        let w = &self.websocket;
        TransportConfig {
            max_connections: w.max_connections,
            heartbeat_interval: Duration::from_millis(w.heartbeat_interval_ms),
            message_timeout: Duration::from_millis(w.message_timeout_ms),
            max_message_bytes: w.max_message_bytes,
            max_outbound_frames: w.max_outbound_frames,
            max_outbound_bytes: w.max_outbound_bytes,
            shutdown_drain: Duration::from_millis(w.shutdown_drain_ms),
            handshake_timeout: Duration::from_millis(self.http.handshake_timeout_ms),
        }
    }
}

/// `prefix.key`, or `key` at the top level.
fn dotted(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Every key of `config` with its value.
fn leaves(config: &Config) -> BTreeMap<String, toml::Value> {
    fn walk(t: &toml::Table, prefix: &str, out: &mut BTreeMap<String, toml::Value>) {
        for (k, v) in t {
            let key = dotted(prefix, k);
            match v {
                toml::Value::Table(sub) => walk(sub, &key, out),
                _ => {
                    out.insert(key, v.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(config) {
        walk(&t, "", &mut out);
    }
    out
}

/// Copies `src` into `dst`, refusing keys `dst` (the defaults) lacks and
/// values its key cannot hold.
fn merge(
    dst: &mut toml::Table,
    src: &toml::Table,
    prefix: &str,
    origin: &str,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    for (k, v) in src {
        let key = dotted(prefix, k);
        let Some(slot) = dst.get_mut(k) else {
            return Err(unknown_key(&key, origin));
        };
        match (slot, v) {
            (toml::Value::Table(d), toml::Value::Table(s)) => merge(d, s, &key, origin, origins)?,
            (toml::Value::Table(_), other) => {
                return Err(bad(&key, &shown(other), origin, "a table"));
            }
            (slot, v) => {
                let ty = ty_of(&key, slot);
                *slot = ty
                    .accept(v)
                    .ok_or_else(|| bad(&key, &shown(v), origin, &ty.expected()))?;
                origins.insert(key, origin.to_owned());
            }
        }
    }
    Ok(())
}

/// Sets one dotted key from a string, parsed as the key's type.
fn set(
    table: &mut toml::Table,
    key: &str,
    raw: &str,
    origin: &str,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    let mut parts = key.split('.').peekable();
    let mut cur = table;
    while let Some(part) = parts.next() {
        let unknown = || unknown_key(key, origin);
        if parts.peek().is_none() {
            let slot = cur.get_mut(part).ok_or_else(unknown)?;
            if slot.is_table() {
                return Err(bad(key, raw, origin, "a table (set its keys one by one)"));
            }
            let ty = ty_of(key, slot);
            *slot = ty
                .parse(raw)
                .ok_or_else(|| bad(key, raw, origin, &ty.expected()))?;
            origins.insert(key.to_owned(), origin.to_owned());
            return Ok(());
        }
        cur = match cur.get_mut(part) {
            Some(toml::Value::Table(t)) => t,
            _ => return Err(unknown()),
        };
    }
    Err(unknown_key(key, origin))
}

/// TOML integers are i64: no key can hold more.
const TOML_MAX: u64 = i64::MAX as u64;
const U16: Ty = Ty::UInt(u16::MAX as u64);
const U64: Ty = Ty::UInt(TOML_MAX);
const USIZE: Ty = Ty::UInt(if (usize::MAX as u64) < TOML_MAX {
    usize::MAX as u64
} else {
    TOML_MAX
});

/// The type of every key: what its field in [`Config`] can hold. A value
/// is checked against it where it is read, so that an error can say which
/// source it came from (the deserialization of the merged table at the end
/// could not). A test checks this table against the fields' real types.
const TYPES: &[(&str, Ty)] = &[
    ("port", U16),
    ("host", Ty::Str),
    ("telemetry.enabled", Ty::Bool),
    ("telemetry.handler-id", Ty::Str),
    ("telemetry.min-level", LEVEL),
    ("telemetry.output", OUTPUT),
    ("telemetry.format", FORMAT),
    ("telemetry.file", Ty::Str),
    ("telemetry.buffer-size", USIZE),
    ("websocket.max-connections", USIZE),
    ("websocket.heartbeat-interval-ms", U64),
    ("websocket.message-timeout-ms", U64),
    ("websocket.max-message-bytes", USIZE),
    ("websocket.max-outbound-frames", USIZE),
    ("websocket.max-outbound-bytes", USIZE),
    ("websocket.shutdown-drain-ms", U64),
    ("websocket.max-subscriptions-per-connection", USIZE),
    ("http.handshake-timeout-ms", U64),
    ("broker.kind", KIND),
    ("broker.redis-url", Ty::Str),
    ("broker.key-prefix", Ty::Str),
    ("broker.node-ttl-ms", U64),
    ("broker.stream-size", USIZE),
    ("broker.stream-ttl-ms", U64),
    ("node.id", Ty::Str),
    ("channels.auto-create", Ty::Bool),
    ("channels.max-channels", USIZE),
    ("channels.max-channel-id-bytes", USIZE),
    ("channels.max-pending-rpc", USIZE),
    ("channels.max-pending-rpc-per-connection", USIZE),
    ("channels.max-rpc-timeout-ms", U64),
    ("channels.idle-channel-ttl-ms", U64),
    ("channels.max-retained-bytes", USIZE),
    ("channels.max-retained-bytes-total", USIZE),
    ("channels.default-config.max-subscribers", USIZE),
    ("channels.default-config.message-retention", USIZE),
    ("channels.default-config.rpc-timeout-ms", U64),
    ("channels.default-config.telemetry-enabled", Ty::Bool),
];

const LEVEL: Ty = Ty::Names {
    names: &["trace", "debug", "info", "warn", "error", "fatal", "report"],
    // As Level::from_str: any case, and "warning".
    canonical: |s| s.parse::<Level>().ok().map(Level::as_str),
};
const OUTPUT: Ty = Ty::Names {
    names: &["console", "file", "none"],
    canonical: |s| {
        TelemetryOutput::ALL
            .iter()
            .map(|o| o.as_str())
            .find(|n| *n == s)
    },
};
const KIND: Ty = Ty::Names {
    names: &["local", "redis"],
    canonical: |s| BrokerKind::ALL.iter().map(|k| k.as_str()).find(|n| *n == s),
};
const FORMAT: Ty = Ty::Names {
    names: &["text", "json"],
    canonical: |s| {
        TelemetryFormat::ALL
            .iter()
            .map(|f| f.as_str())
            .find(|n| *n == s)
    },
};

/// What a key's value must be.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Bool,
    Str,
    /// An integer from 0 to this.
    UInt(u64),
    /// A string naming one of an enum's values (serialized as `names`);
    /// `canonical` gives the serialized name of a string it accepts.
    Names {
        names: &'static [&'static str],
        canonical: fn(&str) -> Option<&'static str>,
    },
}

/// The type of `key`, whose default is `default`.
fn ty_of(key: &str, default: &toml::Value) -> Ty {
    match TYPES.iter().find(|(k, _)| *k == key) {
        Some((_, ty)) => *ty,
        // Not in the table (a test forbids it): as the default's type.
        None => match default {
            toml::Value::Boolean(_) => Ty::Bool,
            toml::Value::Integer(_) => U64,
            _ => Ty::Str,
        },
    }
}

impl Ty {
    /// `v` if a value of this type, in its serialized form.
    fn accept(self, v: &toml::Value) -> Option<toml::Value> {
        let ok = match (self, v) {
            (Ty::Bool, toml::Value::Boolean(_)) | (Ty::Str, toml::Value::String(_)) => true,
            (Ty::UInt(max), toml::Value::Integer(i)) => u64::try_from(*i).is_ok_and(|u| u <= max),
            (Ty::Names { canonical, .. }, toml::Value::String(s)) => {
                return canonical(s).map(|n| toml::Value::String(n.to_owned()));
            }
            _ => false,
        };
        ok.then(|| v.clone())
    }

    /// A string from the environment or a flag as a value of this type.
    fn parse(self, raw: &str) -> Option<toml::Value> {
        let raw = raw.trim();
        let v = match self {
            Ty::Bool => match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
                "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
                _ => return None,
            },
            Ty::UInt(_) => toml::Value::Integer(raw.parse().ok()?),
            Ty::Str | Ty::Names { .. } => toml::Value::String(raw.to_owned()),
        };
        self.accept(&v)
    }

    /// What a bad value's error says was expected.
    fn expected(self) -> String {
        match self {
            Ty::Bool => "a boolean (true/false)".to_owned(),
            Ty::Str => "a string".to_owned(),
            Ty::UInt(max) => format!("an integer from 0 to {max}"),
            Ty::Names { names, .. } => match names.split_last() {
                Some((last, [])) => (*last).to_owned(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => "nothing".to_owned(),
            },
        }
    }
}

/// A TOML value as an error shows it: a string without its quotes.
fn shown(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn unknown_key(key: &str, origin: &str) -> ConfigError {
    ConfigError::UnknownKey {
        key: key.to_owned(),
        origin: origin.to_owned(),
        suggestion: closest(key, &Config::keys()),
    }
}

/// The candidate nearest to `name`, when it is near enough to be a typo of
/// it (at most two edits, and a small part of the name).
fn closest(name: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 2 && *d * 3 <= c.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: the distance between a[..i] and b[..j].
    let mut rows: Vec<Vec<usize>> = (0..=a.len())
        .map(|i| (0..=b.len()).map(|j| if i == 0 { j } else { i }).collect())
        .collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

fn bad(key: &str, value: &str, origin: &str, expected: &str) -> ConfigError {
    ConfigError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        origin: origin.to_owned(),
        expected: expected.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> tempfile_lite::TempFile {
        tempfile_lite::TempFile::new(text)
    }

    /// A minimal temp file without a dependency.
    mod tempfile_lite {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU64, Ordering};

        pub struct TempFile(PathBuf);

        impl TempFile {
            pub fn new(text: &str) -> Self {
                static N: AtomicU64 = AtomicU64::new(0);
                let p = std::env::temp_dir().join(format!(
                    "sente-lite-config-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&p, text).unwrap();
                TempFile(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_are_the_seeds() {
        let c = Config::load(None, &[], &[]).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.host, "localhost");
        assert!(c.telemetry.enabled);
        assert_eq!(c.websocket.max_connections, 1000);
        assert_eq!(c.websocket.heartbeat_interval_ms, 30_000);
        assert_eq!(c.websocket.message_timeout_ms, 5_000);
        assert!(c.channels.auto_create);
        assert_eq!(c.channels.default_config.max_subscribers, 1000);
        assert_eq!(c.channels.default_config.message_retention, 0);
        assert_eq!(c.channels.default_config.rpc_timeout_ms, 30_000);
        assert_eq!(c.websocket.max_message_bytes, 1 << 20);
    }

    #[test]
    fn file_then_env_then_flags() {
        let f = file(
            "port = 4000\nhost = \"0.0.0.0\"\n[websocket]\nmax-connections = 10\n\
             [channels.default-config]\nmessage-retention = 3\nmax-subscribers = 7\n",
        );
        let c = Config::load(Some(f.path()), &[], &[]).unwrap();
        assert_eq!((c.port, c.websocket.max_connections), (4000, 10));
        assert_eq!(c.channels.default_config.message_retention, 3);

        let e = env(&[
            ("PORT", "5000"),
            ("MAX_SUBSCRIBERS", "70"),
            ("SENTE_LITE_WEBSOCKET_MAX_CONNECTIONS", "20"),
            ("APP_NAME", "my-app"),
            ("TELEMETRY_ENABLED", "false"),
        ]);
        let c = Config::load(Some(f.path()), &e, &[]).unwrap();
        assert_eq!(c.port, 5000);
        assert_eq!(c.host, "0.0.0.0", "the file's value where env is silent");
        assert_eq!(c.websocket.max_connections, 20);
        assert_eq!(c.channels.default_config.max_subscribers, 70);
        assert_eq!(c.channels.default_config.message_retention, 3);
        assert_eq!(c.telemetry.handler_id, "my-app");
        assert!(!c.telemetry.enabled);

        let flags = vec![
            ("port".to_owned(), "6000".to_owned()),
            (
                "channels.default-config.message-retention".to_owned(),
                "9".to_owned(),
            ),
        ];
        let c = Config::load(Some(f.path()), &e, &flags).unwrap();
        assert_eq!(c.port, 6000);
        assert_eq!(c.channels.default_config.message_retention, 9);
        assert_eq!(c.websocket.max_connections, 20);
    }

    #[test]
    fn broker_keys_are_checked_and_named_with_their_source() {
        let e = env(&[("SENTE_LITE_NODE_ID", "no spaces")]);
        let err = Config::load(None, &e, &[]).unwrap_err().to_string();
        assert!(
            err.contains("`node.id`") && err.contains("SENTE_LITE_NODE_ID"),
            "{err}"
        );
        let e = env(&[("SENTE_LITE_BROKER_REDIS_URL", "http://x/")]);
        let err = Config::load(None, &e, &[]).unwrap_err().to_string();
        assert!(err.contains("`broker.redis-url`"), "{err}");
        let e = env(&[("SENTE_LITE_BROKER_KIND", "nats")]);
        let err = Config::load(None, &e, &[]).unwrap_err().to_string();
        assert!(err.ends_with("expected local or redis"), "{err}");
        let e = env(&[
            ("SENTE_LITE_BROKER_KIND", "redis"),
            ("SENTE_LITE_BROKER_REDIS_URL", "redis://127.0.0.1:6380/"),
            ("SENTE_LITE_NODE_ID", "node-a"),
        ]);
        let c = Config::load(None, &e, &[]).unwrap();
        assert_eq!(c.broker.kind, BrokerKind::Redis);
        let r = c.redis("node-a");
        assert_eq!(
            (r.url.as_str(), r.node_id.as_str()),
            ("redis://127.0.0.1:6380/", "node-a")
        );
        assert_eq!(
            r.command_timeout,
            Duration::from_millis(c.websocket.message_timeout_ms)
        );
    }

    #[test]
    fn our_env_name_wins_over_the_seeds_for_the_same_key() {
        let e = env(&[("PORT", "5000"), ("SENTE_LITE_PORT", "5001")]);
        assert_eq!(Config::load(None, &e, &[]).unwrap().port, 5001);
    }

    #[test]
    fn every_key_has_an_env_name_that_works() {
        for key in Config::keys() {
            let value = match key.as_str() {
                "host" => "127.0.0.1",
                "telemetry.min-level" => "debug",
                "telemetry.output" => "none",
                "telemetry.format" => "json",
                "telemetry.handler-id" | "telemetry.file" => "x",
                "broker.kind" => "redis",
                "broker.redis-url" => "redis://10.0.0.1:6380/",
                "broker.key-prefix" | "node.id" => "x",
                "port" => "4321",
                k if k.ends_with("enabled") || k.ends_with("auto-create") => "false",
                _ => "2000000",
            };
            let e = env(&[(&env_name(&key), value)]);
            let c = Config::load(None, &e, &[]);
            assert!(c.is_ok(), "{key} via {}: {:?}", env_name(&key), c.err());
            assert_ne!(c.unwrap(), Config::default(), "{key} changed nothing");
        }
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let e = env(&[("PORT", "abc")]);
        let err = Config::load(None, &e, &[]).unwrap_err().to_string();
        assert!(
            err.contains("`port`") && err.contains("abc") && err.contains("PORT"),
            "{err}"
        );

        let err = Config::load(None, &env(&[("PORT", "70000")]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");

        let flags = vec![("websocket.max-connections".to_owned(), "0".to_owned())];
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(
            err.contains("websocket.max-connections") && err.contains("at least 1"),
            "{err}"
        );

        let flags = vec![("websocket.nope".to_owned(), "1".to_owned())];
        let err = Config::load(None, &[], &flags).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { ref key, .. } if key == "websocket.nope"));

        let f = file("[channels]\nauto-create = \"yes please\"\n");
        let err = Config::load(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("channels.auto-create"), "{err}");

        let f = file("[websocket]\nmax-conections = 5\n");
        let err = Config::load(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("websocket.max-conections"), "{err}");

        let f = file("port = ");
        assert!(matches!(
            Config::load(Some(f.path()), &[], &[]).unwrap_err(),
            ConfigError::File { .. }
        ));

        let missing = Path::new("/nonexistent/sente-lite.toml");
        assert!(matches!(
            Config::load(Some(missing), &[], &[]).unwrap_err(),
            ConfigError::Read { .. }
        ));

        let flags = vec![("host".to_owned(), "not an ip".to_owned())];
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(err.contains("`host`"), "{err}");

        let flags = vec![("telemetry.min-level".to_owned(), "loud".to_owned())];
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(err.contains("telemetry.min-level"), "{err}");
    }

    #[test]
    fn every_sente_lite_variable_must_be_a_key() {
        let err = Config::load(None, &env(&[("SENTE_LITE_PROT", "1")]), &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownVariable { name, suggestion }
                if name == "SENTE_LITE_PROT" && suggestion.as_deref() == Some("SENTE_LITE_PORT")),
            "{err:?}"
        );
        // Checked before any variable is applied, whatever the order.
        let e = env(&[("PORT", "abc"), ("SENTE_LITE_NOPE", "1")]);
        let err = Config::load(None, &e, &[]).unwrap_err();
        assert!(
            matches!(err, ConfigError::UnknownVariable { .. }),
            "{err:?}"
        );
        // Every key's own variable is accepted.
        let all: Vec<(String, String)> = Config::keys()
            .iter()
            .map(|k| (env_name(k), String::new()))
            .collect();
        let err = Config::load(None, &all, &[]).unwrap_err();
        assert!(
            !matches!(err, ConfigError::UnknownVariable { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_keys_suggest_the_nearest() {
        let f = file("[websocket]\nmax-conections = 5\n");
        let err = Config::load(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("; did you mean `websocket.max-connections`?"),
            "{err}"
        );
        let flags = vec![("prot".to_owned(), "1".to_owned())];
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(err.ends_with("did you mean `port`?"), "{err}");
        let flags = vec![("websocket.nope".to_owned(), "1".to_owned())];
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(!err.contains("did you mean"), "{err}");

        assert_eq!(edit_distance("port", "prot"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(
            closest("LOG", &["PORT".to_owned(), "HOST".to_owned()]),
            None
        );
    }

    /// The key's slot in a table.
    fn slot<'t>(t: &'t mut toml::Table, key: &str) -> &'t mut toml::Value {
        match key.split_once('.') {
            Some((first, rest)) => match t.get_mut(first) {
                Some(toml::Value::Table(sub)) => slot(sub, rest),
                _ => panic!("{key} is no key"),
            },
            None => t.get_mut(key).unwrap(),
        }
    }

    #[test]
    fn the_type_table_matches_the_fields() {
        let Ok(toml::Value::Table(defaults)) = toml::Value::try_from(Config::default()) else {
            panic!("the defaults are a table");
        };
        let mut listed: Vec<&str> = TYPES.iter().map(|(k, _)| *k).collect();
        let mut keys = Config::keys();
        listed.sort_unstable();
        keys.sort_unstable();
        assert_eq!(listed, keys, "TYPES lists every key once");
        for (key, ty) in TYPES {
            let loads = |v: toml::Value| {
                let mut t = defaults.clone();
                *slot(&mut t, key) = v;
                toml::Value::Table(t).try_into::<Config>().is_ok()
            };
            let int = |i: u64| toml::Value::Integer(i64::try_from(i).unwrap());
            let text = |s: &str| toml::Value::String(s.to_owned());
            match *ty {
                Ty::UInt(max) => {
                    assert!(loads(int(max)), "{key} holds {max}");
                    assert!(!loads(toml::Value::Integer(-1)), "{key} holds -1");
                    if max < TOML_MAX {
                        assert!(!loads(int(max + 1)), "{key} holds {max} + 1");
                    }
                    assert!(!loads(text("1")), "{key} holds a string");
                }
                Ty::Bool => {
                    assert!(loads(toml::Value::Boolean(true)), "{key}");
                    assert!(!loads(text("true")), "{key} holds a string");
                }
                Ty::Str => {
                    assert!(loads(text("x")), "{key} holds any string");
                    assert!(!loads(toml::Value::Integer(1)), "{key} holds an integer");
                }
                Ty::Names { names, canonical } => {
                    for n in names {
                        assert!(loads(text(n)), "{key} holds {n}");
                        assert_eq!(canonical(n), Some(*n), "{key}");
                    }
                    assert!(!loads(text("zzz")), "{key} holds any string");
                    assert_eq!(canonical("zzz"), None, "{key}");
                }
            }
        }
    }

    #[test]
    fn type_errors_are_found_where_the_value_is_read() {
        // Out of the key's range, negative, wrong type: each from its
        // source, never the deserializer's words.
        type Pairs = &'static [(&'static str, &'static str)];
        let cases: [(Pairs, Pairs, &str); 4] = [
            (&[("PORT", "70000")], &[], "environment PORT"),
            (&[], &[("port", "65536")], "command line"),
            (
                &[("SENTE_LITE_TELEMETRY_BUFFER_SIZE", "-1")],
                &[],
                "environment SENTE_LITE_TELEMETRY_BUFFER_SIZE",
            ),
            (
                &[("TELEMETRY_ENABLED", "maybe")],
                &[],
                "environment TELEMETRY_ENABLED",
            ),
        ];
        for (e, flags, origin) in cases {
            let err = Config::load(None, &env(e), &env(flags)).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadValue { origin: o, .. } if o == origin),
                "{err:?}"
            );
        }
        let f = file("port = 65536\n");
        let err = Config::load(Some(f.path()), &[], &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, value, expected, .. }
                if (key.as_str(), value.as_str(), expected.as_str())
                    == ("port", "65536", "an integer from 0 to 65535")),
            "{err:?}"
        );
        let f = file("host = 7\n");
        let err = Config::load(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a string"), "{err}");
        let f = file("[telemetry]\nhandler-id = \"x\"\nfile = [1]\n");
        let err = Config::load(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`telemetry.file`") && err.contains("[1]"),
            "{err}"
        );
        let flags = env(&[("websocket", "3")]);
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(err.contains("a table"), "{err}");
    }

    /// The origin of an `Invalid` error, or a panic.
    fn invalid_origin(r: Result<Config, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { origin, .. }) => origin,
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn rule_errors_name_the_source_of_the_final_value() {
        let f = file("[websocket]\nmessage-timeout-ms = 0\n");
        let path = f.path().display().to_string();
        assert_eq!(invalid_origin(Config::load(Some(f.path()), &[], &[])), path);
        let e = env(&[("SENTE_LITE_WEBSOCKET_MESSAGE_TIMEOUT_MS", "0")]);
        assert_eq!(
            invalid_origin(Config::load(Some(f.path()), &e, &[])),
            "environment SENTE_LITE_WEBSOCKET_MESSAGE_TIMEOUT_MS"
        );
        let flags = env(&[("websocket.message-timeout-ms", "0")]);
        assert_eq!(
            invalid_origin(Config::load(None, &[], &flags)),
            "command line"
        );
        // The later source wins, for the origin as for the value.
        let e = env(&[("SENTE_LITE_WEBSOCKET_MESSAGE_TIMEOUT_MS", "7")]);
        let c = Config::load(Some(f.path()), &e, &[]).unwrap();
        assert_eq!(c.websocket.message_timeout_ms, 7);
        let e = env(&[("APP_NAME", " ")]);
        assert_eq!(
            invalid_origin(Config::load(None, &e, &[])),
            "environment APP_NAME"
        );
        // A rule between two keys: the one named first is the default here.
        let flags = env(&[("websocket.max-message-bytes", "9000000")]);
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(
            err.starts_with("`websocket.max-outbound-bytes` = \"8388608\" (from default): ")
                && err.contains("`websocket.max-message-bytes` = 9000000 (from command line)"),
            "{err}"
        );
    }

    #[test]
    fn validate_names_values_set_in_code() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.websocket.heartbeat_interval_ms = 0;
        assert_eq!(
            invalid_origin(c.validate().map(|()| c.clone())),
            "the Rust API"
        );
        c.websocket.heartbeat_interval_ms = 10;
        c.websocket.max_message_bytes = usize::MAX / 2;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("(from default)") && err.contains("(from the Rust API)"),
            "{err}"
        );
        c.websocket.max_message_bytes = 1;
        c.host = "nowhere".to_owned();
        assert_eq!(
            invalid_origin(c.validate().map(|()| c.clone())),
            "the Rust API"
        );
        assert!(matches!(
            c.bind_ip(),
            Err(ConfigError::Invalid { ref key, ref origin, .. }) if key == "host" && origin == "the Rust API"
        ));
    }

    #[test]
    fn zeros_that_would_refuse_everything_are_refused() {
        for key in [
            "channels.default-config.max-subscribers",
            "channels.default-config.rpc-timeout-ms",
            "channels.max-rpc-timeout-ms",
            "telemetry.buffer-size",
        ] {
            let err = Config::load(None, &[], &env(&[(key, "0")])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, message, .. }
                    if k == key && message == "must be at least 1"),
                "{key}: {err:?}"
            );
        }
        let mut c = Config::default();
        c.channels.default_config.max_subscribers = 0;
        assert!(c.validate().is_err(), "validate() checks it too");
        // The file is needed only when it is written to.
        let flags = env(&[("telemetry.file", ""), ("telemetry.output", "none")]);
        assert!(Config::load(None, &[], &flags).is_ok());
        let flags = env(&[("telemetry.file", ""), ("telemetry.output", "file")]);
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(
            err.contains("`telemetry.file` = \"\" (from command line)"),
            "{err}"
        );
    }

    #[test]
    fn telemetry_values_are_enums_named_as_before() {
        let text = toml::to_string(&Config::default()).unwrap();
        for line in [
            "min-level = \"info\"",
            "output = \"console\"",
            "format = \"text\"",
        ] {
            assert!(text.contains(line), "{text}");
        }
        let names = |ty: Ty| match ty {
            Ty::Names { names, .. } => names.to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(names(LEVEL), Level::ALL.map(Level::as_str));
        assert_eq!(
            names(OUTPUT),
            TelemetryOutput::ALL.map(TelemetryOutput::as_str)
        );
        assert_eq!(
            names(FORMAT),
            TelemetryFormat::ALL.map(TelemetryFormat::as_str)
        );
        for o in TelemetryOutput::ALL {
            assert_eq!(toml::Value::try_from(o).unwrap().as_str(), Some(o.as_str()));
            assert_eq!(o.to_string(), o.as_str());
        }
        for f in TelemetryFormat::ALL {
            assert_eq!(toml::Value::try_from(f).unwrap().as_str(), Some(f.as_str()));
        }

        let e = env(&[
            ("SENTE_LITE_TELEMETRY_MIN_LEVEL", " Warning "),
            ("SENTE_LITE_TELEMETRY_OUTPUT", "file"),
            ("SENTE_LITE_TELEMETRY_FORMAT", "json"),
        ]);
        let t = Config::load(None, &e, &[]).unwrap().telemetry;
        assert_eq!(
            (t.min_level, t.output, t.format),
            (Level::Warn, TelemetryOutput::File, TelemetryFormat::Json)
        );
        let f = file("[telemetry]\nmin-level = \"ERROR\"\noutput = \"none\"\n");
        let t = Config::load(Some(f.path()), &[], &[]).unwrap().telemetry;
        assert_eq!(
            (t.min_level, t.output),
            (Level::Error, TelemetryOutput::None)
        );
        // Output and format names are exact, as they always were.
        let e = env(&[("SENTE_LITE_TELEMETRY_OUTPUT", "Console")]);
        let err = Config::load(None, &e, &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, value, origin, expected }
                if key == "telemetry.output" && value == "Console"
                    && origin == "environment SENTE_LITE_TELEMETRY_OUTPUT"
                    && expected == "console, file or none"),
            "{err:?}"
        );
        let f = file("[telemetry]\nformat = 1\n");
        let err = Config::load(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("expected text or json"), "{err}");
    }

    #[test]
    fn configuration_md_documents_every_key_with_its_default() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CONFIGURATION.md"),
        )
        .unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        for key in Config::keys() {
            let mut v = &defaults;
            for part in key.split('.') {
                v = &v[part];
            }
            let row = format!("| `{key}` | `{v}` |");
            assert!(
                doc.contains(&row),
                "docs/CONFIGURATION.md lacks the row {row}"
            );
        }
    }

    #[test]
    fn parts_map_to_engine_and_transport() {
        let mut c = Config::default();
        c.websocket.heartbeat_interval_ms = 1234;
        c.channels.max_channels = 5;
        assert_eq!(
            c.transport().heartbeat_interval,
            Duration::from_millis(1234)
        );
        assert_eq!(c.engine().max_channels, 5);
        assert_eq!(c.engine().max_connections, c.websocket.max_connections);
        assert_eq!(c.bind_ip().unwrap().to_string(), "127.0.0.1");
    }
}
