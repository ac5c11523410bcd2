//! A connection's outbound side: the bounded queue of WebSocket frames the
//! engine offers to, the broadcast signals of the whole transport, and the
//! [`Registry`] of every sink with the bytes queued in all of them.
//!
//! The write path: the engine's fan-out queues a frame (its payload the
//! one `Bytes` every recipient shares, its header built per queue) and
//! hands a queue that was empty to its [writer](crate::writer), which
//! writes it straight to the socket; only what the socket does not take
//! is left for the connection's task. Every write, from a writer or from
//! the task, happens under the queue's lock, so the bytes on the wire are
//! the frames in the order they were offered, whole.

use crate::wire::{Out, Wire};
use crate::writer::Shard;
use futures::task::AtomicWaker;
use parking_lot::{Mutex, MutexGuard};
use sente_lite_channels::{Frame, Offer, Sink};
use sente_lite_protocol::Reason;
use slab::Slab;
use std::collections::{HashSet, VecDeque};
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// Every open connection's sink, and the bytes queued in all their
/// outbound queues together (`websocket.max-outbound-bytes-total`).
///
/// A frame counts from the moment it is queued until the write that
/// carries its last byte (a frame the socket of a client that does not
/// read never takes stays counted in its queue). The fast path is one
/// atomic add per frame queued and one atomic sub per write. Only a frame
/// that takes the total past the limit scans the sinks: the one with the
/// most queued is closed as a slow consumer (its queue emptied and its
/// bytes released at once, a frame partly written abandoned with the
/// stream), until the total is within the limit again.
pub(crate) struct Registry {
    sinks: Mutex<Slab<Arc<ConnSink>>>,
    /// Bytes in every queue; every byte added is subtracted exactly once.
    queued: AtomicUsize,
    limit: usize,
    /// One eviction at a time, so concurrent offers over the limit close
    /// one connection each time the total needs it, not one each.
    evicting: Mutex<()>,
    /// Connections closed because the total passed the limit.
    pub(crate) closed_over_total: AtomicU64,
    /// Waiting messages of `latest` channels replaced by newer ones.
    pub(crate) conflated: AtomicU64,
    /// One writer's list per core; plain-TCP connections are dealt out
    /// round robin.
    shards: Vec<Arc<Shard>>,
    next_shard: AtomicUsize,
}

impl Registry {
    pub(crate) fn new(limit: usize) -> Arc<Registry> {
        Arc::new(Registry {
            sinks: Mutex::new(Slab::new()),
            queued: AtomicUsize::new(0),
            limit,
            evicting: Mutex::new(()),
            closed_over_total: AtomicU64::new(0),
            conflated: AtomicU64::new(0),
            shards: (0..writers()).map(|_| Arc::new(Shard::new())).collect(),
            next_shard: AtomicUsize::new(0),
        })
    }

    /// The writers' lists, one per writer task to run.
    pub(crate) fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    fn pick_shard(&self) -> Option<Arc<Shard>> {
        let i = self.next_shard.fetch_add(1, Relaxed);
        self.shards.get(i % self.shards.len().max(1)).cloned()
    }

    /// The sinks themselves.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Slab<Arc<ConnSink>>> {
        self.sinks.lock()
    }

    /// Bytes queued in all outbound queues now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }

    /// The most bytes all outbound queues may hold together.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Adds `n`; true when the total is now past the limit.
    fn add(&self, n: usize) -> bool {
        self.queued.fetch_add(n, Relaxed).saturating_add(n) > self.limit
    }

    fn sub(&self, n: usize) {
        if n > 0 {
            self.queued.fetch_sub(n, Relaxed);
        }
    }

    /// Closes the connections with the most queued, largest first, until
    /// the total is within the limit. Called without any queue's lock held
    /// (it takes the registry's, then each queue's, as the heartbeat does).
    fn evict(&self) {
        let _one = self.evicting.lock();
        while self.queued() > self.limit {
            let victim = {
                let sinks = self.sinks.lock();
                sinks
                    .iter()
                    .filter_map(|(_, s)| s.held_bytes().map(|bytes| (bytes, s)))
                    .filter(|(bytes, _)| *bytes > 0)
                    .max_by_key(|(bytes, _)| *bytes)
                    .map(|(_, s)| Arc::clone(s))
            };
            let Some(victim) = victim else { break };
            if victim.evict() {
                self.closed_over_total.fetch_add(1, Relaxed);
            }
        }
    }
}

/// One writer per two cores the process may use (at least one, at most
/// 16): the kernel's TCP work of a write, and the tasks reading the
/// clients, need the other half. On 2 cores, one writer beat two at every
/// fan-out rate measured (docs/PERFORMANCE.md).
fn writers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 16))
}

/// The outbound side the engine offers frames to: a queue bounded in frames
/// and in bytes, written by its writer (plain TCP) or by the thread that
/// offers a frame of its own to it empty, and by the connection's task
/// when the socket did not take everything (and always for TLS). A frame that does not fit marks the
/// connection a slow consumer and wakes its task to close it: the
/// connection never stays open having silently missed a frame. One frame
/// larger than the byte bound is accepted into an empty queue (a channel
/// message of a publish of `max-message-bytes` is a little larger than the
/// publish), so the queue holds at most the bound or one frame.
///
/// The queue is a `VecDeque` under an uncontended lock plus an
/// `AtomicWaker`: a queue going from empty to non-empty is handed to its
/// writer (or, without one, wakes the task); nothing else wakes anyone,
/// and waiting allocates nothing. It starts with no
/// buffer and gives back a large one once drained, so an idle connection
/// holds little.
pub(crate) struct ConnSink {
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    /// This sink, for its writer's list.
    me: Weak<ConnSink>,
    /// The socket, for plain TCP: the connection's reader reads it, and
    /// frames are written to it under the queue's lock.
    tcp: Option<TcpStream>,
    /// The writer of its frames, for plain TCP; the task writes them
    /// otherwise.
    shard: Option<Arc<Shard>>,
    max_frames: usize,
    max_bytes: usize,
    registry: Arc<Registry>,
    /// This connection's share of `frames-sent` and `socket-writes`: counted
    /// here, on a cache line of its own connection, and summed for
    /// `/stats`, so the write path touches no counter shared by all
    /// connections.
    pub(crate) frames_sent: AtomicU64,
    pub(crate) socket_writes: AtomicU64,
}

struct Queue {
    /// Frames not yet (wholly) on the wire, oldest first.
    frames: VecDeque<Out>,
    /// Counted bytes of `frames` (their payloads).
    bytes: usize,
    /// Wire bytes of `frames[0]` already written.
    sent: usize,
    /// Frames may be written to the socket by other threads than the
    /// connection's task (its writer, an offering thread): plain TCP,
    /// while the connection accepts frames.
    direct: bool,
    /// In its writer's list.
    marked: bool,
    /// This sink's bytes are no longer in the registry's total (it was
    /// closed for the server-wide total).
    released: bool,
    /// A frame partly written was dropped: the stream cannot carry another
    /// frame, nothing more is written.
    torn: bool,
    overflowed: bool,
    /// The connection's task has stopped serving it: nothing more is
    /// accepted from the engine.
    closed: bool,
    stop: bool,
    beat: bool,
    /// The broker asked the client to come back (after the frames queued
    /// before).
    reconnect: bool,
    /// The session asked for a close with this code and reason (after the
    /// frames queued before).
    close_with: Option<(u16, Reason)>,
}

impl Queue {
    /// Whether `len` more bytes in one more frame pass the bounds (an empty
    /// queue takes any one frame).
    fn full_for(&self, len: usize, max_frames: usize, max_bytes: usize) -> bool {
        !self.frames.is_empty() && (self.frames.len() >= max_frames || self.bytes + len > max_bytes)
    }

    /// Takes out the waiting messages of `latest` channels that a newer
    /// message of the same channel follows in the queue (never the frame
    /// partly on the wire), and, when `channel` is not 0, every waiting
    /// message of that channel: what a full queue gives up before it closes
    /// anyone. Returns them, to be freed outside the lock; their bytes
    /// have left `bytes`.
    fn conflate(&mut self, channel: u64) -> VecDeque<Out> {
        let keep = usize::from(self.sent > 0);
        let mut newest: HashSet<u64> = HashSet::new();
        if channel != 0 {
            newest.insert(channel);
        }
        let mut gone = VecDeque::new();
        // From the newest back: the first of each channel stays.
        let mut i = self.frames.len();
        while i > keep {
            i -= 1;
            let Some(latest) = self.frames.get(i).and_then(Out::latest_channel) else {
                continue;
            };
            if !newest.insert(latest) {
                if let Some(o) = self.frames.remove(i) {
                    self.bytes -= o.counted();
                    gone.push_front(o);
                }
            }
        }
        gone
    }

    /// A drained queue gives back a large buffer a burst left behind.
    fn shrink_if_drained(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > KEEP_SLOTS {
            self.frames.shrink_to(KEEP_SLOTS);
        }
    }

    /// Empties the queue but a frame partly on the wire (which is finished
    /// first, so the close frame after it is read as one): the counted
    /// bytes dropped, and the frames, to be freed outside the lock.
    fn drop_unsent(&mut self) -> (usize, VecDeque<Out>) {
        let keep = if self.sent > 0 {
            self.frames.pop_front()
        } else {
            None
        };
        let dropped = std::mem::take(&mut self.frames);
        let mut bytes = std::mem::take(&mut self.bytes);
        if let Some(head) = keep {
            self.bytes = head.counted();
            bytes -= head.counted();
            self.frames.push_back(head);
        }
        (bytes, dropped)
    }
}

/// What the task finds when it looks at its queue, most urgent first.
pub(crate) enum Next {
    Overflowed,
    Stop,
    /// Frames are queued: the socket did not take them at once.
    Write,
    Beat,
    /// Close with 1012 `broker-reconnect`: every frame before it is out.
    Reconnect,
    /// Close with the session's code and reason: every frame before it is
    /// out.
    Close(u16, Reason),
}

/// What the transport tells every connection at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Heartbeat: ping the client, or close it if it has been silent.
    Beat,
    /// Shutdown: drain and close with 1001.
    Stop,
}

/// A drained queue keeps at most this many slots of its buffer.
const KEEP_SLOTS: usize = 16;
/// Most frames gathered into one write of the queue.
const MAX_BATCH_FRAMES: usize = 64;
/// Slices of one write: a header and a payload per frame.
const MAX_SLICES: usize = 2 * MAX_BATCH_FRAMES;
/// Most bytes gathered into one write of the queue.
const MAX_BATCH_BYTES: usize = 64 * 1024;

impl ConnSink {
    /// A sink for a connection; `tcp` is its socket when it is plain TCP
    /// (frames are then written by a writer, or by the offering thread).
    pub(crate) fn new(
        max_frames: usize,
        max_bytes: usize,
        registry: Arc<Registry>,
        tcp: Option<TcpStream>,
    ) -> Arc<ConnSink> {
        let shard = tcp.as_ref().and_then(|_| registry.pick_shard());
        let direct = tcp.is_some();
        Arc::new_cyclic(|me| ConnSink {
            me: me.clone(),
            tcp,
            shard,
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                sent: 0,
                direct,
                marked: false,
                released: false,
                torn: false,
                overflowed: false,
                closed: false,
                stop: false,
                beat: false,
                reconnect: false,
                close_with: None,
            }),
            waker: AtomicWaker::new(),
            max_frames: max_frames.max(1),
            max_bytes,
            registry,
            frames_sent: AtomicU64::new(0),
            socket_writes: AtomicU64::new(0),
        })
    }

    /// The socket, for plain TCP.
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        self.tcp.as_ref()
    }

    /// Raises a signal and wakes the task.
    pub(crate) fn signal(&self, signal: Signal) {
        {
            let mut q = self.queue.lock();
            match signal {
                Signal::Beat => q.beat = true,
                Signal::Stop => q.stop = true,
            }
        }
        self.waker.wake();
    }

    /// The most urgent thing waiting: an overflow, a stop, frames to write,
    /// a heartbeat.
    pub(crate) fn try_next(&self) -> Option<Next> {
        let mut q = self.queue.lock();
        if q.overflowed {
            return Some(Next::Overflowed);
        }
        if q.stop {
            return Some(Next::Stop);
        }
        if !q.frames.is_empty() {
            return Some(Next::Write);
        }
        if q.reconnect {
            return Some(Next::Reconnect);
        }
        if let Some((code, reason)) = q.close_with {
            return Some(Next::Close(code, reason));
        }
        if std::mem::take(&mut q.beat) {
            return Some(Next::Beat);
        }
        None
    }

    /// Refuses every later offer with [`Offer::Closed`]: the connection is
    /// closing. What is queued is still written by the task.
    pub(crate) fn close(&self) {
        let mut q = self.queue.lock();
        q.closed = true;
        q.direct = false;
    }

    /// Queues bytes the WebSocket protocol wrote (a pong, a ping, a close
    /// frame; always whole frames), after everything queued before. Bounded
    /// like the engine's frames: a client that pings and does not read is
    /// a slow consumer. Accepted while closing (the close frame comes
    /// last), refused once the stream is torn.
    pub(crate) fn push_raw(&self, bytes: &[u8]) -> io::Result<()> {
        let mut q = self.queue.lock();
        if q.torn {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let Some(conflated) = self.room_for(&mut q, bytes.len()) else {
            drop(q);
            self.overflow();
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        self.push(&mut q, Out::raw(bytes));
        drop(q);
        drop(conflated);
        Ok(())
    }

    /// Puts `out` at the end of the queue, counted, and has the queue
    /// written if it was empty.
    fn push(&self, q: &mut MutexGuard<'_, Queue>, out: Out) -> bool {
        let len = out.counted();
        let was_empty = q.frames.is_empty();
        q.frames.push_back(out);
        q.bytes += len;
        if was_empty {
            self.schedule(q);
        }
        // Added under the queue's lock: the task cannot write the frame
        // (and subtract it) before it is counted.
        !q.released && self.registry.add(len)
    }

    /// Has the queue written: by its writer when it has one and the socket
    /// is still its to write, by the task otherwise.
    fn schedule(&self, q: &mut Queue) {
        match (&self.shard, q.direct) {
            (Some(shard), true) => {
                if !std::mem::replace(&mut q.marked, true) {
                    if let Some(me) = self.me.upgrade() {
                        shard.mark(me);
                    }
                }
            }
            _ => self.waker.wake(),
        }
    }

    /// The writer's turn: one non-blocking write of what is queued (up to a
    /// batch). What the socket does not take is left to the task, woken to
    /// wait until the socket is writable.
    pub(crate) fn write_ready(&self, shard: &Shard) {
        let mut q = self.queue.lock();
        q.marked = false;
        if q.frames.is_empty() || q.torn {
            return;
        }
        let (Some(tcp), true) = (&self.tcp, q.direct) else {
            drop(q);
            self.waker.wake();
            return;
        };
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let (count, bytes) = gather(&q, &mut slices);
        // An error writes nothing: the task meets it again and ends.
        let written: usize = tcp.try_write_vectored(&slices[..count]).unwrap_or_default();
        if written == 0 {
            // Full, or failed: the task waits for the socket, or meets the
            // error and ends the connection.
            drop(q);
            self.waker.wake();
            return;
        }
        self.socket_writes.fetch_add(1, Relaxed);
        let done = self.consume(&mut q, written);
        if !q.frames.is_empty() {
            if written == bytes {
                // Only the batch's bound stopped it: its next turn.
                q.marked = true;
                if let Some(me) = self.me.upgrade() {
                    shard.mark(me);
                }
            } else {
                drop(q);
                self.waker.wake();
            }
        }
        drop(done);
    }

    /// Writes what is queued to `wire` until the queue is empty (then
    /// flushes `wire`) or the socket takes no more (`Pending`, the task
    /// woken when it is writable). Used by the connection's task, from the
    /// WebSocket stream's `poll_flush`.
    pub(crate) fn poll_drain(&self, cx: &mut Context<'_>, wire: &mut Wire) -> Poll<io::Result<()>> {
        loop {
            let mut q = self.queue.lock();
            if q.torn {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if q.frames.is_empty() {
                q.shrink_if_drained();
                drop(q);
                return wire.poll_flush(cx);
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let (count, _) = gather(&q, &mut slices);
            let written = match wire.poll_write_vectored(self.tcp.as_ref(), cx, &slices[..count]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
            };
            self.socket_writes.fetch_add(1, Relaxed);
            let done = self.consume(&mut q, written);
            drop(q);
            drop(done);
        }
    }

    /// `n` wire bytes of the queue were written: the frames wholly written
    /// leave it (returned, to be freed outside the lock) and the total.
    fn consume(&self, q: &mut Queue, mut n: usize) -> Vec<Out> {
        let mut done = Vec::new();
        let mut frames = 0u64;
        let mut bytes = 0usize;
        while let Some(head) = q.frames.front() {
            let left = head.wire_len() - q.sent;
            if n < left {
                q.sent += n;
                break;
            }
            n -= left;
            q.sent = 0;
            if let Some(out) = q.frames.pop_front() {
                bytes += out.counted();
                frames += u64::from(out.is_frame());
                done.push(out);
            }
        }
        q.bytes -= bytes;
        if !q.released {
            self.registry.sub(bytes);
        }
        if frames > 0 {
            self.frames_sent.fetch_add(frames, Relaxed);
        }
        done
    }

    /// Bytes this connection holds in the server-wide total; `None` once it
    /// was closed as a slow consumer.
    fn held_bytes(&self) -> Option<usize> {
        let q = self.queue.lock();
        (!q.overflowed).then_some(q.bytes)
    }

    /// Resolves once the connection was closed for the server-wide total,
    /// so a write stuck on a client that does not read is abandoned (and
    /// its buffer freed with the connection) at once. A connection whose
    /// own queue overflowed finishes its write first (up to
    /// `message-timeout`), so a client that reads again soon gets a clean
    /// close frame.
    pub(crate) fn evicted(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.queue.lock().released {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.queue.lock().released {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Its own queue overflowed: marks the connection a slow consumer,
    /// empties its queue but a frame partly written (nothing else in it
    /// will be written: a slow consumer is closed without a drain) and
    /// wakes its task to close it.
    fn overflow(&self) {
        let dropped = {
            let mut q = self.queue.lock();
            q.overflowed = true;
            q.closed = true;
            let (bytes, dropped) = q.drop_unsent();
            if !q.released {
                self.registry.sub(bytes);
            }
            q.direct = false;
            dropped
        };
        // Frames shared with other connections are freed outside the lock.
        drop(dropped);
        self.waker.wake();
    }

    /// Closed for the server-wide total: as [`overflow`](Self::overflow),
    /// and all its bytes leave the total at once, a frame partly written
    /// included (the task abandons it, and the stream with it). False if it
    /// already was a slow consumer.
    fn evict(&self) -> bool {
        let (first, dropped) = {
            let mut q = self.queue.lock();
            let first = !q.overflowed;
            q.overflowed = true;
            q.closed = true;
            q.torn |= q.sent > 0;
            q.sent = 0;
            let dropped = std::mem::take(&mut q.frames);
            let bytes = std::mem::take(&mut q.bytes);
            if !std::mem::replace(&mut q.released, true) {
                self.registry.sub(bytes);
            }
            q.direct = false;
            (first, dropped)
        };
        drop(dropped);
        self.waker.wake();
        first
    }

    /// Waits for [`try_next`](Self::try_next) to have something.
    pub(crate) fn next(&self) -> impl std::future::Future<Output = Next> + '_ {
        std::future::poll_fn(move |cx| {
            // Woken with work waiting (the common case): no registration.
            if let Some(next) = self.try_next() {
                return Poll::Ready(next);
            }
            // Register, then look again: an offer in between wakes us.
            self.waker.register(cx.waker());
            match self.try_next() {
                Some(next) => Poll::Ready(next),
                None => Poll::Pending,
            }
        })
    }
}

impl Sink for ConnSink {
    fn offer(&self, frame: &Frame) -> Offer {
        let mut q = self.queue.lock();
        if q.overflowed || q.closed {
            return Offer::Closed;
        }
        let body = frame.bytes();
        let len = body.len();
        // A frame larger than the whole queue still goes into an empty one.
        let Some(conflated) = self.room_for(&mut q, len) else {
            drop(q);
            self.overflow();
            return Offer::Full;
        };
        let over = self.push(&mut q, Out::text(body.clone()));
        drop(q);
        drop(conflated);
        self.after_push(over)
    }

    /// A message of a `latest` channel is never refused for the queue's
    /// bounds: when it does not fit, the channel's messages still waiting
    /// (not the one partly on the wire) leave the queue, and it goes in
    /// past the bounds if it still does not fit, so the queue holds at most
    /// its bounds plus one message per such channel. Other frames keep
    /// their order.
    fn offer_latest(&self, frame: &Frame, channel: u64) -> Offer {
        let mut q = self.queue.lock();
        if q.overflowed || q.closed {
            return Offer::Closed;
        }
        let body = frame.bytes();
        let mut replaced = VecDeque::new();
        if q.full_for(body.len(), self.max_frames, self.max_bytes) {
            replaced = self.conflate(&mut q, channel);
        }
        let over = self.push(&mut q, Out::latest(body.clone(), channel));
        drop(q);
        // Frames shared with other connections are freed outside the lock.
        drop(replaced);
        self.after_push(over)
    }

    /// A frame of its own, offered to an empty queue, is written at once
    /// from this thread: no task is woken for a reply or an RPC message.
    fn offer_one(&self, frame: &Frame) -> Offer {
        let mut q = self.queue.lock();
        if q.overflowed || q.closed {
            return Offer::Closed;
        }
        if !q.frames.is_empty() {
            drop(q);
            return self.offer(frame);
        }
        let (Some(tcp), true) = (&self.tcp, q.direct) else {
            drop(q);
            return self.offer(frame);
        };
        let out = Out::text(frame.bytes().clone());
        let [head, body] = out.parts(0);
        let slices = [IoSlice::new(head), IoSlice::new(body)];
        // An error writes nothing: the task meets it again and ends.
        let written: usize = tcp.try_write_vectored(&slices).unwrap_or_default();
        if written > 0 {
            self.socket_writes.fetch_add(1, Relaxed);
        }
        if written == out.wire_len() {
            self.frames_sent.fetch_add(1, Relaxed);
            return Offer::Queued;
        }
        // The rest goes to the writer like any queued frame (a frame
        // larger than the whole queue still goes into an empty one).
        let over = self.push(&mut q, out);
        q.sent = written;
        drop(q);
        self.after_push(over)
    }

    fn free_bytes(&self) -> Option<usize> {
        let q = self.queue.lock();
        if q.overflowed || q.closed || q.frames.len() >= self.max_frames {
            return Some(0);
        }
        Some(self.max_bytes.saturating_sub(q.bytes))
    }

    fn free_frames(&self) -> Option<usize> {
        let q = self.queue.lock();
        if q.overflowed || q.closed {
            return Some(0);
        }
        Some(self.max_frames.saturating_sub(q.frames.len()))
    }

    fn reconnect(&self) {
        {
            let mut q = self.queue.lock();
            q.reconnect = true;
            // Nothing after this point is for the client.
            q.closed = true;
            q.direct = false;
        }
        self.waker.wake();
    }

    fn close(&self, code: u16, reason: Reason) {
        {
            let mut q = self.queue.lock();
            if q.closed {
                return;
            }
            q.close_with = Some((code, reason));
            q.closed = true;
            q.direct = false;
        }
        self.waker.wake();
    }
}

/// The slices of the queue's first frames (from what is already written
/// of the first), up to a batch; how many slices, and how many bytes.
fn gather<'a>(q: &'a Queue, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> (usize, usize) {
    let mut count = 0;
    let mut bytes = 0;
    let mut skip = q.sent;
    for out in q.frames.iter().take(MAX_BATCH_FRAMES) {
        for part in out.parts(skip) {
            if !part.is_empty() {
                slices[count] = IoSlice::new(part);
                count += 1;
                bytes += part.len();
            }
        }
        skip = 0;
        if bytes >= MAX_BATCH_BYTES {
            break;
        }
    }
    (count, bytes)
}

impl ConnSink {
    /// Room for one more frame of `len` bytes: a full queue first gives up
    /// the `latest` messages a newer one of their channel follows (returned,
    /// to be freed outside the lock). `None` when there is still no room:
    /// the connection is a slow consumer.
    fn room_for(&self, q: &mut Queue, len: usize) -> Option<VecDeque<Out>> {
        if !q.full_for(len, self.max_frames, self.max_bytes) {
            return Some(VecDeque::new());
        }
        let conflated = self.conflate(q, 0);
        (!q.full_for(len, self.max_frames, self.max_bytes)).then_some(conflated)
    }

    /// A full queue's conflation ([`Queue::conflate`]), its bytes out of the
    /// server-wide total and counted in `transport.conflated`.
    fn conflate(&self, q: &mut Queue, channel: u64) -> VecDeque<Out> {
        let gone = q.conflate(channel);
        let bytes: usize = gone.iter().map(Out::counted).sum();
        if !q.released {
            self.registry.sub(bytes);
        }
        self.registry
            .conflated
            .fetch_add(gone.len() as u64, Relaxed);
        gone
    }

    /// After a frame was queued: past the server-wide total, closes the
    /// connections with the most queued (this one, perhaps).
    fn after_push(&self, over: bool) -> Offer {
        if over {
            self.registry.evict();
            // This connection may have been the one with the most queued.
            if self.queue.lock().overflowed {
                return Offer::Full;
            }
        }
        Offer::Queued
    }
}

impl Drop for ConnSink {
    fn drop(&mut self) {
        // What was never written leaves the server-wide total with it.
        let q = self.queue.get_mut();
        if !q.released {
            self.registry.sub(q.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(len: usize) -> Frame {
        Frame::new("x".repeat(len))
    }

    fn sink_with(
        registry: &Arc<Registry>,
        max_bytes: usize,
        tcp: Option<TcpStream>,
    ) -> Arc<ConnSink> {
        let s = ConnSink::new(1_000, max_bytes, Arc::clone(registry), tcp);
        registry.lock().insert(Arc::clone(&s));
        s
    }

    fn sink(registry: &Arc<Registry>, max_bytes: usize) -> Arc<ConnSink> {
        sink_with(registry, max_bytes, None)
    }

    /// A connected loopback pair: (server side, client side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server, _) = accepted.expect("accept");
        (server, client.expect("connect"))
    }

    /// Reads `n` text frames of the server's encoding from `client`.
    async fn read_frames(client: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        for _ in 0..n {
            let mut head = [0u8; 2];
            client.read_exact(&mut head).await.expect("header");
            assert_eq!(head[0], 0x81, "a final text frame");
            let len = match head[1] {
                126 => usize::from(client.read_u16().await.expect("length")),
                127 => usize::try_from(client.read_u64().await.expect("length")).expect("fits"),
                short => usize::from(short),
            };
            let mut payload = vec![0u8; len];
            client.read_exact(&mut payload).await.expect("payload");
            frames.push(payload);
        }
        frames
    }

    async fn drain(s: &ConnSink, wire: &mut Wire) -> io::Result<()> {
        std::future::poll_fn(|cx| s.poll_drain(cx, wire)).await
    }

    /// The queue's payloads, in order.
    fn queued(s: &ConnSink) -> Vec<String> {
        let q = s.queue.lock();
        q.frames
            .iter()
            .map(|o| String::from_utf8_lossy(o.parts(0)[1]).into_owned())
            .collect()
    }

    #[test]
    fn a_latest_channel_conflates_instead_of_closing_and_others_keep_their_order() {
        let r = Registry::new(usize::MAX);
        let s = sink(&r, 30);
        let f = |t: &str| Frame::new(t.to_owned());
        assert_eq!(s.offer(&f("b1________")), Offer::Queued);
        assert_eq!(s.offer_latest(&f("a1________"), 7), Offer::Queued);
        assert_eq!(s.offer_latest(&f("x1________"), 8), Offer::Queued);
        // Full (30 bytes): a2 replaces a1, nothing is closed.
        assert_eq!(s.offer_latest(&f("a2________"), 7), Offer::Queued);
        assert_eq!(queued(&s), ["b1________", "x1________", "a2________"]);
        // Full, and a3's channel has a2 waiting: a2 goes.
        assert_eq!(s.offer_latest(&f("a3________"), 7), Offer::Queued);
        assert_eq!(queued(&s), ["b1________", "x1________", "a3________"]);
        // A channel with nothing waiting goes in past the bound.
        assert_eq!(s.offer_latest(&f("y1________"), 9), Offer::Queued);
        assert_eq!(queued(&s).len(), 4);
        assert_eq!(r.conflated.load(Relaxed), 2);
        // Bytes are exact.
        assert_eq!(s.held_bytes(), Some(40));
        assert_eq!(r.queued(), 40);
        // A frame of a `close` channel still closes a full queue.
        assert_eq!(s.offer(&f("b2")), Offer::Full);
        assert!(matches!(s.try_next(), Some(Next::Overflowed)));
        assert_eq!(r.queued(), 0);
    }

    #[test]
    fn a_full_queue_gives_up_superseded_latest_messages_before_it_closes() {
        let r = Registry::new(usize::MAX);
        let s = sink(&r, 40);
        let f = |t: &str| Frame::new(t.to_owned());
        // Fill it with a channel's messages (each fits; none conflated).
        for i in 0..4 {
            assert_eq!(
                s.offer_latest(&f(&format!("a{i}________")), 7),
                Offer::Queued
            );
        }
        assert_eq!(queued(&s).len(), 4);
        // A reply does not fit: the three older `a` go, not the connection.
        assert_eq!(s.offer(&f("reply_____")), Offer::Queued);
        assert_eq!(queued(&s), ["a3________", "reply_____"]);
        assert_eq!(r.conflated.load(Relaxed), 3);
        assert_eq!((s.held_bytes(), r.queued()), (Some(20), 20));
        // Nothing left to give up: a frame that does not fit closes it.
        assert_eq!(s.offer(&f(&"x".repeat(25))), Offer::Full);
    }

    #[tokio::test]
    async fn conflation_never_touches_a_frame_partly_on_the_wire() {
        let (server, mut client) = pair().await;
        let r = Registry::new(usize::MAX);
        let s = sink_with(&r, 50_000, Some(server));
        // Offer a latest channel's frames to a client that does not read
        // until one stays partly written (bounded: socket buffers are a few
        // MiB at most); conflations happen on the way.
        let mut offered = Vec::new();
        while s.queue.lock().sent == 0 {
            assert!(offered.len() < 100_000, "the socket never filled");
            let f = Frame::new(format!("{:0>20000}", offered.len()));
            assert_eq!(s.offer_latest(&f, 3), Offer::Queued);
            offered.push(f.bytes().to_vec());
            writers_turn(&r);
        }
        let head = s
            .queue
            .lock()
            .frames
            .front()
            .map(|o| o.parts(0)[1].to_vec());
        for i in 0..5 {
            let f = Frame::new(format!("{:0>20000}", offered.len() + i));
            assert_eq!(s.offer_latest(&f, 3), Offer::Queued);
            offered.push(f.bytes().to_vec());
        }
        assert!(r.conflated.load(Relaxed) > 0);
        // The frame partly written is still first, and the stream whole:
        // the client reads whole frames, each one offered, in order, the
        // newest last.
        assert_eq!(
            s.queue
                .lock()
                .frames
                .front()
                .map(|o| o.parts(0)[1].to_vec()),
            head
        );
        let newest = offered.last().cloned().expect("offered");
        let mut wire = Wire::Tcp;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.last() != Some(&newest) {
                got.extend(read_frames(&mut client, 1).await);
            }
            got
        });
        drain(&s, &mut wire).await.expect("drained");
        let got = reader.await.expect("reader");
        let mut at = 0;
        for frame in &got {
            let i = offered[at..]
                .iter()
                .position(|o| o == frame)
                .expect("each frame one of those offered, in order");
            at += i + 1;
        }
        assert_eq!((r.queued(), s.held_bytes()), (0, Some(0)));
    }

    #[test]
    fn one_frame_larger_than_the_queue_fits_an_empty_queue_only() {
        let r = Registry::new(usize::MAX);
        let s = sink(&r, 100);
        assert_eq!(s.offer(&frame(150)), Offer::Queued);
        assert_eq!(s.held_bytes(), Some(150));
        // Not behind anything, though.
        assert_eq!(s.offer(&frame(1)), Offer::Full);
        assert!(matches!(s.try_next(), Some(Next::Overflowed)));
        // The slow consumer's queue is emptied at once.
        assert_eq!((s.held_bytes(), r.queued()), (None, 0));
        let t = sink(&r, 100);
        assert_eq!(t.offer(&frame(60)), Offer::Queued);
        assert_eq!(t.offer(&frame(40)), Offer::Queued);
        assert_eq!(t.offer(&frame(1)), Offer::Full);
    }

    /// One turn of every writer.
    fn writers_turn(r: &Registry) {
        let mut batch = Vec::new();
        for shard in r.shards() {
            if shard.take(&mut batch) {
                shard.write(&mut batch);
            }
        }
    }

    #[tokio::test]
    async fn a_queue_that_was_empty_goes_to_its_writer_not_its_task() {
        let (server, mut client) = pair().await;
        let r = Registry::new(usize::MAX);
        let s = sink_with(&r, 1_000, Some(server));
        let f = Frame::new(r#"{"type":"pong"}"#.to_owned());
        let waiting = tokio::spawn({
            let s = Arc::clone(&s);
            async move { s.next().await }
        });
        // The task runs until it waits (this test's runtime has one thread).
        tokio::task::yield_now().await;
        assert_eq!(s.offer(&f), Offer::Queued);
        assert_eq!(s.offer(&f), Offer::Queued);
        assert_eq!(r.queued(), 2 * f.len());
        writers_turn(&r);
        assert_eq!((r.queued(), s.held_bytes()), (0, Some(0)));
        assert_eq!(s.frames_sent.load(Relaxed), 2);
        assert_eq!(s.socket_writes.load(Relaxed), 1, "both frames in one write");
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the task was not woken");
        waiting.abort();
        assert_eq!(
            read_frames(&mut client, 2).await,
            [f.bytes().to_vec(), f.bytes().to_vec()]
        );
        // Once closing, nothing more is taken from the engine.
        s.close();
        assert_eq!(s.offer(&f), Offer::Closed);
    }

    #[tokio::test]
    async fn a_frame_of_its_own_is_written_at_once_but_never_ahead_of_the_queue() {
        let (server, mut client) = pair().await;
        let r = Registry::new(usize::MAX);
        let s = sink_with(&r, 1_000, Some(server));
        let reply = Frame::new(r#"{"type":"pong"}"#.to_owned());
        assert_eq!(s.offer_one(&reply), Offer::Queued);
        assert!(s.try_next().is_none(), "written, nothing queued");
        assert_eq!((r.queued(), s.frames_sent.load(Relaxed)), (0, 1));
        // Behind a queued frame, it waits its turn.
        let first = Frame::new("first".to_owned());
        assert_eq!(s.offer(&first), Offer::Queued);
        assert_eq!(s.offer_one(&reply), Offer::Queued);
        assert_eq!(r.queued(), first.len() + reply.len());
        writers_turn(&r);
        assert_eq!(r.queued(), 0);
        let got = read_frames(&mut client, 3).await;
        assert_eq!(
            got,
            [
                reply.bytes().to_vec(),
                first.bytes().to_vec(),
                reply.bytes().to_vec()
            ]
        );
    }

    #[tokio::test]
    async fn a_writer_turn_writes_one_batch_and_keeps_the_rest_for_its_next() {
        let (server, mut client) = pair().await;
        let r = Registry::new(usize::MAX);
        let s = sink_with(&r, usize::MAX, Some(server));
        let frames: Vec<Frame> = (0..MAX_BATCH_FRAMES + 6)
            .map(|i| Frame::new(format!("f{i}")))
            .collect();
        for f in &frames {
            assert_eq!(s.offer(f), Offer::Queued);
        }
        writers_turn(&r);
        assert_eq!(s.socket_writes.load(Relaxed), 1);
        assert_eq!(s.frames_sent.load(Relaxed), MAX_BATCH_FRAMES as u64);
        assert!(s.queue.lock().marked, "back on its writer's list");
        writers_turn(&r);
        assert_eq!(s.socket_writes.load(Relaxed), 2);
        assert_eq!((r.queued(), s.held_bytes()), (0, Some(0)));
        let want: Vec<Vec<u8>> = frames.iter().map(|f| f.bytes().to_vec()).collect();
        assert_eq!(read_frames(&mut client, frames.len()).await, want);
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_is_left_to_the_task_and_written_in_order() {
        let (server, mut client) = pair().await;
        let r = Registry::new(usize::MAX);
        let s = sink_with(&r, usize::MAX, Some(server));
        // Offer distinct frames until the socket's buffers are full and
        // some stay queued (bounded: socket buffers are a few MiB at most).
        let mut sent = Vec::new();
        while s.held_bytes() == Some(0) {
            assert!(sent.len() < 100_000, "the socket never filled");
            let f = Frame::new(format!("{:0>20000}", sent.len()));
            assert_eq!(s.offer(&f), Offer::Queued);
            sent.push(f.bytes().to_vec());
            writers_turn(&r);
        }
        for i in 0..10 {
            let f = Frame::new(format!("queued-{i}"));
            assert_eq!(s.offer(&f), Offer::Queued);
            sent.push(f.bytes().to_vec());
        }
        assert!(matches!(s.try_next(), Some(Next::Write)));
        assert!(r.queued() > 0);
        let mut wire = Wire::Tcp;
        let (drained, got) =
            tokio::join!(drain(&s, &mut wire), read_frames(&mut client, sent.len()));
        drained.expect("drained");
        assert!(got == sent, "every frame whole and in order");
        assert_eq!((r.queued(), s.held_bytes()), (0, Some(0)));
        assert_eq!(s.frames_sent.load(Relaxed), sent.len() as u64);
        assert!(s.try_next().is_none());
    }

    #[tokio::test]
    async fn the_total_is_exact_over_every_way_a_frame_leaves() {
        let r = Registry::new(usize::MAX);
        let mut wire = Wire::Tcp;
        // Written by the task.
        let (server, mut client) = pair().await;
        let s = sink_with(&r, 1_000, Some(server));
        for _ in 0..4 {
            assert_eq!(s.offer(&frame(10)), Offer::Queued);
        }
        assert_eq!(r.queued(), 40);
        drain(&s, &mut wire).await.expect("drained");
        assert_eq!(r.queued(), 0);
        assert_eq!(read_frames(&mut client, 4).await.len(), 4);
        // Dropped with the sink (one with no writer, whose list would
        // hold it until the writer's turn).
        r.lock().clear();
        drop(s);
        let s = sink(&r, 1_000);
        assert_eq!(s.offer(&frame(10)), Offer::Queued);
        assert_eq!(r.queued(), 10);
        r.lock().clear();
        drop(s);
        assert_eq!(r.queued(), 0, "a dropped sink takes its bytes along");
        // Closed for the total: its bytes leave at once, a frame partly
        // written too, never twice, and the stream is torn.
        let s = sink(&r, 1_000);
        assert_eq!(s.offer(&frame(10)), Offer::Queued);
        assert_eq!(s.offer(&frame(10)), Offer::Queued);
        s.queue.lock().sent = 3;
        assert!(s.evict());
        assert!(!s.evict());
        assert_eq!(r.queued(), 0);
        assert!(
            drain(&s, &mut wire).await.is_err(),
            "nothing after half a frame"
        );
        assert!(s.push_raw(&[0x88, 0]).is_err());
        r.lock().clear();
        drop(s);
        assert_eq!(r.queued(), 0);
        // Its own queue overflowed: all but the frame partly written
        // leaves at once; that one when it is written, and then the close
        // frame may follow it.
        let (server, mut client) = pair().await;
        let s = sink_with(&r, 25, Some(server));
        assert_eq!(s.offer(&frame(10)), Offer::Queued);
        s.queue.lock().sent = 1;
        assert_eq!(s.offer(&frame(10)), Offer::Queued);
        assert_eq!(s.offer(&frame(10)), Offer::Full);
        assert!(matches!(s.try_next(), Some(Next::Overflowed)));
        assert_eq!(r.queued(), 10);
        s.push_raw(&[0x88, 0]).expect("the close frame is taken");
        drain(&s, &mut wire).await.expect("drained");
        assert_eq!(r.queued(), 0);
        let mut rest = vec![0u8; 11 + 2];
        client.read_exact(&mut rest).await.expect("the rest");
        assert_eq!(
            &rest[11..],
            [0x88, 0],
            "the close frame after the whole frame"
        );
        r.lock().clear();
        drop(s);
        assert_eq!(r.queued(), 0);
    }

    #[test]
    fn a_client_that_pings_and_does_not_read_is_a_slow_consumer() {
        let r = Registry::new(usize::MAX);
        let s = sink(&r, 10);
        s.push_raw(&[0x8a, 0]).expect("one pong");
        for _ in 0..4 {
            s.push_raw(&[0x8a, 0]).expect("pongs within the bound");
        }
        assert!(s.push_raw(&[0x8a, 0]).is_err(), "past the bound");
        assert!(matches!(s.try_next(), Some(Next::Overflowed)));
        assert_eq!(r.queued(), 0);
    }

    #[test]
    fn passing_the_total_closes_the_connection_with_the_most_queued() {
        let r = Registry::new(100);
        let small = sink(&r, 1_000);
        let big = sink(&r, 1_000);
        assert_eq!(small.offer(&frame(20)), Offer::Queued);
        assert_eq!(big.offer(&frame(70)), Offer::Queued);
        assert_eq!(r.queued(), 90);
        // The small one's frame takes the total to 110: the big one goes.
        assert_eq!(small.offer(&frame(20)), Offer::Queued);
        assert!(matches!(big.try_next(), Some(Next::Overflowed)));
        assert_eq!(big.offer(&frame(1)), Offer::Closed);
        assert_eq!((r.queued(), small.held_bytes()), (40, Some(40)));
        assert_eq!(r.closed_over_total.load(Relaxed), 1);
        // When the offering connection holds the most, it is the one closed.
        assert_eq!(small.offer(&frame(70)), Offer::Full);
        assert_eq!(r.queued(), 0);
        assert_eq!(r.closed_over_total.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn eviction_wakes_a_task_waiting_on_a_write() {
        let r = Registry::new(15);
        let s = sink(&r, 1_000);
        let waiting = tokio::spawn({
            let s = Arc::clone(&s);
            async move { s.evicted().await }
        });
        // The task runs until it waits (this test's runtime has one thread).
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(s.offer(&frame(10)), Offer::Queued);
        assert_eq!(s.offer(&frame(10)), Offer::Full);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("the task");
    }
}
