//! sente-lite-server: composes the protocol, telemetry, channel engine and
//! transport into a server; the only crate that reads the environment, flags
//! and signals.
