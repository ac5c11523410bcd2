//! telemere-lite: structured telemetry signals with sync and async handlers.
//!
//! (Being built: see docs/TELEMETRY.md once it lands.)
