//! sente-lite-redis: the Redis broker of sente-lite.
//!
//! With [`RedisBroker`] under each node's
//! [`Engine`](sente_lite_channels::Engine), any number of sente-lite nodes
//! on one Redis act as one server: a publish on any node reaches every
//! subscriber on every node once, in one order per channel; counts,
//! channels, retained messages and history are cluster-wide; RPC responses
//! and server sends find their connection on whichever node holds it.
//!
//! How (centrifugo's Redis engine is the model):
//!
//! - each publish is one Lua script: it increments the channel's offset,
//!   appends the `channel-message` frame to the channel's capped stream
//!   (with a TTL), sums the live nodes' subscriber counts and publishes the
//!   frame on the channel's pub/sub channel, all in one atomic step;
//! - a node subscribes to a channel's pub/sub channel only while it has
//!   local subscribers (first in, last out), and one task reads every
//!   pub/sub message and fans it out to the local subscribers without
//!   waiting on any of them;
//! - a join takes its view of the stream in one script that also publishes
//!   a marker to the joining node, so the joiner gets every message once:
//!   retained up to the marker, live after it;
//! - nodes refresh their liveness every third of `node-ttl`; a node that
//!   stops (killed) stops being counted when it expires;
//! - when Redis goes away, every operation answers `broker-unavailable`
//!   within the command timeout; on reconnect a node fills each channel's
//!   gap from the stream by offset, and where it cannot (stream trimmed,
//!   epoch changed, Redis lost its data) closes that channel's local
//!   subscribers with close code 1012 `broker-reconnect`.
//!
//! It knows nothing of HTTP, WebSocket or the server's configuration
//! files: it is given a [`RedisConfig`].
//!
//! Redis keys and pub/sub channels are listed in the crate's README. The
//! scripts use keys they compute, so the broker needs a single Redis (or a
//! primary with replicas), not Redis Cluster.

mod broker;
mod config;
mod scripts;

pub use broker::RedisBroker;
pub use config::{random_node_id, valid_node_id, RedisConfig};

/// Why a [`RedisBroker`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisBrokerError {
    /// The URL does not parse as a Redis URL.
    #[error("invalid Redis URL `{0}`: {1}")]
    Url(String, String),
    /// The node id is empty, too long, or has characters other than
    /// letters, digits, `.`, `_` and `-`.
    #[error("invalid node id `{0}`: use 1 to 64 letters, digits, `.`, `_` or `-`")]
    NodeId(String),
    /// Made outside a tokio runtime (the broker spawns its connection task).
    #[error("the Redis broker must be created inside a tokio runtime")]
    NoRuntime,
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
