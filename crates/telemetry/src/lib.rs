//! telemere-lite: structured telemetry signals with sync and async handlers.
//!
//! A Rust take on the ideas of Clojure's Telemere, usable by any Rust
//! program (it knows nothing of sente-lite).
//!
//! * **Signals** ([`Signal`]) carry an id, a [`Level`], a message, structured
//!   data (anything `serde::Serialize`), an error, the module path,
//!   `file:line`, a timestamp, the thread and a [`CorrelationId`]. They are
//!   made by [`event!`] (`event!("my-app/user-created", data)`) and by the
//!   log macros [`trace!`], [`debug!`], [`info!`], [`warn!`], [`error!`],
//!   [`fatal!`], [`report!`]; all accept `tel: &instance` first.
//! * **Correlation**: [`with_correlation`] (sync scope) and
//!   [`CorrelateExt::with_correlation`] (any future, any runtime) stamp every
//!   signal emitted inside them.
//! * **Filtering** ([`Filter`]): minimum level, per-module minimum levels, id
//!   allow/deny, sampling, rate limiting, for the whole instance and per
//!   handler. A signal no handler wants costs one relaxed atomic load; its
//!   message and data expressions are never evaluated.
//! * **Handlers** ([`Handler`], any `Fn(&Signal)`): sync, or async behind a
//!   bounded queue with [`Mode::Blocking`], [`Mode::Dropping`] or
//!   [`Mode::Sliding`], `buffer_size` and `n_threads`
//!   ([`HandlerOptions`]). Built in: [`ConsoleHandler`], [`FileHandler`]
//!   (JSON lines, size-based rotation), [`CaptureHandler`] (tests). Errors
//!   and panics of a handler are counted, never propagated.
//! * **Stats** ([`HandlerStats`]): processed, queued (gauge), dropped,
//!   errors, rate-limited, sampled handling-time percentiles.
//! * **Clock**: [`Telemetry::set_clock`] picks [`Clock::Precise`] (the
//!   default) or the cheaper, tick-resolution [`Clock::Coarse`] for the
//!   macros' timestamps.
//! * **Instances**: [`Telemetry::new`] makes independent instances;
//!   [`global`] is the default the macros use. [`Telemetry::shutdown`] drains
//!   within a deadline; [`Telemetry::startup`] returns a guard that does so
//!   on drop.
//! * **Bridges** (features `log` and `tracing`): records of the `log` facade
//!   and events of `tracing` become signals.
//!
//! ```
//! use telemere_lite::{event, info, CaptureHandler, HandlerOptions, Level, Telemetry};
//!
//! let tel = Telemetry::new();
//! let capture = CaptureHandler::new();
//! tel.add_handler("capture", capture.clone(), HandlerOptions::sync()).unwrap();
//! tel.set_min_level(Level::Info);
//!
//! event!(tel: &tel, "my-app/user-created", serde_json::json!({"user": 7}));
//! info!(tel: &tel, "hello");
//! fn expensive() -> u64 { unreachable!("never evaluated: debug is filtered out") }
//! telemere_lite::debug!(tel: &tel, "filtered out", expensive());
//!
//! assert_eq!(capture.len(), 2);
//! assert_eq!(tel.handler_stats()["capture"].processed, 2);
//! ```

mod correlation;
mod error;
mod filter;
mod handler;
pub mod handlers;
mod jsonl;
mod level;
mod limits;
mod macros;
mod signal;
mod telemetry;
mod timestamp;

#[cfg(feature = "log")]
mod bridge_log;
#[cfg(feature = "tracing")]
mod bridge_tracing;

/// The README's examples, compiled and run by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use correlation::{
    current_correlation, with_correlation, CorrelateExt, Correlated, CorrelationId,
};
pub use error::{HandlerError, TelemetryError};
pub use filter::{Filter, RateLimit};
pub use handler::{Dispatch, Handler, HandlerOptions, HandlerStats, Mode, DEFAULT_BUFFER_BYTES};
pub use handlers::{CaptureHandler, ConsoleHandler, FileHandler, FileOptions, Format, Stream};
pub use level::{Level, ParseLevelError};
pub use limits::{Throttle, DEFAULT_MAX_FIELD_BYTES};
pub use signal::{Callsite, Data, ErrorInfo, Kind, Lazy, LazyData, LazyValue, Signal, ThreadInfo};
pub use telemetry::{
    add_handler, global, handler_stats, remove_handler, set_min_level, shutdown, startup, Payload,
    ShutdownReport, Telemetry, TelemetryGuard, MAX_HANDLERS,
};
pub use timestamp::Clock;

#[cfg(feature = "log")]
pub use bridge_log::{install_log_bridge, LogBridge};
#[cfg(feature = "tracing")]
pub use bridge_tracing::TelemereLayer;
