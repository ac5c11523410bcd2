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
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_subscribers: 1000,
            message_retention: 0,
            rpc_timeout_ms: 30_000,
            telemetry_enabled: true,
        }
    }
}
