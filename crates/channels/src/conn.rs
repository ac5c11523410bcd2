//! Connections as the engine sees them: an id and an outbound sink.

use bytes::Bytes;
use sente_lite_protocol::Reason;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

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
#[error("`{0}` is not a connection id (expected conn-<generation>-<slot>[@<node>])")]
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

/// Where a connection lives in a cluster: the node that holds it (`None`
/// for this node when it has no node id, as with the in-process broker)
/// and its id there. This is what the RPC router and server-side sends
/// address, so that a response or a send can reach a connection on another
/// node through the broker.
///
/// On the wire: `conn-<generation>-<slot>` without a node, and
/// `conn-<generation>-<slot>@<node>` with one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnAddr {
    /// The node holding the connection, if nodes are named.
    pub node: Option<Arc<str>>,
    /// The connection's id on that node.
    pub conn: ConnId,
}

impl ConnAddr {
    /// A connection of the node named `node` (or of an unnamed single node).
    pub fn new(node: Option<Arc<str>>, conn: ConnId) -> ConnAddr {
        ConnAddr { node, conn }
    }
}

impl fmt::Display for ConnAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{}@{node}", self.conn),
            None => fmt::Display::fmt(&self.conn, f),
        }
    }
}

impl FromStr for ConnAddr {
    type Err = ParseConnIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('@') {
            Some((conn, node)) if !node.is_empty() => Ok(ConnAddr {
                node: Some(Arc::from(node)),
                conn: conn.parse()?,
            }),
            Some(_) => Err(ParseConnIdError(s.chars().take(64).collect())),
            None => Ok(ConnAddr {
                node: None,
                conn: s.parse()?,
            }),
        }
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
    /// The connection's outbound queue is full: this frame was refused, and
    /// the sink's owner (the transport) closes the connection as a slow
    /// consumer. The engine only counts it.
    Full,
    /// The connection is closing or closed (after an overflow, a shutdown,
    /// or any other end): the frame was refused and nothing more will be
    /// accepted.
    Closed,
}

/// The outbound side of a connection, implemented by the transport.
///
/// `offer` must not block: the engine calls it while holding a channel's
/// lock, once per subscriber per message.
pub trait Sink: Send + Sync + 'static {
    /// Offers one frame for delivery.
    fn offer(&self, frame: &Frame) -> Offer;

    /// Offers a frame for this connection alone, not one of many
    /// deliveries of a fan-out: a reply, an RPC response, a publish to a
    /// channel of one or two subscribers. A sink may write it at once on
    /// the calling thread, where a fan-out's deliveries are better handed
    /// to other threads. The default is [`offer`](Self::offer).
    fn offer_one(&self, frame: &Frame) -> Offer {
        self.offer(frame)
    }

    /// Offers a `channel-message` of a channel whose `on-slow-consumer` is
    /// `latest`; `channel` tells that channel's frames apart (a number
    /// unique to the channel's subscriber list on this node). A sink whose
    /// queue has no room for it must not refuse it: it replaces the
    /// channel's frames still waiting in its queue (none of them started
    /// on the wire) by this one, and takes it past its bounds when there
    /// were none, so the subscriber converges to the newest message
    /// instead of being closed. The default is [`offer`](Self::offer).
    fn offer_latest(&self, frame: &Frame, channel: u64) -> Offer {
        let _ = channel;
        self.offer(frame)
    }

    /// Asks the client to come back: the broker lost messages of a channel
    /// it was subscribed to and cannot fill the gap. The transport closes
    /// the connection with close code 1012 and reason `broker-reconnect`
    /// after the frames queued before it. The default does nothing.
    fn reconnect(&self) {}

    /// Closes the connection with a close `code` (4000-4999 are the
    /// application's) and `reason` after the frames queued before it; the
    /// session asks this when a connection did not authenticate in time
    /// (4001 `unauthorized`) or its token expired (4002 `token-expired`).
    /// Nothing offered after it reaches the client. The default does
    /// nothing.
    fn close(&self, code: u16, reason: Reason) {
        let _ = (code, reason);
    }

    /// How many more bytes the outbound queue takes now before it is full
    /// (0 when it is closing); `None` when it has no byte bound. The
    /// engine cuts a subscriber's retained replay to fit it, so the replay
    /// never closes the subscriber as a slow consumer. The default is
    /// `None`.
    fn free_bytes(&self) -> Option<usize> {
        None
    }

    /// How many more frames the sink's queue takes now, when it bounds
    /// them (a recovery sends only what fits). The default is `None`.
    fn free_frames(&self) -> Option<usize> {
        None
    }
}
