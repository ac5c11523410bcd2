//! [`RedisConfig`]: where the broker finds Redis and how it names itself.

use std::time::Duration;

/// The Redis broker's settings (the server's `broker.*` and `node.id`
/// keys; docs/CONFIGURATION.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `broker.redis-url`, e.g. `redis://127.0.0.1:6379/`.
    pub url: String,
    /// `broker.key-prefix`: every key and pub/sub channel starts with it,
    /// so several clusters can share one Redis.
    pub key_prefix: String,
    /// `node.id`: this node's name, unique in the cluster (letters, digits,
    /// `.`, `_`, `-`; at most 64 bytes).
    pub node_id: String,
    /// The longest any Redis call may take before the operation answers
    /// `broker-unavailable` (the server's `websocket.message-timeout-ms`).
    pub command_timeout: Duration,
    /// `broker.node-ttl-ms`: a node that has not refreshed its liveness
    /// for this long stops being counted; live nodes refresh it every
    /// third of it.
    pub node_ttl: Duration,
    /// `broker.stream-size`: messages kept per channel stream (at least the
    /// channel's `message-retention`), from which a node fills a gap after
    /// a reconnect.
    pub stream_size: usize,
    /// `broker.stream-ttl-ms`: a stream with no publish for this long
    /// expires.
    pub stream_ttl: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/".to_owned(),
            key_prefix: "sente-lite".to_owned(),
            node_id: random_node_id(),
            command_timeout: Duration::from_millis(5000),
            node_ttl: Duration::from_millis(15_000),
            stream_size: 100,
            stream_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// A fresh node id, `node-` and 8 random hex digits.
pub fn random_node_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one(std::process::id()) & 0xffff_ffff;
    format!("node-{n:08x}")
}

/// Whether `id` is a valid node id.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
