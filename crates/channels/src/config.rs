//! The engine's configuration.

use sente_lite_protocol::ChannelConfig;

/// Settings of one [`Engine`](crate::Engine). Every bound a client can push
/// against has a key here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Create a channel on the first subscribe or publish to it. When off,
    /// those answer `channel-not-found` until the channel is created.
    pub auto_create: bool,
    /// Settings of channels created without their own.
    pub default_channel: ChannelConfig,
    /// Most channels that may exist at once (`max-channels-reached`).
    pub max_channels: usize,
    /// Longest channel id in bytes (`invalid-channel-id`).
    pub max_channel_id_bytes: usize,
    /// Most connections registered at once (`max-connections-reached`).
    pub max_connections: usize,
    /// Most RPC requests pending across the engine (`max-pending-rpc-reached`).
    pub max_pending_rpc: usize,
    /// Most RPC requests one connection may have pending.
    pub max_pending_rpc_per_connection: usize,
    /// Longest `timeout-ms` a request may ask for; longer ones are clamped.
    pub max_rpc_timeout_ms: u64,
    /// Most channels one connection may be subscribed to at once
    /// (`max-subscriptions-reached`).
    pub max_subscriptions_per_connection: usize,
    /// An auto-created channel with no subscriber and no publish for this
    /// long is removed, with its retained messages. Channels made with
    /// [`Engine::create_channel`](crate::Engine::create_channel) stay.
    pub idle_channel_ttl_ms: u64,
    /// Most bytes of retained messages one channel keeps; the oldest go
    /// first. A join never replays more than this.
    pub max_retained_bytes: usize,
    /// Most bytes of retained messages all channels of this node keep
    /// together; the oldest, whichever channel they are of, go first.
    pub max_retained_bytes_total: usize,
    /// Most messages a `subscribe` with `recover` may be sent: a client
    /// further behind is told `too-far-behind` and subscribes afresh.
    pub max_recovery_messages: usize,
    /// Channel namespaces with defaults of their own: a channel id
    /// `ns:rest` is in namespace `ns` ([`namespace_of`]); ids without a
    /// `:`, and ids whose namespace is not listed, take `auto_create` and
    /// `default_channel`.
    pub namespaces: Vec<Namespace>,
}

/// The channel defaults of one namespace (`[channels.namespaces.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace: the part of a channel id before its first `:`.
    pub name: String,
    /// Create its channels on their first subscribe or publish.
    pub auto_create: bool,
    /// Settings of its channels created without their own.
    pub channel: ChannelConfig,
}

/// The namespace of a channel id: the part before its first `:`, or `None`
/// (the default namespace) when it has none.
///
/// ```
/// use sente_lite_channels::namespace_of;
/// assert_eq!(namespace_of("chat:lobby"), Some("chat"));
/// assert_eq!(namespace_of("lobby"), None);
/// ```
pub fn namespace_of(channel: &str) -> Option<&str> {
    channel.split_once(':').map(|(ns, _)| ns)
}

impl EngineConfig {
    /// The namespace entry that governs `channel`, if any.
    pub fn namespace(&self, channel: &str) -> Option<&Namespace> {
        let ns = namespace_of(channel)?;
        self.namespaces.iter().find(|n| n.name == ns)
    }

    /// The settings a channel made without its own gets.
    pub fn channel_defaults(&self, channel: &str) -> ChannelConfig {
        self.namespace(channel)
            .map_or(self.default_channel, |n| n.channel)
    }

    /// Whether `channel` is created on its first subscribe or publish.
    pub fn auto_creates(&self, channel: &str) -> bool {
        self.namespace(channel)
            .map_or(self.auto_create, |n| n.auto_create)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            auto_create: true,
            default_channel: ChannelConfig::default(),
            max_channels: 10_000,
            max_channel_id_bytes: 256,
            max_connections: 1_000,
            max_pending_rpc: 100_000,
            max_pending_rpc_per_connection: 1_000,
            max_rpc_timeout_ms: 300_000,
            namespaces: Vec::new(),
            max_subscriptions_per_connection: 1024,
            idle_channel_ttl_ms: 3_600_000,
            max_retained_bytes: 4 << 20,
            max_retained_bytes_total: 256 << 20,
            max_recovery_messages: 1_000,
        }
    }
}
