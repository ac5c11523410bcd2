//! Telemetry signal ids the session emits. Per-frame events are Trace and
//! cost one atomic load when no handler wants them.

/// A decoded message is being routed by its type. Trace.
pub const MESSAGE_ROUTING: &str = "sente-lite.session/message-routing";
/// A message was handled (with its outcome). Trace; Debug for a frame that
/// could not be decoded.
pub const MESSAGE_PROCESSED: &str = "sente-lite.session/message-processed";

/// Every id above.
pub const ALL: [&str; 2] = [MESSAGE_ROUTING, MESSAGE_PROCESSED];
