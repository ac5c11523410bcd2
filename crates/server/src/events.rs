//! Telemetry signal ids of the server's lifecycle (Info).

/// `Server::start` began.
pub const SERVER_STARTING: &str = "sente-lite.server/server-starting";
/// The listener is bound and serving.
pub const SERVER_STARTED: &str = "sente-lite.server/server-started";
/// A graceful stop began.
pub const SERVER_STOPPING: &str = "sente-lite.server/server-stopping";
/// Every connection has closed.
pub const SERVER_STOPPED: &str = "sente-lite.server/server-stopped";
