//! The Hub: this node's connections and each channel's local subscribers.
//!
//! Everything here is synchronous and never waits: a fan-out is a loop of
//! [`Sink::offer`] calls under one channel's lock. The Hub knows nothing of
//! brokers, retention, RPC or other nodes; it reports when a channel gets
//! its first local subscriber and loses its last ([`Joined::first`],
//! [`Left::last`]), the points where a node subscribes to and leaves a
//! broker channel.

use crate::conn::{ConnAddr, ConnId, Frame, Offer, Sink};
use crate::error::EngineError;
use crate::map::ShardedMap;
use parking_lot::{Mutex, RwLock};
use sente_lite_protocol::{ChannelConfig, ClientInfo, SlowConsumerPolicy};

/// Numbers of `latest` channel lists, unique in the process (never 0).
static NEXT_LIST: AtomicU64 = AtomicU64::new(1);
use slab::Slab;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A fan-out to this many subscribers or fewer offers each its frame as
/// its own ([`Sink::offer_one`]): a transport may then write it at once,
/// which for so few costs less than handing the writes to other threads.
pub const SMALL_FAN_OUT: usize = 2;

/// Offers to each of a channel list's subscribers but `exclude` with
/// `offer(sink, list length)`, under the list's lock.
fn fan_out_in(
    entry: &HubChannel,
    exclude: Option<ConnId>,
    offer: impl Fn(&Arc<dyn Sink>, usize) -> Offer,
) -> FanOut {
    let subs = entry.subs.lock();
    let mut out = FanOut::default();
    for s in &subs.list {
        if Some(s.conn) == exclude {
            continue;
        }
        match offer(&s.sink, subs.list.len()) {
            Offer::Queued => out.delivered += 1,
            Offer::Full => out.full += 1,
            Offer::Closed => {}
        }
    }
    out
}

/// Offers `frame` as one of `fan_out` deliveries.
fn offer(sink: &Arc<dyn Sink>, frame: &Frame, fan_out: usize) -> Offer {
    if fan_out <= SMALL_FAN_OUT {
        sink.offer_one(frame)
    } else {
        sink.offer(frame)
    }
}
use tokio::time::Instant;

/// The local registry: connections (in a slab, with generation-checked
/// [`ConnId`]s) and, per channel, the connections of this node subscribed
/// to it.
pub struct Hub {
    conns: RwLock<Slab<Arc<HubConn>>>,
    next_generation: AtomicU64,
    max_connections: usize,
    channels: ShardedMap<HubChannel>,
    total_subscriptions: AtomicUsize,
    /// Where subscriptions' sequence numbers come from: each subscription
    /// takes the next one under its channel's lock, so "subscribed with a
    /// number below a fan-out's watermark" is "was in the list the fan-out
    /// went to".
    next_sub_seq: AtomicU64,
    /// RPC requests this node delivered to its subscribers, so that only a
    /// connection that was sent one may answer it.
    rpc_sent: Mutex<RpcSentTable>,
    /// Every connection's presence entry until it says who it is: one
    /// shared anonymous entry.
    anonymous: Arc<ClientInfo>,
}

/// RPC requests delivered by this node, by id, until their deadline;
/// bounded by `max-pending-rpc` (the earliest deadline goes first).
#[derive(Default)]
struct RpcSentTable {
    by_id: HashMap<Box<str>, RpcSent>,
    by_deadline: BTreeMap<(Instant, u64), Box<str>>,
    /// The requests dispatched to one worker (`rpc-dispatch = one`), by
    /// worker: what it still owes when it leaves.
    by_worker: HashMap<ConnId, Vec<Box<str>>>,
    next: u64,
    max: usize,
}

/// Who was sent one RPC request: the channel's local subscribers whose
/// sequence number is below `watermark`, but `exclude` (the requester);
/// or, for a request dispatched to one worker, that worker alone.
struct RpcSent {
    channel: Arc<str>,
    watermark: u64,
    exclude: Option<ConnId>,
    deadline: Instant,
    key: u64,
    /// For a request sent to one worker: that worker, and what to send
    /// another one should it leave first.
    one: Option<OneWorker>,
}

/// The worker an `rpc-dispatch = one` request went to, and the request.
struct OneWorker {
    worker: ConnId,
    frame: Frame,
    /// The requester's address.
    requester: Option<ConnAddr>,
}

/// A request sent to one worker, as [`Hub::take_dispatched`] hands it back
/// when that worker leaves before answering.
#[derive(Debug, Clone)]
pub struct Dispatched {
    /// Its channel.
    pub channel: Arc<str>,
    /// Its id.
    pub request_id: Box<str>,
    /// The `rpc-request` frame.
    pub frame: Frame,
    /// The requester (not to be sent its own request).
    pub exclude: Option<ConnAddr>,
    /// The request's deadline: another worker gets what is left of it.
    pub deadline: Instant,
}

impl RpcSentTable {
    fn remove(&mut self, id: &str) -> Option<RpcSent> {
        let e = self.forget(id)?;
        self.by_deadline.remove(&(e.deadline, e.key));
        Some(e)
    }

    /// Takes `id` out of `by_id` and `by_worker` (not `by_deadline`).
    fn forget(&mut self, id: &str) -> Option<RpcSent> {
        let e = self.by_id.remove(id)?;
        if let Some(OneWorker { worker, .. }) = &e.one {
            if let Some(ids) = self.by_worker.get_mut(worker) {
                ids.retain(|r| &**r != id);
                if ids.is_empty() {
                    self.by_worker.remove(worker);
                }
            }
        }
        Some(e)
    }

    fn insert(&mut self, id: &str, e: RpcSent, now: Instant) {
        // Expired ones first, then (when still full) the soonest to expire.
        while let Some(first) = self.by_deadline.first_entry() {
            let expired = first.key().0 <= now;
            if !expired && self.by_id.len() < self.max.max(1) {
                break;
            }
            let id = first.remove();
            self.forget(&id);
        }
        self.remove(id);
        if let Some(OneWorker { worker, .. }) = &e.one {
            self.by_worker
                .entry(*worker)
                .or_default()
                .push(Box::from(id));
        }
        self.by_deadline.insert((e.deadline, e.key), Box::from(id));
        self.by_id.insert(Box::from(id), e);
    }
}

pub(crate) struct HubConn {
    pub(crate) id: ConnId,
    pub(crate) sink: Arc<dyn Sink>,
    /// The connection's subscription set. A join changes it and the
    /// channel's list together under this lock (lock order: connection
    /// state, then a channel's list); a leave takes the channel out of the
    /// set first, then out of the list.
    pub(crate) state: Mutex<ConnState>,
    /// The sequence number of each of its subscriptions, by channel. A
    /// leaf lock (nothing is locked while it is held), so that an RPC
    /// answer may be checked from anywhere, a sink's `offer` included.
    seqs: Mutex<HashMap<Arc<str>, u64>>,
}

pub(crate) struct ConnState {
    /// Set once the connection is leaving: it joins nothing more.
    pub(crate) closed: bool,
    /// Channels this connection is subscribed to.
    pub(crate) subs: HashSet<Arc<str>>,
    /// Who the connection is, for presence (the hub's one anonymous entry
    /// until the session says otherwise).
    client: Arc<ClientInfo>,
}

/// One channel's local subscribers.
struct HubChannel {
    subs: Mutex<Subs>,
    /// The channel's `telemetry-enabled`, for signals about it.
    telemetry: bool,
    /// Its subscribers have presence entries: the channel's `presence` or
    /// `join-leave` is on (a broker across nodes needs them for the
    /// `leave` frames of a node that died).
    tracked: bool,
    /// The channel's `join-leave`.
    join_leave: bool,
    /// Where the next `rpc-dispatch = one` starts its round.
    next_worker: AtomicUsize,
    /// For `on-slow-consumer = latest`: this list's number, which tells its
    /// frames apart in a subscriber's queue ([`Sink::offer_latest`]); 0
    /// for `close`.
    latest: u64,
}

struct Subs {
    /// Fan-out list: one entry per subscriber, iterated on every publish.
    list: Vec<Subscriber>,
    /// Where each subscriber sits in `list`, for O(1) removal.
    index: HashMap<ConnId, usize>,
    /// Set when the last subscriber left and the entry left the map; an
    /// add that raced with that looks the channel up again.
    gone: bool,
}

struct Subscriber {
    conn: ConnId,
    sink: Arc<dyn Sink>,
}

/// What a fan-out did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Sinks that queued the frame.
    pub delivered: usize,
    /// Sinks that were full (their connections are closed as slow
    /// consumers).
    pub full: usize,
}

/// A connection added to a channel's local list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// Local subscribers after the add.
    pub local_count: usize,
    /// The channel had no local subscriber before: the node should now
    /// subscribe to it at its broker.
    pub first: bool,
}

/// A connection taken out of a channel's local list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    /// The channel has no local subscriber any more: the node may leave it
    /// at its broker.
    pub last: bool,
    /// The channel's `telemetry-enabled`.
    pub telemetry: bool,
    /// The channel keeps presence entries (`presence` or `join-leave`):
    /// the broker forgets the connection's.
    pub presence: bool,
    /// The channel's `join-leave`: its subscribers get a `leave`.
    pub join_leave: bool,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.connection_count())
            .field("channels", &self.channels.len())
            .finish()
    }
}

impl Subs {
    fn remove(&mut self, conn: ConnId) -> bool {
        let Some(i) = self.index.remove(&conn) else {
            return false;
        };
        self.list.swap_remove(i);
        if let Some(moved) = self.list.get(i) {
            self.index.insert(moved.conn, i);
        }
        true
    }
}

impl Hub {
    /// An empty hub admitting at most `max_connections` connections, and
    /// remembering who was sent an RPC request for the default
    /// `max-pending-rpc` requests at once.
    pub fn new(max_connections: usize) -> Hub {
        Hub::with_rpc_limit(
            max_connections,
            crate::EngineConfig::default().max_pending_rpc,
        )
    }

    /// An empty hub admitting at most `max_connections` connections, and
    /// remembering who was sent an RPC request for at most `max_rpc`
    /// requests at once (those nearest their deadline are forgotten first).
    pub fn with_rpc_limit(max_connections: usize, max_rpc: usize) -> Hub {
        Hub {
            conns: RwLock::new(Slab::new()),
            next_generation: AtomicU64::new(1),
            max_connections,
            channels: ShardedMap::new(),
            total_subscriptions: AtomicUsize::new(0),
            next_sub_seq: AtomicU64::new(1),
            rpc_sent: Mutex::new(RpcSentTable {
                max: max_rpc,
                ..RpcSentTable::default()
            }),
            anonymous: Arc::new(ClientInfo::default()),
        }
    }

    // ----- connections ---------------------------------------------------

    /// Registers a connection. When `greeting` is given, the frame it builds
    /// from the new id is offered before the connection is visible to any
    /// broadcast (under the registry's write lock).
    pub(crate) fn connect(
        &self,
        sink: Arc<dyn Sink>,
        greeting: Option<&dyn Fn(ConnId) -> Frame>,
    ) -> Result<ConnId, EngineError> {
        let mut conns = self.conns.write();
        let max = self.max_connections;
        if conns.len() >= max {
            return Err(EngineError::MaxConnectionsReached(max));
        }
        let entry = conns.vacant_entry();
        let Ok(slot) = u32::try_from(entry.key()) else {
            return Err(EngineError::MaxConnectionsReached(max));
        };
        let id = ConnId {
            slot,
            generation: self.next_generation.fetch_add(1, Relaxed),
        };
        if let Some(greet) = greeting {
            sink.offer_one(&greet(id));
        }
        entry.insert(Arc::new(HubConn {
            id,
            sink,
            state: Mutex::new(ConnState {
                closed: false,
                subs: HashSet::new(),
                client: Arc::clone(&self.anonymous),
            }),
            seqs: Mutex::new(HashMap::new()),
        }));
        Ok(id)
    }

    /// Sets who a connection is, for presence (its user id and token
    /// `info`). Channels it joins from now on show it so.
    pub fn set_client(&self, conn: ConnId, client: ClientInfo) {
        if let Some(c) = self.conn(conn) {
            c.state.lock().client = Arc::new(client);
        }
    }

    /// Who a connection is (anonymous until [`Hub::set_client`]).
    pub fn client(&self, conn: ConnId) -> Option<Arc<ClientInfo>> {
        // Not under a channel list's lock (the state lock comes first).
        self.conn(conn).map(|c| Arc::clone(&c.state.lock().client))
    }

    /// The presence entries of a channel's local subscribers, when it
    /// keeps them (its `presence` or `join-leave` is on; `None` otherwise
    /// or when it has no local subscriber).
    pub fn presence(&self, channel: &str) -> Option<Vec<(ConnId, Arc<ClientInfo>)>> {
        let entry = self.channels.get(channel)?;
        if !entry.tracked {
            return None;
        }
        let ids: Vec<ConnId> = entry.subs.lock().list.iter().map(|s| s.conn).collect();
        Some(
            ids.into_iter()
                .filter_map(|id| Some((id, self.client(id)?)))
                .collect(),
        )
    }

    /// Channels of this node with local subscribers and presence entries.
    pub fn presence_channels(&self) -> Vec<Arc<str>> {
        self.channels
            .entries()
            .into_iter()
            .filter(|(_, e)| e.tracked)
            .map(|(id, _)| id)
            .collect()
    }

    /// Removes a connection from the registry and returns the channels it
    /// was subscribed to (the caller takes it out of each with
    /// [`Hub::leave`]). `None` for an unknown or stale id.
    pub(crate) fn disconnect(&self, conn: ConnId) -> Option<Vec<Arc<str>>> {
        let entry = {
            let mut conns = self.conns.write();
            match conns.get(conn.slot as usize) {
                Some(c) if c.id == conn => conns.remove(conn.slot as usize),
                _ => return None,
            }
        };
        let mut st = entry.state.lock();
        st.closed = true;
        Some(st.subs.drain().collect())
    }

    /// Connections registered now.
    pub fn connection_count(&self) -> usize {
        self.conns.read().len()
    }

    pub(crate) fn conn(&self, id: ConnId) -> Option<Arc<HubConn>> {
        match self.conns.read().get(id.slot as usize) {
            Some(c) if c.id == id => Some(Arc::clone(c)),
            _ => None,
        }
    }

    /// Whether `id` is a live connection of this hub.
    pub fn contains(&self, id: ConnId) -> bool {
        self.conn(id).is_some()
    }

    /// Offers a frame to one connection.
    pub fn send(&self, conn: ConnId, frame: &Frame) -> Result<Offer, EngineError> {
        let entry = self
            .conn(conn)
            .ok_or_else(|| EngineError::ConnectionNotFound(conn.to_string()))?;
        Ok(entry.sink.offer_one(frame))
    }

    /// Offers a frame to every connection; returns how many queued it, of
    /// how many.
    pub fn send_all(&self, frame: &Frame) -> (usize, usize) {
        let conns = self.conns.read();
        let queued = conns
            .iter()
            .filter(|(_, c)| c.sink.offer(frame) == Offer::Queued)
            .count();
        (queued, conns.len())
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

    // ----- channel lists -------------------------------------------------

    /// Adds `conn` to the channel's local list unless it is there; `max`
    /// bounds the list. The caller holds the connection's state lock and
    /// records the channel in its set.
    pub(crate) fn add(
        &self,
        conn: &HubConn,
        channel: &str,
        config: &ChannelConfig,
    ) -> Result<Option<Joined>, EngineError> {
        let max = config.max_subscribers;
        loop {
            // Usually the channel has local subscribers already: a shared
            // lock of its shard finds it; only a first subscriber writes.
            let entry = match self.channels.get(channel) {
                Some(e) => e,
                None => self.insert_list(channel, config)?,
            };
            let mut subs = entry.subs.lock();
            if subs.gone {
                continue;
            }
            if subs.index.contains_key(&conn.id) {
                return Ok(None);
            }
            if subs.list.len() >= max {
                return Err(EngineError::MaxSubscribersReached {
                    channel: crate::error::truncated(channel),
                    max,
                });
            }
            let at = subs.list.len();
            subs.list.push(Subscriber {
                conn: conn.id,
                sink: Arc::clone(&conn.sink),
            });
            let seq = self.next_sub_seq.fetch_add(1, Relaxed);
            conn.seqs.lock().insert(Arc::from(channel), seq);
            subs.index.insert(conn.id, at);
            self.total_subscriptions.fetch_add(1, Relaxed);
            return Ok(Some(Joined {
                local_count: subs.list.len(),
                first: at == 0,
            }));
        }
    }

    /// The channel's list, made empty when it has none.
    fn insert_list(
        &self,
        channel: &str,
        config: &ChannelConfig,
    ) -> Result<Arc<HubChannel>, EngineError> {
        let made = self
            .channels
            .insert_new(channel, usize::MAX, || HubChannel {
                subs: Mutex::new(Subs {
                    list: Vec::new(),
                    index: HashMap::new(),
                    gone: false,
                }),
                telemetry: config.telemetry_enabled,
                tracked: config.presence || config.join_leave,
                join_leave: config.join_leave,
                next_worker: AtomicUsize::new(0),
                latest: match config.on_slow_consumer {
                    SlowConsumerPolicy::Latest => NEXT_LIST.fetch_add(1, Relaxed),
                    SlowConsumerPolicy::Close => 0,
                },
            });
        match made {
            Ok(e) | Err(crate::map::InsertError::Exists(e)) => Ok(e),
            // The hub's map has no bound of its own (the broker's channels
            // bound it), so this is never taken.
            Err(crate::map::InsertError::Full) => Err(EngineError::MaxChannelsReached(usize::MAX)),
        }
    }

    /// Takes `conn` out of the channel's local list (the caller has taken
    /// the channel out of the connection's set). `None` when it was not
    /// there.
    pub(crate) fn leave(&self, conn: ConnId, channel: &str) -> Option<Left> {
        let entry = self.channels.get(channel)?;
        let mut subs = entry.subs.lock();
        if !subs.remove(conn) {
            return None;
        }
        if let Some(c) = self.conn(conn) {
            c.seqs.lock().remove(channel);
        }
        self.total_subscriptions.fetch_sub(1, Relaxed);
        let last = subs.list.is_empty();
        if last {
            subs.gone = true;
            self.channels
                .remove_if(channel, |e| std::ptr::eq(e, &*entry));
        }
        Some(Left {
            last,
            telemetry: entry.telemetry,
            presence: entry.tracked,
            join_leave: entry.join_leave,
        })
    }

    /// Empties the channel's local list (the channel was deleted) and takes
    /// the channel out of each evicted connection's set; returns how many
    /// were evicted. A broker calls it under its per-channel order (the
    /// stream lock, for `LocalBroker`) before a next incarnation of the
    /// channel can exist, so no subscriber of that one is evicted.
    pub fn evict(&self, channel: &str) -> usize {
        self.evict_ids(channel).0.len()
    }

    /// Evicts the channel's local subscribers: how many, and those still
    /// connected.
    fn evict_ids(&self, channel: &str) -> (Vec<ConnId>, Vec<Arc<HubConn>>) {
        let Some(entry) = self.channels.get(channel) else {
            return (Vec::new(), Vec::new());
        };
        let evicted: Vec<ConnId> = {
            let mut subs = entry.subs.lock();
            let out: Vec<ConnId> = subs.list.drain(..).map(|s| s.conn).collect();
            subs.index.clear();
            subs.gone = true;
            self.channels
                .remove_if(channel, |e| std::ptr::eq(e, &*entry));
            self.total_subscriptions.fetch_sub(out.len(), Relaxed);
            out
        };
        let live = evicted
            .iter()
            .filter_map(|conn| {
                let c = self.conn(*conn)?;
                c.state.lock().subs.remove(channel);
                c.seqs.lock().remove(channel);
                Some(c)
            })
            .collect();
        (evicted, live)
    }

    /// Like [`Hub::evict`], and asks each evicted connection to reconnect
    /// ([`Sink::reconnect`]): the broker cannot give them the channel's
    /// messages without a gap. Returns the evicted connections.
    pub fn evict_reconnect(&self, channel: &str) -> Vec<ConnId> {
        let (ids, evicted) = self.evict_ids(channel);
        for c in &evicted {
            c.sink.reconnect();
        }
        ids
    }

    /// Whether `conn` is subscribed to `channel` on this node.
    pub fn is_subscribed(&self, conn: ConnId, channel: &str) -> bool {
        self.conn(conn)
            .is_some_and(|c| c.state.lock().subs.contains(channel))
    }

    /// Offers `frame` to the channel's local subscribers but `exclude`.
    ///
    /// A fan-out to at most [`SMALL_FAN_OUT`] subscribers offers each its
    /// frame as its own ([`Sink::offer_one`]).
    /// A broker calls this under its own per-channel order (the stream lock,
    /// for `LocalBroker`), which is what gives every subscriber one order
    /// per channel.
    pub fn fan_out(&self, channel: &str, frame: &Frame, exclude: Option<ConnId>) -> FanOut {
        let Some(entry) = self.channels.get(channel) else {
            return FanOut::default();
        };
        fan_out_in(&entry, exclude, |sink, n| offer(sink, frame, n))
    }

    /// [`Hub::fan_out`] for a `channel-message`: on a channel whose
    /// `on-slow-consumer` is `latest`, each subscriber is offered it with
    /// [`Sink::offer_latest`] (a full queue conflates instead of closing).
    /// Brokers deliver published messages through this, and only them.
    pub fn fan_out_message(&self, channel: &str, frame: &Frame, exclude: Option<ConnId>) -> FanOut {
        let Some(entry) = self.channels.get(channel) else {
            return FanOut::default();
        };
        match entry.latest {
            0 => fan_out_in(&entry, exclude, |sink, n| offer(sink, frame, n)),
            latest => fan_out_in(&entry, exclude, |sink, _| sink.offer_latest(frame, latest)),
        }
    }

    /// Like [`Hub::fan_out`], returning the ids of those that queued it and
    /// how many were full.
    pub fn fan_out_ids(
        &self,
        channel: &str,
        frame: &Frame,
        exclude: Option<ConnId>,
    ) -> (Vec<ConnId>, usize) {
        let Some(entry) = self.channels.get(channel) else {
            return (Vec::new(), 0);
        };
        let subs = entry.subs.lock();
        let mut ids = Vec::new();
        let mut full = 0;
        for s in &subs.list {
            if Some(s.conn) == exclude {
                continue;
            }
            match offer(&s.sink, frame, subs.list.len()) {
                Offer::Queued => ids.push(s.conn),
                Offer::Full => full += 1,
                Offer::Closed => {}
            }
        }
        (ids, full)
    }

    /// Like [`Hub::fan_out_ids`] for an `rpc-request`: also remembers,
    /// until `timeout` passes, who it was sent to (under the channel's
    /// lock, as a watermark of subscription numbers: nothing per
    /// recipient), so that [`Hub::may_answer`] lets only them answer it.
    /// `ids` asks for the recipients' ids.
    pub fn fan_out_rpc(
        &self,
        channel: &str,
        frame: &Frame,
        exclude: Option<ConnId>,
        request_id: &str,
        timeout: Duration,
        ids: bool,
    ) -> (Vec<ConnId>, FanOut) {
        let Some(entry) = self.channels.get(channel) else {
            return (Vec::new(), FanOut::default());
        };
        let mut out = FanOut::default();
        let mut queued = Vec::new();
        let now = Instant::now();
        {
            let subs = entry.subs.lock();
            // Every subscription in the list took its number before this
            // (under this lock); every later one takes a greater one.
            // Remembered before the first offer, so that a worker may
            // answer from inside it.
            let watermark = self.next_sub_seq.load(Relaxed);
            self.remember(request_id, channel, watermark, exclude, now + timeout, None);
            for s in &subs.list {
                if Some(s.conn) == exclude {
                    continue;
                }
                match offer(&s.sink, frame, subs.list.len()) {
                    Offer::Queued => {
                        out.delivered += 1;
                        if ids {
                            queued.push(s.conn);
                        }
                    }
                    Offer::Full => out.full += 1,
                    Offer::Closed => {}
                }
            }
        }
        if out.delivered == 0 {
            self.rpc_sent.lock().remove(request_id);
        }
        (queued, out)
    }

    /// Records who an RPC request was sent to (see [`RpcSent`]), until
    /// `deadline`.
    fn remember(
        &self,
        request_id: &str,
        channel: &str,
        watermark: u64,
        exclude: Option<ConnId>,
        deadline: Instant,
        one: Option<OneWorker>,
    ) {
        let mut t = self.rpc_sent.lock();
        t.next += 1;
        let key = t.next;
        let entry = RpcSent {
            channel: Arc::from(channel),
            watermark,
            exclude,
            deadline,
            key,
            one,
        };
        t.insert(request_id, entry, Instant::now());
    }

    /// Whether `conn` was sent the RPC request `request_id` by this node
    /// (and has not left the channel since): the only connections that may
    /// answer it.
    pub fn may_answer(&self, conn: ConnId, request_id: &str) -> bool {
        // Leaf locks only (the table, then the connection's numbers):
        // callable from inside a sink's offer.
        let (channel, watermark, only) = {
            let t = self.rpc_sent.lock();
            match t.by_id.get(request_id) {
                Some(e) if e.exclude != Some(conn) && e.deadline > Instant::now() => (
                    Arc::clone(&e.channel),
                    e.watermark,
                    e.one.as_ref().map(|o| o.worker),
                ),
                _ => return false,
            }
        };
        let Some(c) = self.conn(conn) else {
            return false;
        };
        let seq = c.seqs.lock().get(&channel).copied();
        match only {
            // Sent to one worker: that one, while it is subscribed.
            Some(worker) => worker == conn && seq.is_some(),
            None => seq.is_some_and(|seq| seq < watermark),
        }
    }

    /// Sends an `rpc-request` to one of the channel's local subscribers
    /// (`rpc-dispatch = one`): round robin from where the channel's last
    /// dispatch stopped, skipping `exclude` and those whose queue has no
    /// room for it. Remembers until `timeout` that only that worker may
    /// answer, and the request, for [`Hub::take_dispatched`]. The chosen
    /// worker, or `None` when none could take it.
    pub fn dispatch_one(
        &self,
        channel: &str,
        frame: &Frame,
        exclude: Option<ConnId>,
        requester: Option<&ConnAddr>,
        request_id: &str,
        timeout: Duration,
    ) -> Option<ConnId> {
        let entry = self.channels.get(channel)?;
        let now = Instant::now();
        let subs = entry.subs.lock();
        let n = subs.list.len();
        // Under the list's lock: the turn moves past whoever is chosen.
        let start = entry.next_worker.load(Relaxed);
        for i in 0..n {
            let at = (start + i) % n;
            let s = &subs.list[at];
            if Some(s.conn) == exclude || s.sink.free_bytes().is_some_and(|f| f < frame.len()) {
                continue;
            }
            // Remembered before the offer: the worker may answer from
            // inside it.
            let one = OneWorker {
                worker: s.conn,
                frame: frame.clone(),
                requester: requester.cloned(),
            };
            self.remember(request_id, channel, 0, exclude, now + timeout, Some(one));
            if s.sink.offer_one(frame) == Offer::Queued {
                entry.next_worker.store(at + 1, Relaxed);
                return Some(s.conn);
            }
            self.rpc_sent.lock().remove(request_id);
        }
        None
    }

    /// The requests dispatched to `worker` on `channel` (on any channel:
    /// `None`) that it has not answered (it is leaving): forgotten here,
    /// for the node to send each to another worker within its deadline.
    pub fn take_dispatched(&self, worker: ConnId, channel: Option<&str>) -> Vec<Dispatched> {
        let mut t = self.rpc_sent.lock();
        let ids: Vec<Box<str>> = t.by_worker.get(&worker).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for id in ids {
            let mine = t
                .by_id
                .get(&*id)
                .is_some_and(|e| channel.is_none_or(|c| &*e.channel == c));
            if mine {
                if let Some(RpcSent {
                    channel,
                    deadline,
                    one: Some(one),
                    ..
                }) = t.remove(&id)
                {
                    out.push(Dispatched {
                        channel,
                        request_id: id,
                        frame: one.frame,
                        exclude: one.requester,
                        deadline,
                    });
                }
            }
        }
        out
    }

    /// Forgets an RPC request that was answered: no one else on this node
    /// may answer it.
    pub fn rpc_answered(&self, request_id: &str) {
        self.rpc_sent.lock().remove(request_id);
    }

    /// RPC requests this node remembers the recipients of.
    pub fn rpc_sent_len(&self) -> usize {
        self.rpc_sent.lock().by_id.len()
    }

    /// Local subscribers of a channel.
    pub fn local_count(&self, channel: &str) -> usize {
        self.channels
            .get(channel)
            .map_or(0, |e| e.subs.lock().list.len())
    }

    /// Ids of the channel's local subscribers, in fan-out order.
    pub fn local_subscribers(&self, channel: &str) -> Vec<ConnId> {
        self.channels.get(channel).map_or_else(Vec::new, |e| {
            e.subs.lock().list.iter().map(|s| s.conn).collect()
        })
    }

    /// Local subscriptions across all channels.
    pub fn total_subscriptions(&self) -> usize {
        self.total_subscriptions.load(Relaxed)
    }
}
