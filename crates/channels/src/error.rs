//! The engine's typed errors.

use sente_lite_protocol::Reason;

/// Why an engine operation failed. [`EngineError::reason`] gives the wire
/// reason for the `"success": false` result frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("channel `{0}` does not exist")]
    ChannelNotFound(String),
    #[error("channel `{0}` already exists")]
    ChannelExists(String),
    #[error("channel id must be 1 to {max} bytes, got {len}")]
    InvalidChannelId { len: usize, max: usize },
    #[error("channel `{channel}` has its {max} subscribers already")]
    MaxSubscribersReached { channel: String, max: usize },
    #[error("the server has its {0} channels already")]
    MaxChannelsReached(usize),
    #[error("the connection has its {0} subscriptions already")]
    MaxSubscriptionsReached(usize),
    #[error("not subscribed to channel `{0}`")]
    NotSubscribed(String),
    #[error("connection `{0}` does not exist")]
    ConnectionNotFound(String),
    #[error("connection `{0}` has a full outbound queue and is being closed as a slow consumer")]
    ConnectionFull(String),
    #[error("the server has its {0} connections already")]
    MaxConnectionsReached(usize),
    #[error("no subscriber on channel `{0}` to handle the request")]
    NoSubscribers(String),
    #[error("RPC request `{0}` is unknown, answered or expired")]
    RequestNotFound(String),
    #[error("{0} RPC requests are pending already")]
    MaxPendingRpcReached(usize),
    #[error("the broker is unavailable: {0}")]
    BrokerUnavailable(String),
    #[error("channel `{0}` keeps no presence (its `presence` is off)")]
    PresenceDisabled(String),
}

impl EngineError {
    /// The stable wire reason.
    pub fn reason(&self) -> Reason {
        match self {
            EngineError::ChannelNotFound(_) => Reason::ChannelNotFound,
            EngineError::ChannelExists(_) => Reason::ChannelExists,
            EngineError::InvalidChannelId { .. } => Reason::InvalidChannelId,
            EngineError::MaxSubscribersReached { .. } => Reason::MaxSubscribersReached,
            EngineError::MaxChannelsReached(_) => Reason::MaxChannelsReached,
            EngineError::MaxSubscriptionsReached(_) => Reason::MaxSubscriptionsReached,
            EngineError::NotSubscribed(_) => Reason::NotSubscribed,
            EngineError::ConnectionNotFound(_) => Reason::ConnectionNotFound,
            EngineError::ConnectionFull(_) => Reason::SlowConsumer,
            EngineError::MaxConnectionsReached(_) => Reason::MaxConnectionsReached,
            EngineError::NoSubscribers(_) => Reason::NoSubscribers,
            EngineError::RequestNotFound(_) => Reason::RequestNotFound,
            EngineError::MaxPendingRpcReached(_) => Reason::MaxPendingRpcReached,
            EngineError::BrokerUnavailable(_) => Reason::BrokerUnavailable,
            EngineError::PresenceDisabled(_) => Reason::PresenceDisabled,
        }
    }
}

/// [`Engine::new`](crate::Engine::new) was called outside a tokio runtime;
/// the engine needs one for the timer that expires RPC requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the channel engine must be created inside a tokio runtime (it spawns its RPC timer)")]
pub struct NoRuntime;

/// A client-supplied string cut to a length fit for an error message.
pub(crate) fn truncated(s: &str) -> String {
    s.chars().take(128).collect()
}
