//! Typed errors.

use std::path::PathBuf;

/// Errors of the telemetry API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A filter option is out of range.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// A handler option is out of range.
    #[error("invalid handler options: {0}")]
    InvalidOptions(String),
    /// An instance holds at most 64 handlers.
    #[error("too many handlers (at most {max})")]
    TooManyHandlers {
        /// The limit.
        max: usize,
    },
    /// A worker thread could not be started.
    #[error("cannot start a worker thread for handler {id:?}: {source}")]
    Spawn {
        /// The handler id.
        id: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A log file could not be opened.
    #[error("cannot open log file {path:?}: {source}")]
    OpenFile {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Shutdown or flush did not finish before its deadline.
    #[error("deadline passed with {pending} signal(s) still pending in handler(s) {handlers:?}")]
    Deadline {
        /// Signals still queued or being handled.
        pending: u64,
        /// The handlers that had not finished.
        handlers: Vec<String>,
    },
}

/// The error a [`Handler`](crate::Handler) returns; it is counted in the
/// handler's `errors` stat and otherwise ignored.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;
