//! Wire types of the sente-lite protocol, and nothing else.
//!
//! sente-lite speaks JSON text frames over WebSocket plus three HTTP
//! endpoints. This crate defines every frame in both directions as typed Rust
//! values with the exact JSON shape of `docs/PROTOCOL.md`:
//!
//! - [`ClientMessage`]: what a client sends (`subscribe`, `publish`,
//!   `rpc-request`, ...). Decode it with [`decode_client`], which never panics
//!   and returns a [`DecodeError`] whose [`Reason`] is the error frame's
//!   `reason`.
//! - [`ServerMessage`]: what the server sends (`welcome`, results,
//!   `channel-message` deliveries, `error`, ...).
//! - [`http`]: the JSON bodies of `GET /health`, `/stats` and `/channels`.
//! - [`ChannelConfig`]: a channel's settings, as they appear on the wire.
//!
//! - [`Data`]: a message's `data`, held as the exact JSON text it arrived in,
//!   so that a relay passes it through byte for byte.
//! - [`redact_credentials`]: text that names a URL with a password, as it
//!   may be shown (`redis://app:<redacted>@db/`).
//! - [`wildcard_match`]: the `*` patterns of token grants and origin lists.
//!
//! The crate knows nothing of tokio, warp or the channel engine: it depends on
//! serde, serde_json and thiserror only, so a client in Rust can use it as
//! well.

mod client;
mod config;
mod data;
pub mod http;
mod pattern;
mod reason;
mod redact;
mod server;

pub use client::{decode_client, ClientMessage, DecodeError, Position};
pub use config::{ChannelConfig, RpcDispatch, SlowConsumerPolicy};
pub use data::Data;
pub use pattern::wildcard_match;
pub use reason::Reason;
pub use redact::{redact_credentials, REDACTED};
pub use server::{
    broadcast_frame, channel_broadcast_frame, ChannelMessage, ChannelSummary, ClientInfo, Delivery,
    ErrorFrame, RpcRequestDelivery, ServerMessage,
};

/// Milliseconds since the Unix epoch, the unit of every timestamp on the wire.
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// The README's example, compiled and run by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
