use serde::{Deserialize, Serialize};

/// A channel's settings as they appear on the wire (`/channels`,
/// `channel-list`) and in configuration files.
///
/// Missing keys take the defaults of the seed design: 1000 subscribers, no
/// retention, 30 s RPC timeout, telemetry on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// Most connections that may be subscribed at once.
    pub max_subscribers: usize,
    /// How many of the latest `channel-message` frames are kept and replayed
    /// to a new subscriber (0 = none).
    pub message_retention: usize,
    /// Default timeout of an `rpc-request` to this channel when the request
    /// names none.
    pub rpc_timeout_ms: u64,
    /// Whether operations on this channel emit telemetry signals.
    pub telemetry_enabled: bool,
    /// How many of the latest messages the channel's history keeps for
    /// `history` and for recovery on `subscribe`. The history holds
    /// `max(history-size, message-retention)` messages (the retained
    /// messages are its newest), so the default, 0, makes it the same as
    /// `message-retention`.
    pub history_size: usize,
    /// A message older than this (ms after its `published-at`) has left the
    /// history: `history`, recovery and the retained replay no longer show
    /// it. 0: messages leave only by count and bytes.
    pub history_ttl_ms: u64,
    /// Whether the channel keeps presence: who is subscribed, with each
    /// connection's user id and token `info` (`presence`, `presence-stats`).
    pub presence: bool,
    /// Whether subscribers get a `join` / `leave` frame when a connection
    /// subscribes to or leaves the channel.
    pub join_leave: bool,
    /// Who receives an `rpc-request`: every subscriber (`all`, the seed's
    /// behaviour) or one of them (`one`, round robin).
    pub rpc_dispatch: RpcDispatch,
    /// What happens to a subscriber whose queue is full: it is closed
    /// (`close`), or its queued messages of this channel are replaced by
    /// the newest one (`latest`).
    pub on_slow_consumer: SlowConsumerPolicy,
}

/// A channel's `rpc-dispatch`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RpcDispatch {
    /// Every subscriber but the requester receives the request.
    #[default]
    All,
    /// One subscriber receives it, round robin over those whose queue is
    /// not full; another one if it leaves before answering.
    One,
}

impl RpcDispatch {
    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            RpcDispatch::All => "all",
            RpcDispatch::One => "one",
        }
    }

    /// Every value, for configuration.
    pub const ALL: [RpcDispatch; 2] = [RpcDispatch::All, RpcDispatch::One];
}

/// A channel's `on-slow-consumer`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// A subscriber whose queue is full is closed (1008 `slow-consumer`).
    #[default]
    Close,
    /// A subscriber whose queue is full is kept; its queued messages of
    /// this channel are replaced by the newest (conflation).
    Latest,
}

impl SlowConsumerPolicy {
    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            SlowConsumerPolicy::Close => "close",
            SlowConsumerPolicy::Latest => "latest",
        }
    }

    /// Every value, for configuration.
    pub const ALL: [SlowConsumerPolicy; 2] =
        [SlowConsumerPolicy::Close, SlowConsumerPolicy::Latest];
}

impl ChannelConfig {
    /// How many messages the channel keeps: `max(history-size,
    /// message-retention)`.
    pub fn history_len(&self) -> usize {
        self.history_size.max(self.message_retention)
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_subscribers: 1000,
            message_retention: 0,
            rpc_timeout_ms: 30_000,
            telemetry_enabled: true,
            history_size: 0,
            history_ttl_ms: 0,
            presence: false,
            join_leave: false,
            rpc_dispatch: RpcDispatch::All,
            on_slow_consumer: SlowConsumerPolicy::Close,
        }
    }
}
