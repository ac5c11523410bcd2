//! A connection's outbound sink: the bounded queue the engine offers frames
//! to, and the broadcast signals of the whole transport.

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use sente_lite_channels::{Frame, Offer, Sink};
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::task::Poll;

/// The outbound side the engine offers frames to: a queue bounded in frames
/// and in bytes, drained by the connection's task. A frame that does not
/// fit marks the connection a slow consumer and wakes its task to close it:
/// the connection never stays open having silently missed a frame.
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
    /// This connection's share of `frames-sent` and `socket-writes`: counted
    /// here, on a cache line only its task writes, and summed for `/stats`,
    /// so the write path touches no counter shared by all connections.
    pub(crate) frames_sent: AtomicU64,
    pub(crate) socket_writes: AtomicU64,
}

struct Queue {
    frames: VecDeque<Frame>,
    bytes: usize,
    overflowed: bool,
    /// The connection's task has stopped serving it: nothing more is
    /// accepted.
    closed: bool,
    stop: bool,
    beat: bool,
    /// The broker asked the client to come back (after the frames queued
    /// before).
    reconnect: bool,
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
}

/// A drained queue keeps at most this many slots of its buffer.
const KEEP_SLOTS: usize = 16;

impl ConnSink {
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> ConnSink {
        ConnSink {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                overflowed: false,
                closed: false,
                stop: false,
                beat: false,
                reconnect: false,
            }),
            waker: AtomicWaker::new(),
            max_frames: max_frames.max(1),
            max_bytes,
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
            q.shrink_if_drained();
            return Some(Next::Frame(frame));
        }
        if q.reconnect {
            return Some(Next::Reconnect);
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
        Some(frame)
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
        if q.frames.len() >= self.max_frames || q.bytes + len > self.max_bytes {
            q.overflowed = true;
            drop(q);
            self.waker.wake();
            return Offer::Full;
        }
        let was_empty = q.frames.is_empty();
        q.frames.push_back(frame.clone());
        q.bytes += len;
        drop(q);
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
}
