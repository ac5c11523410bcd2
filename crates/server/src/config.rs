//! The server's configuration: the seed's keys and defaults, loaded from
//! defaults < TOML file < environment < command-line flags.
//!
//! Every key has a dotted name (`websocket.max-connections`) used in files
//! (as TOML tables), in error messages, in `--set KEY=VALUE`, and, upper-cased
//! with `_` for `.` and `-`, in `SENTE_LITE_*` environment variables
//! (`SENTE_LITE_WEBSOCKET_MAX_CONNECTIONS`). The seed's own variables (PORT,
//! HOST, ...) are honoured too.

use sente_lite_channels::EngineConfig;
use sente_lite_protocol::{ChannelConfig, RpcDispatch, SlowConsumerPolicy};
use sente_lite_transport::{
    redact_credentials, IpNet, OriginPattern, Secret, Tls, TlsError, TransportConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::Path;
use std::time::Duration;
use telemere_lite::Level;

/// The whole configuration. See docs/CONFIGURATION.md for every key.
///
/// Its `Debug` shows [`Config::redacted`], never a secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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
    pub tls: TlsConfig,
    pub broker: BrokerConfig,
    pub node: NodeConfig,
    pub auth: AuthConfig,
}

/// `auth.allow-anonymous`: `auto` (the default) is `true` when no key is
/// configured and `false` when one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AllowAnonymous {
    /// As the keys say.
    #[default]
    Auto,
    /// Connections without a token may act.
    Yes,
    /// Connections without a token may only `authenticate` and `ping`.
    No,
}

impl Serialize for AllowAnonymous {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AllowAnonymous::Auto => s.serialize_str("auto"),
            AllowAnonymous::Yes => s.serialize_bool(true),
            AllowAnonymous::No => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for AllowAnonymous {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AllowAnonymous;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<AllowAnonymous, E> {
                Ok(if b {
                    AllowAnonymous::Yes
                } else {
                    AllowAnonymous::No
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AllowAnonymous, E> {
                if v == "auto" {
                    Ok(AllowAnonymous::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `[auth]`: who connections are.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Shared secret of HS256/384/512 tokens; empty: none.
    pub jwt_hmac_secret: String,
    /// PEM public key (RSA, EC, Ed25519) of RS*/PS*, ES256/384, EdDSA
    /// tokens; empty: none.
    pub jwt_public_key_file: String,
    /// Whether connections without a token may act.
    pub allow_anonymous: AllowAnonymous,
    /// How long a connection that must authenticate has to do it.
    pub timeout_ms: u64,
    /// How far past its `exp` a token is still taken.
    pub leeway_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_hmac_secret: String::new(),
            jwt_public_key_file: String::new(),
            allow_anonymous: AllowAnonymous::Auto,
            timeout_ms: 10_000,
            leeway_ms: 5_000,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_hmac_secret", &secret_shown(&self.jwt_hmac_secret))
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("timeout_ms", &self.timeout_ms)
            .field("leeway_ms", &self.leeway_ms)
            .finish()
    }
}

impl AuthConfig {
    /// Whether a key to check tokens with is configured.
    pub fn has_key(&self) -> bool {
        !self.jwt_hmac_secret.is_empty() || !self.jwt_public_key_file.is_empty()
    }

    /// `allow-anonymous` with `auto` decided.
    pub fn anonymous_allowed(&self) -> bool {
        match self.allow_anonymous {
            AllowAnonymous::Auto => !self.has_key(),
            AllowAnonymous::Yes => true,
            AllowAnonymous::No => false,
        }
    }
}

/// Who may do an operation on a namespace's channels (`subscribe`,
/// `publish`, `rpc-call` of `[channels]` and `[channels.namespaces.NAME]`):
/// `anyone`, `authenticated`, `subscribers`, `granted` or `nobody`.
pub type Permission = sente_lite_auth::Who;

/// `[channels.namespaces.NAME]`: the channel defaults and permissions of
/// the channels `NAME:...`. An unset key has the built-in default of the
/// same key of the default namespace (not its configured value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct NamespaceConfig {
    pub auto_create: bool,
    pub max_subscribers: usize,
    pub message_retention: usize,
    pub rpc_timeout_ms: u64,
    pub history_size: usize,
    pub history_ttl_ms: u64,
    pub presence: bool,
    pub join_leave: bool,
    pub rpc_dispatch: RpcDispatch,
    pub on_slow_consumer: SlowConsumerPolicy,
    pub subscribe: Permission,
    pub publish: Permission,
    pub rpc_call: Permission,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        let e = EngineConfig::default();
        NamespaceConfig {
            auto_create: e.auto_create,
            max_subscribers: e.default_channel.max_subscribers,
            message_retention: e.default_channel.message_retention,
            rpc_timeout_ms: e.default_channel.rpc_timeout_ms,
            history_size: e.default_channel.history_size,
            history_ttl_ms: e.default_channel.history_ttl_ms,
            presence: e.default_channel.presence,
            join_leave: e.default_channel.join_leave,
            rpc_dispatch: e.default_channel.rpc_dispatch,
            on_slow_consumer: e.default_channel.on_slow_consumer,
            subscribe: Permission::Anyone,
            publish: Permission::Anyone,
            rpc_call: Permission::Anyone,
        }
    }
}

/// The fields of a namespace and their types, for the keys
/// `channels.namespaces.NAME.FIELD`.
const NAMESPACE_TYPES: &[(&str, Ty)] = &[
    ("auto-create", Ty::Bool),
    ("max-subscribers", USIZE),
    ("message-retention", USIZE),
    ("rpc-timeout-ms", U64),
    ("history-size", USIZE),
    ("history-ttl-ms", U64),
    ("presence", Ty::Bool),
    ("join-leave", Ty::Bool),
    ("rpc-dispatch", DISPATCH),
    ("on-slow-consumer", SLOW_CONSUMER),
    ("subscribe", PERMISSION),
    ("publish", PERMISSION),
    ("rpc-call", PERMISSION),
];

/// The table of every namespace.
const NAMESPACES: &str = "channels.namespaces";

/// `NAME` and `FIELD` of a key `channels.namespaces.NAME.FIELD`. A name
/// may contain `.`, a field never does: the field is after the last `.`.
fn namespace_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(NAMESPACES)?.strip_prefix('.')?;
    rest.rsplit_once('.')
}

/// Whether `name` can name a namespace.
fn valid_namespace(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A fresh namespace's table, every key at its default.
fn namespace_template() -> toml::Table {
    match toml::Value::try_from(NamespaceConfig::default()) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
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
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Longest a new TCP connection may take to send its whole first
    /// request head (an HTTP request or a WebSocket upgrade); then it is
    /// closed.
    pub handshake_timeout_ms: u64,
    /// Most sockets at once still in their handshake (TLS, first request
    /// head); more are closed at once.
    pub max_pending_handshakes: usize,
    /// Proxies (IPs or CIDR networks) whose `X-Forwarded-For` /
    /// `X-Real-IP` name the client.
    pub trusted_proxies: Vec<String>,
    /// Serve HTTP/2 as well as HTTP/1.1.
    pub http2: bool,
    /// When not empty, `/stats` and `/channels` need `Authorization:
    /// Bearer <admin-token>` (HTTP 401 `unauthorized` otherwise). A secret:
    /// shown as `"<set>"` ([`SECRET_KEYS`]).
    pub admin_token: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let t = TransportConfig::default();
        HttpConfig {
            handshake_timeout_ms: millis(t.handshake_timeout),
            max_pending_handshakes: t.max_pending_handshakes,
            trusted_proxies: t.trusted_proxies.iter().map(|n| n.to_string()).collect(),
            http2: t.http2,
            admin_token: String::new(),
        }
    }
}

/// `[tls]`: both files, or neither (plain `ws://` and `http://`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (the server's certificate first).
    pub cert_file: String,
    /// PEM private key of that certificate.
    pub key_file: String,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("handshake_timeout_ms", &self.handshake_timeout_ms)
            .field("max_pending_handshakes", &self.max_pending_handshakes)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("http2", &self.http2)
            .field("admin_token", &secret_shown(&self.admin_token))
            .finish()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The redacted table, so a logged configuration shows no secret.
        write!(f, "Config {}", toml::Value::Table(self.redacted()))
    }
}

/// The keys whose values are secrets: `--print-config`, `server-config` in
/// `/stats` and `Debug` show them as [`SECRET_SHOWN`] when set (and as
/// `""` when not). A key listed here that this build does not have is
/// skipped.
pub const SECRET_KEYS: [&str; 2] = ["http.admin-token", "auth.jwt-hmac-secret"];

/// The keys holding URLs that may carry a password
/// (`redis://user:password@host`): shown with the password replaced by
/// `<redacted>`.
pub const URL_KEYS: [&str; 1] = ["broker.redis-url"];

/// How a secret that is set is shown.
pub const SECRET_SHOWN: &str = "<set>";

/// A secret as shown: `"<set>"`, or `""` when it is not set.
fn secret_shown(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        SECRET_SHOWN
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
    /// Queue of the async handler, in signals.
    pub buffer_size: usize,
    /// Queue of the async handler, in bytes (as the signals hold them).
    pub buffer_bytes: usize,
    /// Every string in a signal (message, data, error) longer than this
    /// is cut, its full length noted.
    pub max_field_bytes: usize,
    /// Warnings (and worse) caused by one connection that are written per
    /// minute, after a burst of as many; the rest are counted as
    /// `throttled`. 0: no limit.
    pub max_warnings_per_connection_per_minute: u32,
    /// How long a stop waits for the telemetry handler to drain and flush
    /// (a blocked log sink included) before the process goes on.
    pub shutdown_timeout_ms: u64,
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
    pub max_connections_per_ip: usize,
    pub allowed_origins: Vec<String>,
    pub heartbeat_interval_ms: u64,
    pub message_timeout_ms: u64,
    pub max_message_bytes: usize,
    pub max_outbound_frames: usize,
    pub max_outbound_bytes: usize,
    /// 0: a quarter of the machine's memory, read at start
    /// ([`machine_memory`](crate::machine_memory)).
    pub max_outbound_bytes_total: usize,
    pub max_frames_per_second: u32,
    pub frames_burst: u32,
    pub max_refused_frames_per_second: u32,
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
    pub max_recovery_messages: usize,
    pub default_config: ChannelConfig,
    /// Who may subscribe to channels of the default namespace.
    pub subscribe: Permission,
    /// Who may publish to them.
    pub publish: Permission,
    /// Who may call their workers.
    pub rpc_call: Permission,
    /// Named namespaces (`[channels.namespaces.NAME]`).
    pub namespaces: BTreeMap<String, NamespaceConfig>,
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
            tls: TlsConfig::default(),
            broker: BrokerConfig::default(),
            node: NodeConfig::default(),
            auth: AuthConfig::default(),
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
            buffer_bytes: telemere_lite::DEFAULT_BUFFER_BYTES,
            max_field_bytes: telemere_lite::DEFAULT_MAX_FIELD_BYTES,
            max_warnings_per_connection_per_minute: 60,
            shutdown_timeout_ms: 5_000,
        }
    }
}

impl Default for WebsocketConfig {
    fn default() -> Self {
        let t = TransportConfig::default();
        WebsocketConfig {
            max_connections: t.max_connections,
            max_connections_per_ip: t.max_connections_per_ip,
            allowed_origins: t
                .allowed_origins
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            heartbeat_interval_ms: millis(t.heartbeat_interval),
            message_timeout_ms: millis(t.message_timeout),
            max_message_bytes: t.max_message_bytes,
            max_outbound_frames: t.max_outbound_frames,
            max_outbound_bytes: t.max_outbound_bytes,
            max_outbound_bytes_total: 0,
            max_frames_per_second: t.max_frames_per_second,
            frames_burst: t.frames_burst,
            max_refused_frames_per_second: t.max_refused_frames_per_second,
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
            max_recovery_messages: e.max_recovery_messages,
            default_config: e.default_channel,
            subscribe: Permission::Anyone,
            publish: Permission::Anyone,
            rpc_call: Permission::Anyone,
            namespaces: BTreeMap::new(),
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
    /// A file a key names cannot be used (`tls.cert-file`, `tls.key-file`:
    /// unreadable, not PEM, a key that is not the certificate's), found at
    /// start ([`Config::tls`]).
    #[error("`{key}` = {path:?}: {message}")]
    KeyFile {
        key: String,
        path: String,
        message: String,
    },
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

/// The least `telemetry.max-field-bytes`.
const MIN_FIELD_BYTES: usize = 16;

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

/// The key a `SENTE_LITE_CHANNELS_NAMESPACES_<NAME>_<FIELD>` variable sets:
/// `channels.namespaces.<name>.<field>`, the name lower-cased (so a
/// namespace with `-` or upper-case letters in its name is set in a file
/// or by `--set` only).
fn namespace_env_key(var: &str) -> Option<String> {
    let prefix = env_name(NAMESPACES);
    let rest = var.strip_prefix(&prefix)?.strip_prefix('_')?;
    NAMESPACE_TYPES.iter().find_map(|(field, _)| {
        let suffix = format!("_{}", field.to_ascii_uppercase().replace('-', "_"));
        let name = rest.strip_suffix(&suffix)?;
        (!name.is_empty()).then(|| format!("{NAMESPACES}.{}.{field}", name.to_ascii_lowercase()))
    })
}

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
        if let Some((name, _)) = env.iter().find(|(n, _)| {
            n.starts_with(ENV_PREFIX) && !names.contains(n) && namespace_env_key(n).is_none()
        }) {
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
        for (name, v) in env {
            if let Some(key) = namespace_env_key(name) {
                set(
                    &mut table,
                    &key,
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
        let positive: [(&str, u64); 26] = [
            ("broker.node-ttl-ms", self.broker.node_ttl_ms),
            ("broker.stream-size", self.broker.stream_size as u64),
            ("broker.stream-ttl-ms", self.broker.stream_ttl_ms),
            ("http.handshake-timeout-ms", self.http.handshake_timeout_ms),
            // Every socket would be closed on accept.
            (
                "http.max-pending-handshakes",
                self.http.max_pending_handshakes as u64,
            ),
            ("telemetry.buffer-size", self.telemetry.buffer_size as u64),
            ("telemetry.buffer-bytes", self.telemetry.buffer_bytes as u64),
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
            // No client could send a single frame.
            (
                "websocket.max-frames-per-second",
                u64::from(self.websocket.max_frames_per_second),
            ),
            (
                "websocket.frames-burst",
                u64::from(self.websocket.frames_burst),
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
        let total = self.websocket.max_outbound_bytes_total;
        if total != 0 && total < self.websocket.max_outbound_bytes {
            let other = "websocket.max-outbound-bytes";
            return Err(invalid(
                "websocket.max-outbound-bytes-total",
                &total,
                &format!(
                    "must be 0 (a quarter of the machine's memory) or at least `{other}` = {} \
                     (from {}), or one full queue would pass it",
                    self.websocket.max_outbound_bytes,
                    origin(other)
                ),
            ));
        }
        let token = &self.http.admin_token;
        if !token.is_empty()
            && (token.len() < MIN_ADMIN_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            // The message names the rule, never the value (a secret).
            return Err(ConfigError::Invalid {
                key: "http.admin-token".to_owned(),
                value: SECRET_SHOWN.to_owned(),
                origin: origin("http.admin-token"),
                message: format!(
                    "expected at least {MIN_ADMIN_TOKEN_BYTES} printable ASCII characters \
                     without spaces (or empty for no token)"
                ),
            });
        }
        if self.telemetry.max_field_bytes < MIN_FIELD_BYTES {
            return Err(invalid(
                "telemetry.max-field-bytes",
                &self.telemetry.max_field_bytes,
                &format!("must be at least {MIN_FIELD_BYTES}, or what is kept says nothing"),
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
        self.check_auth(origin)?;
        if self.telemetry.handler_id.trim().is_empty() {
            return Err(invalid(
                "telemetry.handler-id",
                &self.telemetry.handler_id,
                "must not be empty",
            ));
        }
        let origins = &self.websocket.allowed_origins;
        if origins.iter().any(|o| o.trim().is_empty()) {
            return Err(invalid(
                "websocket.allowed-origins",
                &list(origins),
                "an empty pattern matches no Origin; use \"*\" for any, or leave it out",
            ));
        }
        for entry in &self.http.trusted_proxies {
            if let Err(e) = entry.parse::<IpNet>() {
                return Err(invalid(
                    "http.trusted-proxies",
                    &list(&self.http.trusted_proxies),
                    &e.to_string(),
                ));
            }
        }
        let (cert, key) = (&self.tls.cert_file, &self.tls.key_file);
        if cert.trim().is_empty() != key.trim().is_empty() {
            let (set, unset) = if cert.trim().is_empty() {
                ("tls.key-file", "tls.cert-file")
            } else {
                ("tls.cert-file", "tls.key-file")
            };
            return Err(invalid(
                unset,
                &"",
                &format!(
                    "must be set too when `{set}` is (from {}): TLS needs both files, \
                     or neither for plain ws:// and http://",
                    origin(set)
                ),
            ));
        }
        Ok(())
    }

    /// The `auth.*` and permission rules of [`check`](Self::check).
    fn check_auth(&self, origin: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: &dyn Display, message: &str| ConfigError::Invalid {
            key: key.to_owned(),
            value: value.to_string(),
            origin: origin(key),
            message: message.to_owned(),
        };
        let subscribe_ok = |p: Permission| {
            matches!(
                p,
                Permission::Anyone | Permission::Authenticated | Permission::Granted
            )
        };
        const SUBSCRIBE: &str = "expected anyone, authenticated or granted (subscribers are a \
                                 channel's RPC workers: `subscribe` decides who sees requests)";
        if !subscribe_ok(self.channels.subscribe) {
            return Err(invalid(
                "channels.subscribe",
                &self.channels.subscribe.as_str(),
                SUBSCRIBE,
            ));
        }
        for (name, ns) in &self.channels.namespaces {
            let key = |field: &str| format!("{NAMESPACES}.{name}.{field}");
            if !valid_namespace(name) {
                return Err(invalid(
                    NAMESPACES,
                    name,
                    "a namespace name is 1 to 64 letters, digits, `-`, `_` or `.`",
                ));
            }
            if !subscribe_ok(ns.subscribe) {
                return Err(invalid(
                    &key("subscribe"),
                    &ns.subscribe.as_str(),
                    SUBSCRIBE,
                ));
            }
            for (field, v) in [
                ("max-subscribers", ns.max_subscribers as u64),
                ("rpc-timeout-ms", ns.rpc_timeout_ms),
            ] {
                if v == 0 {
                    return Err(invalid(&key(field), &v, "must be at least 1"));
                }
            }
        }
        let a = &self.auth;
        if a.timeout_ms == 0 {
            return Err(invalid(
                "auth.timeout-ms",
                &a.timeout_ms,
                "must be at least 1",
            ));
        }
        if a.allow_anonymous == AllowAnonymous::No && !a.has_key() {
            return Err(invalid(
                "auth.allow-anonymous",
                &"false",
                "needs a key (auth.jwt-hmac-secret or auth.jwt-public-key-file): without one no \
                 connection could ever do anything",
            ));
        }
        self.verifier_with(&|key| origin(key)).map(|_| ())
    }

    /// The token verifier `auth.*` describes (`None` without a key); a key
    /// file that cannot be read or used is an error naming its key.
    fn verifier_with(
        &self,
        origin: &dyn Fn(&str) -> String,
    ) -> Result<Option<sente_lite_auth::JwtVerifier>, ConfigError> {
        let a = &self.auth;
        if !a.has_key() {
            return Ok(None);
        }
        let file_key = "auth.jwt-public-key-file";
        let invalid = |key: &str, value: &str, message: String| ConfigError::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            origin: origin(key),
            message,
        };
        let public_key_pem = if a.jwt_public_key_file.is_empty() {
            None
        } else {
            Some(std::fs::read(&a.jwt_public_key_file).map_err(|e| {
                invalid(
                    file_key,
                    &a.jwt_public_key_file,
                    format!("cannot read it: {e}"),
                )
            })?)
        };
        sente_lite_auth::JwtVerifier::new(sente_lite_auth::JwtKeys {
            hmac_secret: (!a.jwt_hmac_secret.is_empty())
                .then(|| a.jwt_hmac_secret.as_bytes().to_vec()),
            public_key_pem,
            leeway: Duration::from_millis(a.leeway_ms),
        })
        .map(Some)
        .map_err(|e| match e {
            sente_lite_auth::KeyError::EmptySecret | sente_lite_auth::KeyError::NoKey => {
                invalid("auth.jwt-hmac-secret", "<set>", e.to_string())
            }
            _ => invalid(file_key, &a.jwt_public_key_file, e.to_string()),
        })
    }

    /// The permission rules of every namespace.
    pub fn policy(&self) -> sente_lite_auth::Policy {
        let rules =
            |sub: Permission, publish: Permission, rpc: Permission| sente_lite_auth::Rules {
                subscribe: sub,
                publish,
                rpc_call: rpc,
            };
        let c = &self.channels;
        sente_lite_auth::Policy {
            default: rules(c.subscribe, c.publish, c.rpc_call),
            namespaces: c
                .namespaces
                .iter()
                .map(|(n, ns)| (n.clone(), rules(ns.subscribe, ns.publish, ns.rpc_call)))
                .collect(),
        }
    }

    /// The authorizer the configuration describes: `None` when it allows
    /// anyone everything without tokens (no `auth` key, every permission
    /// `anyone`), which the transport serves with no checks at all.
    pub fn authorizer(&self) -> Result<Option<sente_lite_auth::JwtAuthorizer>, ConfigError> {
        let verifier = self.verifier_with(&|_| CODE_ORIGIN.to_owned())?;
        let policy = self.policy();
        let open = policy.default == sente_lite_auth::Rules::default()
            && policy
                .namespaces
                .iter()
                .all(|(_, r)| *r == sente_lite_auth::Rules::default());
        if verifier.is_none() && open && self.auth.anonymous_allowed() {
            return Ok(None);
        }
        Ok(Some(sente_lite_auth::JwtAuthorizer::new(
            verifier,
            self.auth.anonymous_allowed(),
            Duration::from_millis(self.auth.timeout_ms),
            policy,
        )))
    }

    /// The TLS files read and checked (`None` without `tls.*`): an error
    /// names the key and the file.
    pub fn tls(&self) -> Result<Option<Tls>, ConfigError> {
        let (cert, key) = (self.tls.cert_file.trim(), self.tls.key_file.trim());
        if cert.is_empty() && key.is_empty() {
            return Ok(None);
        }
        let invalid = |key: &str, path: &str, message: String| ConfigError::KeyFile {
            key: key.to_owned(),
            path: path.to_owned(),
            message,
        };
        Tls::from_pem_files(cert, key)
            .map(Some)
            .map_err(|e| match e {
                TlsError::Cert { .. } => invalid("tls.cert-file", cert, e.to_string()),
                TlsError::Key { .. } => invalid("tls.key-file", key, e.to_string()),
                TlsError::Pair { .. } => invalid("tls.key-file", key, e.to_string()),
            })
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
            namespaces: c
                .namespaces
                .iter()
                .map(|(name, ns)| sente_lite_channels::Namespace {
                    name: name.clone(),
                    auto_create: ns.auto_create,
                    channel: ChannelConfig {
                        max_subscribers: ns.max_subscribers,
                        message_retention: ns.message_retention,
                        rpc_timeout_ms: ns.rpc_timeout_ms,
                        history_size: ns.history_size,
                        history_ttl_ms: ns.history_ttl_ms,
                        presence: ns.presence,
                        join_leave: ns.join_leave,
                        rpc_dispatch: ns.rpc_dispatch,
                        on_slow_consumer: ns.on_slow_consumer,
                        ..c.default_config
                    },
                })
                .collect(),
            max_subscriptions_per_connection: self.websocket.max_subscriptions_per_connection,
            idle_channel_ttl_ms: c.idle_channel_ttl_ms,
            max_retained_bytes: c.max_retained_bytes,
            max_retained_bytes_total: c.max_retained_bytes_total,
            max_recovery_messages: c.max_recovery_messages,
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

    /// The transport's part. A `websocket.max-outbound-bytes-total` of 0
    /// becomes a quarter of the machine's memory (read here, see
    /// [`machine_memory`](crate::machine_memory)), or 1 GiB where that
    /// cannot be read; never less than `max-outbound-bytes`.
    /// TLS is not in it: its files are read by [`tls`](Self::tls), which
    /// [`Server::start`](crate::Server::start) calls and puts in
    /// `TransportConfig::tls`.
    pub fn transport(&self) -> TransportConfig {
        let w = &self.websocket;
        let total = match w.max_outbound_bytes_total {
            0 => crate::memory::default_outbound_total(),
            n => n,
        };
        let token = &self.http.admin_token;
        TransportConfig {
            max_connections: w.max_connections,
            max_connections_per_ip: w.max_connections_per_ip,
            heartbeat_interval: Duration::from_millis(w.heartbeat_interval_ms),
            message_timeout: Duration::from_millis(w.message_timeout_ms),
            max_message_bytes: w.max_message_bytes,
            max_outbound_frames: w.max_outbound_frames,
            max_outbound_bytes: w.max_outbound_bytes,
            max_outbound_bytes_total: total.max(w.max_outbound_bytes),
            max_frames_per_second: w.max_frames_per_second,
            frames_burst: w.frames_burst,
            max_refused_frames_per_second: w.max_refused_frames_per_second,
            admin_token: (!token.is_empty()).then(|| Secret::new(token.clone())),
            shutdown_drain: Duration::from_millis(w.shutdown_drain_ms),
            handshake_timeout: Duration::from_millis(self.http.handshake_timeout_ms),
            max_pending_handshakes: self.http.max_pending_handshakes,
            allowed_origins: w
                .allowed_origins
                .iter()
                .map(|p| OriginPattern::from(p.as_str()))
                .collect(),
            // Checked by `validate`: none is left out of a valid config.
            trusted_proxies: self
                .http
                .trusted_proxies
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
            http2: self.http.http2,
            // Read by `tls()` (files are read at start, not here).
            tls: None,
        }
    }

    /// The configuration as it may be shown (`--print-config`,
    /// `server-config` in `/stats`, `Debug`): every key of [`SECRET_KEYS`]
    /// that is set reads `"<set>"`, and the password of every URL of
    /// [`URL_KEYS`] `<redacted>`.
    pub fn redacted(&self) -> toml::Table {
        let mut table = match toml::Value::try_from(self) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        for key in SECRET_KEYS {
            if let Some(toml::Value::String(s)) = slot_mut(&mut table, key) {
                *s = secret_shown(s).to_owned();
            }
        }
        for key in URL_KEYS {
            if let Some(toml::Value::String(s)) = slot_mut(&mut table, key) {
                *s = redact_credentials(s).into_owned();
            }
        }
        table
    }
}

/// The shortest `http.admin-token` accepted.
const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// The value of a dotted key in a table, if it has one.
fn slot_mut<'t>(table: &'t mut toml::Table, key: &str) -> Option<&'t mut toml::Value> {
    match key.split_once('.') {
        Some((first, rest)) => match table.get_mut(first)? {
            toml::Value::Table(sub) => slot_mut(sub, rest),
            _ => None,
        },
        None => table.get_mut(key),
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
        if prefix == NAMESPACES && !dst.contains_key(k) && v.is_table() {
            if !valid_namespace(k) {
                return Err(bad_namespace(&key, k, origin));
            }
            dst.insert(k.clone(), toml::Value::Table(namespace_template()));
        }
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
    if let Some((name, _)) = namespace_key(key) {
        if !valid_namespace(name) {
            return Err(bad_namespace(key, name, origin));
        }
        if let Some(toml::Value::Table(ns)) = table
            .get_mut("channels")
            .and_then(|c| c.get_mut("namespaces"))
        {
            ns.entry(name)
                .or_insert_with(|| toml::Value::Table(namespace_template()));
        }
    }
    // The table path: a namespace's name is one step, dots and all.
    let path: Vec<&str> = match namespace_key(key) {
        Some((name, field)) => vec!["channels", "namespaces", name, field],
        None => key.split('.').collect(),
    };
    let mut parts = path.into_iter().peekable();
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
const U32: Ty = Ty::UInt(u32::MAX as u64);
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
    ("telemetry.buffer-bytes", USIZE),
    ("telemetry.max-field-bytes", USIZE),
    ("telemetry.max-warnings-per-connection-per-minute", U32),
    ("telemetry.shutdown-timeout-ms", U64),
    ("websocket.max-connections", USIZE),
    ("websocket.max-connections-per-ip", USIZE),
    ("websocket.allowed-origins", Ty::StrList),
    ("websocket.heartbeat-interval-ms", U64),
    ("websocket.message-timeout-ms", U64),
    ("websocket.max-message-bytes", USIZE),
    ("websocket.max-outbound-frames", USIZE),
    ("websocket.max-outbound-bytes", USIZE),
    ("websocket.max-outbound-bytes-total", USIZE),
    ("websocket.max-frames-per-second", U32),
    ("websocket.frames-burst", U32),
    ("websocket.max-refused-frames-per-second", U32),
    ("websocket.shutdown-drain-ms", U64),
    ("websocket.max-subscriptions-per-connection", USIZE),
    ("http.handshake-timeout-ms", U64),
    ("http.max-pending-handshakes", USIZE),
    ("http.trusted-proxies", Ty::StrList),
    ("http.http2", Ty::Bool),
    ("tls.cert-file", Ty::Str),
    ("tls.key-file", Ty::Str),
    ("http.admin-token", Ty::Str),
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
    ("channels.max-recovery-messages", USIZE),
    ("channels.default-config.max-subscribers", USIZE),
    ("channels.default-config.message-retention", USIZE),
    ("channels.default-config.rpc-timeout-ms", U64),
    ("channels.default-config.telemetry-enabled", Ty::Bool),
    ("channels.default-config.history-size", USIZE),
    ("channels.default-config.history-ttl-ms", U64),
    ("channels.default-config.presence", Ty::Bool),
    ("channels.default-config.join-leave", Ty::Bool),
    ("channels.default-config.rpc-dispatch", DISPATCH),
    ("channels.default-config.on-slow-consumer", SLOW_CONSUMER),
    ("channels.subscribe", PERMISSION),
    ("channels.publish", PERMISSION),
    ("channels.rpc-call", PERMISSION),
    ("auth.jwt-hmac-secret", Ty::Str),
    ("auth.jwt-public-key-file", Ty::Str),
    ("auth.allow-anonymous", Ty::BoolOrAuto),
    ("auth.timeout-ms", U64),
    ("auth.leeway-ms", U64),
];

const PERMISSION: Ty = Ty::Names {
    names: &[
        "anyone",
        "authenticated",
        "subscribers",
        "granted",
        "nobody",
    ],
    canonical: |s| Permission::ALL.iter().map(|p| p.as_str()).find(|n| *n == s),
};

const DISPATCH: Ty = Ty::Names {
    names: &["all", "one"],
    canonical: |s| {
        RpcDispatch::ALL
            .iter()
            .map(|d| d.as_str())
            .find(|n| *n == s)
    },
};
const SLOW_CONSUMER: Ty = Ty::Names {
    names: &["close", "latest"],
    canonical: |s| {
        SlowConsumerPolicy::ALL
            .iter()
            .map(|p| p.as_str())
            .find(|n| *n == s)
    },
};

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
    /// A boolean, or the string `auto`.
    BoolOrAuto,
    Str,
    /// A list of strings: a TOML array, or comma-separated in the
    /// environment and on the command line.
    StrList,
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
    let listed = match namespace_key(key) {
        Some((_, field)) => NAMESPACE_TYPES.iter().find(|(k, _)| *k == field),
        None => TYPES.iter().find(|(k, _)| *k == key),
    };
    match listed {
        Some((_, ty)) => *ty,
        // Not in the table (a test forbids it): as the default's type.
        None => match default {
            toml::Value::Boolean(_) => Ty::Bool,
            toml::Value::Integer(_) => U64,
            toml::Value::Array(_) => Ty::StrList,
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
            (Ty::BoolOrAuto, toml::Value::Boolean(_)) => true,
            (Ty::BoolOrAuto, toml::Value::String(s)) => s == "auto",
            (Ty::StrList, toml::Value::Array(items)) => items.iter().all(toml::Value::is_str),
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
            Ty::Bool => toml::Value::Boolean(parse_bool(raw)?),
            Ty::BoolOrAuto if raw.eq_ignore_ascii_case("auto") => {
                toml::Value::String("auto".to_owned())
            }
            Ty::BoolOrAuto => toml::Value::Boolean(parse_bool(raw)?),
            Ty::UInt(_) => toml::Value::Integer(raw.parse().ok()?),
            Ty::StrList => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
            Ty::Str | Ty::Names { .. } => toml::Value::String(raw.to_owned()),
        };
        self.accept(&v)
    }

    /// What a bad value's error says was expected.
    fn expected(self) -> String {
        match self {
            Ty::Bool => "a boolean (true/false)".to_owned(),
            Ty::BoolOrAuto => "a boolean (true/false) or auto".to_owned(),
            Ty::Str => "a string".to_owned(),
            Ty::StrList => "a list of strings (comma-separated outside a file)".to_owned(),
            Ty::UInt(max) => format!("an integer from 0 to {max}"),
            Ty::Names { names, .. } => match names.split_last() {
                Some((last, [])) => (*last).to_owned(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => "nothing".to_owned(),
            },
        }
    }
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
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

fn bad_namespace(key: &str, name: &str, origin: &str) -> ConfigError {
    bad(
        key,
        name,
        origin,
        "a namespace name of 1 to 64 letters, digits, `-`, `_` or `.`",
    )
}

/// A list as an error shows it.
fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
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
    fn namespaces_come_from_files_flags_and_the_environment() {
        let f = file(
            "[channels.namespaces.private]\nsubscribe = \"granted\"\nmessage-retention = 4\n\
             [channels.namespaces.\"a-b\"]\nauto-create = false\n",
        );
        let e = env(&[("SENTE_LITE_CHANNELS_NAMESPACES_PRIVATE_RPC_CALL", "nobody")]);
        let flags = vec![
            (
                "channels.namespaces.metrics.publish".to_owned(),
                "authenticated".to_owned(),
            ),
            // A name with dots is one namespace, the field after the last.
            (
                "channels.namespaces.eu.west.subscribe".to_owned(),
                "granted".to_owned(),
            ),
        ];
        let c = Config::load(Some(f.path()), &e, &flags).unwrap();
        let ns = &c.channels.namespaces;
        assert_eq!(ns["private"].subscribe, Permission::Granted);
        assert_eq!(ns["private"].rpc_call, Permission::Nobody);
        assert_eq!(ns["private"].message_retention, 4);
        assert_eq!(
            ns["private"].max_subscribers, 1000,
            "an unset key has its default"
        );
        assert!(!ns["a-b"].auto_create);
        assert_eq!(ns["metrics"].publish, Permission::Authenticated);
        assert_eq!(ns["eu.west"].subscribe, Permission::Granted);
        assert!(!ns.contains_key("eu"), "{:?}", ns.keys());
        let engine = c.engine();
        assert_eq!(engine.channel_defaults("private:x").message_retention, 4);
        assert_eq!(engine.channel_defaults("lobby").message_retention, 0);
        assert!(!engine.auto_creates("a-b:1"));
        let policy = c.policy();
        assert_eq!(
            policy.rules("private:x").subscribe,
            sente_lite_auth::Who::Granted
        );
        assert_eq!(
            policy.rules("lobby").subscribe,
            sente_lite_auth::Who::Anyone
        );
    }

    #[test]
    fn namespace_and_auth_mistakes_name_their_key() {
        let err = |toml: &str| {
            Config::load(Some(file(toml).path()), &[], &[])
                .unwrap_err()
                .to_string()
        };
        let e = err("[channels.namespaces.private]\nsubscribe = \"subscribers\"\n");
        assert!(e.contains("channels.namespaces.private.subscribe"), "{e}");
        let e = err("[channels.namespaces.private]\npublsh = \"nobody\"\n");
        assert!(e.contains("channels.namespaces.private.publsh"), "{e}");
        let e = err("[channels.namespaces.private]\npublish = \"everyone\"\n");
        assert!(
            e.contains("channels.namespaces.private.publish")
                && e.contains("anyone, authenticated"),
            "{e}"
        );
        let e = err("[channels.namespaces.\"bad name\"]\npublish = \"nobody\"\n");
        assert!(e.contains("namespace name"), "{e}");
        let e = err("[auth]\nallow-anonymous = false\n");
        assert!(
            e.contains("auth.allow-anonymous") && e.contains("needs a key"),
            "{e}"
        );
        let e = err("[auth]\njwt-public-key-file = \"/nonexistent/key.pem\"\n");
        assert!(
            e.contains("auth.jwt-public-key-file") && e.contains("/nonexistent/key.pem"),
            "{e}"
        );
        let e = Config::load(
            None,
            &env(&[("SENTE_LITE_AUTH_ALLOW_ANONYMOUS", "maybe")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("SENTE_LITE_AUTH_ALLOW_ANONYMOUS"), "{e}");
    }

    #[test]
    fn anonymous_is_allowed_until_a_key_is_set() {
        let c = Config::default();
        assert!(c.auth.anonymous_allowed());
        assert!(
            c.authorizer().unwrap().is_none(),
            "nothing configured: no checks at all"
        );
        let c = Config::load(None, &env(&[("SENTE_LITE_AUTH_JWT_HMAC_SECRET", "k")]), &[]).unwrap();
        assert!(!c.auth.anonymous_allowed());
        assert!(c.authorizer().unwrap().is_some());
        let c = Config::load(
            None,
            &env(&[
                ("SENTE_LITE_AUTH_JWT_HMAC_SECRET", "k"),
                ("SENTE_LITE_AUTH_ALLOW_ANONYMOUS", "true"),
            ]),
            &[],
        )
        .unwrap();
        assert!(c.auth.anonymous_allowed());
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
                "http.admin-token" => "a-long-enough-admin-token",
                // Within the default max-outbound-bytes (1 MiB).
                "websocket.max-message-bytes" => "1000000",
                "port" => "4321",
                "auth.jwt-hmac-secret" => "x",
                "auth.jwt-public-key-file" => {
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../auth/tests/keys/ed.pub")
                }
                "auth.allow-anonymous" => "true",
                "channels.subscribe" | "channels.publish" | "channels.rpc-call" => "granted",
                "websocket.allowed-origins" => "https://a.example, https://*.b.example",
                "http.trusted-proxies" => "10.0.0.0/8,::1",
                "http.http2" => "true",
                "tls.cert-file" | "tls.key-file" => "x.pem",
                k if k.ends_with("enabled") || k.ends_with("auto-create") => "false",
                k if k.ends_with(".presence") || k.ends_with(".join-leave") => "true",
                k if k.ends_with(".rpc-dispatch") => "one",
                k if k.ends_with(".on-slow-consumer") => "latest",
                _ => "2000000",
            };
            // The TLS files go together (validate refuses one alone).
            let other = match key.as_str() {
                "tls.cert-file" => Some("tls.key-file"),
                "tls.key-file" => Some("tls.cert-file"),
                _ => None,
            };
            let mut pairs = vec![(env_name(&key), value)];
            if let Some(other) = other {
                pairs.push((env_name(other), "y.pem"));
            }
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            let e = env(&pairs);
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
                Ty::BoolOrAuto => {
                    assert!(loads(toml::Value::Boolean(false)), "{key}");
                    assert!(loads(text("auto")), "{key}");
                    assert!(!loads(text("maybe")), "{key} holds any string");
                    assert!(!loads(toml::Value::Integer(1)), "{key} holds an integer");
                }
                Ty::Str => {
                    assert!(loads(text("x")), "{key} holds any string");
                    assert!(!loads(toml::Value::Integer(1)), "{key} holds an integer");
                }
                Ty::StrList => {
                    assert!(
                        loads(toml::Value::Array(vec![text("x")])),
                        "{key} holds a list"
                    );
                    assert!(
                        loads(toml::Value::Array(vec![])),
                        "{key} holds an empty list"
                    );
                    assert!(!loads(text("x")), "{key} holds a string");
                    assert!(
                        !loads(toml::Value::Array(vec![toml::Value::Integer(1)])),
                        "{key} holds a list of integers"
                    );
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
            err.starts_with("`websocket.max-outbound-bytes` = \"1048576\" (from default): ")
                && err.contains("`websocket.max-message-bytes` = 9000000 (from command line)"),
            "{err}"
        );
    }

    #[test]
    fn admission_keys_load_lists_and_name_bad_entries() {
        let f = file(
            "[websocket]\nallowed-origins = [\"https://*.example.com\"]\nmax-connections-per-ip = 3\n\
             [http]\ntrusted-proxies = [\"10.0.0.0/8\", \"::1\"]\nmax-pending-handshakes = 7\n",
        );
        let c = Config::load(Some(f.path()), &[], &[]).unwrap();
        assert_eq!(c.websocket.allowed_origins, ["https://*.example.com"]);
        let t = c.transport();
        assert_eq!(t.max_connections_per_ip, 3);
        assert_eq!(t.max_pending_handshakes, 7);
        assert_eq!(t.trusted_proxies.len(), 2);
        assert!(t.allowed_origins[0].matches("https://app.example.com"));
        assert!(!t.http2);
        // Comma-separated from the environment and flags.
        let e = env(&[(
            "SENTE_LITE_HTTP_TRUSTED_PROXIES",
            "127.0.0.1, 192.168.0.0/16",
        )]);
        let c = Config::load(None, &e, &[]).unwrap();
        assert_eq!(c.http.trusted_proxies, ["127.0.0.1", "192.168.0.0/16"]);
        let flags = env(&[("websocket.allowed-origins", "https://a.example")]);
        let c = Config::load(None, &[], &flags).unwrap();
        assert_eq!(c.websocket.allowed_origins, ["https://a.example"]);
        // A bad entry names the key, the list and its source.
        let e = env(&[("SENTE_LITE_HTTP_TRUSTED_PROXIES", "10.0.0.0/40")]);
        let err = Config::load(None, &e, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("`http.trusted-proxies`")
                && err.contains("10.0.0.0/40")
                && err.contains("environment SENTE_LITE_HTTP_TRUSTED_PROXIES"),
            "{err}"
        );
        let f = file("[websocket]\nallowed-origins = [\"\"]\n");
        let err = Config::load(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("`websocket.allowed-origins`"), "{err}");
        let f = file("[websocket]\nallowed-origins = \"*\"\n");
        let err = Config::load(Some(f.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a list of strings"), "{err}");
        let flags = env(&[("http.max-pending-handshakes", "0")]);
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(err.starts_with("`http.max-pending-handshakes`"), "{err}");
    }

    #[test]
    fn tls_needs_both_files_and_names_the_one_that_is_bad() {
        let flags = env(&[("tls.cert-file", "/x/cert.pem")]);
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(
            err.starts_with("`tls.key-file`")
                && err.contains("`tls.cert-file` is (from command line)"),
            "{err}"
        );
        let flags = env(&[("tls.key-file", "/x/key.pem")]);
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(err.starts_with("`tls.cert-file`"), "{err}");
        assert!(Config::default().tls().unwrap().is_none());
        // Both set, the files missing: the key and the file are named.
        let flags = env(&[
            ("tls.cert-file", "/nonexistent/cert.pem"),
            ("tls.key-file", "/nonexistent/key.pem"),
        ]);
        let c = Config::load(None, &[], &flags).unwrap();
        let err = c.tls().unwrap_err().to_string();
        assert!(
            err.starts_with("`tls.cert-file` = \"/nonexistent/cert.pem\"")
                && err.contains("No such file"),
            "{err}"
        );
        // Not PEM at all.
        let junk = file("not a certificate\n");
        let junk_path = junk.path().display().to_string();
        let flags = env(&[("tls.cert-file", &junk_path), ("tls.key-file", &junk_path)]);
        let c = Config::load(None, &[], &flags).unwrap();
        let err = c.tls().unwrap_err().to_string();
        assert!(
            err.starts_with("`tls.cert-file`") && err.contains(&junk_path),
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
            "telemetry.buffer-bytes",
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
    fn telemetry_limits_have_defaults_and_checks() {
        let t = Config::load(None, &[], &[]).unwrap().telemetry;
        assert_eq!(t.buffer_bytes, 4 << 20);
        assert_eq!(t.max_field_bytes, 256);
        assert_eq!(t.max_warnings_per_connection_per_minute, 60);
        assert_eq!(t.shutdown_timeout_ms, 5_000);
        let err =
            Config::load(None, &[], &env(&[("telemetry.max-field-bytes", "15")])).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, message, .. }
                if key == "telemetry.max-field-bytes" && message.contains("at least 16")),
            "{err:?}"
        );
        // 0 turns the throttle off; a shutdown that waits for nothing is allowed.
        let c = Config::load(
            None,
            &env(&[
                (
                    "SENTE_LITE_TELEMETRY_MAX_WARNINGS_PER_CONNECTION_PER_MINUTE",
                    "0",
                ),
                ("SENTE_LITE_TELEMETRY_SHUTDOWN_TIMEOUT_MS", "0"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(c.telemetry.max_warnings_per_connection_per_minute, 0);
        let err = Config::load(
            None,
            &[],
            &env(&[(
                "telemetry.max-warnings-per-connection-per-minute",
                "5000000000",
            )]),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::BadValue { .. }), "{err:?}");
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
    fn secrets_are_shown_as_set_and_url_passwords_redacted() {
        let token = "correct-horse-battery-staple";
        let e = env(&[
            ("SENTE_LITE_HTTP_ADMIN_TOKEN", token),
            (
                "SENTE_LITE_BROKER_REDIS_URL",
                "redis://app:hunter2@db:6379/0",
            ),
        ]);
        let c = Config::load(None, &e, &[]).unwrap();
        assert_eq!(c.http.admin_token, token, "the running config keeps it");
        let shown = c.redacted();
        assert_eq!(shown["http"]["admin-token"].as_str(), Some("<set>"));
        assert_eq!(
            shown["broker"]["redis-url"].as_str(),
            Some("redis://app:<redacted>@db:6379/0")
        );
        for text in [
            toml::to_string(&shown).unwrap(),
            format!("{c:?}"),
            format!("{:?}", c.http),
            serde_json::to_string(&shown).unwrap(),
        ] {
            assert!(!text.contains(token) && !text.contains("hunter2"), "{text}");
        }
        // Unset shows as unset; the rest is the configuration as it is.
        let d = Config::default().redacted();
        assert_eq!(d["http"]["admin-token"].as_str(), Some(""));
        assert_eq!(
            d["broker"]["redis-url"].as_str(),
            Some(Config::default().broker.redis_url.as_str())
        );
        let mut plain = toml::Value::try_from(Config::default()).unwrap();
        plain["http"]["admin-token"] = toml::Value::String(String::new());
        assert_eq!(toml::Value::Table(d), plain);
        // Every listed key that exists is a string key; a later one (the
        // JWT secret, added with authentication) is redacted by the same walk.
        let keys = Config::keys();
        for key in SECRET_KEYS.iter().chain(URL_KEYS.iter()) {
            if keys.iter().any(|k| k == key) {
                assert!(
                    matches!(ty_of(key, &toml::Value::Integer(0)), Ty::Str),
                    "{key}"
                );
            }
        }
        let mut t: toml::Table = toml::from_str("[auth]\njwt-hmac-secret = \"k\"\n").unwrap();
        if let Some(toml::Value::String(s)) = slot_mut(&mut t, "auth.jwt-hmac-secret") {
            *s = secret_shown(s).to_owned();
        }
        assert_eq!(t["auth"]["jwt-hmac-secret"].as_str(), Some("<set>"));
    }

    #[test]
    fn admin_tokens_must_be_long_and_printable_and_errors_never_show_them() {
        for bad in ["short", "has a space in it, long", "tab\tseparated-token-x"] {
            let e = env(&[("SENTE_LITE_HTTP_ADMIN_TOKEN", bad)]);
            let err = Config::load(None, &e, &[]).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, ConfigError::Invalid { key, .. } if key == "http.admin-token"),
                "{err:?}"
            );
            assert!(!text.contains(bad), "{text}");
        }
        let e = env(&[("SENTE_LITE_HTTP_ADMIN_TOKEN", "0123456789abcdef")]);
        let t = Config::load(None, &e, &[]).unwrap().transport();
        assert!(t
            .admin_token
            .is_some_and(|s| s.matches(b"0123456789abcdef")));
        assert!(Config::default().transport().admin_token.is_none());
    }

    #[test]
    fn outbound_total_is_a_quarter_of_memory_unless_set() {
        let c = Config::default();
        assert_eq!(c.websocket.max_outbound_bytes, 1 << 20);
        assert_eq!(c.websocket.max_outbound_bytes_total, 0);
        assert_eq!(
            c.transport().max_outbound_bytes_total,
            crate::memory::default_outbound_total()
        );
        let flags = env(&[("websocket.max-outbound-bytes-total", "8388608")]);
        let c = Config::load(None, &[], &flags).unwrap();
        assert_eq!(c.transport().max_outbound_bytes_total, 8 << 20);
        // Below one full queue: refused, naming both keys.
        let flags = env(&[("websocket.max-outbound-bytes-total", "1000")]);
        let err = Config::load(None, &[], &flags).unwrap_err().to_string();
        assert!(
            err.starts_with("`websocket.max-outbound-bytes-total` = \"1000\" (from command line)")
                && err.contains("`websocket.max-outbound-bytes` = 1048576 (from default)"),
            "{err}"
        );
    }

    #[test]
    fn frame_rate_keys_map_and_zero_rates_are_refused() {
        let c = Config::default();
        let t = c.transport();
        assert_eq!(
            (
                t.max_frames_per_second,
                t.frames_burst,
                t.max_refused_frames_per_second
            ),
            (5_000, 10_000, 100)
        );
        for key in ["websocket.max-frames-per-second", "websocket.frames-burst"] {
            let err = Config::load(None, &[], &env(&[(key, "0")])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, message, .. }
                    if k == key && message == "must be at least 1"),
                "{key}: {err:?}"
            );
        }
        // 0 refusals allowed: close at the first frame over the rate.
        let flags = env(&[("websocket.max-refused-frames-per-second", "0")]);
        let c = Config::load(None, &[], &flags).unwrap();
        assert_eq!(c.transport().max_refused_frames_per_second, 0);
        let flags = env(&[("websocket.max-frames-per-second", "4294967296")]);
        assert!(matches!(
            Config::load(None, &[], &flags).unwrap_err(),
            ConfigError::BadValue { .. }
        ));
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
