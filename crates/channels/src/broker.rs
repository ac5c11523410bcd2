//! The Broker seam: where a channel's messages get their stream position
//! and reach every node that has subscribers.
//!
//! A node ([`Engine`](crate::Engine)) hands every publish to its broker,
//! which gives the message its position (`offset` and `epoch`), keeps it as
//! retained history, and delivers it to the [`Hub`] of every node with
//! subscribers, this one included. The broker also owns the channels
//! themselves (existence, config, cluster-wide counts) and carries frames to
//! connections of other nodes (RPC requests and responses, server sends).
//!
//! [`LocalBroker`](crate::LocalBroker), the default, is one process: it
//! retains and fans out under one lock per channel, with no allocation and
//! no await of its own. A broker on a network (Redis, say) answers later:
//! every method returns a [`Reply`], which is either ready now or a boxed
//! future, so the node awaits both the same way and only a remote broker
//! pays for a future.

use crate::conn::{ConnAddr, ConnId, Frame, Offer};
use crate::error::EngineError;
use crate::history::{History, Recovery};
use crate::hub::Hub;
use sente_lite_protocol::{ChannelConfig, ChannelMessage, ClientInfo, Data, Position};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

/// A broker's answer: [`Reply::Ready`] now (no allocation), or
/// [`Reply::Later`] from a boxed future. Await it either way.
pub enum Reply<'a, T> {
    /// The answer, available at once.
    Ready(Option<T>),
    /// An answer that needs I/O first.
    Later(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<'a, T> Reply<'a, T> {
    /// An answer available now.
    pub fn ready(value: T) -> Self {
        Reply::Ready(Some(value))
    }

    /// An answer from a future.
    pub fn later(future: impl Future<Output = T> + Send + 'a) -> Self {
        Reply::Later(Box::pin(future))
    }
}

impl<T: Unpin> Future for Reply<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            // Polled again after completion (a caller's bug): never ready.
            Reply::Ready(value) => value.take().map_or(Poll::Pending, Poll::Ready),
            Reply::Later(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for Reply<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ready(_) => f.write_str("Reply::Ready"),
            Reply::Later(_) => f.write_str("Reply::Later"),
        }
    }
}

/// A message's place in its channel's stream. `offset` grows by one with
/// each publish; `epoch` changes when the stream's history is lost (the
/// channel was deleted and made again, or a broker lost its data), so
/// offsets are compared only within one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// The last message's offset (0 before the first).
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: Arc<str>,
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Publication<'a> {
    /// The publisher's data, relayed byte for byte.
    pub data: &'a Data,
    /// The publishing connection; `None` for a server-side publish.
    pub sender: Option<&'a ConnAddr>,
    /// Leave the sender out of the fan-out (`exclude-sender`).
    pub exclude_sender: bool,
}

/// A published message's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Unique across nodes and channels.
    pub message_id: String,
    /// Where the message sits in the channel's stream.
    pub position: StreamPosition,
    /// Subscribers whose sink queued it (cluster-wide).
    pub delivered_to: usize,
    /// Subscribers whose sink was full (their transport closes them as
    /// slow consumers).
    pub full: usize,
}

/// What a subscriber joining a channel is shown, at the moment it joins:
/// the retained messages up to `position`. The broker guarantees that every
/// message after `position` reaches the joining node's hub only after the
/// join callback returns, and none at or before it does.
#[derive(Debug)]
pub struct JoinView<'a> {
    /// The channel's settings.
    pub config: &'a ChannelConfig,
    /// Retained messages, oldest first.
    pub retained: &'a dyn RetainedView,
    /// The stream position the view is taken at.
    pub position: StreamPosition,
    /// Subscribers of the channel on other nodes (0 for a single node), so
    /// the joiner's `subscriber-count` is cluster-wide.
    pub remote_subscribers: usize,
    /// When the join asked to recover: every message after the asked
    /// position up to `position` ([`history::recover`](crate::history::recover)),
    /// or why not.
    pub recovery: Option<Recovery>,
}

/// The join callback a node gives [`Broker::join`]: it adds the subscriber
/// to the hub at the view's stream position and answers whether it was
/// added (false: it was subscribed already).
pub type JoinFn<'a> = dyn FnMut(JoinView<'_>) -> Result<bool, EngineError> + Send + 'a;

/// What a broker may call back into its node from its own tasks (frames
/// from other nodes arrive there, not in a call of the node's).
pub trait NodeHandle: Send + Sync {
    /// The node's hub.
    fn hub(&self) -> &Hub;
    /// Delivers an `rpc-response` frame, forwarded from the worker's node,
    /// to the requester of `request_id` on this node, as a response given
    /// here would be (`request-not-found` when unknown, answered or
    /// expired).
    /// `error` is the response's own `error` flag (for telemetry).
    fn rpc_response(&self, request_id: &str, frame: &Frame, error: bool)
        -> Result<(), EngineError>;
}

/// The retained messages a [`JoinView`] shows, without copying them
/// unless the joiner wants them.
pub trait RetainedView: fmt::Debug + Sync {
    /// Copies of the retained messages, oldest first: the newest
    /// `message-retention` of the history
    /// ([`history::retained`](crate::history::retained)).
    fn to_vec(&self) -> Vec<ChannelMessage>;
}

/// A channel as the broker knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelMeta {
    /// Its settings.
    pub config: ChannelConfig,
    /// When it was created (ms since the Unix epoch).
    pub created_at: i64,
    /// Messages published to it.
    pub message_count: u64,
    /// Subscribers across the cluster.
    pub subscriber_count: usize,
    /// Its stream's position now.
    pub position: StreamPosition,
}

/// A frame sent to a channel's subscribers on every node, outside the
/// stream (RPC requests, server broadcasts to a channel): not retained,
/// no position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// Connections that queued it; filled only when asked for.
    pub ids: Vec<ConnAddr>,
    /// How many queued it.
    pub delivered: usize,
    /// How many were full.
    pub full: usize,
}

/// How a channel comes to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Only look it up.
    Never,
    /// Make it with the default config when it is missing and auto-create
    /// is on (a subscribe or publish).
    Auto,
}

/// The broker's health, for `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerHealth {
    /// The broker's kind (`local`, ...).
    pub kind: &'static str,
    /// Whether it can serve now.
    pub healthy: bool,
    /// Its connection state in a word (`connected`, `connecting`, ...).
    pub state: &'static str,
    /// The live nodes it sees, this one included (empty for a single node).
    pub nodes: Vec<String>,
    /// Its last error, when it is not healthy.
    pub error: Option<String>,
    /// Its own running totals by name (reconnects, ...), for `/stats`.
    pub counters: Vec<(&'static str, u64)>,
}

/// Publish, subscribe, history and cluster-wide channel state for one node.
///
/// Every method that names a channel gets a valid channel id (the node
/// checks ids first). `hub` is the calling node's hub, into which the broker
/// delivers what this node's subscribers are to receive.
pub trait Broker: Send + Sync + 'static {
    /// This node's name in addresses ([`ConnAddr::node`]); `None` for a
    /// single unnamed node.
    fn node(&self) -> Option<&Arc<str>>;

    /// A message id unique across nodes and channels.
    fn message_id(&self) -> String;

    /// Gives the message its position, retains it, and delivers the
    /// `channel-message` to the subscribers of every node, in one order per
    /// channel. Creates the channel when it is missing and auto-create is on.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        message: Publication<'a>,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Published, EngineError>>;

    /// Runs `join` at a point of the channel's stream such that the
    /// subscriber sees every message once: retained up to the view's
    /// position, live after it. Creates the channel per `create`. With
    /// `recover`, the view also carries what the subscriber missed after
    /// that position (at most `max-recovery-messages`), taken at the same
    /// point of the stream.
    fn join<'a>(
        &'a self,
        channel: &'a str,
        create: Create,
        recover: Option<&'a Position>,
        join: &'a mut JoinFn<'_>,
    ) -> Reply<'a, Result<(), EngineError>>;

    /// Gives the broker a handle on its node, once, when the node is made
    /// (a broker with tasks of its own delivers through it).
    fn attach(&self, node: Weak<dyn NodeHandle>) {
        let _ = node;
    }

    /// Whether the broker wants [`subscribe`](Broker::subscribe) and
    /// [`unsubscribe`](Broker::unsubscribe) calls (a broker that delivers to
    /// other nodes does; the in-process one has nothing to do for them, and
    /// its nodes skip the calls and the local count they need).
    fn tracks_node_subscriptions(&self) -> bool {
        true
    }

    /// The node is about to get its first local subscriber of `channel`
    /// (it calls this before the [`join`](Broker::join)): from now on
    /// deliver the channel's messages to it. Repeated calls count as one.
    fn subscribe<'a>(&'a self, channel: &'a str) -> Reply<'a, Result<(), EngineError>>;

    /// A local subscriber of `channel` left (called for every leave, the
    /// last included, before [`unsubscribe`](Broker::unsubscribe)), so a
    /// broker keeping cluster-wide counts can count it out.
    fn subscriber_left<'a>(&'a self, channel: &'a str) -> Reply<'a, ()> {
        let _ = channel;
        Reply::ready(())
    }

    /// The node's last local subscriber of `channel` left. This may race
    /// with a new first subscriber's [`subscribe`](Broker::subscribe): a
    /// broker that keeps per-node state checks `hub.local_count(channel)`
    /// under its own per-channel lock before it stops delivering.
    fn unsubscribe<'a>(
        &'a self,
        channel: &'a str,
        hub: &'a Hub,
    ) -> Reply<'a, Result<(), EngineError>>;

    /// Sends `frame` to the channel's subscribers on every node but
    /// `exclude`, outside the stream; `ids` asks for who queued it.
    fn send_to_channel<'a>(
        &'a self,
        channel: &'a str,
        frame: &'a Frame,
        exclude: Option<&'a ConnAddr>,
        ids: bool,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Sent, EngineError>>;

    /// Sends an `rpc-request` frame to the channel's subscribers on every
    /// node but `exclude`, outside the stream, like
    /// [`send_to_channel`](Broker::send_to_channel) with `ids`; each node
    /// delivers it with [`Hub::fan_out_rpc`], which remembers until
    /// `timeout` who was sent it, so that only they may answer.
    fn send_rpc_request<'a>(
        &'a self,
        channel: &'a str,
        request_id: &'a str,
        timeout: Duration,
        frame: &'a Frame,
        exclude: Option<&'a ConnAddr>,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Sent, EngineError>>;

    /// Sends an `rpc-request` frame to one subscriber of the channel in the
    /// whole cluster but `exclude` (`rpc-dispatch = one`), round robin over
    /// those whose queue has room; the node that delivers it remembers
    /// ([`Hub::dispatch_one`]) that only that worker may answer.
    /// `delivered` is 1 (with its id) or 0. The default, for one node,
    /// picks among the hub's subscribers.
    fn send_rpc_one<'a>(
        &'a self,
        channel: &'a str,
        request_id: &'a str,
        timeout: Duration,
        frame: &'a Frame,
        exclude: Option<&'a ConnAddr>,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Sent, EngineError>> {
        let local = exclude.and_then(|e| local_conn(self.node(), e));
        let picked = hub.dispatch_one(channel, frame, local, exclude, request_id, timeout);
        let node = self.node().cloned();
        Reply::ready(Ok(Sent {
            ids: picked.map(|c| ConnAddr::new(node, c)).into_iter().collect(),
            delivered: usize::from(picked.is_some()),
            full: 0,
        }))
    }

    /// Removes every auto-created channel that has had no subscriber (on
    /// any node) and no publish for `ttl`, with its retained messages;
    /// returns how many this call removed. The node calls it
    /// periodically. The default removes nothing.
    fn sweep_idle<'a>(&'a self, ttl: Duration, hub: &'a Hub) -> Reply<'a, usize> {
        let _ = (ttl, hub);
        Reply::ready(0)
    }

    /// A connection of this node (`conn`) joined `channel`, whose
    /// `presence` is on: other nodes' [`presence`](Broker::presence) shows
    /// it from now on. The default (one node) has nothing to do: the hub
    /// is the presence.
    fn presence_add<'a>(
        &'a self,
        channel: &'a str,
        conn: &'a ConnAddr,
        client: &'a ClientInfo,
    ) -> Reply<'a, Result<(), EngineError>> {
        let _ = (channel, conn, client);
        Reply::ready(Ok(()))
    }

    /// A connection of this node left a channel whose `presence` is on.
    fn presence_remove<'a>(&'a self, channel: &'a str, conn: &'a ConnAddr) -> Reply<'a, ()> {
        let _ = (channel, conn);
        Reply::ready(())
    }

    /// Who is subscribed to `channel` on every node, by connection id. The
    /// default (one node) reads the hub.
    fn presence<'a>(
        &'a self,
        channel: &'a str,
        hub: &'a Hub,
    ) -> Reply<'a, Result<BTreeMap<String, ClientInfo>, EngineError>> {
        let node = self.node().cloned();
        Reply::ready(Ok(hub
            .presence(channel)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, c)| (ConnAddr::new(node.clone(), id).to_string(), (*c).clone()))
            .collect()))
    }

    /// Sends `frame` to one connection, on whichever node holds it.
    fn send_to_connection<'a>(
        &'a self,
        to: &'a ConnAddr,
        frame: &'a Frame,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Offer, EngineError>>;

    /// Forwards an `rpc-response` frame to the requester's node, which
    /// delivers it as its own ([`NodeHandle::rpc_response`]). A broker of
    /// one node has no other node: `request-not-found`.
    fn send_rpc_response<'a>(
        &'a self,
        node: &'a str,
        request_id: &'a str,
        frame: &'a Frame,
        error: bool,
    ) -> Reply<'a, Result<(), EngineError>> {
        let _ = (node, frame, error);
        Reply::ready(Err(EngineError::RequestNotFound(crate::error::truncated(
            request_id,
        ))))
    }

    /// Sends `frame` to every connection of every node; returns how many
    /// queued it and how many were targeted.
    fn broadcast<'a>(&'a self, frame: &'a Frame, hub: &'a Hub) -> Reply<'a, (usize, usize)>;

    /// Creates a channel; `channel-exists` when it exists.
    fn create_channel<'a>(
        &'a self,
        channel: &'a str,
        config: ChannelConfig,
    ) -> Reply<'a, Result<(), EngineError>>;

    /// Deletes a channel and its history, and evicts its subscribers from
    /// every node's hub (this one's through `hub`); returns how many were
    /// subscribed.
    fn delete_channel<'a>(
        &'a self,
        channel: &'a str,
        hub: &'a Hub,
    ) -> Reply<'a, Result<usize, EngineError>>;

    /// One channel's state, `None` when it does not exist.
    fn channel<'a>(
        &'a self,
        channel: &'a str,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Option<ChannelMeta>, EngineError>>;

    /// Every channel's state, by id.
    fn channels<'a>(
        &'a self,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Vec<(String, ChannelMeta)>, EngineError>>;

    /// A channel's history: its config, its position and the newest
    /// messages it holds, read at one point of its stream
    /// (`channel-not-found` when it does not exist).
    fn history<'a>(&'a self, channel: &'a str) -> Reply<'a, Result<History, EngineError>>;

    /// Channels that exist now, cluster-wide.
    fn channel_count(&self) -> usize;

    /// Subscribers across all channels, cluster-wide.
    fn total_subscriptions(&self, hub: &Hub) -> usize;

    /// Messages published, deliveries and full sinks, over the broker's
    /// life (for `/stats`).
    fn totals(&self) -> BrokerTotals;

    /// Whether the broker can serve now.
    fn health(&self) -> BrokerHealth;
}

/// Running totals a broker keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerTotals {
    /// Messages published.
    pub published: u64,
    /// Frames of those messages queued by subscribers' sinks.
    pub deliveries: u64,
    /// Subscribers found full by those fan-outs.
    pub deliveries_full: u64,
    /// Bytes of retained messages this node holds now.
    pub retained_bytes: usize,
    /// Retained messages dropped early for `max-retained-bytes` or
    /// `max-retained-bytes-total`.
    pub retained_evicted: u64,
    /// Auto-created channels removed for `idle-channel-ttl-ms`.
    pub idle_removed: u64,
}

/// The id a hub knows a connection by, when `to` is on this node.
pub(crate) fn local_conn(node: Option<&Arc<str>>, to: &ConnAddr) -> Option<ConnId> {
    match (&to.node, node) {
        (None, _) => Some(to.conn),
        (Some(n), Some(me)) if n == me => Some(to.conn),
        _ => None,
    }
}
