//! The writer tasks: one per two cores, each writing the queued frames of
//! its share of the plain-TCP connections straight to their sockets.
//!
//! A fan-out only queues: the engine's loop over a channel's subscribers
//! puts the frame (shared, never copied) into each queue and, for a queue
//! that was empty, adds the connection to its writer's list, waking that
//! writer if the list was empty. A writer takes its whole list at once and
//! gives each connection one non-blocking `writev` of everything it has
//! queued. So a publish to 1,000 connections wakes one task per writer, not
//! 1,000; and when publishes come faster than a writer gets round (a busy
//! writer lingers as long as its last turn took, at most 4 ms), each
//! connection's frames of several publishes go in one syscall. A socket that does not take everything wakes its
//! connection's own task, which writes the rest when the socket is
//! writable again (and closes the connection if that takes longer than
//! `message-timeout`).

use crate::sink::ConnSink;
use futures::task::AtomicWaker;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// The longest a busy writer waits for more frames before a turn.
const MAX_LINGER: Duration = Duration::from_millis(4);

/// One writer's list of connections with frames queued.
pub(crate) struct Shard {
    ready: Mutex<Vec<Arc<ConnSink>>>,
    waker: AtomicWaker,
    stopped: AtomicBool,
}

impl Shard {
    pub(crate) fn new() -> Shard {
        Shard {
            ready: Mutex::new(Vec::new()),
            waker: AtomicWaker::new(),
            stopped: AtomicBool::new(false),
        }
    }

    /// Adds a connection whose queue went from empty to not empty; wakes
    /// the writer when it is the first.
    pub(crate) fn mark(&self, sink: Arc<ConnSink>) {
        let first = {
            let mut ready = self.ready.lock();
            ready.push(sink);
            ready.len() == 1
        };
        if first {
            self.waker.wake();
        }
    }

    /// Ends [`run`](Self::run) once its list is written.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Writes every connection of the list, then waits for more; returns
    /// after [`stop`](Self::stop).
    pub(crate) async fn run(self: Arc<Self>) {
        // Swapped with the list each turn, so neither allocates once warm.
        let mut batch: Vec<Arc<ConnSink>> = Vec::new();
        let mut last_end = Instant::now();
        let mut last_busy = Duration::ZERO;
        loop {
            let stop = std::future::poll_fn(|cx| {
                if self.has_work() {
                    return Poll::Ready(false);
                }
                if self.stopped.load(Ordering::SeqCst) {
                    return Poll::Ready(true);
                }
                self.waker.register(cx.waker());
                if self.has_work() {
                    Poll::Ready(false)
                } else if self.stopped.load(Ordering::SeqCst) {
                    Poll::Ready(true)
                } else {
                    Poll::Pending
                }
            })
            .await;
            if stop {
                return;
            }
            // Woken by the first connection of a fan-out: the task that
            // queued it runs on first (it may have more publishes read).
            tokio::task::yield_now().await;
            // A writer busier than idle lingers as long as its last turn
            // took (at most MAX_LINGER): the next publishes' frames join
            // this turn's, several to a syscall, which is what brings the
            // cost per delivery down as the load goes up. An idle writer
            // never waits.
            let idle = last_end.elapsed();
            if last_busy > idle {
                let linger = last_busy.min(MAX_LINGER).saturating_sub(idle);
                if !linger.is_zero() {
                    tokio::time::sleep(linger).await;
                }
            }
            if self.take(&mut batch) {
                let start = Instant::now();
                self.write(&mut batch);
                last_end = Instant::now();
                last_busy = last_end - start;
            }
        }
    }

    fn has_work(&self) -> bool {
        !self.ready.lock().is_empty()
    }

    /// Swaps the list into `batch`; false when it was empty.
    pub(crate) fn take(&self, batch: &mut Vec<Arc<ConnSink>>) -> bool {
        let mut ready = self.ready.lock();
        if ready.is_empty() {
            return false;
        }
        std::mem::swap(&mut *ready, batch);
        true
    }

    /// One write for each connection of `batch`, which is left empty.
    pub(crate) fn write(&self, batch: &mut Vec<Arc<ConnSink>>) {
        for sink in batch.drain(..) {
            sink.write_ready(self);
        }
    }
}
