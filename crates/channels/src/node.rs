//! The node: the [`Engine`] that wires one [`Hub`], one [`Broker`] and one
//! RPC router together, and is the API of every pub/sub operation.

use crate::broker::{
    Broker, ChannelMeta, Create, JoinView, NodeHandle, Publication, Published, Sent, StreamPosition,
};
use crate::config::EngineConfig;
use crate::conn::{ConnAddr, ConnId, Frame, Offer, Sink};
use crate::error::truncated;
use crate::error::{EngineError, NoRuntime};
use crate::events::{self, ev};
use crate::frames;
use crate::history::{self, Recovery};
use crate::hub::Hub;
use crate::local::LocalBroker;
use crate::rpc::{Request, Route, RpcRouter};
use crate::stats::{ChannelStat, ChannelStats, EngineCounters, EngineHealth, LimitStats};
use sente_lite_protocol::{
    broadcast_frame, channel_broadcast_frame, now_ms, ChannelConfig, ChannelMessage,
    ChannelSummary, ClientInfo, Data, Position, Reason, RpcDispatch, RpcRequestDelivery,
    ServerMessage,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;
use telemere_lite::Telemetry;
use tokio::time::Instant;

/// The channel engine of one node. Cheap to clone: every clone is the same
/// engine.
///
/// Create it inside a tokio runtime ([`Engine::new`] spawns the timer that
/// expires RPC requests); the timer stops when the last clone is dropped.
///
/// Operations that may cross the network (anything that goes through the
/// broker) are `async`; with the default [`LocalBroker`] they complete at
/// their first poll.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    hub: Hub,
    broker: Arc<dyn Broker>,
    rpc: RpcRouter,
    counters: Counters,
    /// Refused operations by reason, indexed like `Reason::ALL`.
    rejected: [AtomicU64; Reason::ALL.len()],
    telemetry: Telemetry,
    /// Wakes the idle sweeper (at the engine's end).
    sweep_wake: Arc<tokio::sync::Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wake the RPC timer and the sweeper so they see the engine is gone
        // and end.
        self.rpc.wake.notify_one();
        self.sweep_wake.notify_one();
    }
}

/// Totals the node keeps itself (publishes are counted by the broker).
#[derive(Debug, Default)]
struct Counters {
    deliveries: AtomicU64,
    deliveries_full: AtomicU64,
    rpc_requests: AtomicU64,
    rpc_responses: AtomicU64,
    rpc_expired: AtomicU64,
    /// Retained messages left out of joins' replays.
    retained_omitted: AtomicU64,
    /// Messages sent to subscribers that recovered.
    recovered: AtomicU64,
    /// Recoveries that could not be made.
    recoveries_missed: AtomicU64,
    /// `rpc-dispatch = one` requests sent to another worker after theirs
    /// left.
    rpc_redispatched: AtomicU64,
}

/// The answer to a successful subscribe.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribed {
    /// Subscribers after this one joined.
    pub subscriber_count: usize,
    /// Retained messages, oldest first. Empty when the connection was
    /// subscribed already (it has seen them).
    pub retained_messages: Vec<ChannelMessage>,
    /// The connection was subscribed already; nothing changed.
    pub already_subscribed: bool,
    /// Retained messages left out of `retained_messages` (the oldest):
    /// the replay would not have fit the subscriber's outbound queue
    /// ([`Sink::free_bytes`]) or `max-retained-bytes`.
    pub retained_omitted: usize,
    /// The stream position the subscription starts after: every message
    /// with a greater offset reaches the subscriber live.
    pub position: StreamPosition,
    /// Only for a new subscription that asked to recover: `Ok(n)` when the
    /// `n` messages it missed were queued right after the reply (and the
    /// retained replay left out: the subscriber has those), or why it could
    /// not recover (`epoch-changed`, `too-far-behind`; it then got the
    /// retained replay of a fresh subscription).
    pub recovered: Option<Result<usize, Reason>>,
}

/// The answer to [`Engine::history`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// The channel's stream position when the history was read.
    pub position: StreamPosition,
    /// The messages, oldest first; or, for a `since` the history cannot
    /// answer, `epoch-changed` or `too-far-behind`.
    pub messages: Result<Vec<ChannelMessage>, Reason>,
}

/// Everything about one channel (`get-channel-info`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    /// Its subscribers' connection ids.
    pub subscribers: Vec<String>,
    /// Its settings.
    pub config: ChannelConfig,
    /// When it was created (ms since the Unix epoch).
    pub created_at: i64,
    /// Messages published to it.
    pub message_count: u64,
    /// Its retained messages, oldest first.
    pub retained_messages: Vec<ChannelMessage>,
    /// Its stream's position now.
    pub position: StreamPosition,
}

/// An accepted RPC request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcSent {
    /// Its correlation id.
    pub request_id: String,
    /// Workers whose sink accepted the request.
    pub delivered_to: usize,
    /// Their connection ids.
    pub subscribers: Vec<String>,
    /// The timeout it runs with (after clamping).
    pub timeout_ms: u64,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("hub", &self.inner.hub)
            .field("broker", &self.inner.broker.health().kind)
            .finish()
    }
}

/// A frame built by the caller from an operation's result: the reply the
/// engine queues for the caller at the one point where ordering holds.
pub type ReplyFn<'a, T> = &'a (dyn Fn(&T) -> Frame + Sync);

impl Engine {
    /// Creates an engine on the in-process [`LocalBroker`] and spawns its
    /// RPC timer on the current tokio runtime. Its telemetry goes to a fresh
    /// instance with no handlers; use [`Engine::with_telemetry`] to observe
    /// it.
    pub fn new(config: EngineConfig) -> Result<Engine, NoRuntime> {
        Engine::with_telemetry(config, Telemetry::new())
    }

    /// Creates an engine on the [`LocalBroker`] that emits its signals (see
    /// [`crate::events`]) through `telemetry`.
    pub fn with_telemetry(config: EngineConfig, telemetry: Telemetry) -> Result<Engine, NoRuntime> {
        let broker = Arc::new(LocalBroker::new(config.clone(), telemetry.clone()));
        Engine::with_broker(config, telemetry, broker)
    }

    /// Creates an engine on any broker.
    pub fn with_broker(
        config: EngineConfig,
        telemetry: Telemetry,
        broker: Arc<dyn Broker>,
    ) -> Result<Engine, NoRuntime> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| NoRuntime)?;
        let inner = Arc::new(Inner {
            hub: Hub::with_rpc_limit(config.max_connections, config.max_pending_rpc),
            rpc: RpcRouter::new(
                config.max_pending_rpc,
                config.max_pending_rpc_per_connection,
                broker.node().cloned(),
            ),
            config,
            broker,
            counters: Counters::default(),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            telemetry,
            sweep_wake: Arc::new(tokio::sync::Notify::new()),
        });
        handle.spawn(timer(Arc::downgrade(&inner), Arc::clone(&inner.rpc.wake)));
        handle.spawn(idle_sweeper(
            Arc::downgrade(&inner),
            Arc::clone(&inner.sweep_wake),
        ));
        let node: Weak<dyn NodeHandle> = Arc::downgrade(&inner) as Weak<dyn NodeHandle>;
        inner.broker.attach(node);
        Ok(Engine { inner })
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The telemetry instance the engine emits through.
    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    /// This node's hub (local connections and subscriber lists).
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// This node's broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// The cluster address of a connection of this node.
    pub fn addr(&self, conn: ConnId) -> ConnAddr {
        ConnAddr::new(self.inner.broker.node().cloned(), conn)
    }

    // ----- connections ---------------------------------------------------

    /// Registers a connection with its outbound sink.
    pub fn connect(&self, sink: Arc<dyn Sink>) -> Result<ConnId, EngineError> {
        self.inner
            .hub
            .connect(sink, None)
            .inspect_err(|e| self.reject(e))
    }

    /// Registers a connection and offers it a first frame built from its
    /// address (the transport's `welcome`) before any broadcast can reach
    /// it.
    pub fn connect_with_greeting(
        &self,
        sink: Arc<dyn Sink>,
        greeting: impl Fn(&ConnAddr) -> Frame,
    ) -> Result<ConnId, EngineError> {
        let node = self.inner.broker.node().cloned();
        let greet = |id: ConnId| greeting(&ConnAddr::new(node.clone(), id));
        self.inner
            .hub
            .connect(sink, Some(&greet))
            .inspect_err(|e| self.reject(e))
    }

    /// Removes a connection: unsubscribes it from every channel and drops
    /// its pending RPC requests. Returns false for an unknown or stale id.
    pub async fn disconnect(&self, conn: ConnId) -> bool {
        // Who it was, for its `leave` frames (it is gone from the hub then).
        let client = self.inner.hub.client(conn);
        let Some(subs) = self.inner.hub.disconnect(conn) else {
            return false;
        };
        // Nothing it asked for can reach it now.
        self.inner.rpc.drop_requester(conn);
        for channel in subs {
            self.left_as(conn, &channel, "disconnect", client.as_deref())
                .await;
        }
        // Requests it was dispatched on channels it had already left the
        // list of (evicted by a broker reconnect) go to other workers too.
        self.redispatch(conn, None).await;
        true
    }

    /// Connections registered on this node now.
    pub fn connection_count(&self) -> usize {
        self.inner.hub.connection_count()
    }

    /// Resolves a wire connection id to an address: a live connection of
    /// this node, or one of another node (which the broker reaches).
    pub fn resolve(&self, conn_id: &str) -> Result<ConnAddr, EngineError> {
        let not_found = || EngineError::ConnectionNotFound(truncated(conn_id));
        let addr: ConnAddr = conn_id.parse().map_err(|_| not_found())?;
        match crate::broker::local_conn(self.inner.broker.node(), &addr) {
            Some(local) if !self.inner.hub.contains(local) => Err(not_found()),
            Some(local) => Ok(self.addr(local)),
            None => Ok(addr),
        }
    }

    // ----- channels ------------------------------------------------------

    fn check_id(&self, id: &str) -> Result<(), EngineError> {
        let max = self.inner.config.max_channel_id_bytes;
        if id.is_empty() || id.len() > max {
            return Err(EngineError::InvalidChannelId { len: id.len(), max });
        }
        Ok(())
    }

    /// Creates a channel with its own config (the default config when
    /// `None`). Fails with `channel-exists` when it exists.
    pub async fn create_channel(
        &self,
        id: &str,
        config: Option<ChannelConfig>,
    ) -> Result<(), EngineError> {
        let config = config.unwrap_or_else(|| self.inner.config.channel_defaults(id));
        let r = match self.check_id(id) {
            Ok(()) => self.inner.broker.create_channel(id, config).await,
            Err(e) => Err(e),
        };
        r.inspect_err(|e| self.reject(e))
    }

    /// Deletes a channel, unsubscribing everyone; returns how many were
    /// subscribed. Its retained messages are gone with it.
    pub async fn delete_channel(&self, id: &str) -> Result<usize, EngineError> {
        self.inner.broker.delete_channel(id, &self.inner.hub).await
    }

    /// Everything about one channel.
    pub async fn channel_info(&self, id: &str) -> Result<ChannelInfo, EngineError> {
        let inner = &self.inner;
        let meta = inner
            .broker
            .channel(id, &inner.hub)
            .await?
            .ok_or_else(|| EngineError::ChannelNotFound(truncated(id)))?;
        let held = inner.broker.history(id).await?;
        let retained_messages = history::retained(&held.messages, &held.config, now_ms());
        let subscribers = inner
            .hub
            .local_subscribers(id)
            .into_iter()
            .map(|c| self.addr(c).to_string())
            .collect();
        Ok(ChannelInfo {
            subscribers,
            config: meta.config,
            created_at: meta.created_at,
            message_count: meta.message_count,
            retained_messages,
            position: meta.position,
        })
    }

    /// Every channel with its config and counts, by id (`broker-unavailable`
    /// when the broker cannot be read).
    pub async fn list_channels(&self) -> Result<BTreeMap<String, ChannelSummary>, EngineError> {
        Ok(self
            .inner
            .broker
            .channels(&self.inner.hub)
            .await?
            .into_iter()
            .map(|(id, m)| (id, summary(&m)))
            .collect())
    }

    /// One page of the channels `keep` lets through, in id order: at most
    /// `limit`, starting after the id `after`, and the cursor of the next
    /// page (the last id given) when more follow.
    pub async fn list_channels_page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(BTreeMap<String, ChannelSummary>, Option<String>), EngineError> {
        let mut all = self.inner.broker.channels(&self.inner.hub).await?;
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut page = BTreeMap::new();
        let mut more = false;
        for (id, meta) in all {
            if after.is_some_and(|a| id.as_str() <= a) || !keep(&id) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.insert(id, summary(&meta));
        }
        let next = if more {
            page.keys().next_back().cloned()
        } else {
            None
        };
        Ok((page, next))
    }

    /// Number of channels now.
    pub fn channel_count(&self) -> usize {
        self.inner.broker.channel_count()
    }

    // ----- subscriptions -------------------------------------------------

    /// Subscribes `conn` to `channel_id` (created when missing and
    /// auto-create is on). Subscribing twice is not an error: the second
    /// answer has `already_subscribed` set and no retained messages.
    pub async fn subscribe(
        &self,
        conn: ConnId,
        channel_id: &str,
    ) -> Result<Subscribed, EngineError> {
        self.subscribe_with_reply(conn, channel_id, None).await
    }

    /// Like [`subscribe`](Self::subscribe), and on success offers the frame
    /// `reply` builds to the subscriber's own sink at the point where it
    /// joins: the `subscription-result` then reaches the client before any
    /// message published after it joined.
    pub async fn subscribe_with_reply(
        &self,
        conn: ConnId,
        channel_id: &str,
        reply: Option<ReplyFn<'_, Subscribed>>,
    ) -> Result<Subscribed, EngineError> {
        self.subscribe_recovering(conn, channel_id, None, reply)
            .await
    }

    /// Like [`subscribe_with_reply`](Self::subscribe_with_reply), for a
    /// subscriber that had the channel's messages up to `recover` (a
    /// reconnecting client): when the channel's history still holds every
    /// message after it (same epoch, at most `max-recovery-messages`, and
    /// all of them fit the subscriber's queue), they are queued right after
    /// the reply, in order, before any live message, and
    /// [`Subscribed::recovered`] is `Ok(count)`. Otherwise the subscription
    /// is a fresh one (retained replay) and `recovered` says why not.
    pub async fn subscribe_recovering(
        &self,
        conn: ConnId,
        channel_id: &str,
        recover: Option<&Position>,
        reply: Option<ReplyFn<'_, Subscribed>>,
    ) -> Result<Subscribed, EngineError> {
        let mut telemetry = true;
        let result = self
            .subscribe_inner(conn, channel_id, recover, reply, &mut telemetry)
            .await;
        match &result {
            Ok(s) if !s.already_subscribed => {
                ev!(
                    &self.inner.telemetry,
                    telemetry,
                    Debug,
                    events::SUBSCRIPTION_ADDED,
                    serde_json::json!({
                    "channel-id": channel_id, "conn-id": self.addr(conn).to_string(),
                    "subscriber-count": s.subscriber_count})
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.reject(e);
                ev!(
                    &self.inner.telemetry,
                    telemetry,
                    Warn,
                    events::SUBSCRIPTION_REJECTED,
                    serde_json::json!({
                    "channel-id": truncated(channel_id), "conn-id": self.addr(conn).to_string(),
                    "reason": e.reason()})
                );
            }
        }
        result
    }

    async fn subscribe_inner(
        &self,
        conn: ConnId,
        channel_id: &str,
        recover: Option<&Position>,
        reply: Option<ReplyFn<'_, Subscribed>>,
        telemetry: &mut bool,
    ) -> Result<Subscribed, EngineError> {
        self.check_id(channel_id)?;
        let inner = &self.inner;
        let entry = inner
            .hub
            .conn(conn)
            .ok_or_else(|| EngineError::ConnectionNotFound(conn.to_string()))?;
        // First in: the node subscribes at its broker before it takes the
        // join view, so nothing published after the view can pass the node
        // by. (A broker treats repeated subscribes as one.)
        let tracks = inner.broker.tracks_node_subscriptions();
        let subscribed_first = tracks && inner.hub.local_count(channel_id) == 0;
        if subscribed_first {
            if let Err(e) = inner.broker.subscribe(channel_id).await {
                // Nothing joined: let the broker forget the channel again.
                let _ = inner.broker.unsubscribe(channel_id, &inner.hub).await;
                return Err(e);
            }
        }
        let mut done: Option<(Subscribed, bool)> = None;
        // The channel's `presence` and `join-leave`.
        let mut flags = (false, false);
        let hub = &inner.hub;
        let mut join = |view: JoinView<'_>| -> Result<bool, EngineError> {
            *telemetry = view.config.telemetry_enabled;
            // Lock order: the broker's stream, then the connection's state,
            // then the hub's channel list.
            let mut st = entry.state.lock();
            if st.closed {
                return Err(EngineError::ConnectionNotFound(conn.to_string()));
            }
            let max_subs = inner.config.max_subscriptions_per_connection;
            if st.subs.len() >= max_subs && !st.subs.contains(channel_id) {
                return Err(EngineError::MaxSubscriptionsReached(max_subs));
            }
            flags = (view.config.presence, view.config.join_leave);
            let joined = hub.add(&entry, channel_id, view.config)?;
            // The missed messages' frames, when they can all be sent.
            let mut missed: Vec<Frame> = Vec::new();
            let mut out = match joined {
                None => Subscribed {
                    subscriber_count: hub.local_count(channel_id) + view.remote_subscribers,
                    retained_messages: Vec::new(),
                    already_subscribed: true,
                    retained_omitted: 0,
                    position: view.position,
                    recovered: None,
                },
                Some(j) => {
                    st.subs.insert(Arc::from(channel_id));
                    let recovered = match view.recovery {
                        Some(Recovery::Recovered(messages)) => {
                            missed = messages.iter().map(frame_of).collect();
                            let bytes: usize = missed.iter().map(Frame::len).sum();
                            let room = entry.sink.free_bytes().map_or(usize::MAX, |free| {
                                free.saturating_sub(RESULT_OVERHEAD + channel_id.len())
                            });
                            // The reply takes a frame of its own.
                            let slots = entry
                                .sink
                                .free_frames()
                                .map_or(usize::MAX, |n| n.saturating_sub(1));
                            if bytes <= room && missed.len() <= slots {
                                Some(Ok(missed.len()))
                            } else {
                                // They would overflow the subscriber's
                                // queue: it starts afresh instead.
                                missed.clear();
                                Some(Err(Reason::TooFarBehind))
                            }
                        }
                        Some(Recovery::Missed(reason)) => Some(Err(reason)),
                        None => None,
                    };
                    let (retained, omitted) = if matches!(recovered, Some(Ok(_))) {
                        // The subscriber has every message up to its
                        // position; what it missed follows the reply.
                        (Vec::new(), 0)
                    } else {
                        let mut retained = view.retained.to_vec();
                        let budget = inner.config.max_retained_bytes;
                        let omitted = cut_to_fit(&mut retained, budget);
                        (retained, omitted)
                    };
                    Subscribed {
                        subscriber_count: j.local_count + view.remote_subscribers,
                        retained_messages: retained,
                        already_subscribed: false,
                        retained_omitted: omitted,
                        position: view.position,
                        recovered,
                    }
                }
            };
            if let Some(reply) = reply {
                let frame = fit_reply(&mut out, entry.sink.free_bytes(), reply);
                entry.sink.offer_one(&frame);
            }
            // Under the join: before any live message of the channel.
            for frame in &missed {
                entry.sink.offer(frame);
            }
            if !missed.is_empty() {
                inner
                    .counters
                    .recovered
                    .fetch_add(missed.len() as u64, Relaxed);
            }
            if matches!(out.recovered, Some(Err(_))) {
                inner.counters.recoveries_missed.fetch_add(1, Relaxed);
            }
            if out.retained_omitted > 0 {
                inner
                    .counters
                    .retained_omitted
                    .fetch_add(out.retained_omitted as u64, Relaxed);
            }
            done = Some((out, joined.is_some_and(|j| j.first)));
            Ok(joined.is_some())
        };
        let joined = inner
            .broker
            .join(channel_id, Create::Auto, recover, &mut join)
            .await;
        let (out, first) = match (joined, done) {
            (Ok(()), Some(d)) => d,
            (result, _) => {
                // Nothing joined: give back the broker subscription taken
                // for it, unless someone else joined meanwhile.
                if subscribed_first && inner.hub.local_count(channel_id) == 0 {
                    let _ = inner.broker.unsubscribe(channel_id, &inner.hub).await;
                }
                return Err(result
                    .err()
                    .unwrap_or_else(|| EngineError::ChannelNotFound(truncated(channel_id))));
            }
        };
        if tracks && first && !subscribed_first {
            // Another subscriber left in between and took the node's broker
            // subscription with it. The client has its success answer
            // already; a broker that cannot subscribe now reports (and
            // retries) that on its own.
            let _ = inner.broker.subscribe(channel_id).await;
        }
        if !out.already_subscribed {
            self.joined_presence(conn, channel_id, flags).await;
        }
        Ok(out)
    }

    /// Sends the requests dispatched to `worker` on `channel`
    /// (`rpc-dispatch = one`) that it leaves unanswered to another worker,
    /// each within what is left of its deadline (none left: the requester
    /// gets its `rpc-timeout` as usual).
    async fn redispatch(&self, worker: ConnId, channel: Option<&str>) {
        let inner = &self.inner;
        for d in inner.hub.take_dispatched(worker, channel) {
            let left = d.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                continue;
            }
            let sent = inner
                .broker
                .send_rpc_one(
                    &d.channel,
                    &d.request_id,
                    left,
                    &d.frame,
                    d.exclude.as_ref(),
                    &inner.hub,
                )
                .await;
            if matches!(sent, Ok(Sent { delivered: 1, .. })) {
                inner.counters.rpc_redispatched.fetch_add(1, Relaxed);
            }
        }
    }

    /// After a new subscription: the broker's presence entry and the
    /// channel's `join` frame, as its config asks.
    async fn joined_presence(
        &self,
        conn: ConnId,
        channel: &str,
        (presence, join_leave): (bool, bool),
    ) {
        if !presence && !join_leave {
            return;
        }
        let inner = &self.inner;
        let addr = self.addr(conn);
        let client = inner.hub.client(conn).unwrap_or_default();
        // The entry serves `presence`, and, across nodes, the `leave`
        // frames of a node that dies.
        // A broker that cannot write it now reports that on its own (and
        // rewrites every entry of the node when it reconnects).
        let _ = inner.broker.presence_add(channel, &addr, &client).await;
        if join_leave {
            let frame = Frame::new(
                ServerMessage::Join {
                    channel_id: channel.to_owned(),
                    conn_id: addr.to_string(),
                    user_id: client.user_id.clone(),
                }
                .to_json(),
            );
            let _ = inner
                .broker
                .send_to_channel(channel, &frame, None, false, &inner.hub)
                .await;
        }
    }

    /// Sets who a connection is, for presence: its user id and token
    /// `info` (the session sets it at connect and on each accepted
    /// `authenticate`). Entries of channels it is subscribed to already
    /// are updated.
    pub async fn set_client(&self, conn: ConnId, client: ClientInfo) {
        let inner = &self.inner;
        inner.hub.set_client(conn, client.clone());
        let addr = self.addr(conn);
        for channel in inner.hub.subscriptions(conn).unwrap_or_default() {
            if inner.hub.presence(&channel).is_some() {
                let _ = inner.broker.presence_add(&channel, &addr, &client).await;
            }
        }
    }

    /// Who is subscribed to a channel whose `presence` is on, across every
    /// node, by connection id (`presence-disabled` when it is off,
    /// `channel-not-found` when the channel does not exist).
    pub async fn presence(
        &self,
        channel_id: &str,
    ) -> Result<BTreeMap<String, ClientInfo>, EngineError> {
        let inner = &self.inner;
        let result = async {
            self.check_id(channel_id)?;
            let meta = inner
                .broker
                .channel(channel_id, &inner.hub)
                .await?
                .ok_or_else(|| EngineError::ChannelNotFound(truncated(channel_id)))?;
            if !meta.config.presence {
                return Err(EngineError::PresenceDisabled(truncated(channel_id)));
            }
            inner.broker.presence(channel_id, &inner.hub).await
        }
        .await;
        result.inspect_err(|e| self.reject(e))
    }

    /// How many connections are subscribed to a channel whose `presence`
    /// is on, and how many distinct users they are (anonymous connections
    /// are no user): `(clients, users)`.
    pub async fn presence_stats(&self, channel_id: &str) -> Result<(usize, usize), EngineError> {
        let clients = self.presence(channel_id).await?;
        let users: std::collections::HashSet<&str> = clients
            .values()
            .filter_map(|c| c.user_id.as_deref())
            .collect();
        Ok((clients.len(), users.len()))
    }

    /// Unsubscribes `conn` from `channel_id`; `not-subscribed` when it was
    /// not.
    pub async fn unsubscribe(&self, conn: ConnId, channel_id: &str) -> Result<(), EngineError> {
        let taken = {
            let entry = self
                .inner
                .hub
                .conn(conn)
                .ok_or_else(|| EngineError::ConnectionNotFound(conn.to_string()))
                .inspect_err(|e| self.reject(e))?;
            let mut st = entry.state.lock();
            st.subs.remove(channel_id)
        };
        if !taken {
            let e = EngineError::NotSubscribed(truncated(channel_id));
            self.reject(&e);
            return Err(e);
        }
        self.left(conn, channel_id, "unsubscribe").await;
        Ok(())
    }

    /// Unsubscribes `conn` from every channel; returns how many.
    pub async fn unsubscribe_all(&self, conn: ConnId) -> usize {
        let Some(entry) = self.inner.hub.conn(conn) else {
            return 0;
        };
        let subs: Vec<Arc<str>> = entry.state.lock().subs.drain().collect();
        let mut n = 0;
        for channel in subs {
            if self.left(conn, &channel, "unsubscribe").await {
                n += 1;
            }
        }
        n
    }

    /// Takes `conn` out of the channel's list (the caller has taken the
    /// channel out of the connection's set), and leaves the broker channel
    /// when it was the node's last subscriber. True if it was there.
    async fn left(&self, conn: ConnId, channel: &str, cause: &'static str) -> bool {
        let client = self.inner.hub.client(conn);
        self.left_as(conn, channel, cause, client.as_deref()).await
    }

    /// [`left`](Self::left), for a connection that was `client`.
    async fn left_as(
        &self,
        conn: ConnId,
        channel: &str,
        cause: &'static str,
        client: Option<&ClientInfo>,
    ) -> bool {
        let Some(left) = self.inner.hub.leave(conn, channel) else {
            return false;
        };
        ev!(
            &self.inner.telemetry,
            left.telemetry,
            Debug,
            events::SUBSCRIPTION_REMOVED,
            serde_json::json!({"channel-id": channel, "conn-id": self.addr(conn).to_string(), "cause": cause})
        );
        self.redispatch(conn, Some(channel)).await;
        if left.presence || left.join_leave {
            let addr = self.addr(conn);
            if left.presence {
                self.inner.broker.presence_remove(channel, &addr).await;
            }
            if left.join_leave {
                let user_id = client.and_then(|c| c.user_id.clone());
                let frame = Frame::new(
                    ServerMessage::Leave {
                        channel_id: channel.to_owned(),
                        conn_id: addr.to_string(),
                        user_id,
                    }
                    .to_json(),
                );
                let _ = self
                    .inner
                    .broker
                    .send_to_channel(channel, &frame, None, false, &self.inner.hub)
                    .await;
            }
        }
        if self.inner.broker.tracks_node_subscriptions() {
            self.inner.broker.subscriber_left(channel).await;
            if left.last {
                // The in-process broker cannot fail here; a remote one
                // reports its own errors (and resubscribes) on its own.
                let _ = self
                    .inner
                    .broker
                    .unsubscribe(channel, &self.inner.hub)
                    .await;
            }
        }
        true
    }

    /// The channels `conn` is subscribed to, sorted.
    pub fn subscriptions(&self, conn: ConnId) -> Result<Vec<String>, EngineError> {
        self.inner.hub.subscriptions(conn)
    }

    /// A channel's history (`history`): without `since`, its newest
    /// `limit` messages; with it, the first `limit` after it. `limit`
    /// `None` is the whole history. The channel is not created.
    pub async fn history(
        &self,
        channel_id: &str,
        since: Option<&Position>,
        limit: Option<u64>,
    ) -> Result<HistoryPage, EngineError> {
        self.check_id(channel_id).inspect_err(|e| self.reject(e))?;
        let held = self
            .inner
            .broker
            .history(channel_id)
            .await
            .inspect_err(|e| self.reject(e))?;
        let limit = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        Ok(HistoryPage {
            messages: history::page(&held, since, limit, now_ms()),
            position: held.position,
        })
    }

    // ----- publishing ----------------------------------------------------

    /// Publishes `data` to `channel_id` (created when missing and
    /// auto-create is on). `sender` is `None` for a server-side publish.
    ///
    /// The `channel-message` frame is serialized once and shared by every
    /// subscriber, with `data` byte for byte as given. The broker gives it
    /// its offset and fans it out in one order per channel, and a
    /// concurrent subscribe sees it either retained or live, never both and
    /// never neither.
    pub async fn publish(
        &self,
        sender: Option<ConnId>,
        channel_id: &str,
        data: impl Into<Data>,
        exclude_sender: bool,
    ) -> Result<Published, EngineError> {
        let data = data.into();
        let sender = sender.map(|s| self.addr(s));
        let result = match self.check_id(channel_id) {
            Ok(()) => {
                let message = Publication {
                    data: &data,
                    sender: sender.as_ref(),
                    exclude_sender,
                };
                self.inner
                    .broker
                    .publish(channel_id, message, &self.inner.hub)
                    .await
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(p) => {
                let tel = self
                    .telemetry_of(
                        channel_id,
                        telemere_lite::Level::Debug,
                        events::MESSAGE_PUBLISHED,
                    )
                    .await;
                ev!(
                    &self.inner.telemetry,
                    tel,
                    Debug,
                    events::MESSAGE_PUBLISHED,
                    serde_json::json!({
                    "channel-id": channel_id, "message-id": &p.message_id,
                    "offset": p.position.offset,
                    "sender-conn-id": sender.as_ref().map(ToString::to_string),
                    "delivered-to": p.delivered_to, "full": p.full})
                );
            }
            Err(e) => {
                self.reject(e);
                let tel = self
                    .telemetry_of(
                        channel_id,
                        telemere_lite::Level::Warn,
                        events::MESSAGE_PUBLISH_FAILED,
                    )
                    .await;
                ev!(
                    &self.inner.telemetry,
                    tel,
                    Warn,
                    events::MESSAGE_PUBLISH_FAILED,
                    serde_json::json!({
                    "channel-id": truncated(channel_id),
                    "sender-conn-id": sender.as_ref().map(ToString::to_string),
                    "reason": e.reason()})
                );
            }
        }
        result
    }

    /// Whether signals about `channel_id` are wanted: only looked up when a
    /// handler would take the signal at all (the channel's config lives in
    /// the broker). A channel that does not exist has the default's.
    async fn telemetry_of(&self, channel_id: &str, level: telemere_lite::Level, id: &str) -> bool {
        if !self.inner.telemetry.enabled(level, id) {
            return false;
        }
        match self.inner.broker.channel(channel_id, &self.inner.hub).await {
            Ok(Some(meta)) => meta.config.telemetry_enabled,
            _ => {
                self.inner
                    .config
                    .channel_defaults(channel_id)
                    .telemetry_enabled
            }
        }
    }

    // ----- server-side sends ---------------------------------------------

    /// Sends `message` with `"broadcast": true` added to every connection;
    /// returns how many accepted it.
    pub async fn broadcast(&self, message: Map<String, Value>) -> usize {
        let frame = Frame::new(Value::Object(broadcast_frame(message)).to_string());
        let (delivered, targeted) = self.inner.broker.broadcast(&frame, &self.inner.hub).await;
        if delivered < targeted {
            ev!(
                &self.inner.telemetry,
                true,
                Warn,
                events::BROADCAST_FAILED,
                serde_json::json!({"targeted": targeted, "delivered-to": delivered})
            );
        }
        self.inner
            .counters
            .deliveries
            .fetch_add(delivered as u64, Relaxed);
        delivered
    }

    /// Sends `message` with `channel-id` and `broadcast-time` added to the
    /// channel's subscribers (not retained); returns how many accepted it.
    pub async fn broadcast_to_channel(
        &self,
        channel_id: &str,
        message: Map<String, Value>,
    ) -> Result<usize, EngineError> {
        let inner = &self.inner;
        let Some(meta) = inner.broker.channel(channel_id, &inner.hub).await? else {
            ev!(
                &inner.telemetry,
                true,
                Warn,
                events::BROADCAST_FAILED,
                serde_json::json!({"channel-id": truncated(channel_id), "reason": "channel-not-found"})
            );
            return Err(EngineError::ChannelNotFound(truncated(channel_id)));
        };
        let frame = Frame::new(
            Value::Object(channel_broadcast_frame(message, channel_id, now_ms())).to_string(),
        );
        let tel = meta.config.telemetry_enabled;
        ev!(
            &inner.telemetry,
            tel,
            Trace,
            events::CHANNEL_BROADCAST_START,
            serde_json::json!({"channel-id": channel_id, "server-broadcast": true})
        );
        let sent = inner
            .broker
            .send_to_channel(channel_id, &frame, None, false, &inner.hub)
            .await?;
        ev!(
            &inner.telemetry,
            tel,
            Trace,
            events::CHANNEL_BROADCAST_COMPLETE,
            serde_json::json!({
            "channel-id": channel_id, "delivered-to": sent.delivered, "full": sent.full,
            "server-broadcast": true})
        );
        if sent.full > 0 {
            ev!(
                &inner.telemetry,
                tel,
                Warn,
                events::BROADCAST_FAILED,
                serde_json::json!({
                "channel-id": channel_id, "delivered-to": sent.delivered, "full": sent.full})
            );
        }
        let c = &inner.counters;
        c.deliveries.fetch_add(sent.delivered as u64, Relaxed);
        c.deliveries_full.fetch_add(sent.full as u64, Relaxed);
        Ok(sent.delivered)
    }

    /// Sends a frame unchanged to one connection, on whichever node holds
    /// it. `connection-not-found` when there is none; an [`Offer`] says
    /// whether its queue took it.
    pub async fn send_to_connection(
        &self,
        to: &ConnAddr,
        frame: &Frame,
    ) -> Result<Offer, EngineError> {
        let offer = self
            .inner
            .broker
            .send_to_connection(to, frame, &self.inner.hub)
            .await?;
        if offer == Offer::Queued {
            self.inner.counters.deliveries.fetch_add(1, Relaxed);
        }
        Ok(offer)
    }

    /// Sends a JSON value unchanged to one connection.
    pub async fn send_json(&self, to: &ConnAddr, message: &Value) -> Result<Offer, EngineError> {
        self.send_to_connection(to, &Frame::new(message.to_string()))
            .await
    }

    // ----- RPC -----------------------------------------------------------

    /// Sends an RPC request from `requester` to the other subscribers of
    /// `channel_id`. With none, fails with `no-subscribers` and keeps nothing
    /// pending. `timeout_ms` defaults to the channel's `rpc-timeout-ms` and
    /// is clamped to `max-rpc-timeout-ms`.
    pub async fn send_rpc_request(
        &self,
        requester: ConnId,
        channel_id: &str,
        data: impl Into<Data>,
        timeout_ms: Option<u64>,
    ) -> Result<RpcSent, EngineError> {
        self.send_rpc_request_with_reply(requester, channel_id, data.into(), timeout_ms, None)
            .await
    }

    /// Like [`send_rpc_request`](Self::send_rpc_request), and on success
    /// offers the frame `reply` builds (the `rpc-request-result`) to the
    /// requester's sink before any response to the request can reach it,
    /// however fast a worker answers.
    pub async fn send_rpc_request_with_reply(
        &self,
        requester: ConnId,
        channel_id: &str,
        data: Data,
        timeout_ms: Option<u64>,
        reply: Option<ReplyFn<'_, RpcSent>>,
    ) -> Result<RpcSent, EngineError> {
        self.rpc_request(requester, channel_id, data, timeout_ms, reply)
            .await
            .inspect_err(|e| self.reject(e))
    }

    async fn rpc_request(
        &self,
        requester: ConnId,
        channel_id: &str,
        data: Data,
        timeout_ms: Option<u64>,
        reply: Option<ReplyFn<'_, RpcSent>>,
    ) -> Result<RpcSent, EngineError> {
        let inner = &self.inner;
        self.check_id(channel_id)?;
        let Some(meta) = inner.broker.channel(channel_id, &inner.hub).await? else {
            return Err(if inner.config.auto_creates(channel_id) {
                EngineError::NoSubscribers(truncated(channel_id))
            } else {
                EngineError::ChannelNotFound(truncated(channel_id))
            });
        };
        let Some(requester_conn) = inner.hub.conn(requester) else {
            return Err(EngineError::ConnectionNotFound(requester.to_string()));
        };
        let timeout_ms = timeout_ms
            .unwrap_or(meta.config.rpc_timeout_ms)
            .min(inner.config.max_rpc_timeout_ms);
        let tel = meta.config.telemetry_enabled;
        // Registered before it is delivered, so a fast worker's response
        // finds it.
        let request_id = inner.rpc.register(Request {
            requester,
            timeout_ms,
            telemetry: tel,
            announce: reply.is_some(),
        })?;
        let from = self.addr(requester);
        let delivery = RpcRequestDelivery {
            request_id: request_id.clone(),
            channel_id: channel_id.to_owned(),
            data,
            sender_conn_id: from.to_string(),
            timeout_ms,
        };
        let frame = Frame::new(crate::frames::typed("rpc-request", &delivery));
        let timeout = Duration::from_millis(timeout_ms);
        let sending = match meta.config.rpc_dispatch {
            RpcDispatch::All => inner.broker.send_rpc_request(
                channel_id,
                &request_id,
                timeout,
                &frame,
                Some(&from),
                &inner.hub,
            ),
            RpcDispatch::One => inner.broker.send_rpc_one(
                channel_id,
                &request_id,
                timeout,
                &frame,
                Some(&from),
                &inner.hub,
            ),
        };
        let sent = match sending.await {
            Ok(sent) => sent,
            Err(e) => {
                inner.rpc.cancel(&request_id);
                return Err(e);
            }
        };
        if sent.delivered == 0 {
            inner.rpc.cancel(&request_id);
            return Err(EngineError::NoSubscribers(truncated(channel_id)));
        }
        inner.counters.rpc_requests.fetch_add(1, Relaxed);
        inner
            .counters
            .deliveries
            .fetch_add(sent.delivered as u64, Relaxed);
        inner
            .counters
            .deliveries_full
            .fetch_add(sent.full as u64, Relaxed);
        ev!(
            &inner.telemetry,
            tel,
            Debug,
            events::RPC_REQUEST_SENT,
            serde_json::json!({
            "request-id": &request_id, "channel-id": channel_id,
            "sender-conn-id": from.to_string(), "delivered-to": sent.delivered,
            "timeout-ms": timeout_ms})
        );
        let out = RpcSent {
            request_id,
            delivered_to: sent.delivered,
            subscribers: sent.ids.iter().map(ToString::to_string).collect(),
            timeout_ms,
        };
        if let Some(reply) = reply {
            let frame = reply(&out);
            inner.rpc.announce(&out.request_id, &frame, &|f| {
                requester_conn.sink.offer_one(f);
            });
        }
        Ok(out)
    }

    /// Routes the response of `responder` (a worker of this node) to the
    /// requester, on whichever node it is; the requester's `rpc-response`
    /// names the responder (`responder-conn-id`, and `responder-user-id`
    /// when given). Fails with `request-not-found` when the id is unknown,
    /// answered or expired, or when this node never sent the request to
    /// `responder` (only a connection that was sent a request may answer
    /// it). Returns the requester's id when it is on this node.
    pub async fn send_rpc_response(
        &self,
        responder: ConnId,
        responder_user_id: Option<&str>,
        request_id: &str,
        data: impl Into<Data>,
        error: bool,
    ) -> Result<Option<ConnId>, EngineError> {
        self.rpc_response(responder, responder_user_id, request_id, data.into(), error)
            .await
            .inspect_err(|e| self.reject(e))
    }

    async fn rpc_response(
        &self,
        responder: ConnId,
        responder_user_id: Option<&str>,
        request_id: &str,
        data: Data,
        error: bool,
    ) -> Result<Option<ConnId>, EngineError> {
        let inner = &self.inner;
        // The node that delivered the request decides who may answer it.
        if !inner.hub.may_answer(responder, request_id) {
            return Err(EngineError::RequestNotFound(truncated(request_id)));
        }
        let frame = Frame::new(
            ServerMessage::RpcResponse {
                request_id: request_id.to_owned(),
                data,
                error,
                responder_conn_id: Some(self.addr(responder).to_string()),
                responder_user_id: responder_user_id.map(str::to_owned),
            }
            .to_json(),
        );
        let routed = self.route_rpc_response(request_id, &frame, error).await;
        if routed.is_ok() {
            inner.hub.rpc_answered(request_id);
        }
        routed
    }

    async fn route_rpc_response(
        &self,
        request_id: &str,
        frame: &Frame,
        error: bool,
    ) -> Result<Option<ConnId>, EngineError> {
        let inner = &self.inner;
        match inner.deliver_rpc_response(request_id, frame, error) {
            Err(EngineError::RequestNotFound(e)) => {
                // A request of another node (`req-…@node`) goes back there.
                let me = inner.broker.node().map(|n| &**n);
                match request_id.rsplit_once('@') {
                    Some((_, node)) if Some(node) != me => {
                        inner
                            .broker
                            .send_rpc_response(node, request_id, frame, error)
                            .await?;
                        Ok(None)
                    }
                    _ => Err(EngineError::RequestNotFound(e)),
                }
            }
            other => other.map(Some),
        }
    }

    /// Expires every request past its deadline now, sending each requester
    /// an `rpc-timeout` error; returns how many. The engine's timer calls
    /// this on its own; calling it by hand is harmless.
    pub fn cleanup_expired_rpc_requests(&self) -> usize {
        expire_due(&self.inner)
    }

    /// RPC requests waiting for a response.
    pub fn pending_rpc_requests(&self) -> usize {
        self.inner.rpc.len()
    }

    // ----- statistics ----------------------------------------------------

    /// Counts a refused operation under its reason.
    fn reject(&self, e: &EngineError) {
        self.record_refusal(e.reason());
    }

    /// Counts an operation refused outside the engine (an authorizer's
    /// `forbidden`, say) under its reason, with the engine's own refusals
    /// ([`rejections`](Self::rejections), `/stats` `channel-stats.rejected`).
    pub fn record_refusal(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.inner.rejected[i].fetch_add(1, Relaxed);
        }
    }

    /// Operations refused since start, by reason (reasons never seen left
    /// out): the stat of every engine limit.
    pub fn rejections(&self) -> BTreeMap<Reason, u64> {
        Reason::ALL
            .iter()
            .zip(&self.inner.rejected)
            .map(|(r, n)| (*r, n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Total subscriptions across all channels.
    pub fn total_subscriptions(&self) -> usize {
        self.inner.broker.total_subscriptions(&self.inner.hub)
    }

    /// The engine's running totals.
    pub fn counters(&self) -> EngineCounters {
        let c = &self.inner.counters;
        let b = self.inner.broker.totals();
        EngineCounters {
            published: b.published,
            deliveries: b.deliveries + c.deliveries.load(Relaxed),
            deliveries_full: b.deliveries_full + c.deliveries_full.load(Relaxed),
            rpc_requests: c.rpc_requests.load(Relaxed),
            rpc_responses: c.rpc_responses.load(Relaxed),
            rpc_expired: c.rpc_expired.load(Relaxed),
        }
    }

    /// Statistics per channel and in total (`channel-stats` of `/stats`;
    /// `broker-unavailable` when the broker cannot be read).
    pub async fn channel_stats(&self) -> Result<ChannelStats, EngineError> {
        let channels = self
            .inner
            .broker
            .channels(&self.inner.hub)
            .await?
            .into_iter()
            .map(|(id, m)| {
                let stat = ChannelStat {
                    subscriber_count: m.subscriber_count,
                    message_count: m.message_count,
                    created_at: m.created_at,
                    retention_count: m.config.message_retention,
                };
                (id, stat)
            })
            .collect::<BTreeMap<_, _>>();
        Ok(ChannelStats {
            total_channels: channels.len(),
            // From the same reading as the channels' own counts.
            total_subscriptions: channels.values().map(|c| c.subscriber_count).sum(),
            channels,
            pending_rpc_requests: self.pending_rpc_requests(),
            active_connections: self.connection_count(),
            rejected: self.rejections(),
            limits: self.limit_stats(),
        })
    }

    /// What the memory limits did (`/stats` `channel-stats`).
    pub fn limit_stats(&self) -> LimitStats {
        let b = self.inner.broker.totals();
        LimitStats {
            retained_bytes: b.retained_bytes,
            retained_evicted: b.retained_evicted,
            retained_omitted: self.inner.counters.retained_omitted.load(Relaxed),
            idle_channels_removed: b.idle_removed,
            recovered: self.inner.counters.recovered.load(Relaxed),
            recoveries_missed: self.inner.counters.recoveries_missed.load(Relaxed),
            rpc_redispatched: self.inner.counters.rpc_redispatched.load(Relaxed),
        }
    }

    /// Removes idle auto-created channels now (as the engine's sweeper does
    /// every quarter of `idle-channel-ttl-ms`); returns how many.
    pub async fn sweep_idle_channels(&self) -> usize {
        let ttl = Duration::from_millis(self.inner.config.idle_channel_ttl_ms);
        self.inner.broker.sweep_idle(ttl, &self.inner.hub).await
    }

    /// The engine's health: unhealthy when the broker is down or RPC
    /// requests linger more than a second past their deadline (the timer is
    /// not keeping up).
    pub fn health(&self) -> EngineHealth {
        let broker = self.inner.broker.health();
        let old = self.inner.rpc.overdue(Duration::from_secs(1));
        EngineHealth {
            healthy: old == 0 && broker.healthy,
            total_channels: self.channel_count(),
            total_subscriptions: self.total_subscriptions(),
            pending_rpc_requests: self.pending_rpc_requests(),
            old_rpc_requests: old,
            broker,
        }
    }
}

impl Inner {
    /// Delivers a response to a requester of this node.
    fn deliver_rpc_response(
        &self,
        request_id: &str,
        frame: &Frame,
        error: bool,
    ) -> Result<ConnId, EngineError> {
        let inner = self;
        let (target, telemetry) = match inner.rpc.respond(request_id, frame)? {
            Route::Now {
                requester,
                telemetry,
            } => {
                match inner.hub.send(requester, frame) {
                    Ok(Offer::Queued) => {
                        inner.counters.deliveries.fetch_add(1, Relaxed);
                    }
                    Ok(_) => {}
                    // The requester left between our lookup and the send;
                    // its pending requests are gone with it.
                    Err(_) => return Err(EngineError::RequestNotFound(truncated(request_id))),
                }
                (requester, telemetry)
            }
            // The rpc-request-result is being queued right now; the
            // announcing code delivers this right after it.
            Route::Held {
                requester,
                telemetry,
            } => (requester, telemetry),
        };
        inner.counters.rpc_responses.fetch_add(1, Relaxed);
        ev!(
            &inner.telemetry,
            telemetry,
            Debug,
            events::RPC_RESPONSE_SENT,
            serde_json::json!({
            "request-id": request_id, "target-conn-id": ConnAddr::new(self.broker.node().cloned(), target).to_string(), "error": error})
        );
        Ok(target)
    }
}

impl NodeHandle for Inner {
    fn hub(&self) -> &Hub {
        &self.hub
    }

    fn rpc_response(
        &self,
        request_id: &str,
        frame: &Frame,
        error: bool,
    ) -> Result<(), EngineError> {
        self.deliver_rpc_response(request_id, frame, error)
            .map(|_| ())
    }
}

fn summary(m: &ChannelMeta) -> ChannelSummary {
    ChannelSummary {
        config: m.config,
        created_at: m.created_at,
        message_count: m.message_count,
        subscriber_count: m.subscriber_count,
    }
}

fn expire_due(inner: &Inner) -> usize {
    let due = inner.rpc.take_due(Instant::now());
    for e in &due {
        if let Some(frame) = &e.frame {
            // The requester may have left; then there is no one to tell.
            if let Ok(Offer::Queued) = inner.hub.send(e.requester, frame) {
                inner.counters.deliveries.fetch_add(1, Relaxed);
            }
        }
        ev!(
            &inner.telemetry,
            true,
            Info,
            events::RPC_REQUEST_EXPIRED,
            serde_json::json!({
            "request-id": &e.request_id, "requester-conn-id": e.requester.to_string(),
            "timeout-ms": e.timeout_ms})
        );
    }
    if !due.is_empty() {
        ev!(
            &inner.telemetry,
            true,
            Debug,
            events::RPC_CLEANUP_COMPLETED,
            serde_json::json!({"expired": due.len()})
        );
    }
    inner
        .counters
        .rpc_expired
        .fetch_add(due.len() as u64, Relaxed);
    due.len()
}

/// The `channel-message` frame of a message from the history, the same
/// bytes as its live delivery (`data` byte for byte).
fn frame_of(m: &ChannelMessage) -> Frame {
    Frame::new(frames::channel_message(&frames::ChannelMessageRef {
        channel_id: &m.channel_id,
        message_id: &m.message_id,
        data: &m.data,
        sender_conn_id: m.sender_conn_id.as_deref(),
        published_at: m.published_at,
        offset: m.offset,
        epoch: &m.epoch,
    }))
}

/// Overhead of a `subscription-result` frame besides its retained messages
/// and channel id (its other fields, generously).
const RESULT_OVERHEAD: usize = 256;

/// Bytes one retained message adds to a `subscription-result`: the
/// `channel-message` frame it is shown as, and a comma.
fn replay_size(m: &ChannelMessage) -> usize {
    // `{"type":"channel-message",` plus the message's own fields.
    serde_json::to_string(m).map_or(usize::MAX / 2, |s| s.len()) + 27
}

/// Keeps the newest retained messages whose replay fits `budget` bytes;
/// returns how many of the oldest were taken out.
fn cut_to_fit(retained: &mut Vec<ChannelMessage>, budget: usize) -> usize {
    // Cheap bound first: most replays are far below it.
    let rough: usize = retained
        .iter()
        .map(|m| m.data.len() + m.channel_id.len() + m.message_id.len() + 256)
        .sum();
    if rough <= budget {
        return 0;
    }
    let mut used = 0usize;
    let mut keep = 0;
    for m in retained.iter().rev() {
        let n = replay_size(m);
        if used.saturating_add(n) > budget {
            break;
        }
        used += n;
        keep += 1;
    }
    let omitted = retained.len() - keep;
    retained.drain(..omitted);
    omitted
}

/// The `subscription-result` built by `reply`, its retained messages cut
/// (the oldest first) until the frame fits `free` bytes of the
/// subscriber's queue.
fn fit_reply(out: &mut Subscribed, free: Option<usize>, reply: ReplyFn<'_, Subscribed>) -> Frame {
    let Some(free) = free else {
        return reply(out);
    };
    let budget = free.saturating_sub(RESULT_OVERHEAD);
    let cut = cut_to_fit(&mut out.retained_messages, budget);
    out.retained_omitted += cut;
    loop {
        let frame = reply(out);
        if frame.len() <= free || out.retained_messages.is_empty() {
            return frame;
        }
        // The estimate was short (a long channel id, say): one more out.
        out.retained_messages.remove(0);
        out.retained_omitted += 1;
    }
}

/// Removes idle auto-created channels every quarter of
/// `idle-channel-ttl-ms` (10 ms to 60 s); one task per engine, ending when
/// the engine is dropped. Its work per round is bounded by `max-channels`.
async fn idle_sweeper(engine: Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    let period = match engine.upgrade() {
        Some(inner) => Duration::from_millis(inner.config.idle_channel_ttl_ms / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(60)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        let Some(inner) = engine.upgrade() else {
            return;
        };
        let ttl = Duration::from_millis(inner.config.idle_channel_ttl_ms);
        // Each removal is signalled as a channel-deleted with cause idle.
        inner.broker.sweep_idle(ttl, &inner.hub).await;
    }
}

/// The RPC timer: sleeps until the earliest deadline (or a wake-up for an
/// earlier one), expires what is due, and ends when the engine is dropped.
/// It holds the engine only while it works, and the router's `Notify`
/// (whose permit keeps a wake-up that comes while it works) while it waits.
async fn timer(engine: Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let next = {
            let Some(inner) = engine.upgrade() else {
                return;
            };
            expire_due(&inner);
            inner.rpc.earliest()
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
