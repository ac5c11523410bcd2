//! [`LocalBroker`]: the in-process broker of a single node.

use crate::broker::{
    local_conn, Broker, BrokerHealth, BrokerTotals, ChannelMeta, Create, JoinFn, JoinView,
    Publication, Published, Reply, Sent, StreamPosition,
};
use crate::config::EngineConfig;
use crate::conn::{ConnAddr, Frame, Offer};
use crate::error::truncated;
use crate::error::EngineError;
use crate::events::{self, ev};
use crate::frames;
use crate::history::{self, History};
use crate::hub::Hub;
use crate::map::{InsertError, ShardedMap};
use parking_lot::Mutex;
use sente_lite_protocol::{now_ms, ChannelConfig, ChannelMessage, Position};
use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;
use telemere_lite::Telemetry;

/// The broker of one process: channels in a sharded map, each with one lock
/// under which a publish takes its offset, fans out to the hub and is
/// retained. Every [`Reply`] it gives is ready at once.
pub struct LocalBroker {
    config: EngineConfig,
    channels: ShardedMap<Channel>,
    /// Channels' totals, added in when a channel is deleted.
    gone: Mutex<BrokerTotals>,
    /// Where message numbers come from: each thread takes a block at a time.
    next_message_block: AtomicU64,
    /// Tells this broker's blocks apart from other brokers' in a thread,
    /// and makes its message ids and epochs differ from other processes'.
    uid: u64,
    tag: String,
    next_epoch: AtomicU64,
    telemetry: Telemetry,
    /// Retained messages of every channel in the order they were retained
    /// (roughly: an ordering hint for `max-retained-bytes-total`, which
    /// drops the oldest first). Entries whose message is gone already are
    /// skipped, and compacted away when they outnumber the live ones.
    retained_order: Mutex<VecDeque<RetainedAt>>,
    /// Bytes of retained messages now, all channels.
    retained_bytes: AtomicUsize,
    /// Retained messages now, all channels.
    retained_count: AtomicUsize,
    /// Retained messages dropped early for the byte bounds.
    retained_evicted: AtomicU64,
    /// Channels removed for being idle.
    idle_removed: AtomicU64,
}

/// Where one retained message is: its channel and offset.
struct RetainedAt {
    channel: Weak<Channel>,
    offset: u64,
}

struct Channel {
    config: ChannelConfig,
    created_at: i64,
    /// Made by a subscribe or publish, not by `create_channel`: removed
    /// when idle for `idle-channel-ttl-ms`.
    auto: bool,
    /// Last publish or join (ms since the Unix epoch).
    last_active: AtomicI64,
    /// When a sweep first saw it with no subscriber (0: it had some).
    idle_since: AtomicI64,
    /// The offset of its oldest retained message (greater than any when it
    /// retains none; `u64::MAX` once deleted), readable without the lock.
    retained_from: AtomicU64,
    stream: Mutex<Stream>,
}

struct Stream {
    offset: u64,
    epoch: Arc<str>,
    /// The last `message-retention` messages, oldest first, within
    /// `max-retained-bytes`.
    retained: VecDeque<ChannelMessage>,
    /// Their bytes (as [`retained_size`] counts them).
    retained_bytes: usize,
    message_count: u64,
    deliveries: u64,
    deliveries_full: u64,
    /// Set under the lock when the channel is deleted, so a join or
    /// publish that raced with the delete looks the channel up again.
    deleted: bool,
    /// Deleted by the idle sweep (not by the API): a publish that raced
    /// with it goes to the channel made again.
    idle: bool,
}

impl fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBroker")
            .field("channels", &self.channels.len())
            .finish()
    }
}

/// The bytes a retained message is counted as: its data, its ids, and
/// the frame's fixed fields.
fn retained_size(m: &ChannelMessage) -> usize {
    m.data.len()
        + m.channel_id.len()
        + m.message_id.len()
        + m.sender_conn_id.as_ref().map_or(0, String::len)
        + m.epoch.len()
        + 128
}

impl Stream {
    /// Drops the oldest retained message; its bytes.
    fn pop_oldest(&mut self, ch: &Channel) -> Option<usize> {
        let m = self.retained.pop_front()?;
        let n = retained_size(&m);
        self.retained_bytes -= n;
        let from = self.retained.front().map_or(self.offset + 1, |m| m.offset);
        ch.retained_from.store(from, Relaxed);
        Some(n)
    }
}

/// Brokers ever created in this process.
static NEXT_BROKER: AtomicU64 = AtomicU64::new(1);

/// Message numbers are taken a block at a time per thread, so parallel
/// publishers do not share one atomic.
const ID_BLOCK: u64 = 1024;

thread_local! {
    /// (broker uid, next number, end of block)
    static ID_BLOCK_OF_THREAD: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
}

impl LocalBroker {
    /// A broker for channels configured by `config` (auto-create,
    /// `max-channels`, the default channel config); channel lifecycle
    /// signals go to `telemetry`.
    pub fn new(config: EngineConfig, telemetry: Telemetry) -> LocalBroker {
        let random = RandomState::new().hash_one(NEXT_BROKER.load(Relaxed));
        LocalBroker {
            config,
            channels: ShardedMap::new(),
            gone: Mutex::new(BrokerTotals::default()),
            next_message_block: AtomicU64::new(0),
            uid: NEXT_BROKER.fetch_add(1, Relaxed),
            tag: format!("{:08x}", random & 0xffff_ffff),
            next_epoch: AtomicU64::new(random >> 32),
            telemetry,
            retained_order: Mutex::new(VecDeque::new()),
            retained_bytes: AtomicUsize::new(0),
            retained_count: AtomicUsize::new(0),
            retained_evicted: AtomicU64::new(0),
            idle_removed: AtomicU64::new(0),
        }
    }

    /// Counts messages and bytes that left a channel's retained history.
    fn forget_retained(&self, count: usize, bytes: usize) {
        self.retained_count.fetch_sub(count, Relaxed);
        self.retained_bytes.fetch_sub(bytes, Relaxed);
    }

    /// Drops the oldest retained messages, whichever channel they are of,
    /// until all channels together keep at most `max-retained-bytes-total`.
    /// Called with no stream lock held (it takes them one at a time).
    fn enforce_total(&self) {
        let max = self.config.max_retained_bytes_total;
        while self.retained_bytes.load(Relaxed) > max {
            let Some(at) = self.retained_order.lock().pop_front() else {
                return;
            };
            let Some(ch) = at.channel.upgrade() else {
                continue;
            };
            let mut st = ch.stream.lock();
            if st.deleted {
                continue;
            }
            let (mut count, mut bytes) = (0, 0);
            while st.retained.front().is_some_and(|m| m.offset <= at.offset) {
                match st.pop_oldest(&ch) {
                    Some(n) => {
                        count += 1;
                        bytes += n;
                    }
                    None => break,
                }
            }
            drop(st);
            self.forget_retained(count, bytes);
            self.retained_evicted.fetch_add(count as u64, Relaxed);
        }
    }

    /// Notes a message retained now, compacting the order when most of its
    /// entries are of messages gone already (so it stays proportional to
    /// what is retained).
    fn note_retained(&self, ch: &Arc<Channel>, offset: u64) {
        let mut order = self.retained_order.lock();
        order.push_back(RetainedAt {
            channel: Arc::downgrade(ch),
            offset,
        });
        let live = self.retained_count.load(Relaxed);
        if order.len() > 2 * live + 1024 {
            order.retain(|at| {
                at.channel
                    .upgrade()
                    .is_some_and(|c| at.offset >= c.retained_from.load(Relaxed))
            });
        }
    }

    /// Removes an idle auto-created channel if it is still idle under its
    /// stream lock (a join adds its subscriber under that lock, so none
    /// can be joining). True if removed.
    fn remove_idle(&self, id: &str, ch: &Arc<Channel>, hub: &Hub) -> bool {
        let mut st = ch.stream.lock();
        if st.deleted || hub.local_count(id) > 0 {
            return false;
        }
        st.deleted = true;
        st.idle = true;
        self.channels.remove_if(id, |c| std::ptr::eq(c, &**ch));
        ch.retained_from.store(u64::MAX, Relaxed);
        let (count, bytes) = (st.retained.len(), st.retained_bytes);
        st.retained.clear();
        st.retained_bytes = 0;
        let mut gone = self.gone.lock();
        gone.published += st.message_count;
        gone.deliveries += st.deliveries;
        gone.deliveries_full += st.deliveries_full;
        drop(gone);
        drop(st);
        self.forget_retained(count, bytes);
        self.idle_removed.fetch_add(1, Relaxed);
        ev!(
            &self.telemetry,
            ch.config.telemetry_enabled,
            Info,
            events::CHANNEL_DELETED,
            serde_json::json!({"channel-id": id, "unsubscribed": 0, "cause": "idle"})
        );
        true
    }

    fn sweep_now(&self, ttl: Duration, hub: &Hub) -> usize {
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let mut removed = 0;
        for (id, ch) in self.channels.entries() {
            if !ch.auto {
                continue;
            }
            if hub.local_count(&id) > 0 {
                ch.idle_since.store(0, Relaxed);
                continue;
            }
            let since = match ch.idle_since.load(Relaxed) {
                0 => {
                    ch.idle_since.store(now, Relaxed);
                    now
                }
                t => t,
            };
            let active = since.max(ch.last_active.load(Relaxed));
            if now.saturating_sub(active) >= ttl && self.remove_idle(&id, &ch, hub) {
                removed += 1;
            }
        }
        removed
    }

    fn new_epoch(&self) -> Arc<str> {
        let n = self.next_epoch.fetch_add(1, Relaxed);
        let mixed = RandomState::new().hash_one(n) & 0xffff_ffff;
        Arc::from(format!("{mixed:08x}"))
    }

    fn message_number(&self) -> u64 {
        let uid = self.uid;
        ID_BLOCK_OF_THREAD.with(|b| {
            let (owner, next, end) = b.get();
            if owner == uid && next < end {
                b.set((owner, next + 1, end));
                return next;
            }
            let start = self.next_message_block.fetch_add(ID_BLOCK, Relaxed) + 1;
            b.set((uid, start + 1, start + ID_BLOCK));
            start
        })
    }

    fn insert(
        &self,
        id: &str,
        config: ChannelConfig,
        must_be_new: bool,
    ) -> Result<Arc<Channel>, EngineError> {
        let max = self.config.max_channels;
        let made = self.channels.insert_new(id, max, || Channel {
            config,
            created_at: now_ms(),
            auto: !must_be_new,
            last_active: AtomicI64::new(now_ms()),
            idle_since: AtomicI64::new(0),
            retained_from: AtomicU64::new(1),
            stream: Mutex::new(Stream {
                offset: 0,
                epoch: self.new_epoch(),
                retained: VecDeque::new(),
                retained_bytes: 0,
                message_count: 0,
                deliveries: 0,
                deliveries_full: 0,
                deleted: false,
                idle: false,
            }),
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
            &self.telemetry,
            config.telemetry_enabled,
            Info,
            events::CHANNEL_CREATED,
            serde_json::json!({"channel-id": id, "config": config, "explicit": must_be_new})
        );
        Ok(ch)
    }

    fn lookup(&self, id: &str, create: Create) -> Result<Arc<Channel>, EngineError> {
        if let Some(ch) = self.channels.get(id) {
            return Ok(ch);
        }
        if create == Create::Never || !self.config.auto_creates(id) {
            return Err(EngineError::ChannelNotFound(truncated(id)));
        }
        self.insert(id, self.config.channel_defaults(id), false)
    }

    fn publish_now(
        &self,
        channel: &str,
        message: &Publication<'_>,
        hub: &Hub,
    ) -> Result<Published, EngineError> {
        // A publish that raced with the idle sweep's removal publishes to
        // the channel made again (nothing was deleted that it wanted).
        match self.publish_once(channel, message, hub)? {
            Some(p) => Ok(p),
            None => self
                .publish_once(channel, message, hub)?
                .ok_or_else(|| EngineError::ChannelNotFound(truncated(channel))),
        }
    }

    /// One publish attempt; `None` when the channel was removed as idle
    /// between its lookup and its lock.
    fn publish_once(
        &self,
        channel: &str,
        message: &Publication<'_>,
        hub: &Hub,
    ) -> Result<Option<Published>, EngineError> {
        // A publish that races with the channel's delete answers
        // channel-not-found (it does not create the channel again).
        {
            let ch = self.lookup(channel, Create::Auto)?;
            let tel = ch.config.telemetry_enabled;
            let sender = message.sender.map(|s| s.to_string());
            let message_id = self.message_id();
            let published_at = now_ms();
            let exclude = match message.sender {
                Some(s) if message.exclude_sender => local_conn(self.node(), s),
                _ => None,
            };
            let mut st = ch.stream.lock();
            if st.deleted && st.idle {
                return Ok(None);
            }
            if st.deleted {
                return Err(EngineError::ChannelNotFound(truncated(channel)));
            }
            let offset = st.offset + 1;
            let frame = Frame::new(frames::channel_message(&frames::ChannelMessageRef {
                channel_id: channel,
                message_id: &message_id,
                data: message.data,
                sender_conn_id: sender.as_deref(),
                published_at,
                offset,
                epoch: &st.epoch,
            }));
            ev!(
                &self.telemetry,
                tel,
                Trace,
                events::CHANNEL_BROADCAST_START,
                serde_json::json!({"channel-id": channel, "subscribers": hub.local_count(channel)})
            );
            let out = hub.fan_out_message(channel, &frame, exclude);
            st.offset = offset;
            st.message_count += 1;
            st.deliveries += out.delivered as u64;
            st.deliveries_full += out.full as u64;
            ch.last_active.store(published_at, Relaxed);
            let keep = ch.config.history_len();
            // (count, bytes) that left the history, and how many of them
            // for the byte bound rather than the count.
            let (mut dropped, mut dropped_bytes, mut evicted) = (0, 0, 0);
            let mut retained = false;
            // Messages past `history-ttl-ms` leave the history first (the
            // oldest are at the front: each one is looked at once; readers
            // still apply the exact rule, `history::first_live`).
            if ch.config.history_ttl_ms > 0 {
                let ttl = i64::try_from(ch.config.history_ttl_ms).unwrap_or(i64::MAX);
                let cutoff = published_at.saturating_sub(ttl);
                while st.retained.front().is_some_and(|m| m.published_at < cutoff) {
                    if let Some(n) = st.pop_oldest(&ch) {
                        dropped += 1;
                        dropped_bytes += n;
                    }
                }
            }
            if keep > 0 {
                let epoch = st.epoch.to_string();
                if st.retained.len() >= keep {
                    if let Some(n) = st.pop_oldest(&ch) {
                        dropped += 1;
                        dropped_bytes += n;
                    }
                }
                let m = ChannelMessage {
                    channel_id: channel.to_owned(),
                    message_id: message_id.clone(),
                    data: message.data.clone(),
                    sender_conn_id: sender,
                    published_at,
                    offset,
                    epoch,
                };
                let n = retained_size(&m);
                st.retained_bytes += n;
                st.retained.push_back(m);
                if st.retained.len() == 1 {
                    ch.retained_from.store(offset, Relaxed);
                }
                self.retained_bytes.fetch_add(n, Relaxed);
                self.retained_count.fetch_add(1, Relaxed);
                // The oldest go first; one message larger than the bound
                // is not retained at all.
                while st.retained_bytes > self.config.max_retained_bytes {
                    match st.pop_oldest(&ch) {
                        Some(n) => {
                            dropped += 1;
                            dropped_bytes += n;
                            evicted += 1;
                        }
                        None => break,
                    }
                }
                retained = st.retained.back().is_some_and(|m| m.offset == offset);
            }
            let epoch = Arc::clone(&st.epoch);
            drop(st);
            if dropped > 0 {
                self.forget_retained(dropped, dropped_bytes);
                self.retained_evicted.fetch_add(evicted, Relaxed);
            }
            if retained {
                self.note_retained(&ch, offset);
                self.enforce_total();
            }
            ev!(
                &self.telemetry,
                tel,
                Trace,
                events::CHANNEL_BROADCAST_COMPLETE,
                serde_json::json!({
                "channel-id": channel, "delivered-to": out.delivered, "full": out.full})
            );
            Ok(Some(Published {
                message_id,
                position: StreamPosition { offset, epoch },
                delivered_to: out.delivered,
                full: out.full,
            }))
        }
    }

    fn join_now(
        &self,
        channel: &str,
        create: Create,
        recover: Option<&Position>,
        join: &mut JoinFn<'_>,
    ) -> Result<(), EngineError> {
        for _ in 0..2 {
            let ch = self.lookup(channel, create)?;
            let st = ch.stream.lock();
            if st.deleted {
                continue;
            }
            let now = now_ms();
            ch.last_active.store(now, Relaxed);
            let position = StreamPosition {
                offset: st.offset,
                epoch: Arc::clone(&st.epoch),
            };
            let recovery = recover.map(|want| {
                let max = self.config.max_recovery_messages;
                history::recover(&position, want, max, &st.retained, &ch.config, now)
            });
            // Under the stream lock: no publish comes between the view and
            // the join.
            return join(JoinView {
                config: &ch.config,
                retained: &history::Held {
                    messages: &st.retained,
                    config: &ch.config,
                    now,
                },
                position,
                remote_subscribers: 0,
                recovery,
            })
            .map(|_| ());
        }
        Err(EngineError::ChannelNotFound(truncated(channel)))
    }

    fn meta(id: &str, ch: &Channel, hub: &Hub) -> ChannelMeta {
        let st = ch.stream.lock();
        ChannelMeta {
            config: ch.config,
            created_at: ch.created_at,
            message_count: st.message_count,
            subscriber_count: hub.local_count(id),
            position: StreamPosition {
                offset: st.offset,
                epoch: Arc::clone(&st.epoch),
            },
        }
    }

    fn delete_now(&self, id: &str, hub: &Hub) -> Result<usize, EngineError> {
        let ch = self
            .channels
            .get(id)
            .ok_or_else(|| EngineError::ChannelNotFound(truncated(id)))?;
        let evicted = {
            let mut st = ch.stream.lock();
            if st.deleted {
                return Err(EngineError::ChannelNotFound(truncated(id)));
            }
            st.deleted = true;
            ch.retained_from.store(u64::MAX, Relaxed);
            self.forget_retained(st.retained.len(), st.retained_bytes);
            st.retained.clear();
            st.retained_bytes = 0;
            // Under the stream lock and before the channel leaves the map:
            // no next incarnation of the channel can exist yet, so every
            // subscriber evicted here was this one's, and one that joins
            // from now on waits for the lock, finds it deleted, and joins
            // the next incarnation's new list.
            let evicted = hub.evict(id);
            self.channels.remove_if(id, |c| std::ptr::eq(c, &*ch));
            // Its running totals outlive it.
            let mut gone = self.gone.lock();
            gone.published += st.message_count;
            gone.deliveries += st.deliveries;
            gone.deliveries_full += st.deliveries_full;
            evicted
        };
        ev!(
            &self.telemetry,
            ch.config.telemetry_enabled,
            Info,
            events::CHANNEL_DELETED,
            serde_json::json!({"channel-id": id, "unsubscribed": evicted})
        );
        Ok(evicted)
    }
}

impl Broker for LocalBroker {
    fn node(&self) -> Option<&Arc<str>> {
        None
    }

    fn message_id(&self) -> String {
        format!("msg-{}-{}", self.tag, self.message_number())
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        message: Publication<'a>,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Published, EngineError>> {
        Reply::ready(self.publish_now(channel, &message, hub))
    }

    fn join<'a>(
        &'a self,
        channel: &'a str,
        create: Create,
        recover: Option<&'a Position>,
        join: &'a mut JoinFn<'_>,
    ) -> Reply<'a, Result<(), EngineError>> {
        Reply::ready(self.join_now(channel, create, recover, join))
    }

    fn tracks_node_subscriptions(&self) -> bool {
        false
    }

    fn subscribe<'a>(&'a self, _channel: &'a str) -> Reply<'a, Result<(), EngineError>> {
        // One process: the hub is the only subscriber there is.
        Reply::ready(Ok(()))
    }

    fn unsubscribe<'a>(
        &'a self,
        _channel: &'a str,
        _hub: &'a Hub,
    ) -> Reply<'a, Result<(), EngineError>> {
        Reply::ready(Ok(()))
    }

    fn send_to_channel<'a>(
        &'a self,
        channel: &'a str,
        frame: &'a Frame,
        exclude: Option<&'a ConnAddr>,
        ids: bool,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Sent, EngineError>> {
        let exclude = exclude.and_then(|e| local_conn(self.node(), e));
        let sent = if ids {
            let (ids, full) = hub.fan_out_ids(channel, frame, exclude);
            let ids: Vec<ConnAddr> = ids.into_iter().map(|c| ConnAddr::new(None, c)).collect();
            Sent {
                delivered: ids.len(),
                ids,
                full,
            }
        } else {
            let out = hub.fan_out(channel, frame, exclude);
            Sent {
                ids: Vec::new(),
                delivered: out.delivered,
                full: out.full,
            }
        };
        Reply::ready(Ok(sent))
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
        let exclude = exclude.and_then(|e| local_conn(self.node(), e));
        let (ids, out) = hub.fan_out_rpc(channel, frame, exclude, request_id, timeout, true);
        Reply::ready(Ok(Sent {
            ids: ids.into_iter().map(|c| ConnAddr::new(None, c)).collect(),
            delivered: out.delivered,
            full: out.full,
        }))
    }

    fn sweep_idle<'a>(&'a self, ttl: Duration, hub: &'a Hub) -> Reply<'a, usize> {
        Reply::ready(self.sweep_now(ttl, hub))
    }

    fn send_to_connection<'a>(
        &'a self,
        to: &'a ConnAddr,
        frame: &'a Frame,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Offer, EngineError>> {
        Reply::ready(match local_conn(self.node(), to) {
            Some(conn) => hub.send(conn, frame),
            None => Err(EngineError::ConnectionNotFound(truncated(&to.to_string()))),
        })
    }

    fn broadcast<'a>(&'a self, frame: &'a Frame, hub: &'a Hub) -> Reply<'a, (usize, usize)> {
        Reply::ready(hub.send_all(frame))
    }

    fn create_channel<'a>(
        &'a self,
        channel: &'a str,
        config: ChannelConfig,
    ) -> Reply<'a, Result<(), EngineError>> {
        Reply::ready(self.insert(channel, config, true).map(|_| ()))
    }

    fn delete_channel<'a>(
        &'a self,
        channel: &'a str,
        hub: &'a Hub,
    ) -> Reply<'a, Result<usize, EngineError>> {
        Reply::ready(self.delete_now(channel, hub))
    }

    fn channel<'a>(
        &'a self,
        channel: &'a str,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Option<ChannelMeta>, EngineError>> {
        Reply::ready(Ok(self
            .channels
            .get(channel)
            .map(|ch| LocalBroker::meta(channel, &ch, hub))))
    }

    fn channels<'a>(
        &'a self,
        hub: &'a Hub,
    ) -> Reply<'a, Result<Vec<(String, ChannelMeta)>, EngineError>> {
        Reply::ready(Ok(self
            .channels
            .entries()
            .into_iter()
            .map(|(id, ch)| {
                let meta = LocalBroker::meta(&id, &ch, hub);
                (id.to_string(), meta)
            })
            .collect()))
    }

    fn history<'a>(&'a self, channel: &'a str) -> Reply<'a, Result<History, EngineError>> {
        Reply::ready(
            self.channels
                .get(channel)
                .map(|ch| {
                    let st = ch.stream.lock();
                    History {
                        config: ch.config,
                        position: StreamPosition {
                            offset: st.offset,
                            epoch: Arc::clone(&st.epoch),
                        },
                        messages: st.retained.clone(),
                    }
                })
                .ok_or_else(|| EngineError::ChannelNotFound(truncated(channel))),
        )
    }

    fn channel_count(&self) -> usize {
        self.channels.len()
    }

    fn total_subscriptions(&self, hub: &Hub) -> usize {
        hub.total_subscriptions()
    }

    fn totals(&self) -> BrokerTotals {
        let mut t = *self.gone.lock();
        for (_, ch) in self.channels.entries() {
            let st = ch.stream.lock();
            t.published += st.message_count;
            t.deliveries += st.deliveries;
            t.deliveries_full += st.deliveries_full;
        }
        t.retained_bytes = self.retained_bytes.load(Relaxed);
        t.retained_evicted = self.retained_evicted.load(Relaxed);
        t.idle_removed = self.idle_removed.load(Relaxed);
        t
    }

    fn health(&self) -> BrokerHealth {
        BrokerHealth {
            kind: "local",
            healthy: true,
            state: "in-process",
            nodes: Vec::new(),
            error: None,
            counters: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;
    use sente_lite_protocol::Data;

    #[test]
    fn the_order_of_retained_messages_stays_proportional_to_what_is_retained() {
        let config = EngineConfig {
            default_channel: ChannelConfig {
                message_retention: 1,
                ..ChannelConfig::default()
            },
            ..EngineConfig::default()
        };
        let broker = LocalBroker::new(config, Telemetry::new());
        let hub = Hub::new(10);
        let data = Data::from_json("\"some bytes\"".to_owned()).unwrap();
        // Each publish replaces its channel's one retained message.
        for i in 0..20_000 {
            let message = Publication {
                data: &data,
                sender: None,
                exclude_sender: false,
            };
            broker
                .publish_now(&format!("c{}", i % 10), &message, &hub)
                .unwrap();
        }
        assert_eq!(broker.retained_count.load(Relaxed), 10);
        let order = broker.retained_order.lock().len();
        assert!(
            order <= 2 * 10 + 1024 + 1,
            "{order} entries for 10 messages"
        );
    }

    #[test]
    fn the_total_bound_drops_the_oldest_first_and_counts_bytes_exactly() {
        let config = EngineConfig {
            default_channel: ChannelConfig {
                message_retention: 1_000,
                ..ChannelConfig::default()
            },
            max_retained_bytes_total: 5_000,
            ..EngineConfig::default()
        };
        let broker = LocalBroker::new(config, Telemetry::new());
        let hub = Hub::new(10);
        let data = Data::from_json(format!("\"{}\"", "x".repeat(300))).unwrap();
        for i in 0..300 {
            let message = Publication {
                data: &data,
                sender: None,
                exclude_sender: false,
            };
            broker
                .publish_now(&format!("c{}", i % 7), &message, &hub)
                .unwrap();
        }
        let held: usize = broker
            .channels
            .entries()
            .iter()
            .map(|(_, ch)| ch.stream.lock().retained_bytes)
            .sum();
        assert_eq!(held, broker.retained_bytes.load(Relaxed));
        assert!(held <= 5_000);
        assert!(broker.retained_evicted.load(Relaxed) > 0);
    }
}
