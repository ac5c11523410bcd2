//! A connection's outbound sink: the bounded queue the engine offers frames
//! to, the broadcast signals of the whole transport, and the [`Registry`]
//! of every sink with the bytes queued in all of them.

use futures::task::AtomicWaker;
use parking_lot::{Mutex, MutexGuard};
use sente_lite_channels::{Frame, Offer, Sink};
use sente_lite_protocol::Reason;
use slab::Slab;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;

/// Every open connection's sink, and the bytes queued in all their
/// outbound queues together (`websocket.max-outbound-bytes-total`).
///
/// A frame counts from the moment it is queued until the write that
/// carries it has been flushed to the socket (a write stuck on a client
/// that does not read still holds it, in the WebSocket's write buffer).
/// The fast path is one atomic add per frame queued and one atomic sub
/// per write batch flushed. Only a frame that takes the total past the
/// limit scans the sinks: the one with the most queued is closed as a
/// slow consumer (its queue emptied and its bytes released at once, its
/// stuck write abandoned), until the total is within the limit again.
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
}

impl Registry {
    pub(crate) fn new(limit: usize) -> Arc<Registry> {
        Arc::new(Registry {
            sinks: Mutex::new(Slab::new()),
            queued: AtomicUsize::new(0),
            limit,
            evicting: Mutex::new(()),
            closed_over_total: AtomicU64::new(0),
        })
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

/// The outbound side the engine offers frames to: a queue bounded in frames
/// and in bytes, drained by the connection's task. A frame that does not
/// fit marks the connection a slow consumer and wakes its task to close it:
/// the connection never stays open having silently missed a frame. One
/// frame larger than the byte bound is accepted into an empty queue (a
/// channel message of a publish of `max-message-bytes` is a little larger
/// than the publish), so the queue holds at most the bound or one frame.
///
/// The queue is a `VecDeque` under an uncontended lock plus an
/// `AtomicWaker`: offering wakes the task only when the queue goes from empty
/// to non-empty, and waiting allocates nothing. It starts with no buffer and
/// gives back a large one once drained, so an idle connection holds little.
pub(crate) struct ConnSink {
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    max_frames: usize,
    max_bytes: usize,
    registry: Arc<Registry>,
    /// This connection's share of `frames-sent` and `socket-writes`: counted
    /// here, on a cache line only its task writes, and summed for `/stats`,
    /// so the write path touches no counter shared by all connections.
    pub(crate) frames_sent: AtomicU64,
    pub(crate) socket_writes: AtomicU64,
}

struct Queue {
    frames: VecDeque<Frame>,
    /// Bytes of `frames`.
    bytes: usize,
    /// Bytes taken out of the queue for the write under way, not yet
    /// flushed.
    in_flight: usize,
    /// This sink's bytes are no longer in the registry's total (it was
    /// closed for the server-wide total).
    released: bool,
    overflowed: bool,
    /// The connection's task has stopped serving it: nothing more is
    /// accepted.
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
    /// A drained queue gives back a large buffer a burst left behind.
    fn shrink_if_drained(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > KEEP_SLOTS {
            self.frames.shrink_to(KEEP_SLOTS);
        }
    }
}

/// The queue overflowed: the connection is a slow consumer.
pub(crate) struct Overflowed;

/// What the transport tells every connection at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Heartbeat: ping the client, or close it if it has been silent.
    Beat,
    /// Shutdown: drain and close with 1001.
    Stop,
}

/// What the task finds when it looks at its queue, most urgent first.
pub(crate) enum Next {
    Overflowed,
    Stop,
    Frame(Frame),
    Beat,
    /// Close with 1012 `broker-reconnect`: every frame before it is out.
    Reconnect,
    /// Close with the session's code and reason: every frame before it is
    /// out.
    Close(u16, Reason),
}

/// A drained queue keeps at most this many slots of its buffer.
const KEEP_SLOTS: usize = 16;

impl ConnSink {
    pub(crate) fn new(max_frames: usize, max_bytes: usize, registry: Arc<Registry>) -> ConnSink {
        ConnSink {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                in_flight: 0,
                released: false,
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
        }
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

    /// The most urgent thing waiting: an overflow, a stop, the next frame,
    /// a heartbeat.
    pub(crate) fn try_next(&self) -> Option<Next> {
        let mut q = self.queue.lock();
        if q.overflowed {
            return Some(Next::Overflowed);
        }
        if q.stop {
            return Some(Next::Stop);
        }
        if let Some(frame) = q.frames.pop_front() {
            q.bytes -= frame.len();
            q.in_flight += frame.len();
            q.shrink_if_drained();
            return Some(Next::Frame(frame));
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

    /// The next frame of a write batch; an overflow ends the batch (a stop
    /// or heartbeat waits for the loop).
    pub(crate) fn batch_next(&self) -> Result<Option<Frame>, Overflowed> {
        let mut q = self.queue.lock();
        if q.overflowed {
            return Err(Overflowed);
        }
        let frame = q.frames.pop_front();
        if let Some(f) = &frame {
            q.bytes -= f.len();
            q.in_flight += f.len();
        }
        q.shrink_if_drained();
        Ok(frame)
    }

    /// Refuses every later offer with [`Offer::Closed`]: the connection is
    /// closing.
    pub(crate) fn close(&self) {
        self.queue.lock().closed = true;
    }

    /// The next queued frame only (for the shutdown drain).
    pub(crate) fn pop_frame(&self) -> Option<Frame> {
        let mut q = self.queue.lock();
        let frame = q.frames.pop_front()?;
        q.bytes -= frame.len();
        q.in_flight += frame.len();
        Some(frame)
    }

    /// A write of `bytes` (taken out of the queue before) was flushed:
    /// they leave the server-wide total.
    pub(crate) fn written(&self, bytes: usize) {
        let mut q = self.queue.lock();
        let n = bytes.min(q.in_flight);
        q.in_flight -= n;
        if !q.released {
            self.registry.sub(n);
        }
    }

    /// Bytes this connection holds in the server-wide total (queued and
    /// being written); `None` once it was closed as a slow consumer.
    fn held_bytes(&self) -> Option<usize> {
        let q = self.queue.lock();
        (!q.overflowed).then_some(q.bytes + q.in_flight)
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
    /// empties its queue (nothing in it will be written: a slow consumer is
    /// closed without a drain) and wakes its task to close it. The write
    /// under way stays counted until it is flushed or the sink dropped.
    fn overflow(&self) {
        let dropped = {
            let mut q = self.queue.lock();
            q.overflowed = true;
            let dropped = std::mem::take(&mut q.frames);
            let bytes = std::mem::take(&mut q.bytes);
            if !q.released {
                self.registry.sub(bytes);
            }
            dropped
        };
        // Frames shared with other connections are freed outside the lock.
        drop(dropped);
        self.waker.wake();
    }

    /// Closed for the server-wide total: as [`overflow`](Self::overflow),
    /// and all its bytes leave the total at once, the write under way
    /// included (the task abandons it). False if it already was a slow
    /// consumer.
    fn evict(&self) -> bool {
        let (first, dropped) = {
            let mut q = self.queue.lock();
            let first = !q.overflowed;
            q.overflowed = true;
            let dropped = std::mem::take(&mut q.frames);
            let bytes = std::mem::take(&mut q.bytes);
            if !std::mem::replace(&mut q.released, true) {
                self.registry.sub(bytes + q.in_flight);
            }
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
        let len = frame.len();
        // A frame larger than the whole queue still goes into an empty one.
        let was_empty = q.frames.is_empty();
        if q.frames.len() >= self.max_frames || (!was_empty && q.bytes + len > self.max_bytes) {
            drop(q);
            self.overflow();
            return Offer::Full;
        }
        q.frames.push_back(frame.clone());
        q.bytes += len;
        // Added under the queue's lock: the task cannot take the frame out
        // (and subtract it) before it is counted.
        let over = self.registry.add(len);
        drop(q);
        if over {
            self.registry.evict();
            // This connection may have been the one with the most queued.
            if self.queue.lock().overflowed {
                return Offer::Full;
            }
        }
        if was_empty {
            self.waker.wake();
        }
        Offer::Queued
    }

    fn free_bytes(&self) -> Option<usize> {
        let q = self.queue.lock();
        if q.overflowed || q.closed || q.frames.len() >= self.max_frames {
            return Some(0);
        }
        Some(self.max_bytes.saturating_sub(q.bytes))
    }

    fn reconnect(&self) {
        {
            let mut q = self.queue.lock();
            q.reconnect = true;
            // Nothing after this point is for the client.
            q.closed = true;
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
        }
        self.waker.wake();
    }
}

impl Drop for ConnSink {
    fn drop(&mut self) {
        // What was never written leaves the server-wide total with it.
        let q = self.queue.get_mut();
        if !q.released {
            self.registry.sub(q.bytes + q.in_flight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Frame {
        Frame::new("x".repeat(len))
    }

    fn sink(registry: &Arc<Registry>, max_bytes: usize) -> Arc<ConnSink> {
        let s = Arc::new(ConnSink::new(1_000, max_bytes, Arc::clone(registry)));
        registry.lock().insert(Arc::clone(&s));
        s
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

    #[test]
    fn the_total_is_exact_over_every_way_a_frame_leaves() {
        let r = Registry::new(usize::MAX);
        let s = sink(&r, 1_000);
        for _ in 0..4 {
            assert_eq!(s.offer(&frame(10)), Offer::Queued);
        }
        assert_eq!(r.queued(), 40);
        assert!(matches!(s.try_next(), Some(Next::Frame(_))));
        assert!(matches!(s.batch_next(), Ok(Some(_))));
        assert!(s.pop_frame().is_some());
        // Taken out for writing, still held until the write is flushed.
        assert_eq!((r.queued(), s.held_bytes()), (40, Some(40)));
        s.written(20);
        assert_eq!(r.queued(), 20);
        r.lock().clear();
        drop(s);
        assert_eq!(r.queued(), 0, "a dropped sink takes its bytes along");
        // A connection closed for the total: its bytes leave at once, its
        // write under way too, and never twice.
        let s = sink(&r, 1_000);
        assert_eq!(s.offer(&frame(10)), Offer::Queued);
        assert_eq!(s.offer(&frame(10)), Offer::Queued);
        assert!(matches!(s.try_next(), Some(Next::Frame(_))));
        assert!(s.evict());
        assert_eq!(r.queued(), 0);
        s.written(10);
        r.lock().clear();
        drop(s);
        assert_eq!(r.queued(), 0);
        // One whose own queue overflowed: the queue leaves at once, the
        // write under way when it is flushed.
        let s = sink(&r, 25);
        assert_eq!(s.offer(&frame(10)), Offer::Queued);
        assert!(matches!(s.try_next(), Some(Next::Frame(_))));
        assert_eq!(s.offer(&frame(10)), Offer::Queued);
        assert_eq!(s.offer(&frame(10)), Offer::Queued);
        assert_eq!(s.offer(&frame(10)), Offer::Full);
        assert_eq!(r.queued(), 10);
        s.written(10);
        assert_eq!(r.queued(), 0);
        r.lock().clear();
        drop(s);
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
        // A write under way counts: the stuck one is the largest.
        let r = Registry::new(100);
        let stuck = sink(&r, 1_000);
        let other = sink(&r, 1_000);
        assert_eq!(stuck.offer(&frame(60)), Offer::Queued);
        assert!(matches!(stuck.try_next(), Some(Next::Frame(_))));
        assert_eq!(other.offer(&frame(30)), Offer::Queued);
        assert_eq!(other.offer(&frame(20)), Offer::Queued);
        assert!(matches!(stuck.try_next(), Some(Next::Overflowed)));
        assert_eq!(r.queued(), 50);
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
