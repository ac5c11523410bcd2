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
        }
    }
}
