//! Telemetry signal ids of the server's lifecycle (Info unless named).

/// `Server::start` began.
pub const SERVER_STARTING: &str = "sente-lite.server/server-starting";
/// The listener is bound and serving.
pub const SERVER_STARTED: &str = "sente-lite.server/server-started";
/// A graceful stop began.
pub const SERVER_STOPPING: &str = "sente-lite.server/server-stopping";
/// Every connection has closed.
pub const SERVER_STOPPED: &str = "sente-lite.server/server-stopped";
/// At start, the open-files limit (`RLIMIT_NOFILE`) allows fewer
/// descriptors than `websocket.max-connections` needs (each connection is
/// one, plus a margin for the listener, logs and handshakes), even after
/// the soft limit was raised to the hard one. Warn.
pub const FILE_LIMIT_LOW: &str = "sente-lite.server/file-limit-low";
/// At start, the soft open-files limit was raised (to the hard one). Debug.
pub const FILE_LIMIT_RAISED: &str = "sente-lite.server/file-limit-raised";
