//! Telemetry signal ids the transport emits (the seed's connection and
//! message events). Per-message events are Trace and cost one atomic load
//! when no handler wants them.

/// A connection was registered with the engine. Debug.
pub const CONNECTION_ADDED: &str = "sente-lite.transport/connection-added";
/// A connection was removed from the engine. Debug.
pub const CONNECTION_REMOVED: &str = "sente-lite.transport/connection-removed";
/// A WebSocket upgrade completed. Debug.
pub const WEBSOCKET_OPENED: &str = "sente-lite.transport/websocket-opened";
/// A WebSocket closed, with the close code and cause. Debug.
pub const WEBSOCKET_CLOSED: &str = "sente-lite.transport/websocket-closed";
/// A WebSocket failed: protocol error, oversized frame, slow consumer,
/// heartbeat timeout, refused upgrade. Warn.
pub const WEBSOCKET_ERROR: &str = "sente-lite.transport/websocket-error";
/// A text frame arrived. Trace.
pub const WEBSOCKET_MESSAGE_RECEIVED: &str = "sente-lite.transport/websocket-message-received";
/// The connection's task wrote frames the socket had not taken at once
/// (one signal per drain; writers' writes are counted in `socket-writes`
/// only). Trace.
pub const MESSAGE_SENT: &str = "sente-lite.transport/message-sent";
/// Accepting a TCP connection failed (out of file descriptors, say); the
/// loop pauses briefly and goes on. Warn.
pub const ACCEPT_FAILED: &str = "sente-lite.transport/accept-failed";

/// A TLS handshake failed (not TLS, no common version or cipher, ...).
/// Debug: any client can cause it at will.
pub const TLS_HANDSHAKE_FAILED: &str = "sente-lite.transport/tls-handshake-failed";

/// Every id above.
pub const ALL: [&str; 9] = [
    CONNECTION_ADDED,
    CONNECTION_REMOVED,
    WEBSOCKET_OPENED,
    WEBSOCKET_CLOSED,
    WEBSOCKET_ERROR,
    WEBSOCKET_MESSAGE_RECEIVED,
    MESSAGE_SENT,
    ACCEPT_FAILED,
    TLS_HANDSHAKE_FAILED,
];
