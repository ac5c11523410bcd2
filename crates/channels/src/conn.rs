//! Connections as the engine sees them: an id and an outbound sink.

use bytes::Bytes;
use std::fmt;
use std::str::FromStr;

/// A connection's id: a slab slot plus a generation that is never reused, so
/// a stale id can never reach the connection that later took the same slot.
///
/// On the wire it is `conn-<generation>-<slot>` (see [`fmt::Display`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) slot: u32,
    pub(crate) generation: u64,
}

impl ConnId {
    /// The slab slot (exposed for diagnostics and tests).
    pub fn slot(self) -> u32 {
        self.slot
    }

    /// The generation: unique per engine for its lifetime.
    pub fn generation(self) -> u64 {
        self.generation
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{}-{}", self.generation, self.slot)
    }
}

/// A string that is not a connection id of this engine's form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a connection id (expected conn-<generation>-<slot>)")]
pub struct ParseConnIdError(pub String);

impl FromStr for ConnId {
    type Err = ParseConnIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseConnIdError(s.chars().take(64).collect());
        let rest = s.strip_prefix("conn-").ok_or_else(err)?;
        let (generation, slot) = rest.split_once('-').ok_or_else(err)?;
        Ok(ConnId {
            generation: generation.parse().map_err(|_| err())?,
            slot: slot.parse().map_err(|_| err())?,
        })
    }
}

/// One serialized JSON text frame, shared by every connection it goes to:
/// cloning it is a reference-count increment, never a copy.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Wraps a serialized frame (the `String` is moved, not copied).
    pub fn new(json: String) -> Frame {
        Frame(Bytes::from(json))
    }

    /// The frame's UTF-8 bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The frame as text. Frames are built only from `String`s, so they are
    /// always valid UTF-8.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the frame is empty (never, for frames the engine builds).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({})", self.as_str())
    }
}

impl From<Frame> for Bytes {
    fn from(f: Frame) -> Bytes {
        f.0
    }
}

/// What happened to a frame offered to a [`Sink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the connection.
    Queued,
    /// The connection's outbound queue is full. The sink's owner (the
    /// transport) decides what follows; the engine only counts it.
    Full,
    /// The connection is closing or closed.
    Closed,
}

/// The outbound side of a connection, implemented by the transport.
///
/// `offer` must not block: the engine calls it while holding a channel's
/// lock, once per subscriber per message.
pub trait Sink: Send + Sync + 'static {
    /// Offers one frame for delivery.
    fn offer(&self, frame: &Frame) -> Offer;
}
