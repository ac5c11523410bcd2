//! Telemetry signal ids the engine emits (the seed's event list). Each is
//! emitted through the engine's [`telemere_lite::Telemetry`] instance and
//! costs one atomic load when no handler wants it. Channels created with
//! `telemetry-enabled: false` emit none of the per-channel events.

/// A channel was created (explicitly or by auto-create). Info.
pub const CHANNEL_CREATED: &str = "sente-lite.channels/channel-created";
/// A channel was deleted. Info.
pub const CHANNEL_DELETED: &str = "sente-lite.channels/channel-deleted";
/// A connection subscribed to a channel. Debug.
pub const SUBSCRIPTION_ADDED: &str = "sente-lite.channels/subscription-added";
/// A connection left a channel (unsubscribe, disconnect, delete). Debug.
pub const SUBSCRIPTION_REMOVED: &str = "sente-lite.channels/subscription-removed";
/// A subscribe failed (max-subscribers, max-channels, not found...). Warn.
pub const SUBSCRIPTION_REJECTED: &str = "sente-lite.channels/subscription-rejected";
/// A message was published and fanned out. Debug.
pub const MESSAGE_PUBLISHED: &str = "sente-lite.channels/message-published";
/// A publish failed. Warn.
pub const MESSAGE_PUBLISH_FAILED: &str = "sente-lite.channels/message-publish-failed";
/// Fan-out to a channel's subscribers begins. Trace.
pub const CHANNEL_BROADCAST_START: &str = "sente-lite.channels/channel-broadcast-start";
/// Fan-out finished, with delivered and full counts. Trace.
pub const CHANNEL_BROADCAST_COMPLETE: &str = "sente-lite.channels/channel-broadcast-complete";
/// A server broadcast reached fewer connections than targeted, or its channel
/// did not exist. Warn.
pub const BROADCAST_FAILED: &str = "sente-lite.channels/broadcast-failed";
/// An RPC request was delivered to workers. Debug.
pub const RPC_REQUEST_SENT: &str = "sente-lite.channels/rpc-request-sent";
/// An RPC response was routed to its requester. Debug.
pub const RPC_RESPONSE_SENT: &str = "sente-lite.channels/rpc-response-sent";
/// An RPC request timed out. Info.
pub const RPC_REQUEST_EXPIRED: &str = "sente-lite.channels/rpc-request-expired";
/// A sweep expired at least one request. Debug.
pub const RPC_CLEANUP_COMPLETED: &str = "sente-lite.channels/rpc-cleanup-completed";

/// Every id above, for documentation and tests.
pub const ALL: [&str; 14] = [
    CHANNEL_CREATED,
    CHANNEL_DELETED,
    SUBSCRIPTION_ADDED,
    SUBSCRIPTION_REMOVED,
    SUBSCRIPTION_REJECTED,
    MESSAGE_PUBLISHED,
    MESSAGE_PUBLISH_FAILED,
    CHANNEL_BROADCAST_START,
    CHANNEL_BROADCAST_COMPLETE,
    BROADCAST_FAILED,
    RPC_REQUEST_SENT,
    RPC_RESPONSE_SENT,
    RPC_REQUEST_EXPIRED,
    RPC_CLEANUP_COMPLETED,
];

/// Emits a telemetry event through `$tel` (a `&Telemetry`) when `$on` (the
/// channel's `telemetry-enabled`) holds. `$data` is evaluated only when some
/// handler wants the signal.
macro_rules! ev {
    ($tel:expr, $on:expr, $lvl:ident, $id:expr, $data:expr) => {
        if $on {
            telemere_lite::event!(
                tel: $tel,
                level: telemere_lite::Level::$lvl,
                $id,
                $data
            );
        }
    };
}
pub(crate) use ev;
