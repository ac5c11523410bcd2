//! The engine: connections, channels, subscriptions, publishing and
//! server-side sends. RPC lives in `rpc.rs`.

use crate::conn::{ConnId, Frame, Offer, Sink};
use crate::error::{EngineError, NoRuntime};
use crate::map::{InsertError, ShardedMap};
use crate::rpc::RpcTable;
use crate::{events, EngineConfig};
use parking_lot::{Mutex, RwLock};
use sente_lite_protocol::http::{ChannelStats, ChannelStatsEntry, SystemHealth};
use sente_lite_protocol::{
    broadcast_frame, channel_broadcast_frame, now_ms, ChannelConfig, ChannelMessage,
    ChannelSummary, Reason,
};
use serde_json::{Map, Value};
use slab::Slab;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use telemere_lite::Telemetry;
use tokio::sync::Notify;

/// Emits a telemetry event through the engine's instance when `$on` (the
/// channel's `telemetry-enabled`) holds. `$data` is evaluated only when some
/// handler wants the signal.
macro_rules! ev {
    ($engine:expr, $on:expr, $lvl:ident, $id:expr, $data:expr) => {
        if $on {
            telemere_lite::event!(
                tel: &$engine.inner.telemetry,
                level: telemere_lite::Level::$lvl,
                $id,
                $data
            );
        }
    };
}
pub(crate) use ev;

/// The channel engine. Cheap to clone: every clone is the same engine.
///
/// Create it inside a tokio runtime ([`Engine::new`] spawns the timer that
/// expires RPC requests); the timer stops when the last clone is dropped.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    conns: RwLock<Slab<Arc<Conn>>>,
    next_generation: AtomicU64,
    channels: ShardedMap<Channel>,
    pub(crate) rpc: Mutex<RpcTable>,
    pub(crate) rpc_wake: Arc<Notify>,
    /// Where message ids come from: each thread takes a block at a time.
    next_message_block: AtomicU64,
    /// Distinguishes engines in the thread-local id blocks.
    uid: u64,
    total_subscriptions: AtomicUsize,
    pub(crate) counters: Counters,
    /// Refused operations by reason, indexed like `Reason::ALL`.
    rejected: [AtomicU64; Reason::ALL.len()],
    pub(crate) telemetry: Telemetry,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wake the RPC timer so it sees the engine is gone and ends.
        self.rpc_wake.notify_one();
    }
}

/// Running totals since the engine started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) deliveries: AtomicU64,
    pub(crate) deliveries_full: AtomicU64,
    pub(crate) rpc_requests: AtomicU64,
    pub(crate) rpc_responses: AtomicU64,
    pub(crate) rpc_expired: AtomicU64,
}

/// A snapshot of the engine's running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Messages published (client and server side).
    pub published: u64,
    /// Frames accepted by subscribers' sinks (publishes, broadcasts, RPC).
    pub deliveries: u64,
    /// Frames a sink refused because its queue was full.
    pub deliveries_full: u64,
    pub rpc_requests: u64,
    pub rpc_responses: u64,
    pub rpc_expired: u64,
}

pub(crate) struct Conn {
    pub(crate) id: ConnId,
    pub(crate) sink: Arc<dyn Sink>,
    state: Mutex<ConnState>,
}

struct ConnState {
    closed: bool,
    /// Channels this connection is subscribed to; bounded by `max-channels`.
    subs: HashSet<Arc<str>>,
}

struct Channel {
    config: ChannelConfig,
    created_at: i64,
    state: Mutex<ChannelState>,
}

struct ChannelState {
    /// Fan-out list: one entry per subscriber, iterated on every publish.
    subs: Vec<Subscriber>,
    /// Where each subscriber sits in `subs`, for O(1) removal.
    index: HashMap<ConnId, usize>,
    /// The last `message-retention` messages, oldest first.
    retained: VecDeque<ChannelMessage>,
    message_count: u64,
    /// Frames its fan-outs placed, and found full (per channel, so parallel
    /// publishes to different channels share no counter).
    deliveries: u64,
    deliveries_full: u64,
    /// Set under the lock when the channel is deleted, so a subscribe that
    /// raced with the delete does not join a channel nobody can reach.
    deleted: bool,
}

struct Subscriber {
    conn: ConnId,
    sink: Arc<dyn Sink>,
}

impl ChannelState {
    fn new() -> Self {
        ChannelState {
            subs: Vec::new(),
            index: HashMap::new(),
            retained: VecDeque::new(),
            message_count: 0,
            deliveries: 0,
            deliveries_full: 0,
            deleted: false,
        }
    }

    fn remove(&mut self, conn: ConnId) -> bool {
        let Some(i) = self.index.remove(&conn) else {
            return false;
        };
        self.subs.swap_remove(i);
        if let Some(moved) = self.subs.get(i) {
            self.index.insert(moved.conn, i);
        }
        true
    }

    /// Offers `frame` to every subscriber but `exclude`; returns
    /// (accepted, full).
    fn fan_out(&self, frame: &Frame, exclude: Option<ConnId>) -> (usize, usize) {
        let mut delivered = 0;
        let mut full = 0;
        for s in &self.subs {
            if Some(s.conn) == exclude {
                continue;
            }
            match s.sink.offer(frame) {
                Offer::Queued => delivered += 1,
                Offer::Full => full += 1,
                Offer::Closed => {}
            }
        }
        (delivered, full)
    }
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
}

/// The answer to a successful publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub message_id: String,
    /// Subscribers whose sink accepted the message.
    pub delivered_to: usize,
    /// Subscribers whose sink was full (their transport closes them as slow
    /// consumers).
    pub full: usize,
}

/// Everything about one channel (`get-channel-info`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    pub subscribers: Vec<String>,
    pub config: ChannelConfig,
    pub created_at: i64,
    pub message_count: u64,
    pub retained_messages: Vec<ChannelMessage>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("connections", &self.connection_count())
            .field("channels", &self.inner.channels.len())
            .finish()
    }
}

impl Engine {
    /// Creates an engine and spawns its RPC timer on the current tokio
    /// runtime. Its telemetry goes to a fresh instance with no handlers; use
    /// [`Engine::with_telemetry`] to observe it.
    pub fn new(config: EngineConfig) -> Result<Engine, NoRuntime> {
        Engine::with_telemetry(config, Telemetry::new())
    }

    /// Creates an engine that emits its signals (see [`crate::events`])
    /// through `telemetry`.
    pub fn with_telemetry(config: EngineConfig, telemetry: Telemetry) -> Result<Engine, NoRuntime> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| NoRuntime)?;
        let rpc_wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            config,
            conns: RwLock::new(Slab::new()),
            next_generation: AtomicU64::new(1),
            channels: ShardedMap::new(),
            rpc: Mutex::new(RpcTable::default()),
            rpc_wake: Arc::clone(&rpc_wake),
            next_message_block: AtomicU64::new(0),
            uid: NEXT_ENGINE.fetch_add(1, Relaxed),
            total_subscriptions: AtomicUsize::new(0),
            counters: Counters::default(),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            telemetry,
        });
        handle.spawn(crate::rpc::timer(Arc::downgrade(&inner), rpc_wake));
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

    // ----- connections ---------------------------------------------------

    /// Registers a connection with its outbound sink.
    pub fn connect(&self, sink: Arc<dyn Sink>) -> Result<ConnId, EngineError> {
        self.connect_inner::<fn(ConnId) -> Frame>(sink, None)
            .inspect_err(|e| self.reject(e))
    }

    /// Registers a connection and offers it a first frame built from its id
    /// (the transport's `welcome`) before any broadcast can reach it.
    pub fn connect_with_greeting(
        &self,
        sink: Arc<dyn Sink>,
        greeting: impl FnOnce(ConnId) -> Frame,
    ) -> Result<ConnId, EngineError> {
        self.connect_inner(sink, Some(&mut Some(greeting)))
            .inspect_err(|e| self.reject(e))
    }

    fn connect_inner<G: FnOnce(ConnId) -> Frame>(
        &self,
        sink: Arc<dyn Sink>,
        greeting: Option<&mut Option<G>>,
    ) -> Result<ConnId, EngineError> {
        let mut conns = self.inner.conns.write();
        let max = self.inner.config.max_connections;
        if conns.len() >= max {
            return Err(EngineError::MaxConnectionsReached(max));
        }
        let entry = conns.vacant_entry();
        let Ok(slot) = u32::try_from(entry.key()) else {
            return Err(EngineError::MaxConnectionsReached(max));
        };
        let id = ConnId {
            slot,
            generation: self.inner.next_generation.fetch_add(1, Relaxed),
        };
        if let Some(greet) = greeting.and_then(Option::take) {
            // Under the write lock: no broadcast can come first.
            sink.offer(&greet(id));
        }
        entry.insert(Arc::new(Conn {
            id,
            sink,
            state: Mutex::new(ConnState {
                closed: false,
                subs: HashSet::new(),
            }),
        }));
        Ok(id)
    }

    /// Removes a connection: unsubscribes it from every channel and drops
    /// its pending RPC requests. Returns false for an unknown or stale id.
    pub fn disconnect(&self, conn: ConnId) -> bool {
        let entry = {
            let mut conns = self.inner.conns.write();
            match conns.get(conn.slot as usize) {
                Some(c) if c.id == conn => conns.remove(conn.slot as usize),
                _ => return false,
            }
        };
        let subs = {
            let mut st = entry.state.lock();
            st.closed = true;
            std::mem::take(&mut st.subs)
        };
        for channel_id in subs {
            self.leave(conn, &channel_id, "disconnect");
        }
        self.inner.rpc.lock().drop_requester(conn);
        true
    }

    /// Connections registered now.
    pub fn connection_count(&self) -> usize {
        self.inner.conns.read().len()
    }

    /// Ids of every connection registered now.
    pub fn connection_ids(&self) -> Vec<ConnId> {
        self.inner.conns.read().iter().map(|(_, c)| c.id).collect()
    }

    pub(crate) fn conn(&self, id: ConnId) -> Option<Arc<Conn>> {
        match self.inner.conns.read().get(id.slot as usize) {
            Some(c) if c.id == id => Some(Arc::clone(c)),
            _ => None,
        }
    }

    /// Resolves a wire connection id to a live connection.
    pub fn resolve(&self, conn_id: &str) -> Result<ConnId, EngineError> {
        conn_id
            .parse::<ConnId>()
            .ok()
            .filter(|id| self.conn(*id).is_some())
            .ok_or_else(|| EngineError::ConnectionNotFound(truncated(conn_id)))
    }

    // ----- channels ------------------------------------------------------

    fn channel(&self, id: &str) -> Option<Arc<Channel>> {
        self.inner.channels.get(id)
    }

    pub(crate) fn check_id(&self, id: &str) -> Result<(), EngineError> {
        let max = self.inner.config.max_channel_id_bytes;
        if id.is_empty() || id.len() > max {
            return Err(EngineError::InvalidChannelId { len: id.len(), max });
        }
        Ok(())
    }

    /// The channel `id`, created with the default config when it is missing
    /// and auto-create is on.
    fn channel_or_create(&self, id: &str) -> Result<Arc<Channel>, EngineError> {
        // An id no channel can have is reported as such, whatever else holds.
        self.check_id(id)?;
        if let Some(ch) = self.channel(id) {
            return Ok(ch);
        }
        if !self.inner.config.auto_create {
            return Err(EngineError::ChannelNotFound(truncated(id)));
        }
        self.insert_channel(id, self.inner.config.default_channel, false)
    }

    fn insert_channel(
        &self,
        id: &str,
        config: ChannelConfig,
        must_be_new: bool,
    ) -> Result<Arc<Channel>, EngineError> {
        let max = self.inner.config.max_channels;
        let made = self.inner.channels.insert_new(id, max, || Channel {
            config,
            created_at: now_ms(),
            state: Mutex::new(ChannelState::new()),
        });
        let ch = match made {
            Ok(ch) => ch,
            Err(InsertError::Exists(_)) if must_be_new => {
                return Err(EngineError::ChannelExists(truncated(id)))
            }
            Err(InsertError::Exists(ch)) => return Ok(ch),
            Err(InsertError::Full) => return Err(EngineError::MaxChannelsReached(max)),
        };
        ev!(
            self,
            config.telemetry_enabled,
            Info,
            events::CHANNEL_CREATED,
            serde_json::json!({"channel-id": id, "config": config, "explicit": must_be_new})
        );
        Ok(ch)
    }

    /// Creates a channel with its own config (the default config when
    /// `None`). Fails with `channel-exists` when it exists.
    pub fn create_channel(
        &self,
        id: &str,
        config: Option<ChannelConfig>,
    ) -> Result<(), EngineError> {
        let config = config.unwrap_or(self.inner.config.default_channel);
        self.check_id(id)
            .and_then(|()| self.insert_channel(id, config, true).map(|_| ()))
            .inspect_err(|e| self.reject(e))
    }

    /// Deletes a channel, unsubscribing everyone; returns how many were
    /// subscribed. Its retained messages are gone with it.
    pub fn delete_channel(&self, id: &str) -> Result<usize, EngineError> {
        let ch = self
            .inner
            .channels
            .remove(id)
            .ok_or_else(|| EngineError::ChannelNotFound(truncated(id)))?;
        let subs = {
            let mut st = ch.state.lock();
            st.deleted = true;
            st.index.clear();
            // Its running totals outlive it.
            let c = &self.inner.counters;
            c.published.fetch_add(st.message_count, Relaxed);
            c.deliveries.fetch_add(st.deliveries, Relaxed);
            c.deliveries_full.fetch_add(st.deliveries_full, Relaxed);
            std::mem::take(&mut st.subs)
        };
        self.inner
            .total_subscriptions
            .fetch_sub(subs.len(), Relaxed);
        for s in &subs {
            if let Some(conn) = self.conn(s.conn) {
                conn.state.lock().subs.remove(id);
            }
        }
        ev!(
            self,
            ch.config.telemetry_enabled,
            Info,
            events::CHANNEL_DELETED,
            serde_json::json!({"channel-id": id, "unsubscribed": subs.len()})
        );
        Ok(subs.len())
    }

    /// Everything about one channel.
    pub fn channel_info(&self, id: &str) -> Result<ChannelInfo, EngineError> {
        let ch = self
            .channel(id)
            .ok_or_else(|| EngineError::ChannelNotFound(truncated(id)))?;
        let st = ch.state.lock();
        Ok(ChannelInfo {
            subscribers: st.subs.iter().map(|s| s.conn.to_string()).collect(),
            config: ch.config,
            created_at: ch.created_at,
            message_count: st.message_count,
            retained_messages: st.retained.iter().cloned().collect(),
        })
    }

    /// Every channel with its config and counts, by id.
    pub fn list_channels(&self) -> BTreeMap<String, ChannelSummary> {
        self.inner
            .channels
            .entries()
            .into_iter()
            .map(|(id, ch)| {
                let st = ch.state.lock();
                let summary = ChannelSummary {
                    config: ch.config,
                    created_at: ch.created_at,
                    message_count: st.message_count,
                    subscriber_count: st.subs.len(),
                };
                (id.to_string(), summary)
            })
            .collect()
    }

    /// Number of channels now.
    pub fn channel_count(&self) -> usize {
        self.inner.channels.len()
    }

    // ----- subscriptions -------------------------------------------------

    /// Subscribes `conn` to `channel_id` (created when missing and
    /// auto-create is on). Subscribing twice is not an error: the second
    /// answer has `already_subscribed` set and no retained messages.
    pub fn subscribe(&self, conn: ConnId, channel_id: &str) -> Result<Subscribed, EngineError> {
        self.subscribe_with_reply(conn, channel_id, None)
    }

    /// Like [`subscribe`](Self::subscribe), and on success offers the frame
    /// `reply` builds to the subscriber's own sink while the channel is still
    /// locked: the `subscription-result` then reaches the client before any
    /// message published after it joined.
    pub fn subscribe_with_reply(
        &self,
        conn: ConnId,
        channel_id: &str,
        reply: Option<&dyn Fn(&Subscribed) -> Frame>,
    ) -> Result<Subscribed, EngineError> {
        let result = self.subscribe_inner(conn, channel_id, reply);
        match &result {
            Ok(s) if !s.already_subscribed => {
                ev!(
                    self,
                    true,
                    Debug,
                    events::SUBSCRIPTION_ADDED,
                    serde_json::json!({
                    "channel-id": channel_id, "conn-id": conn.to_string(),
                    "subscriber-count": s.subscriber_count})
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.reject(e);
                ev!(
                    self,
                    true,
                    Warn,
                    events::SUBSCRIPTION_REJECTED,
                    serde_json::json!({
                    "channel-id": channel_id, "conn-id": conn.to_string(), "reason": e.reason()})
                );
            }
        }
        result
    }

    fn subscribe_inner(
        &self,
        conn: ConnId,
        channel_id: &str,
        reply: Option<&dyn Fn(&Subscribed) -> Frame>,
    ) -> Result<Subscribed, EngineError> {
        let entry = self
            .conn(conn)
            .ok_or_else(|| EngineError::ConnectionNotFound(conn.to_string()))?;
        let mut cst = entry.state.lock();
        if cst.closed {
            return Err(EngineError::ConnectionNotFound(conn.to_string()));
        }
        // A channel deleted between lookup and lock is looked up once more.
        for _ in 0..2 {
            let ch = self.channel_or_create(channel_id)?;
            let mut st = ch.state.lock();
            if st.deleted {
                continue;
            }
            if st.index.contains_key(&conn) {
                let done = Subscribed {
                    subscriber_count: st.subs.len(),
                    retained_messages: Vec::new(),
                    already_subscribed: true,
                };
                if let Some(reply) = reply {
                    entry.sink.offer(&reply(&done));
                }
                return Ok(done);
            }
            let max = ch.config.max_subscribers;
            if st.subs.len() >= max {
                return Err(EngineError::MaxSubscribersReached {
                    channel: truncated(channel_id),
                    max,
                });
            }
            let at = st.subs.len();
            st.subs.push(Subscriber {
                conn,
                sink: Arc::clone(&entry.sink),
            });
            st.index.insert(conn, at);
            cst.subs.insert(Arc::from(channel_id));
            self.inner.total_subscriptions.fetch_add(1, Relaxed);
            let done = Subscribed {
                subscriber_count: st.subs.len(),
                retained_messages: st.retained.iter().cloned().collect(),
                already_subscribed: false,
            };
            if let Some(reply) = reply {
                entry.sink.offer(&reply(&done));
            }
            return Ok(done);
        }
        Err(EngineError::ChannelNotFound(truncated(channel_id)))
    }

    /// Unsubscribes `conn` from `channel_id`; `not-subscribed` when it was
    /// not.
    pub fn unsubscribe(&self, conn: ConnId, channel_id: &str) -> Result<(), EngineError> {
        self.unsubscribe_inner(conn, channel_id)
            .inspect_err(|e| self.reject(e))
    }

    fn unsubscribe_inner(&self, conn: ConnId, channel_id: &str) -> Result<(), EngineError> {
        let entry = self
            .conn(conn)
            .ok_or_else(|| EngineError::ConnectionNotFound(conn.to_string()))?;
        let mut cst = entry.state.lock();
        if !cst.subs.remove(channel_id) {
            return Err(EngineError::NotSubscribed(truncated(channel_id)));
        }
        self.leave(conn, channel_id, "unsubscribe");
        Ok(())
    }

    /// Takes `conn` out of the channel's subscriber list (the caller has
    /// already taken the channel out of the connection's set). True if it
    /// was there.
    fn leave(&self, conn: ConnId, channel_id: &str, cause: &'static str) -> bool {
        let Some(ch) = self.channel(channel_id) else {
            return false;
        };
        if !ch.state.lock().remove(conn) {
            return false;
        }
        self.inner.total_subscriptions.fetch_sub(1, Relaxed);
        ev!(
            self,
            ch.config.telemetry_enabled,
            Debug,
            events::SUBSCRIPTION_REMOVED,
            serde_json::json!({"channel-id": channel_id, "conn-id": conn.to_string(), "cause": cause})
        );
        true
    }

    /// Unsubscribes `conn` from every channel; returns how many.
    pub fn unsubscribe_all(&self, conn: ConnId) -> usize {
        let Some(entry) = self.conn(conn) else {
            return 0;
        };
        // Held throughout, so a concurrent subscribe waits (lock order:
        // connection state, then channel).
        let mut cst = entry.state.lock();
        std::mem::take(&mut cst.subs)
            .iter()
            .filter(|channel_id| self.leave(conn, channel_id, "unsubscribe"))
            .count()
    }

    /// The channels `conn` is subscribed to, sorted.
    pub fn subscriptions(&self, conn: ConnId) -> Result<Vec<String>, EngineError> {
        let entry = self
            .conn(conn)
            .ok_or_else(|| EngineError::ConnectionNotFound(conn.to_string()))?;
        let mut subs: Vec<String> = entry
            .state
            .lock()
            .subs
            .iter()
            .map(|s| s.to_string())
            .collect();
        subs.sort_unstable();
        Ok(subs)
    }

    // ----- publishing ----------------------------------------------------

    /// Publishes `data` to `channel_id` (created when missing and
    /// auto-create is on). `sender` is `None` for a server-side publish.
    ///
    /// The `channel-message` frame is serialized once and shared by every
    /// subscriber. Fan-out happens under the channel's lock, so each
    /// subscriber sees the channel's messages in one order, and a
    /// concurrent subscribe sees each message either retained or live,
    /// never both and never neither.
    pub fn publish(
        &self,
        sender: Option<ConnId>,
        channel_id: &str,
        data: Value,
        exclude_sender: bool,
    ) -> Result<Published, EngineError> {
        let result = self.publish_inner(sender, channel_id, data, exclude_sender);
        if let Err(e) = &result {
            self.reject(e);
            ev!(
                self,
                true,
                Warn,
                events::MESSAGE_PUBLISH_FAILED,
                serde_json::json!({
                "channel-id": channel_id, "sender-conn-id": sender.map(|s| s.to_string()),
                "reason": e.reason()})
            );
        }
        result
    }

    fn publish_inner(
        &self,
        sender: Option<ConnId>,
        channel_id: &str,
        data: Value,
        exclude_sender: bool,
    ) -> Result<Published, EngineError> {
        let ch = self.channel_or_create(channel_id)?;
        let tel = ch.config.telemetry_enabled;
        let n = self.next_message_number();
        let message = ChannelMessage {
            channel_id: channel_id.to_owned(),
            message_id: format!("msg-{n}"),
            data,
            sender_conn_id: sender.map(|s| s.to_string()),
            published_at: now_ms(),
        };
        let frame = Frame::new(crate::frames::typed("channel-message", &message));
        let exclude = if exclude_sender { sender } else { None };
        let (delivered, full) = {
            let mut st = ch.state.lock();
            if st.deleted {
                return Err(EngineError::ChannelNotFound(truncated(channel_id)));
            }
            ev!(
                self,
                tel,
                Trace,
                events::CHANNEL_BROADCAST_START,
                serde_json::json!({"channel-id": channel_id, "subscribers": st.subs.len()})
            );
            let out = st.fan_out(&frame, exclude);
            st.message_count += 1;
            st.deliveries += out.0 as u64;
            st.deliveries_full += out.1 as u64;
            let keep = ch.config.message_retention;
            if keep > 0 {
                if st.retained.len() >= keep {
                    st.retained.pop_front();
                }
                st.retained.push_back(message.clone());
            }
            out
        };
        ev!(
            self,
            tel,
            Trace,
            events::CHANNEL_BROADCAST_COMPLETE,
            serde_json::json!({
            "channel-id": channel_id, "delivered-to": delivered, "full": full})
        );
        ev!(
            self,
            tel,
            Debug,
            events::MESSAGE_PUBLISHED,
            serde_json::json!({
            "channel-id": channel_id, "message-id": &message.message_id,
            "sender-conn-id": &message.sender_conn_id, "delivered-to": delivered, "full": full})
        );
        Ok(Published {
            message_id: message.message_id,
            delivered_to: delivered,
            full,
        })
    }

    // ----- server-side sends ---------------------------------------------

    /// Sends `message` with `"broadcast": true` added to every connection;
    /// returns how many accepted it.
    pub fn broadcast(&self, message: Map<String, Value>) -> usize {
        let frame = Frame::new(Value::Object(broadcast_frame(message)).to_string());
        let conns = self.inner.conns.read();
        let targeted = conns.len();
        let delivered = conns
            .iter()
            .filter(|(_, c)| c.sink.offer(&frame) == Offer::Queued)
            .count();
        drop(conns);
        if delivered < targeted {
            ev!(
                self,
                true,
                Warn,
                events::BROADCAST_FAILED,
                serde_json::json!({
                "targeted": targeted, "delivered-to": delivered})
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
    pub fn broadcast_to_channel(
        &self,
        channel_id: &str,
        message: Map<String, Value>,
    ) -> Result<usize, EngineError> {
        let Some(ch) = self.channel(channel_id) else {
            ev!(
                self,
                true,
                Warn,
                events::BROADCAST_FAILED,
                serde_json::json!({
                "channel-id": channel_id, "reason": "channel-not-found"})
            );
            return Err(EngineError::ChannelNotFound(truncated(channel_id)));
        };
        let frame = Frame::new(
            Value::Object(channel_broadcast_frame(message, channel_id, now_ms())).to_string(),
        );
        let tel = ch.config.telemetry_enabled;
        ev!(
            self,
            tel,
            Trace,
            events::CHANNEL_BROADCAST_START,
            serde_json::json!({"channel-id": channel_id, "server-broadcast": true})
        );
        let (delivered, full) = ch.state.lock().fan_out(&frame, None);
        ev!(
            self,
            tel,
            Trace,
            events::CHANNEL_BROADCAST_COMPLETE,
            serde_json::json!({
            "channel-id": channel_id, "delivered-to": delivered, "full": full, "server-broadcast": true})
        );
        if full > 0 {
            ev!(
                self,
                tel,
                Warn,
                events::BROADCAST_FAILED,
                serde_json::json!({
                "channel-id": channel_id, "delivered-to": delivered, "full": full})
            );
        }
        let c = &self.inner.counters;
        c.deliveries.fetch_add(delivered as u64, Relaxed);
        c.deliveries_full.fetch_add(full as u64, Relaxed);
        Ok(delivered)
    }

    /// Sends a frame unchanged to one connection.
    pub fn send_to_connection(&self, conn: ConnId, frame: &Frame) -> Result<Offer, EngineError> {
        let entry = self
            .conn(conn)
            .ok_or_else(|| EngineError::ConnectionNotFound(conn.to_string()))?;
        let offer = entry.sink.offer(frame);
        if offer == Offer::Queued {
            self.inner.counters.deliveries.fetch_add(1, Relaxed);
        }
        Ok(offer)
    }

    /// Sends a JSON value unchanged to one connection.
    pub fn send_json(&self, conn: ConnId, message: &Value) -> Result<Offer, EngineError> {
        self.send_to_connection(conn, &Frame::new(message.to_string()))
    }

    pub(crate) fn channel_config(&self, id: &str) -> Option<ChannelConfig> {
        self.channel(id).map(|ch| ch.config)
    }

    /// Offers `frame` to the channel's subscribers but `exclude`; returns the
    /// ids of those that accepted it.
    pub(crate) fn offer_to_channel(&self, id: &str, frame: &Frame, exclude: ConnId) -> Vec<String> {
        let Some(ch) = self.channel(id) else {
            return Vec::new();
        };
        let st = ch.state.lock();
        st.subs
            .iter()
            .filter(|s| s.conn != exclude && s.sink.offer(frame) == Offer::Queued)
            .map(|s| s.conn.to_string())
            .collect()
    }

    // ----- statistics ----------------------------------------------------

    /// Counts a refused operation under its reason.
    pub(crate) fn reject(&self, e: &EngineError) {
        let reason = e.reason();
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
        self.inner.total_subscriptions.load(Relaxed)
    }

    /// The engine's running totals.
    pub fn counters(&self) -> EngineCounters {
        let c = &self.inner.counters;
        let (mut published, mut deliveries, mut full) = (
            c.published.load(Relaxed),
            c.deliveries.load(Relaxed),
            c.deliveries_full.load(Relaxed),
        );
        for (_, ch) in self.inner.channels.entries() {
            let st = ch.state.lock();
            published += st.message_count;
            deliveries += st.deliveries;
            full += st.deliveries_full;
        }
        EngineCounters {
            published,
            deliveries,
            deliveries_full: full,
            rpc_requests: c.rpc_requests.load(Relaxed),
            rpc_responses: c.rpc_responses.load(Relaxed),
            rpc_expired: c.rpc_expired.load(Relaxed),
        }
    }

    /// Statistics per channel and in total (`channel-stats` of `/stats`).
    pub fn channel_stats(&self) -> ChannelStats {
        let channels = self
            .list_channels()
            .into_iter()
            .map(|(id, s)| {
                let entry = ChannelStatsEntry {
                    subscriber_count: s.subscriber_count,
                    message_count: s.message_count,
                    created_at: s.created_at,
                    retention_count: s.config.message_retention,
                };
                (id, entry)
            })
            .collect::<BTreeMap<_, _>>();
        ChannelStats {
            total_channels: channels.len(),
            channels,
            total_subscriptions: self.total_subscriptions(),
            pending_rpc_requests: self.pending_rpc_requests(),
            active_connections: Some(self.connection_count()),
            rejected: self.rejections(),
        }
    }

    /// The engine's health: unhealthy when RPC requests linger more than a
    /// second past their deadline (the timer is not keeping up).
    pub fn system_health(&self) -> SystemHealth {
        let (pending, old) = {
            let rpc = self.inner.rpc.lock();
            (rpc.len(), rpc.overdue(std::time::Duration::from_secs(1)))
        };
        SystemHealth {
            healthy: old == 0,
            total_channels: self.channel_count(),
            total_subscriptions: self.total_subscriptions(),
            pending_rpc_requests: pending,
            old_rpc_requests: old,
        }
    }
}

/// Engines ever created; tells their id blocks apart in a thread.
static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

/// Message numbers are taken from the engine's counter a block at a time per
/// thread, so parallel publishers do not share one atomic.
const ID_BLOCK: u64 = 1024;

thread_local! {
    /// (engine uid, next number, end of block)
    static ID_BLOCK_OF_THREAD: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
}

impl Engine {
    /// A message number unique within this engine (not ordered across
    /// threads).
    fn next_message_number(&self) -> u64 {
        let uid = self.inner.uid;
        ID_BLOCK_OF_THREAD.with(|b| {
            let (owner, next, end) = b.get();
            if owner == uid && next < end {
                b.set((owner, next + 1, end));
                return next;
            }
            let start = self.inner.next_message_block.fetch_add(ID_BLOCK, Relaxed) + 1;
            b.set((uid, start + 1, start + ID_BLOCK));
            start
        })
    }
}

/// A client-supplied string cut to a length fit for an error message.
pub(crate) fn truncated(s: &str) -> String {
    s.chars().take(128).collect()
}
