//! [`RedisBroker`]: the [`Broker`] of a node that is one of several on one
//! Redis.

use crate::config::{valid_node_id, RedisConfig};
use crate::scripts::Scripts;
use crate::RedisBrokerError;
use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, Value};
use sente_lite_channels::events::{self as ev_ids};
use sente_lite_channels::history::{self, History};
use sente_lite_channels::{
    channel_message_head, namespace_of, Broker, BrokerHealth, BrokerTotals, ChannelMeta, ConnAddr,
    ConnId, Create, EngineConfig, EngineError, Frame, Hub, JoinFn, JoinView, NodeHandle, Offer,
    Publication, Published, Reply, Sent, StreamPosition,
};
use sente_lite_protocol::{
    now_ms, redact_credentials, ChannelConfig, ChannelMessage, ClientInfo, Position,
};
use std::collections::BTreeMap;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;
use telemere_lite::{Level, Telemetry};
use tokio::sync::{oneshot, Notify};

/// The broker of a node on Redis: channels, streams and counts live in
/// Redis; each message is ordered there by one atomic script and reaches
/// every node with subscribers through Redis pub/sub.
///
/// Create it inside a tokio runtime; it connects (and reconnects, with
/// backoff) in a task of its own, so a node starts while Redis is down and
/// answers `broker-unavailable` until it is up. The task ends when the
/// broker is dropped.
pub struct RedisBroker {
    shared: Arc<Shared>,
}

/// Connection states, as [`BrokerHealth::state`] spells them.
const CONNECTING: u8 = 0;
const CONNECTED: u8 = 1;
const RECONNECTING: u8 = 2;

struct Shared {
    cfg: RedisConfig,
    engine: EngineConfig,
    telemetry: Telemetry,
    node: Arc<str>,
    client: Client,
    scripts: Scripts,
    keys: Keys,
    /// The command connection while connected.
    conn: RwLock<Option<MultiplexedConnection>>,
    /// The pub/sub connection's command side while connected.
    pubsub: RwLock<Option<PubSubSink>>,
    /// Serializes SUBSCRIBE/UNSUBSCRIBE so each decides on the channel's
    /// wanted state at the moment it is sent.
    sub_order: tokio::sync::Mutex<()>,
    node_handle: RwLock<Option<Weak<dyn NodeHandle>>>,
    /// The channels this node wants delivered (it has or is getting local
    /// subscribers), each with its delivery state.
    chans: Mutex<HashMap<Arc<str>, Arc<Chan>>>,
    /// Joins waiting for their marker, requests waiting for their ack.
    waits: Mutex<HashMap<u64, Wait>>,
    next_token: AtomicU64,
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    cache: Mutex<Cached>,
    next_message: AtomicU64,
    published: AtomicU64,
    deliveries: AtomicU64,
    deliveries_full: AtomicU64,
    /// Connections made after a lost one.
    reconnects: AtomicU64,
    /// Connection attempts that failed.
    connect_failures: AtomicU64,
    /// Subscribers closed with `broker-reconnect`.
    subscribers_reconnected: AtomicU64,
    /// Messages delivered from a stream to fill a gap after a reconnect.
    gap_messages_filled: AtomicU64,
    /// Idle auto-created channels this node's sweeps deleted.
    idle_removed: AtomicU64,
    stop: Notify,
    /// Itself, for the tasks it spawns.
    me: std::sync::OnceLock<Weak<Shared>>,
    /// `engine.default_channel` as the scripts store it.
    default_config_json: String,
    /// Each of `engine.namespaces`' channel defaults, likewise (same order).
    namespace_config_json: Vec<String>,
}

#[derive(Default)]
struct Cached {
    channels: usize,
    subscriptions: usize,
    remote_connections: usize,
    nodes: Vec<String>,
}

struct Keys {
    prefix: String,
    channels: String,
    nodes: String,
    conns: String,
    all: String,
    mine: String,
}

impl Keys {
    fn meta(&self, c: &str) -> String {
        format!("{}:ch:{c}", self.prefix)
    }
    fn stream(&self, c: &str) -> String {
        format!("{}:st:{c}", self.prefix)
    }
    fn subs(&self, c: &str) -> String {
        format!("{}:subs:{c}", self.prefix)
    }
    fn messages(&self, c: &str) -> String {
        format!("{}:m:{c}", self.prefix)
    }
    fn node(&self, n: &str) -> String {
        format!("{}:n:{n}", self.prefix)
    }
    /// Channel `c`'s presence on node `n`.
    fn presence(&self, c: &str, n: &str) -> String {
        format!("{}:pres:{c}:{n}", self.prefix)
    }
    /// The nodes with a presence hash of channel `c`.
    fn presence_nodes(&self, c: &str) -> String {
        format!("{}:presn:{c}", self.prefix)
    }
    /// The channels node `n` has a presence hash of.
    fn presence_channels(&self, n: &str) -> String {
        format!("{}:presc:{n}", self.prefix)
    }
}

/// A channel this node receives: what it has delivered, in which epoch.
struct Chan {
    st: Mutex<ChanState>,
    /// Woken after each delivery (a publisher subscribed to its own
    /// channel waits for its message before its result).
    delivered: Notify,
}

impl Chan {
    fn new() -> Chan {
        Chan {
            st: Mutex::new(ChanState::default()),
            delivered: Notify::new(),
        }
    }
}

#[derive(Default)]
struct ChanState {
    /// The epoch and last offset delivered to this node's subscribers;
    /// `None` until a join sets it (no subscriber depends on it before).
    position: Option<(Arc<str>, u64)>,
    /// Joins and recoveries in progress: deliveries wait in `queue`.
    paused: u32,
    /// Being recovered after a reconnect: joins wait for the end of it.
    recovering: bool,
    queue: VecDeque<Item>,
    /// More arrived while paused than the queue holds.
    overflowed: bool,
}

/// One delivery from a channel's pub/sub channel.
enum Item {
    Message {
        offset: u64,
        epoch: Arc<str>,
        exclude: Option<ConnId>,
        frame: Frame,
    },
    Frame {
        exclude: Option<ConnId>,
        frame: Frame,
        /// An `rpc-request`: its id and timeout, so that the hub remembers
        /// who was sent it (only they may answer).
        rpc: Option<(Box<str>, Duration)>,
    },
    Deleted {
        epoch: Arc<str>,
    },
    /// A join's marker that came while the channel waited for another
    /// join (or a recovery): its turn comes when what is before it is
    /// delivered, so each joiner is added exactly at its view's position.
    Join(oneshot::Sender<bool>),
}

enum Wait {
    /// A join's marker: pause the joiner's channel state (if it is still
    /// the node's) and wake the joiner, telling it whether it paused.
    Marker {
        channel: Arc<str>,
        chan: Arc<Chan>,
        tx: oneshot::Sender<bool>,
    },
    /// A request to another node: its answer.
    Ack(oneshot::Sender<String>),
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node", &self.shared.node)
            .field("state", &self.shared.state_name())
            .finish()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.shared.stop.notify_one();
    }
}

fn unavailable(why: impl fmt::Display) -> EngineError {
    EngineError::BrokerUnavailable(why.to_string())
}

impl RedisBroker {
    /// A broker for a node configured by `engine` (auto-create,
    /// `max-channels`, the default channel config) on the Redis of
    /// `config`. Fails only on a bad URL or node id; connecting happens in
    /// the background.
    pub fn new(
        engine: EngineConfig,
        config: RedisConfig,
        telemetry: Telemetry,
    ) -> Result<RedisBroker, RedisBrokerError> {
        if !valid_node_id(&config.node_id) {
            return Err(RedisBrokerError::NodeId(config.node_id));
        }
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| RedisBrokerError::NoRuntime)?;
        let client = Client::open(config.url.as_str()).map_err(|e| {
            RedisBrokerError::Url(redact_credentials(&config.url).into_owned(), e.to_string())
        })?;
        let prefix = config.key_prefix.clone();
        let keys = Keys {
            channels: format!("{prefix}:channels"),
            nodes: format!("{prefix}:nodes"),
            conns: format!("{prefix}:conns"),
            all: format!("{prefix}:all"),
            mine: format!("{prefix}:n:{}", config.node_id),
            prefix,
        };
        let json = |c: &ChannelConfig| serde_json::to_string(c).unwrap_or_else(|_| "{}".to_owned());
        let default_config_json = json(&engine.default_channel);
        let namespace_config_json = engine.namespaces.iter().map(|n| json(&n.channel)).collect();
        let shared = Arc::new(Shared {
            default_config_json,
            namespace_config_json,
            node: Arc::from(config.node_id.as_str()),
            cfg: config,
            engine,
            telemetry,
            client,
            scripts: Scripts::new(),
            keys,
            conn: RwLock::new(None),
            pubsub: RwLock::new(None),
            sub_order: tokio::sync::Mutex::new(()),
            node_handle: RwLock::new(None),
            chans: Mutex::new(HashMap::new()),
            waits: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            state: AtomicU8::new(CONNECTING),
            last_error: Mutex::new(Some("not connected yet".to_owned())),
            cache: Mutex::new(Cached::default()),
            next_message: AtomicU64::new(0),
            published: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            deliveries_full: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            subscribers_reconnected: AtomicU64::new(0),
            gap_messages_filled: AtomicU64::new(0),
            idle_removed: AtomicU64::new(0),
            stop: Notify::new(),
            me: std::sync::OnceLock::new(),
        });
        let _ = shared.me.set(Arc::downgrade(&shared));
        handle.spawn(supervise(Arc::downgrade(&shared)));
        Ok(RedisBroker { shared })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.node
    }

    /// Whether the broker is connected to Redis now.
    pub fn is_connected(&self) -> bool {
        self.shared.state.load(Relaxed) == CONNECTED
    }
}

// ----- connection lifecycle ---------------------------------------------

/// Connects, serves and reconnects until the broker is dropped.
async fn supervise(weak: Weak<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(sh) = weak.upgrade() else { return };
        let connected = tokio::select! {
            r = sh.connect() => r,
            () = sh.stop.notified() => return,
        };
        match connected {
            Ok(stream) => {
                backoff = Duration::from_millis(100);
                let why = sh.serve(stream).await;
                let Some(why) = why else { return };
                sh.lost(why);
            }
            Err(e) => {
                sh.connect_failures.fetch_add(1, Relaxed);
                sh.fail(e);
                drop(sh);
                let Some(sh) = weak.upgrade() else { return };
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = sh.stop.notified() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

impl Shared {
    fn state_name(&self) -> &'static str {
        match self.state.load(Relaxed) {
            CONNECTED => "connected",
            RECONNECTING => "reconnecting",
            _ => "connecting",
        }
    }

    fn hub_handle(&self) -> Option<Arc<dyn NodeHandle>> {
        self.node_handle.read().as_ref().and_then(Weak::upgrade)
    }

    fn fail(&self, why: String) {
        *self.last_error.lock() = Some(why);
    }

    /// Connects both connections, registers the node, resubscribes and
    /// starts recovering every channel it delivers.
    async fn connect(self: &Arc<Self>) -> Result<PubSubStream, String> {
        let t = self.cfg.command_timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t));
        let conn = within(
            t,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|e| format!("connect to {}: {e}", redact_credentials(&self.cfg.url)))?;
        let pubsub = within(t, self.client.get_async_pubsub())
            .await
            .map_err(|e| format!("connect to {}: {e}", redact_credentials(&self.cfg.url)))?;
        let (mut sink, stream) = pubsub.split();
        *self.conn.write() = Some(conn);
        // Every channel delivered so far waits for its recovery: nothing
        // reaches its subscribers until the gap is filled.
        let chans: Vec<(Arc<str>, Arc<Chan>)> = self
            .chans
            .lock()
            .iter()
            .map(|(k, v)| (Arc::clone(k), Arc::clone(v)))
            .collect();
        for (_, c) in &chans {
            let mut st = c.st.lock();
            st.paused += 1;
            st.recovering = true;
        }
        let registered = async {
            // Loaded up front, so no call after a (re)connect pays for a
            // NOSCRIPT round trip (and calls sent in order run in order).
            for script in self.scripts.all() {
                let mut c = self.command().map_err(|e| e.to_string())?;
                within(t, script.prepare_invoke().load_async(&mut c))
                    .await
                    .map_err(|e| format!("load scripts: {e}"))?;
            }
            self.heartbeat().await?;
            self.resync().await?;
            let _order = self.sub_order.lock().await;
            let mut names = vec![self.keys.mine.clone(), self.keys.all.clone()];
            names.extend(chans.iter().map(|(id, _)| self.keys.messages(id)));
            within(t, sink.subscribe(names))
                .await
                .map_err(|e| format!("subscribe: {e}"))?;
            *self.pubsub.write() = Some(sink);
            Ok::<(), String>(())
        }
        .await;
        if let Err(e) = registered {
            *self.conn.write() = None;
            for (_, c) in &chans {
                let mut st = c.st.lock();
                st.paused -= 1;
                st.recovering = false;
            }
            return Err(e);
        }
        let was = self.state.swap(CONNECTED, Relaxed);
        if was == RECONNECTING {
            self.reconnects.fetch_add(1, Relaxed);
        }
        *self.last_error.lock() = None;
        self.event(
            Level::Info,
            "sente-lite.redis/connected",
            serde_json::json!({"url": redact_credentials(&self.cfg.url), "node-id": &*self.node, "reconnect": was == RECONNECTING}),
        );
        for (id, c) in chans {
            let sh = Arc::clone(self);
            tokio::spawn(async move { sh.recover(&id, &c).await });
        }
        Ok(stream)
    }

    /// Reads the pub/sub connection and keeps the node alive until the
    /// connection is lost (`Some(why)`) or the broker is dropped (`None`).
    async fn serve(&self, mut stream: PubSubStream) -> Option<String> {
        // The heartbeat runs on its own task: the reader never waits on a
        // Redis call, only on the pub/sub connection.
        let (failed_tx, mut failed) = oneshot::channel::<String>();
        let beat = self.me.get().cloned().map(|me| {
            let every = (self.cfg.node_ttl / 3).max(Duration::from_millis(50));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(sh) = me.upgrade() else { return };
                    if let Err(e) = sh.heartbeat().await {
                        let _ = failed_tx.send(e);
                        return;
                    }
                }
            })
        });
        let why = loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => self.on_message(msg.get_channel_name(), msg.get_payload_bytes()),
                    None => break Some("the pub/sub connection closed".to_owned()),
                },
                e = &mut failed => break Some(e.unwrap_or_else(|_| "heartbeat ended".to_owned())),
                () = self.stop.notified() => break None,
            }
        };
        if let Some(beat) = beat {
            beat.abort();
        }
        why
    }

    /// The connection is gone: everything waiting fails now, and the node
    /// answers `broker-unavailable` until it is back.
    fn lost(&self, why: String) {
        self.state.store(RECONNECTING, Relaxed);
        *self.conn.write() = None;
        *self.pubsub.write() = None;
        // Dropping the senders fails every waiting join and request.
        self.waits.lock().clear();
        self.event(
            Level::Warn,
            "sente-lite.redis/disconnected",
            serde_json::json!({"url": redact_credentials(&self.cfg.url), "node-id": &*self.node, "error": &why}),
        );
        self.fail(why);
    }

    fn event(&self, level: Level, id: &'static str, data: serde_json::Value) {
        telemere_lite::event!(tel: &self.telemetry, level: level, id, data);
    }

    /// The deadline of an operation that starts now.
    fn op_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.cfg.command_timeout
    }

    fn command(&self) -> Result<MultiplexedConnection, EngineError> {
        match &*self.conn.read() {
            Some(c) => Ok(c.clone()),
            None => Err(unavailable(
                self.last_error
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "not connected".to_owned()),
            )),
        }
    }

    /// Runs a script invocation that must be answered by `deadline`.
    async fn run_until(
        &self,
        inv: &redis::ScriptInvocation<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<Value, EngineError> {
        let mut conn = self.command()?;
        match tokio::time::timeout_at(deadline, inv.invoke_async::<Value>(&mut conn)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(unavailable("no answer from Redis within the timeout")),
        }
    }

    /// `deadline` as ms since the Unix epoch on this node's clock, for the
    /// scripts that must not run after it.
    fn deadline_ms(&self, deadline: tokio::time::Instant) -> i64 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        now_ms().saturating_add(i64::try_from(left.as_millis()).unwrap_or(i64::MAX))
    }

    /// Runs a script invocation within the command timeout.
    async fn run(&self, inv: &redis::ScriptInvocation<'_>) -> Result<Value, EngineError> {
        self.run_until(inv, self.op_deadline()).await
    }

    async fn publish_raw(&self, channel: &str, payload: Vec<u8>) -> Result<i64, EngineError> {
        let mut conn = self.command()?;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        within(self.cfg.command_timeout, cmd.query_async::<i64>(&mut conn))
            .await
            .map_err(unavailable)
    }

    async fn heartbeat(&self) -> Result<(), String> {
        let conns = self.hub_handle().map_or(0, |h| h.hub().connection_count());
        let ttl = u64::try_from(self.cfg.node_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.key(&self.keys.nodes)
            .key(&self.keys.channels)
            .key(&self.keys.conns)
            .arg(&*self.node)
            .arg(ttl)
            .arg(conns)
            .arg(&self.keys.prefix);
        let v = self.run(&inv).await.map_err(|e| e.to_string())?;
        let items = array(v);
        {
            let mut c = self.cache.lock();
            c.channels = int_at(&items, 1) as usize;
            c.subscriptions = int_at(&items, 2) as usize;
            c.remote_connections = int_at(&items, 3) as usize;
            c.nodes = items.iter().skip(4).filter_map(string).collect();
            c.nodes.sort();
        }
        if int_at(&items, 0) == 1 && self.state.load(Relaxed) == CONNECTED {
            // Counted as dead while still connected (a stall longer than
            // node-ttl): its counts may have been dropped.
            self.resync().await?;
        }
        Ok(())
    }

    /// Writes this node's counts as they are (after a restart of the node
    /// or of Redis, nothing else of it is true).
    async fn resync(&self) -> Result<(), String> {
        let ids: Vec<Arc<str>> = self.chans.lock().keys().cloned().collect();
        let hub = self.hub_handle();
        let mut inv = self.scripts.resync.prepare_invoke();
        inv.key(&self.keys.channels)
            .arg(&self.keys.prefix)
            .arg(&*self.node);
        for id in &ids {
            let n = hub.as_ref().map_or(0, |h| h.hub().local_count(id));
            if n > 0 {
                inv.arg(&**id).arg(n);
            }
        }
        self.run(&inv).await.map_err(|e| e.to_string())?;
        // And its presence entries.
        let mut inv = self.scripts.pres_resync.prepare_invoke();
        inv.key(self.keys.presence_channels(&self.node))
            .arg(&self.keys.prefix)
            .arg(&*self.node);
        if let Some(h) = &hub {
            for channel in h.hub().presence_channels() {
                for (conn, client) in h.hub().presence(&channel).unwrap_or_default() {
                    let addr = ConnAddr::new(Some(Arc::clone(&self.node)), conn);
                    inv.arg(&*channel)
                        .arg(addr.to_string())
                        .arg(client_json(&client));
                }
            }
        }
        self.run(&inv).await.map(|_| ()).map_err(|e| e.to_string())
    }

    // ----- delivery -------------------------------------------------------

    fn local(&self, addr: &str) -> Option<ConnId> {
        let a: ConnAddr = addr.parse().ok()?;
        (a.node.as_deref() == Some(&*self.node)).then_some(a.conn)
    }

    fn on_message(&self, channel: &str, payload: &[u8]) {
        if channel == self.keys.mine {
            self.on_node_message(payload);
        } else if channel == self.keys.all {
            if let Some((origin, frame)) = split_frame(payload.get(1..).unwrap_or_default()) {
                if origin != self.node.as_bytes() {
                    if let Some(h) = self.hub_handle() {
                        let (delivered, _) = h.hub().send_all(&frame);
                        self.deliveries.fetch_add(delivered as u64, Relaxed);
                    }
                }
            }
        } else if let Some(id) = channel
            .strip_prefix(&self.keys.prefix)
            .and_then(|r| r.strip_prefix(":m:"))
        {
            let Some(item) = self.parse_item(payload) else {
                return;
            };
            let Some(chan) = self.chans.lock().get(id).cloned() else {
                return;
            };
            let Some(h) = self.hub_handle() else { return };
            let mut st = chan.st.lock();
            if st.paused > 0 {
                if st.queue.len() >= self.cfg.stream_size.max(1) {
                    st.overflowed = true;
                } else {
                    st.queue.push_back(item);
                }
                return;
            }
            self.deliver(id, &mut st, item, h.hub());
            drop(st);
            chan.delivered.notify_waiters();
        }
    }

    /// Waits (at most the command timeout) until this node has delivered
    /// the channel's message at `offset` of `epoch`.
    async fn delivered(
        &self,
        channel: &str,
        epoch: &str,
        offset: u64,
        deadline: tokio::time::Instant,
    ) {
        let Some(chan) = self.chans.lock().get(channel).cloned() else {
            return;
        };
        loop {
            let woken = chan.delivered.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match &chan.st.lock().position {
                Some((e, o)) if **e == *epoch && *o < offset => {}
                _ => return,
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return;
            }
        }
    }

    fn parse_item(&self, payload: &[u8]) -> Option<Item> {
        let (&kind, rest) = payload.split_first()?;
        match kind {
            b'M' => {
                let (head, frame) = split_frame(rest)?;
                let head = std::str::from_utf8(head).ok()?;
                let mut parts = head.split(' ');
                let offset = parts.next()?.parse().ok()?;
                let epoch = Arc::from(parts.next()?);
                let exclude = parts.next().and_then(|a| self.local(a));
                Some(Item::Message {
                    offset,
                    epoch,
                    exclude,
                    frame,
                })
            }
            b'F' => {
                // `<exclude>[ <request-id> <timeout-ms>]`: ids have no
                // spaces (checked where they are made and forwarded).
                let (head, frame) = split_frame(rest)?;
                let head = std::str::from_utf8(head).ok()?;
                let mut parts = head.split(' ');
                let exclude = parts.next().and_then(|a| self.local(a));
                let rpc = match (parts.next(), parts.next().and_then(|t| t.parse().ok())) {
                    (Some(id), Some(ms)) => Some((Box::from(id), Duration::from_millis(ms))),
                    _ => None,
                };
                Some(Item::Frame {
                    exclude,
                    frame,
                    rpc,
                })
            }
            b'D' => Some(Item::Deleted {
                epoch: Arc::from(std::str::from_utf8(rest).ok()?),
            }),
            _ => None,
        }
    }

    /// Delivers one item to the hub under the channel's state lock: the
    /// one order every local subscriber sees.
    fn deliver(&self, id: &str, st: &mut ChanState, item: Item, hub: &Hub) {
        match item {
            Item::Message {
                offset,
                epoch,
                exclude,
                frame,
            } => {
                match &st.position {
                    Some((e, last)) if *e == epoch => {
                        if offset <= *last {
                            return; // seen (a recovery filled it)
                        }
                        if offset > *last + 1 {
                            // Lost on the way; no way to fill it here.
                            self.reconnect_subscribers(id, st, hub, "gap");
                            return;
                        }
                    }
                    Some(_) => {
                        self.reconnect_subscribers(id, st, hub, "epoch-changed");
                        return;
                    }
                    None => {}
                }
                if st.position.is_some() {
                    st.position = Some((epoch, offset));
                }
                let out = hub.fan_out_message(id, &frame, exclude);
                self.deliveries.fetch_add(out.delivered as u64, Relaxed);
                self.deliveries_full.fetch_add(out.full as u64, Relaxed);
            }
            Item::Frame {
                exclude,
                frame,
                rpc: Some((request_id, timeout)),
            } => {
                let (_, out) = hub.fan_out_rpc(id, &frame, exclude, &request_id, timeout, false);
                self.deliveries.fetch_add(out.delivered as u64, Relaxed);
                self.deliveries_full.fetch_add(out.full as u64, Relaxed);
            }
            Item::Frame {
                exclude,
                frame,
                rpc: None,
            } => {
                let out = hub.fan_out(id, &frame, exclude);
                self.deliveries.fetch_add(out.delivered as u64, Relaxed);
                self.deliveries_full.fetch_add(out.full as u64, Relaxed);
            }
            Item::Deleted { epoch } => {
                if st.position.as_ref().is_some_and(|(e, _)| *e == epoch) {
                    hub.evict(id);
                    st.position = None;
                    self.forget_if_empty(id);
                }
            }
            // Markers are taken out of the queue by `resume`; one that
            // reaches here has no turn to give: its joiner starts again.
            Item::Join(tx) => {
                let _ = tx.send(false);
            }
        }
    }

    /// The channel's local subscribers cannot be given its messages without
    /// a gap: close them with 1012 `broker-reconnect` so they resubscribe.
    fn reconnect_subscribers(&self, id: &str, st: &mut ChanState, hub: &Hub, why: &str) {
        let evicted = hub.evict_reconnect(id);
        let n = evicted.len();
        self.subscribers_reconnected.fetch_add(n as u64, Relaxed);
        st.position = None;
        // Deliveries of the old stream go; waiting joiners keep their turn.
        st.queue.retain(|i| matches!(i, Item::Join(_)));
        st.overflowed = false;
        self.forget_if_empty(id);
        self.event(
            Level::Warn,
            "sente-lite.redis/subscribers-reconnected",
            serde_json::json!({"channel-id": id, "subscribers": n, "cause": why}),
        );
        if n > 0 {
            // Count them out in Redis (their leave never reaches the broker).
            // And out of the channel's presence.
            if let Some(sh) = self.me.get().and_then(Weak::upgrade) {
                let id = id.to_owned();
                let gone: Vec<String> = evicted
                    .iter()
                    .map(|c| ConnAddr::new(Some(Arc::clone(&sh.node)), *c).to_string())
                    .collect();
                tokio::spawn(async move {
                    sh.change_count(&id, -(n as i64)).await;
                    let _ = sh.presence_remove(&id, &gone).await;
                });
            }
        }
    }

    /// Ends a pause: delivers what waited, in order.
    fn resume(&self, id: &str, chan: &Chan) {
        let Some(h) = self.hub_handle() else { return };
        let mut st = chan.st.lock();
        st.paused = st.paused.saturating_sub(1);
        if st.paused > 0 {
            return;
        }
        if std::mem::take(&mut st.overflowed) {
            self.reconnect_subscribers(id, &mut st, h.hub(), "overflow");
        }
        while let Some(item) = st.queue.pop_front() {
            if let Item::Join(tx) = item {
                // The next joiner's turn: everything before its marker is
                // delivered, nothing after it.
                st.paused += 1;
                if tx.send(true).is_ok() {
                    break;
                }
                st.paused -= 1;
                continue;
            }
            self.deliver(id, &mut st, item, h.hub());
        }
        drop(st);
        chan.delivered.notify_waiters();
    }

    /// Takes the node's subscription to `channel` away when the hub has no
    /// local subscriber of it (last out); a newer subscribe wins.
    async fn unsubscribe_if_empty(&self, channel: &str, hub: &Hub) -> Result<(), EngineError> {
        {
            let mut chans = self.chans.lock();
            if hub.local_count(channel) > 0 {
                return Ok(());
            }
            chans.remove(channel);
        }
        let deadline = tokio::time::Instant::now() + self.cfg.command_timeout;
        let too_late = || unavailable("no answer from Redis within the timeout");
        let _order = tokio::time::timeout_at(deadline, self.sub_order.lock())
            .await
            .map_err(|_| too_late())?;
        if self.chans.lock().contains_key(channel) {
            return Ok(()); // a new first subscriber came meanwhile
        }
        let sink = self.pubsub.read().clone();
        if let Some(mut sink) = sink {
            match tokio::time::timeout_at(deadline, sink.unsubscribe(self.keys.messages(channel)))
                .await
            {
                Ok(r) => r.map_err(unavailable)?,
                Err(_) => return Err(too_late()),
            }
        }
        Ok(())
    }

    /// After an eviction: unsubscribe the node from `channel` in the
    /// background if nobody local is left.
    fn forget_if_empty(&self, channel: &str) {
        let (Some(sh), Some(h)) = (self.me.get().and_then(Weak::upgrade), self.hub_handle()) else {
            return;
        };
        let channel = channel.to_owned();
        tokio::spawn(async move {
            let _ = sh.unsubscribe_if_empty(&channel, h.hub()).await;
        });
    }

    fn on_node_message(&self, payload: &[u8]) {
        let Some((&kind, rest)) = payload.split_first() else {
            return;
        };
        match kind {
            b'K' => {
                let Some(token) = parse_u64(rest) else { return };
                let Some(Wait::Marker { channel, chan, tx }) = self.take_wait(token) else {
                    return;
                };
                // A channel state that a concurrent last leaver took away
                // is paused by no one: its joiner starts again.
                let current = self
                    .chans
                    .lock()
                    .get(&channel)
                    .is_some_and(|c| Arc::ptr_eq(c, &chan));
                if !current {
                    let _ = tx.send(false);
                    return;
                }
                let mut st = chan.st.lock();
                if st.paused > 0 {
                    // Another join or a recovery holds the channel: this
                    // marker waits in order behind what came before it.
                    st.queue.push_back(Item::Join(tx));
                    return;
                }
                st.paused += 1;
                drop(st);
                if tx.send(true).is_err() {
                    self.resume(&channel, &chan);
                }
            }
            b'A' => {
                let text = String::from_utf8_lossy(rest);
                let (token, code) = text.split_once(' ').unwrap_or((&text, ""));
                if let Some(Wait::Ack(tx)) = token.parse().ok().and_then(|t| self.take_wait(t)) {
                    let _ = tx.send(code.to_owned());
                }
            }
            b'W' => {
                // `<token> <reply-to> <exclude> <request-id> <timeout-ms>
                // <channel bytes>\n<channel><frame>`
                let Some((head, rest)) = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|i| (&rest[..i], &rest[i + 1..]))
                else {
                    return;
                };
                let head = String::from_utf8_lossy(head);
                let parts: Vec<&str> = head.split(' ').collect();
                let [token, reply_to, exclude, request_id, timeout_ms, len] = parts[..] else {
                    return;
                };
                let (Ok(timeout_ms), Ok(len)) = (timeout_ms.parse::<u64>(), len.parse::<usize>())
                else {
                    return;
                };
                let (Some(channel), Some(frame)) = (
                    rest.get(..len).and_then(|c| std::str::from_utf8(c).ok()),
                    rest.get(len..)
                        .and_then(|f| std::str::from_utf8(f).ok())
                        .map(|f| Frame::new(f.to_owned())),
                ) else {
                    return;
                };
                let Some(h) = self.hub_handle() else { return };
                let requester: Option<ConnAddr> = exclude.parse().ok();
                let picked = h.hub().dispatch_one(
                    channel,
                    &frame,
                    self.local(exclude),
                    requester.as_ref(),
                    request_id,
                    Duration::from_millis(timeout_ms),
                );
                let code = match picked {
                    Some(c) => {
                        self.deliveries.fetch_add(1, Relaxed);
                        format!("one:{}", ConnAddr::new(Some(Arc::clone(&self.node)), c))
                    }
                    None => "none".to_owned(),
                };
                self.acknowledge(reply_to, token, &code);
            }
            b'S' | b'R' => {
                let Some((head, frame)) = split_frame(rest) else {
                    return;
                };
                let head = String::from_utf8_lossy(head);
                let mut parts = head.split(' ');
                let (Some(token), Some(reply_to), Some(target)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return;
                };
                let Some(h) = self.hub_handle() else { return };
                let code = if kind == b'S' {
                    match self.local(target).map(|c| h.hub().send(c, &frame)) {
                        Some(Ok(Offer::Queued)) => "queued",
                        Some(Ok(Offer::Full)) => "full",
                        Some(Ok(Offer::Closed)) => "closed",
                        _ => "not-found",
                    }
                } else {
                    let error = parts.next() == Some("1");
                    match h.rpc_response(target, &frame, error) {
                        Ok(()) => "ok",
                        Err(_) => "not-found",
                    }
                };
                if code == "queued" {
                    self.deliveries.fetch_add(1, Relaxed);
                }
                self.acknowledge(reply_to, token, code);
            }
            _ => {}
        }
    }

    /// Answers node `reply_to`'s request `token` with `code` (its `ask`
    /// waits for it), without waiting for Redis.
    fn acknowledge(&self, reply_to: &str, token: &str, code: &str) {
        let to = self.keys.node(reply_to);
        let payload = format!("A{token} {code}").into_bytes();
        if let Some(mut conn) = self.conn.read().clone() {
            tokio::spawn(async move {
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(to).arg(payload);
                let _ = cmd.query_async::<i64>(&mut conn).await;
            });
        }
    }

    fn wait(&self, w: Wait) -> u64 {
        let token = self.next_token.fetch_add(1, Relaxed);
        self.waits.lock().insert(token, w);
        token
    }

    fn take_wait(&self, token: u64) -> Option<Wait> {
        self.waits.lock().remove(&token)
    }

    /// Takes connections of this node out of a channel's presence.
    async fn presence_remove(&self, channel: &str, conns: &[String]) -> Result<(), EngineError> {
        let mut inv = self.presence_invoke(&self.scripts.pres_del, channel);
        for c in conns {
            inv.arg(c);
        }
        self.run(&inv).await.map(|_| ())
    }

    /// `script` (PRES_ADD, PRES_DEL) on this node's presence of `channel`:
    /// its keys and first arguments.
    fn presence_invoke<'s>(
        &self,
        script: &'s redis::Script,
        channel: &str,
    ) -> redis::ScriptInvocation<'s> {
        let mut inv = script.prepare_invoke();
        inv.key(self.keys.presence(channel, &self.node))
            .key(self.keys.presence_nodes(channel))
            .key(self.keys.presence_channels(&self.node))
            .arg(&*self.node)
            .arg(channel);
        inv
    }

    async fn change_count(&self, channel: &str, delta: i64) {
        let mut inv = self.scripts.count.prepare_invoke();
        inv.key(self.keys.subs(channel)).arg(&*self.node).arg(delta);
        let _ = self.run(&inv).await;
    }

    /// Sends a request to another node and waits for its answer.
    async fn ask(
        &self,
        node: &str,
        payload: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<String, EngineError> {
        let (tx, rx) = oneshot::channel();
        let token = self.wait(Wait::Ack(tx));
        let r = async {
            let receivers = self
                .publish_raw(&self.keys.node(node), payload(token))
                .await?;
            if receivers == 0 {
                return Ok("not-found".to_owned());
            }
            match tokio::time::timeout(self.cfg.command_timeout, rx).await {
                Ok(Ok(code)) => Ok(code),
                Ok(Err(_)) => Err(unavailable("the connection to Redis was lost")),
                Err(_) => Err(unavailable(format!("node `{node}` did not answer"))),
            }
        }
        .await;
        self.take_wait(token);
        r
    }

    /// After a reconnect: fill what the channel's subscribers missed from
    /// its stream, or close them with `broker-reconnect` when that cannot
    /// be done. The channel is paused from before the resubscribe.
    async fn recover(&self, id: &str, chan: &Chan) {
        let from = chan.st.lock().position.clone();
        let result = match &from {
            None => Ok(None),
            Some((_, offset)) => {
                let mut inv = self.scripts.recover.prepare_invoke();
                inv.key(self.keys.meta(id))
                    .key(self.keys.stream(id))
                    .arg(*offset);
                self.run(&inv).await.map(Some)
            }
        };
        let Some(h) = self.hub_handle() else { return };
        let hub = h.hub();
        {
            let mut st = chan.st.lock();
            st.recovering = false;
            if let (Some((epoch, last)), Ok(Some(v))) = (&from, &result) {
                let items = array(v.clone());
                let now_epoch = items.first().and_then(string);
                let now_offset = int_at(&items, 1) as u64;
                let first = int_at(&items, 2) as u64;
                // Each missed frame with the connection it leaves out.
                let missed: Vec<(Frame, Option<ConnId>)> = items[3.min(items.len())..]
                    .chunks(2)
                    .filter_map(|p| {
                        let exclude = p.get(1).and_then(string);
                        Some((frame_of(p.first()?)?, exclude.and_then(|a| self.local(&a))))
                    })
                    .collect();
                let same = now_epoch.as_deref() == Some(&**epoch)
                    && st.position.as_ref().is_some_and(|(e, _)| e == epoch);
                let complete = now_offset == *last
                    || (first == *last + 1
                        && now_offset.checked_sub(*last) == Some(missed.len() as u64));
                if matches!(v, Value::Nil) || !same || !complete {
                    self.reconnect_subscribers(id, &mut st, hub, "broker-reconnect");
                } else {
                    for (i, (frame, exclude)) in missed.iter().enumerate() {
                        let out = hub.fan_out_message(id, frame, *exclude);
                        self.deliveries.fetch_add(out.delivered as u64, Relaxed);
                        self.gap_messages_filled.fetch_add(1, Relaxed);
                        st.position = Some((Arc::clone(epoch), *last + 1 + i as u64));
                    }
                }
            } else if from.is_some() {
                // Redis failed again, or the channel is gone: no way to
                // know what was missed.
                self.reconnect_subscribers(id, &mut st, hub, "broker-reconnect");
            }
        }
        self.resume(id, chan);
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

/// `head\nframe` → (head, frame).
fn split_frame(b: &[u8]) -> Option<(&[u8], Frame)> {
    let i = b.iter().position(|&c| c == b'\n')?;
    let frame = String::from_utf8(b[i + 1..].to_vec()).ok()?;
    Some((&b[..i], Frame::new(frame)))
}

async fn within<T, E: fmt::Display>(
    t: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(t, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer from Redis within {} ms", t.as_millis())),
    }
}

// ----- reading script replies ----------------------------------------------

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Nil => Vec::new(),
        other => vec![other],
    }
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => string(other).and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}

fn int_at(items: &[Value], i: usize) -> i64 {
    items.get(i).map_or(0, int)
}

fn frame_of(v: &Value) -> Option<Frame> {
    string(v).map(Frame::new)
}

/// A presence entry as stored: `{"user-id": ..., "info": ...}`.
fn client_json(c: &ClientInfo) -> String {
    serde_json::to_string(c).unwrap_or_else(|_| "{}".to_owned())
}

/// A stored frame as a message, its `data` byte for byte.
fn message_of(v: &Value) -> Option<ChannelMessage> {
    ChannelMessage::from_frame(&string(v)?).ok()
}

/// A script's `{'err', what, ...}` reply as the engine's error.
fn script_error(items: &[Value], channel: &str, engine: &EngineConfig) -> Option<EngineError> {
    if items.first().and_then(string).as_deref() != Some("err") {
        return None;
    }
    let c = truncated(channel);
    Some(match items.get(1).and_then(string).as_deref() {
        Some("not-found") => EngineError::ChannelNotFound(c),
        Some("exists") => EngineError::ChannelExists(c),
        Some("max-channels") => EngineError::MaxChannelsReached(engine.max_channels),
        Some("max-subscribers") => EngineError::MaxSubscribersReached {
            channel: c,
            max: int_at(items, 2) as usize,
        },
        Some("expired") => {
            unavailable("Redis reached the publish after its timeout: it was not published")
        }
        other => unavailable(format!("unexpected reply from Redis: {other:?}")),
    })
}

fn truncated(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn parse_config(v: Option<&Value>) -> Option<ChannelConfig> {
    serde_json::from_str(&string(v?)?).ok()
}

fn position(epoch: Option<&Value>, offset: Option<&Value>) -> StreamPosition {
    StreamPosition {
        offset: offset.map_or(0, int) as u64,
        epoch: Arc::from(epoch.and_then(string).unwrap_or_default()),
    }
}

fn new_epoch() -> String {
    let n = RandomState::new().hash_one(now_ms()) & 0xffff_ffff;
    format!("{n:08x}")
}

// ----- the Broker -----------------------------------------------------------

impl RedisBroker {
    /// What a channel made by a publish or a join gets: the default config
    /// (serialized once, at start), its retention, stream length and
    /// `max-subscribers`.
    fn defaults(&self, channel: &str) -> (&str, usize, usize, usize) {
        let sh = &self.shared;
        let ns = namespace_of(channel)
            .and_then(|ns| sh.engine.namespaces.iter().position(|n| n.name == ns));
        let (c, json) = match ns {
            Some(i) => (
                sh.engine.namespaces[i].channel,
                sh.namespace_config_json.get(i).map_or("{}", String::as_str),
            ),
            None => (sh.engine.default_channel, sh.default_config_json.as_str()),
        };
        (json, c.message_retention, self.keep(&c), c.max_subscribers)
    }

    fn keep(&self, c: &ChannelConfig) -> usize {
        c.history_len().max(self.shared.cfg.stream_size).max(1)
    }

    fn created(&self, channel: &str, config: &ChannelConfig, explicit: bool) {
        if config.telemetry_enabled {
            self.shared.event(
                Level::Info,
                ev_ids::CHANNEL_CREATED,
                serde_json::json!({"channel-id": channel, "config": config, "explicit": explicit}),
            );
        }
    }

    async fn publish_now(
        &self,
        channel: &str,
        message: Publication<'_>,
        hub: &Hub,
    ) -> Result<Published, EngineError> {
        let sh = &self.shared;
        let deadline = tokio::time::Instant::now() + sh.cfg.command_timeout;
        let message_id = self.message_id();
        let sender = message.sender.map(ToString::to_string);
        let head = channel_message_head(
            channel,
            &message_id,
            message.data,
            sender.as_deref(),
            now_ms(),
        );
        let exclude = match (&sender, message.exclude_sender) {
            (Some(s), true) => s.as_str(),
            _ => "-",
        };
        let (config, ret, keep, maxsubs) = self.defaults(channel);
        let mut inv = sh.scripts.publish.prepare_invoke();
        inv.key(sh.keys.meta(channel))
            .key(sh.keys.stream(channel))
            .key(sh.keys.subs(channel))
            .key(&sh.keys.nodes)
            .key(&sh.keys.channels)
            .key(sh.keys.messages(channel))
            .arg(head)
            .arg(exclude)
            .arg(if sh.engine.auto_creates(channel) {
                "1"
            } else {
                "0"
            })
            .arg(config)
            .arg(ret)
            .arg(keep)
            .arg(maxsubs)
            .arg(sh.engine.max_channels)
            .arg(new_epoch())
            .arg(channel)
            .arg(u64::try_from(sh.cfg.stream_ttl.as_millis()).unwrap_or(u64::MAX))
            .arg(sh.deadline_ms(deadline));
        let items = array(sh.run_until(&inv, deadline).await?);
        if let Some(e) = script_error(&items, channel, &sh.engine) {
            return Err(e);
        }
        if int_at(&items, 4) == 1 {
            self.created(channel, &sh.engine.channel_defaults(channel), false);
        }
        let mut delivered = int_at(&items, 3) as usize;
        let position = position(items.get(2), items.get(1));
        if let Some(s) = message.sender {
            if s.node.as_deref() == Some(&*sh.node) && hub.is_subscribed(s.conn, channel) {
                if message.exclude_sender {
                    delivered = delivered.saturating_sub(1);
                } else {
                    // As on one node: its own message before its result.
                    sh.delivered(channel, &position.epoch, position.offset, deadline)
                        .await;
                }
            }
        }
        sh.published.fetch_add(1, Relaxed);
        Ok(Published {
            message_id,
            position,
            delivered_to: delivered,
            full: 0,
        })
    }

    async fn join_now(
        &self,
        channel: &str,
        create: Create,
        recover: Option<&Position>,
        join: &mut JoinFn<'_>,
    ) -> Result<(), EngineError> {
        let deadline = tokio::time::Instant::now() + self.shared.cfg.command_timeout;
        // A concurrent last leaver may take the node's channel state away
        // between the join script and the hub add: then start again.
        for _ in 0..3 {
            if let Some(done) = self
                .join_once(channel, create, recover, join, deadline)
                .await
            {
                return done;
            }
        }
        Err(unavailable(
            "the channel's node subscription kept changing under the join",
        ))
    }

    /// One try of a join: `None` when the node's channel state was taken
    /// away under it (nothing joined, counts undone).
    async fn join_once(
        &self,
        channel: &str,
        create: Create,
        recover: Option<&Position>,
        join: &mut JoinFn<'_>,
        deadline: tokio::time::Instant,
    ) -> Option<Result<(), EngineError>> {
        let sh = &self.shared;
        let chan = sh.chans.lock().get(channel).cloned();
        let Some(chan) = chan else {
            // The node's subscription went with a last subscriber that
            // left meanwhile: take it again.
            if let Err(e) = self.subscribe_until(channel, deadline).await {
                return Some(Err(e));
            }
            return None;
        };
        if chan.st.lock().recovering {
            return Some(Err(unavailable(
                "the node is recovering from a Redis reconnect",
            )));
        }
        let (tx, mut rx) = oneshot::channel();
        let token = sh.wait(Wait::Marker {
            channel: Arc::from(channel),
            chan: Arc::clone(&chan),
            tx,
        });
        let (config, ret, keep, maxsubs) = self.defaults(channel);
        let auto = create == Create::Auto && sh.engine.auto_creates(channel);
        let mut inv = sh.scripts.join.prepare_invoke();
        inv.key(sh.keys.meta(channel))
            .key(sh.keys.stream(channel))
            .key(sh.keys.subs(channel))
            .key(&sh.keys.nodes)
            .key(&sh.keys.channels)
            .key(&sh.keys.mine)
            .arg(if auto { "1" } else { "0" })
            .arg(config)
            .arg(ret)
            .arg(keep)
            .arg(maxsubs)
            .arg(sh.engine.max_channels)
            .arg(new_epoch())
            .arg(channel)
            .arg(&*sh.node)
            .arg(token)
            .arg(sh.deadline_ms(deadline))
            .arg(if recover.is_some() { "1" } else { "0" })
            .arg(recover.map_or(0, |r| r.offset))
            .arg(recover.map_or("", |r| r.epoch.as_str()))
            .arg(sh.engine.max_recovery_messages);
        let items = match sh.run_until(&inv, deadline).await {
            Ok(v) => array(v),
            Err(e) => {
                sh.take_wait(token);
                return Some(Err(e));
            }
        };
        if let Some(e) = script_error(&items, channel, &sh.engine) {
            sh.take_wait(token);
            return Some(Err(e));
        }
        // The marker: every message up to the view's position has been
        // delivered on this node, none after it (the channel waits).
        let paused = match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(paused)) => paused,
            failed => {
                if sh.take_wait(token).is_none() && failed.is_err() {
                    // The marker came just now (its sender is being
                    // used): undo its pause.
                    if let Ok(true) = rx.await {
                        sh.resume(channel, &chan);
                    }
                }
                sh.change_count(channel, -1).await;
                return Some(Err(unavailable("no marker from Redis within the timeout")));
            }
        };
        let config =
            parse_config(items.get(1)).unwrap_or_else(|| sh.engine.channel_defaults(channel));
        let position = position(items.get(3), items.get(2));
        let held: VecDeque<ChannelMessage> = items.iter().skip(6).filter_map(message_of).collect();
        let now = now_ms();
        let recovery = recover.map(|want| {
            let max = sh.engine.max_recovery_messages;
            history::recover(&position, want, max, &held, &config, now)
        });
        let retained = history::Held {
            messages: &held,
            config: &config,
            now,
        };
        let result = {
            // Under the map's lock: a last leaver cannot take the state
            // away between this check and the hub add (it checks the hub
            // under the same lock).
            let chans = sh.chans.lock();
            let current = chans.get(channel).is_some_and(|c| Arc::ptr_eq(c, &chan));
            if !current || !paused {
                None
            } else {
                let hub = sh.hub_handle();
                let mut st = chan.st.lock();
                let consistent = match &st.position {
                    None => true,
                    Some((e, o)) => *e == position.epoch && *o == position.offset,
                };
                if let (false, Some(h)) = (consistent, &hub) {
                    // The channel was made again, or this node missed part of
                    // its stream: its subscribers cannot go on without a gap.
                    sh.reconnect_subscribers(channel, &mut st, h.hub(), "epoch-changed");
                }
                st.position = Some((Arc::clone(&position.epoch), position.offset));
                drop(st);
                let r = join(JoinView {
                    config: &config,
                    retained: &retained,
                    position,
                    remote_subscribers: int_at(&items, 4) as usize,
                    recovery,
                });
                drop(chans);
                Some(r)
            }
        };
        if paused {
            sh.resume(channel, &chan);
        }
        let Some(result) = result else {
            // Taken away under the join: nothing joined; start again.
            sh.change_count(channel, -1).await;
            return None;
        };
        if int_at(&items, 5) == 1 {
            self.created(channel, &config, false);
        }
        Some(match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                sh.change_count(channel, -1).await;
                Ok(())
            }
            Err(e) => {
                sh.change_count(channel, -1).await;
                Err(e)
            }
        })
    }

    async fn subscribe_now(&self, channel: &str) -> Result<(), EngineError> {
        let deadline = tokio::time::Instant::now() + self.shared.cfg.command_timeout;
        self.subscribe_until(channel, deadline).await
    }

    async fn subscribe_until(
        &self,
        channel: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), EngineError> {
        let sh = &self.shared;
        sh.chans
            .lock()
            .entry(Arc::from(channel))
            .or_insert_with(|| Arc::new(Chan::new()));
        let too_late = || unavailable("no answer from Redis within the timeout");
        let _order = tokio::time::timeout_at(deadline, sh.sub_order.lock())
            .await
            .map_err(|_| too_late())?;
        let sink = sh.pubsub.read().clone();
        let Some(mut sink) = sink else {
            return Err(unavailable("not connected to Redis"));
        };
        match tokio::time::timeout_at(deadline, sink.subscribe(sh.keys.messages(channel))).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(too_late()),
        }
    }

    async fn unsubscribe_now(&self, channel: &str, hub: &Hub) -> Result<(), EngineError> {
        self.shared.unsubscribe_if_empty(channel, hub).await
    }

    async fn send_to_channel_now(
        &self,
        channel: &str,
        frame: &Frame,
        exclude: Option<&ConnAddr>,
        ids: bool,
        rpc: Option<(&str, Duration)>,
        hub: &Hub,
    ) -> Result<Sent, EngineError> {
        let sh = &self.shared;
        let mut excl = exclude.map_or_else(|| "-".to_owned(), ToString::to_string);
        if let Some((request_id, timeout)) = rpc {
            // Every node that delivers it remembers who it was sent to.
            if request_id.contains([' ', '\n', '\r']) {
                return Err(EngineError::RequestNotFound(truncated(request_id)));
            }
            excl = format!("{excl} {request_id} {}", timeout.as_millis());
        }
        let mut inv = sh.scripts.send.prepare_invoke();
        inv.key(sh.keys.subs(channel))
            .key(&sh.keys.nodes)
            .key(sh.keys.messages(channel))
            .arg(&excl)
            .arg(frame.bytes().as_ref())
            .arg(sh.deadline_ms(sh.op_deadline()));
        let Ok(delivered) = usize::try_from(int(&sh.run(&inv).await?)) else {
            return Err(unavailable(
                "Redis reached the send after its timeout: it was not sent",
            ));
        };
        let mut delivered = delivered;
        let local_excluded = exclude
            .filter(|a| a.node.as_deref() == Some(&*sh.node))
            .map(|a| a.conn);
        if let Some(c) = local_excluded {
            if hub.is_subscribed(c, channel) {
                delivered = delivered.saturating_sub(1);
            }
        }
        let ids = if ids {
            hub.local_subscribers(channel)
                .into_iter()
                .filter(|c| Some(*c) != local_excluded)
                .map(|c| ConnAddr::new(Some(Arc::clone(&sh.node)), c))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Sent {
            ids,
            delivered,
            full: 0,
        })
    }

    /// Runs the idle-channel sweep in Redis (see `SWEEP`); an error (Redis
    /// down) removes nothing and the next sweep tries again.
    async fn sweep_now(&self, ttl: Duration) -> usize {
        let sh = &self.shared;
        let mut inv = sh.scripts.sweep.prepare_invoke();
        inv.key(&sh.keys.channels)
            .key(&sh.keys.nodes)
            .arg(&sh.keys.prefix)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        match sh.run(&inv).await {
            Ok(v) => {
                let n = usize::try_from(int(&v)).unwrap_or(0);
                sh.idle_removed.fetch_add(n as u64, Relaxed);
                n
            }
            Err(_) => 0,
        }
    }

    /// `rpc-dispatch = one` across nodes: Redis names the nodes to try in
    /// round-robin order; each either hands the request to exactly one of
    /// its workers or declines, so exactly one worker in the cluster gets
    /// it (or none, when every node declines).
    async fn send_rpc_one_now(
        &self,
        channel: &str,
        request_id: &str,
        timeout: Duration,
        frame: &Frame,
        exclude: Option<&ConnAddr>,
        hub: &Hub,
    ) -> Result<Sent, EngineError> {
        let sh = &self.shared;
        let mut inv = sh.scripts.pick.prepare_invoke();
        inv.key(sh.keys.meta(channel))
            .key(sh.keys.subs(channel))
            .key(&sh.keys.nodes);
        let nodes: Vec<String> = array(sh.run(&inv).await?)
            .iter()
            .filter_map(string)
            .collect();
        let me = Arc::clone(&sh.node);
        let excluded = exclude.map_or_else(|| "-".to_owned(), ToString::to_string);
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        for node in nodes {
            let picked = if node == *me {
                let local = exclude
                    .filter(|e| e.node.as_deref() == Some(&*me))
                    .map(|e| e.conn);
                hub.dispatch_one(channel, frame, local, exclude, request_id, timeout)
                    .map(|c| ConnAddr::new(Some(Arc::clone(&me)), c))
            } else {
                let code = sh
                    .ask(&node, |token| {
                        let mut p = format!(
                            "W{token} {me} {excluded} {request_id} {timeout_ms} {}\n{channel}",
                            channel.len()
                        )
                        .into_bytes();
                        p.extend_from_slice(frame.bytes());
                        p
                    })
                    .await?;
                code.strip_prefix("one:").and_then(|a| a.parse().ok())
            };
            if let Some(worker) = picked {
                return Ok(Sent {
                    ids: vec![worker],
                    delivered: 1,
                    full: 0,
                });
            }
        }
        Ok(Sent::default())
    }

    async fn send_to_connection_now(
        &self,
        to: &ConnAddr,
        frame: &Frame,
        hub: &Hub,
    ) -> Result<Offer, EngineError> {
        let sh = &self.shared;
        let not_found = || EngineError::ConnectionNotFound(to.to_string());
        let node = match &to.node {
            None => return hub.send(to.conn, frame),
            Some(n) if **n == *sh.node => return hub.send(to.conn, frame),
            Some(n) => Arc::clone(n),
        };
        let me = Arc::clone(&sh.node);
        let target = to.to_string();
        let code = sh
            .ask(&node, |token| {
                let mut p = format!("S{token} {me} {target}\n").into_bytes();
                p.extend_from_slice(frame.bytes());
                p
            })
            .await?;
        match code.as_str() {
            "queued" => Ok(Offer::Queued),
            "full" => Ok(Offer::Full),
            "closed" => Ok(Offer::Closed),
            _ => Err(not_found()),
        }
    }

    async fn delete_now(&self, channel: &str, hub: &Hub) -> Result<usize, EngineError> {
        let sh = &self.shared;
        let mut inv = sh.scripts.delete.prepare_invoke();
        inv.key(sh.keys.meta(channel))
            .key(sh.keys.stream(channel))
            .key(sh.keys.subs(channel))
            .key(&sh.keys.nodes)
            .key(&sh.keys.channels)
            .key(sh.keys.messages(channel))
            .arg(channel);
        let v = sh.run(&inv).await?;
        if matches!(v, Value::Nil) {
            return Err(EngineError::ChannelNotFound(truncated(channel)));
        }
        let items = array(v);
        let n = int_at(&items, 0);
        let epoch = items.get(1).and_then(string).unwrap_or_default();
        // This node's subscribers of that incarnation go now (a next one
        // may exist already); other nodes evict theirs on the notice.
        let chan = sh.chans.lock().get(channel).cloned();
        if let Some(chan) = chan {
            let mut st = chan.st.lock();
            if st.position.as_ref().is_some_and(|(e, _)| **e == *epoch) {
                hub.evict(channel);
                st.position = None;
            }
        }
        sh.forget_if_empty(channel);
        self.shared.event(
            Level::Info,
            ev_ids::CHANNEL_DELETED,
            serde_json::json!({"channel-id": channel, "unsubscribed": n}),
        );
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn info_now(&self, channel: &str) -> Result<Option<ChannelMeta>, EngineError> {
        let sh = &self.shared;
        let mut inv = sh.scripts.info.prepare_invoke();
        inv.key(sh.keys.meta(channel))
            .key(sh.keys.subs(channel))
            .key(&sh.keys.nodes);
        let items = array(sh.run(&inv).await?);
        if items.is_empty() {
            return Ok(None);
        }
        let position = position(items.get(3), items.get(2));
        let Some(config) = parse_config(items.first()) else {
            return Ok(None);
        };
        Ok(Some(ChannelMeta {
            config,
            created_at: int_at(&items, 1),
            message_count: position.offset,
            subscriber_count: int_at(&items, 4) as usize,
            position,
        }))
    }

    async fn list_now(&self) -> Result<Vec<(String, ChannelMeta)>, EngineError> {
        let sh = &self.shared;
        let mut inv = sh.scripts.list.prepare_invoke();
        inv.key(&sh.keys.channels)
            .key(&sh.keys.nodes)
            .arg(&sh.keys.prefix);
        let items = array(sh.run(&inv).await?);
        let mut out: Vec<(String, ChannelMeta)> = items
            .chunks(6)
            .filter_map(|c| {
                let position = position(c.get(4), c.get(3));
                Some((
                    string(c.first()?)?,
                    ChannelMeta {
                        config: parse_config(c.get(1))?,
                        created_at: c.get(2).map_or(0, int),
                        message_count: position.offset,
                        subscriber_count: c.get(5).map_or(0, int) as usize,
                        position,
                    },
                ))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn history_now(&self, channel: &str) -> Result<History, EngineError> {
        let sh = &self.shared;
        let mut inv = sh.scripts.history.prepare_invoke();
        inv.key(sh.keys.meta(channel)).key(sh.keys.stream(channel));
        match sh.run(&inv).await? {
            Value::Nil => Err(EngineError::ChannelNotFound(truncated(channel))),
            v => {
                let items = array(v);
                Ok(History {
                    config: parse_config(items.first())
                        .unwrap_or_else(|| sh.engine.channel_defaults(channel)),
                    position: position(items.get(1), items.get(2)),
                    messages: items.iter().skip(3).filter_map(message_of).collect(),
                })
            }
        }
    }

    async fn create_now(&self, channel: &str, config: ChannelConfig) -> Result<(), EngineError> {
        let sh = &self.shared;
        let json = serde_json::to_string(&config).unwrap_or_else(|_| "{}".to_owned());
        let mut inv = sh.scripts.create.prepare_invoke();
        inv.key(sh.keys.meta(channel))
            .key(&sh.keys.channels)
            .arg(channel)
            .arg(json)
            .arg(config.message_retention)
            .arg(self.keep(&config))
            .arg(config.max_subscribers)
            .arg(sh.engine.max_channels)
            .arg(new_epoch());
        let items = array(sh.run(&inv).await?);
        if let Some(e) = script_error(&items, channel, &sh.engine) {
            return Err(e);
        }
        self.created(channel, &config, true);
        Ok(())
    }

    async fn rpc_response_now(
        &self,
        node: &str,
        request_id: &str,
        frame: &Frame,
        error: bool,
    ) -> Result<(), EngineError> {
        let sh = &self.shared;
        // Ours never have a space or a line break; the header between
        // nodes is split on them.
        if !valid_node_id(node) || request_id.contains([' ', '\n', '\r']) {
            return Err(EngineError::RequestNotFound(truncated(request_id)));
        }
        let me = Arc::clone(&sh.node);
        let code = sh
            .ask(node, |token| {
                let e = if error { 1 } else { 0 };
                let mut p = format!("R{token} {me} {request_id} {e}\n").into_bytes();
                p.extend_from_slice(frame.bytes());
                p
            })
            .await?;
        if code == "ok" {
            Ok(())
        } else {
            Err(EngineError::RequestNotFound(truncated(request_id)))
        }
    }

    async fn broadcast_now(&self, frame: &Frame, hub: &Hub) -> (usize, usize) {
        let sh = &self.shared;
        let (delivered, targeted) = hub.send_all(frame);
        let mut p = format!("B{}\n", sh.node).into_bytes();
        p.extend_from_slice(frame.bytes());
        match sh.publish_raw(&sh.keys.all, p).await {
            Ok(_) => {
                let remote = sh.cache.lock().remote_connections;
                (delivered + remote, targeted + remote)
            }
            Err(_) => (delivered, targeted),
        }
    }
}

impl Broker for RedisBroker {
    fn node(&self) -> Option<&Arc<str>> {
        Some(&self.shared.node)
    }

    fn message_id(&self) -> String {
        let n = self.shared.next_message.fetch_add(1, Relaxed) + 1;
        format!("msg-{}-{n}", self.shared.node)
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        message: Publication<'a>,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Published, EngineError>> {
        Reply::later(self.publish_now(channel, message, hub))
    }

    fn join<'a>(
        &'a self,
        channel: &'a str,
        create: Create,
        recover: Option<&'a Position>,
        join: &'a mut JoinFn<'_>,
    ) -> Reply<'a, Result<(), EngineError>> {
        Reply::later(self.join_now(channel, create, recover, join))
    }

    fn attach(&self, node: Weak<dyn NodeHandle>) {
        *self.shared.node_handle.write() = Some(node);
    }

    fn subscriber_left<'a>(&'a self, channel: &'a str) -> Reply<'a, ()> {
        Reply::later(self.shared.change_count(channel, -1))
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> Reply<'a, Result<(), EngineError>> {
        Reply::later(self.subscribe_now(channel))
    }

    fn unsubscribe<'a>(
        &'a self,
        channel: &'a str,
        hub: &'a Hub,
    ) -> Reply<'a, Result<(), EngineError>> {
        Reply::later(self.unsubscribe_now(channel, hub))
    }

    fn send_to_channel<'a>(
        &'a self,
        channel: &'a str,
        frame: &'a Frame,
        exclude: Option<&'a ConnAddr>,
        ids: bool,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Sent, EngineError>> {
        Reply::later(self.send_to_channel_now(channel, frame, exclude, ids, None, hub))
    }

    fn sweep_idle<'a>(&'a self, ttl: Duration, _hub: &'a Hub) -> Reply<'a, usize> {
        Reply::later(self.sweep_now(ttl))
    }

    fn send_rpc_request<'a>(
        &'a self,
        channel: &'a str,
        request_id: &'a str,
        timeout: Duration,
        frame: &'a Frame,
        exclude: Option<&'a ConnAddr>,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Sent, EngineError>> {
        Reply::later(self.send_to_channel_now(
            channel,
            frame,
            exclude,
            true,
            Some((request_id, timeout)),
            hub,
        ))
    }

    fn send_rpc_one<'a>(
        &'a self,
        channel: &'a str,
        request_id: &'a str,
        timeout: Duration,
        frame: &'a Frame,
        exclude: Option<&'a ConnAddr>,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Sent, EngineError>> {
        Reply::later(self.send_rpc_one_now(channel, request_id, timeout, frame, exclude, hub))
    }

    fn send_to_connection<'a>(
        &'a self,
        to: &'a ConnAddr,
        frame: &'a Frame,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Offer, EngineError>> {
        Reply::later(self.send_to_connection_now(to, frame, hub))
    }

    fn send_rpc_response<'a>(
        &'a self,
        node: &'a str,
        request_id: &'a str,
        frame: &'a Frame,
        error: bool,
    ) -> Reply<'a, Result<(), EngineError>> {
        Reply::later(self.rpc_response_now(node, request_id, frame, error))
    }

    fn broadcast<'a>(&'a self, frame: &'a Frame, hub: &'a Hub) -> Reply<'a, (usize, usize)> {
        Reply::later(self.broadcast_now(frame, hub))
    }

    fn create_channel<'a>(
        &'a self,
        channel: &'a str,
        config: ChannelConfig,
    ) -> Reply<'a, Result<(), EngineError>> {
        Reply::later(self.create_now(channel, config))
    }

    fn delete_channel<'a>(
        &'a self,
        channel: &'a str,
        hub: &'a Hub,
    ) -> Reply<'a, Result<usize, EngineError>> {
        Reply::later(self.delete_now(channel, hub))
    }

    fn channel<'a>(
        &'a self,
        channel: &'a str,
        _hub: &'a Hub,
    ) -> Reply<'a, Result<Option<ChannelMeta>, EngineError>> {
        Reply::later(self.info_now(channel))
    }

    fn channels<'a>(
        &'a self,
        _hub: &'a Hub,
    ) -> Reply<'a, Result<Vec<(String, ChannelMeta)>, EngineError>> {
        Reply::later(self.list_now())
    }

    fn history<'a>(&'a self, channel: &'a str) -> Reply<'a, Result<History, EngineError>> {
        Reply::later(self.history_now(channel))
    }

    fn presence_add<'a>(
        &'a self,
        channel: &'a str,
        conn: &'a ConnAddr,
        client: &'a ClientInfo,
    ) -> Reply<'a, Result<(), EngineError>> {
        Reply::later(async move {
            let sh = &self.shared;
            let mut inv = sh.presence_invoke(&sh.scripts.pres_add, channel);
            inv.arg(conn.to_string()).arg(client_json(client));
            sh.run(&inv).await.map(|_| ())
        })
    }

    fn presence_remove<'a>(&'a self, channel: &'a str, conn: &'a ConnAddr) -> Reply<'a, ()> {
        Reply::later(async move {
            let _ = self
                .shared
                .presence_remove(channel, &[conn.to_string()])
                .await;
        })
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
        _hub: &'a Hub,
    ) -> Reply<'a, Result<BTreeMap<String, ClientInfo>, EngineError>> {
        Reply::later(async move {
            let sh = &self.shared;
            let mut inv = sh.scripts.presence.prepare_invoke();
            inv.key(sh.keys.presence_nodes(channel))
                .key(&sh.keys.nodes)
                .arg(&sh.keys.prefix)
                .arg(channel);
            let items = array(sh.run(&inv).await?);
            Ok(items
                .chunks_exact(2)
                .filter_map(|kv| {
                    let conn = string(&kv[0])?;
                    let client = serde_json::from_str(&string(&kv[1])?).ok()?;
                    Some((conn, client))
                })
                .collect())
        })
    }

    fn channel_count(&self) -> usize {
        self.shared.cache.lock().channels
    }

    fn total_subscriptions(&self, _hub: &Hub) -> usize {
        self.shared.cache.lock().subscriptions
    }

    fn totals(&self) -> BrokerTotals {
        let sh = &self.shared;
        BrokerTotals {
            published: sh.published.load(Relaxed),
            deliveries: sh.deliveries.load(Relaxed),
            deliveries_full: sh.deliveries_full.load(Relaxed),
            idle_removed: sh.idle_removed.load(Relaxed),
            // Retained messages live in Redis streams, not in this node.
            ..BrokerTotals::default()
        }
    }

    fn health(&self) -> BrokerHealth {
        let sh = &self.shared;
        let healthy = sh.state.load(Relaxed) == CONNECTED;
        BrokerHealth {
            kind: "redis",
            healthy,
            state: sh.state_name(),
            nodes: sh.cache.lock().nodes.clone(),
            error: if healthy {
                None
            } else {
                sh.last_error.lock().clone()
            },
            counters: vec![
                ("reconnects", sh.reconnects.load(Relaxed)),
                ("connect-failures", sh.connect_failures.load(Relaxed)),
                (
                    "subscribers-reconnected",
                    sh.subscribers_reconnected.load(Relaxed),
                ),
                ("gap-messages-filled", sh.gap_messages_filled.load(Relaxed)),
            ],
        }
    }
}
