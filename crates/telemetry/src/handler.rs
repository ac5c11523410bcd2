//! Handlers: the trait, their options, their stats, and the bounded queue
//! plus worker thread(s) behind an async handler.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{HandlerError, TelemetryError};
use crate::filter::Filter;
use crate::limits::Throttle;
use crate::signal::Signal;

/// The default byte capacity of an async handler's queue: 4 MiB.
pub const DEFAULT_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Receives signals.
///
/// `handle` runs on the emitting thread for a sync handler, and on the
/// handler's worker thread(s) for an async one. An `Err` or a panic is
/// counted in the handler's `errors` stat and goes no further.
pub trait Handler: Send + Sync + 'static {
    /// Handles one signal.
    fn handle(&self, signal: &Signal) -> Result<(), HandlerError>;

    /// Makes what was handled so far durable/visible (flush buffers).
    /// Called when an async queue runs empty, by `flush` and at shutdown.
    fn flush(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Any `Fn(&Signal)` is a handler that never fails.
impl<F> Handler for F
where
    F: Fn(&Signal) + Send + Sync + 'static,
{
    fn handle(&self, signal: &Signal) -> Result<(), HandlerError> {
        self(signal);
        Ok(())
    }
}

/// What an async handler does when its queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The emitting thread waits for room: nothing is lost.
    Blocking,
    /// The new signal is dropped (counted in `dropped`).
    #[default]
    Dropping,
    /// The oldest queued signal is dropped to make room (counted in `dropped`).
    Sliding,
}

/// How signals reach a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// On the emitting thread, before the macro returns.
    Sync,
    /// Through a bounded queue to worker thread(s).
    Async {
        /// What to do when the queue is full.
        mode: Mode,
        /// Queue capacity in signals (default 1024).
        buffer_size: usize,
        /// Queue capacity in bytes, as [`Signal::approx_bytes`] counts them
        /// (default [`DEFAULT_BUFFER_BYTES`]): the signals queued, being
        /// handled, and handled but not yet freed together hold no more.
        /// A signal that would pass it is treated as one arriving at a full
        /// queue (by `mode`), except that a queue holding nothing takes any
        /// one signal.
        buffer_bytes: usize,
        /// Worker threads (default 1; order is kept with one thread only).
        n_threads: usize,
    },
}

/// Options of [`Telemetry::add_handler`](crate::Telemetry::add_handler).
/// `HandlerOptions::default()` is a sync handler with no filter.
#[derive(Clone, Debug, PartialEq)]
pub struct HandlerOptions {
    /// Sync or async.
    pub dispatch: Dispatch,
    /// This handler's own filter, applied after the instance's filter (so it
    /// can only narrow what the handler gets).
    pub filter: Filter,
    /// How long `remove_handler` (or replacing the handler) waits for the
    /// queue to drain (default 5 s).
    pub drain_timeout: Duration,
    /// Per-source throttling of this handler's signals (none by default).
    pub throttle: Option<Throttle>,
}

impl Default for HandlerOptions {
    fn default() -> Self {
        HandlerOptions {
            dispatch: Dispatch::Sync,
            filter: Filter::default(),
            drain_timeout: Duration::from_secs(5),
            throttle: None,
        }
    }
}

impl HandlerOptions {
    /// A sync handler.
    pub fn sync() -> Self {
        Self::default()
    }

    /// An async handler: `Dropping`, buffer 1024 signals and
    /// [`DEFAULT_BUFFER_BYTES`], one worker thread.
    pub fn async_() -> Self {
        HandlerOptions {
            dispatch: Dispatch::Async {
                mode: Mode::Dropping,
                buffer_size: 1024,
                buffer_bytes: DEFAULT_BUFFER_BYTES,
                n_threads: 1,
            },
            ..Self::default()
        }
    }

    fn async_parts(&mut self) -> (&mut Mode, &mut usize, &mut usize, &mut usize) {
        if self.dispatch == Dispatch::Sync {
            self.dispatch = Self::async_().dispatch;
        }
        match &mut self.dispatch {
            Dispatch::Async {
                mode,
                buffer_size,
                buffer_bytes,
                n_threads,
            } => (mode, buffer_size, n_threads, buffer_bytes),
            Dispatch::Sync => unreachable!("made async just above"),
        }
    }

    /// Sets the overflow mode (makes the handler async).
    pub fn mode(mut self, m: Mode) -> Self {
        *self.async_parts().0 = m;
        self
    }

    /// Sets the queue capacity (makes the handler async).
    pub fn buffer_size(mut self, n: usize) -> Self {
        *self.async_parts().1 = n;
        self
    }

    /// Sets the number of worker threads (makes the handler async).
    pub fn n_threads(mut self, n: usize) -> Self {
        *self.async_parts().2 = n;
        self
    }

    /// Sets the queue capacity in bytes (makes the handler async); see
    /// [`Dispatch::Async`].
    pub fn buffer_bytes(mut self, n: usize) -> Self {
        *self.async_parts().3 = n;
        self
    }

    /// Throttles this handler's signals per source (see [`Throttle`]).
    pub fn throttle(mut self, t: Throttle) -> Self {
        self.throttle = Some(t);
        self
    }

    /// Sets this handler's filter.
    pub fn filter(mut self, f: Filter) -> Self {
        self.filter = f;
        self
    }

    /// Shorthand for a filter with this minimum level.
    pub fn min_level(mut self, level: crate::Level) -> Self {
        self.filter.min_level = Some(level);
        self
    }

    /// Sets the drain timeout of `remove_handler`.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }
}

/// A handler's counters.
///
/// After the handler has drained, `processed + dropped` equals the signals
/// that were offered to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Signals given to the handler's `handle` (including those that failed).
    pub processed: u64,
    /// Signals waiting in the queue or being handled right now (a gauge, not
    /// a total). Always 0 for a sync handler.
    pub queued: u64,
    /// Signals lost to a full queue (the newest in `Dropping` mode, the
    /// oldest in `Sliding` mode), or left in the queue at a shutdown deadline.
    pub dropped: u64,
    /// `handle` calls that returned an error or panicked.
    pub errors: u64,
    /// Signals refused by this handler's rate limiter.
    pub rate_limited: u64,
    /// Signals held back by this handler's [`Throttle`] (their source had
    /// used up its bucket).
    pub throttled: u64,
    /// Bytes held by the queue (as [`Signal::approx_bytes`] counts them):
    /// a gauge; always 0 for a sync handler.
    pub queued_bytes: u64,
    /// Median handling time of a sample of signals (1 in 16), in ns.
    pub handle_p50_ns: u64,
    /// 99th percentile handling time of that sample, in ns (power-of-two
    /// buckets, so within a factor of 2).
    pub handle_p99_ns: u64,
}

/// Counters touched per signal.
#[derive(Debug)]
pub(crate) struct Counters {
    processed: AtomicU64,
    errors: AtomicU64,
    /// log2 buckets of sampled handling times.
    hist: [AtomicU64; 40],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            processed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            hist: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    /// Runs the handler on one signal, isolating errors and panics.
    #[inline]
    pub(crate) fn run(&self, handler: &dyn Handler, signal: &Signal) {
        let n = self.processed.load(Ordering::Relaxed);
        self.run_nth(handler, signal, n);
        self.processed.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs the handler on a worker's batch: `processed` is added to once
    /// per batch, not once per signal (one atomic RMW less per signal).
    fn run_batch<'s>(&self, handler: &dyn Handler, batch: impl Iterator<Item = &'s Signal>) {
        let first = self.processed.load(Ordering::Relaxed);
        let mut n = first;
        for signal in batch {
            self.run_nth(handler, signal, n);
            n += 1;
        }
        self.processed.fetch_add(n - first, Ordering::Relaxed);
    }

    /// Runs the handler on the `n`th signal (every 16th is timed).
    #[inline]
    fn run_nth(&self, handler: &dyn Handler, signal: &Signal, n: u64) {
        let timed = n % 16 == 0;
        let start = timed.then(Instant::now);
        let ok = matches!(
            catch_unwind(AssertUnwindSafe(|| handler.handle(signal))),
            Ok(Ok(()))
        );
        if let Some(start) = start {
            let ns = start.elapsed().as_nanos() as u64;
            let b = (64 - ns.leading_zeros() as usize).min(self.hist.len() - 1);
            self.hist[b].fetch_add(1, Ordering::Relaxed);
        }
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn flush(&self, handler: &dyn Handler) {
        let ok = matches!(
            catch_unwind(AssertUnwindSafe(|| handler.flush())),
            Ok(Ok(()))
        );
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn percentile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .hist
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                // Bucket b holds values in [2^(b-1), 2^b).
                return if b == 0 { 0 } else { 1u64 << b };
            }
        }
        0
    }

    pub(crate) fn fill(&self, s: &mut HandlerStats) {
        s.processed = self.processed.load(Ordering::Relaxed);
        s.errors = self.errors.load(Ordering::Relaxed);
        s.handle_p50_ns = self.percentile(0.5);
        s.handle_p99_ns = self.percentile(0.99);
    }
}

/// The batch size a worker waits for before taking the queue...
const GATHER: usize = 64;
/// ...for at most this long after seeing the first signal (so a signal
/// reaches its handler at most this much later than it would otherwise,
/// plus the timer slack of the worker's sleep, 50 µs by default on Linux).
const GATHER_WAIT: Duration = Duration::from_micros(20);
/// Spins (about 1 µs) before a gathering worker sleeps.
const GATHER_SPINS: usize = 256;

/// A queued signal: boxed, so that a queue slot is one pointer and the
/// critical section of an enqueue moves 8 bytes, not a 200-byte signal.
/// `None` only in a producer's spare box (see [`recycle`]).
type Boxed = Box<Option<Signal>>;

fn bytes_of(b: &Boxed) -> usize {
    b.as_ref().as_ref().map_or(0, Signal::approx_bytes)
}

thread_local! {
    /// A handled signal's emptied box, kept by the producer thread that
    /// took it from the trash for its next signal: an accepted signal then
    /// costs no allocation for its box.
    static SPARE: std::cell::Cell<Option<Boxed>> = const { std::cell::Cell::new(None) };
}

/// `signal` in a box: the calling thread's spare one if it has one.
#[inline]
fn boxed(signal: Signal) -> Boxed {
    match SPARE.try_with(std::cell::Cell::take) {
        Ok(Some(mut b)) => {
            *b = Some(signal);
            b
        }
        _ => Box::new(Some(signal)),
    }
}

/// Drops a handled signal's contents (user `Drop` may run: never under the
/// queue lock) and keeps its box as the calling thread's spare.
#[inline]
fn recycle(garbage: Option<Boxed>) {
    if let Some(mut b) = garbage {
        *b = None;
        let _ = SPARE.try_with(|s| match s.take() {
            None => s.set(Some(b)),
            Some(old) => s.set(Some(old)),
        });
    }
}

struct State {
    buf: VecDeque<Boxed>,
    /// Signals a worker has handled, handed back so that producers drop
    /// them (one per push): their memory is then freed on the thread that
    /// allocated it, which keeps the allocator's per-thread caches warm on
    /// both sides, and their boxes are reused. At most `cap` signals.
    trash: VecDeque<Boxed>,
    /// Signals taken by workers and not yet handled.
    in_flight: u64,
    /// Bytes held by `buf`, the signals in flight and `trash`
    /// ([`Signal::approx_bytes`]): at most `cap_bytes`, or one signal.
    bytes: usize,
    /// The part of `bytes` that is `trash`'s (released when it runs empty).
    trash_bytes: usize,
    dropped: u64,
    workers_waiting: usize,
    /// Workers sleeping in `gather_for_batch` (woken at `gather` signals).
    workers_gathering: usize,
    producers_waiting: usize,
    workers_alive: usize,
    /// Set by a worker when it has flushed the handler with nothing queued.
    idle_flushed: bool,
    closed: bool,
}

/// Keeps a hot atomic on its own cache line (no false sharing between the
/// producers' and the worker's counters).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The bounded queue of an async handler.
pub(crate) struct Queue {
    /// On its own cache line(s): producers and workers write it, and the
    /// read-mostly fields below (`cap`, `mode`, read by every producer)
    /// must not be invalidated each time a worker takes the lock.
    state: Padded<Mutex<State>>,
    /// Workers wait for signals.
    not_empty: Condvar,
    /// `Blocking` producers wait for room.
    not_full: Condvar,
    /// `flush`/`shutdown` wait for idleness or worker exit.
    idle: Condvar,
    cap: usize,
    cap_bytes: usize,
    /// The batch a worker waits for (briefly): `min(GATHER, cap)`.
    gather: usize,
    mode: Mode,
    n_threads: usize,
    /// `buf.len()` as last published, read without the lock: a `Dropping`
    /// producer facing a full queue drops before it even builds the signal,
    /// and an idle worker spins on it briefly before sleeping. Producers
    /// publish only the transitions to 1, to `gather` and to full; workers
    /// publish what they leave behind. So it is exact at 0, `gather` and
    /// `cap`, which is all its readers compare it with.
    len_hint: Padded<AtomicUsize>,
    /// Drops decided from `len_hint` (without the lock).
    fast_dropped: Padded<AtomicU64>,
    pub(crate) counters: Counters,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("cap", &self.cap)
            .field("cap_bytes", &self.cap_bytes)
            .field("mode", &self.mode)
            .field("n_threads", &self.n_threads)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Queue {
    /// Starts the worker thread(s).
    pub(crate) fn start(
        id: &str,
        handler: Arc<dyn Handler>,
        mode: Mode,
        buffer_size: usize,
        buffer_bytes: usize,
        n_threads: usize,
    ) -> Result<(Arc<Queue>, Vec<JoinHandle<()>>), TelemetryError> {
        if buffer_size == 0 || n_threads == 0 || buffer_bytes == 0 {
            return Err(TelemetryError::InvalidOptions(format!(
                "buffer_size ({buffer_size}), buffer_bytes ({buffer_bytes}) and n_threads \
                 ({n_threads}) must be at least 1"
            )));
        }
        let q = Arc::new(Queue {
            state: Padded(Mutex::new(State {
                buf: VecDeque::with_capacity(buffer_size),
                trash: VecDeque::with_capacity(buffer_size),
                in_flight: 0,
                bytes: 0,
                trash_bytes: 0,
                dropped: 0,
                workers_waiting: 0,
                workers_gathering: 0,
                producers_waiting: 0,
                workers_alive: n_threads,
                idle_flushed: true,
                closed: false,
            })),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            idle: Condvar::new(),
            cap: buffer_size,
            cap_bytes: buffer_bytes,
            gather: GATHER.min(buffer_size),
            mode,
            n_threads,
            len_hint: Padded(AtomicUsize::new(0)),
            fast_dropped: Padded(AtomicU64::new(0)),
            counters: Counters::default(),
        });
        let mut joins = Vec::with_capacity(n_threads);
        for i in 0..n_threads {
            let (q2, h2) = (q.clone(), handler.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("telemere-{id}-{i}"))
                .spawn(move || q2.work(&*h2));
            match spawned {
                Ok(j) => joins.push(j),
                Err(source) => {
                    {
                        let mut st = lock(&q.state);
                        st.workers_alive -= n_threads - i;
                    }
                    q.close();
                    return Err(TelemetryError::Spawn {
                        id: id.to_owned(),
                        source,
                    });
                }
            }
        }
        Ok((q, joins))
    }

    /// For a `Dropping` queue that is full right now: counts the drop and
    /// returns true, so the caller need not build the signal at all.
    #[inline]
    pub(crate) fn drop_if_full(&self) -> bool {
        if self.mode == Mode::Dropping && self.len_hint.load(Ordering::Relaxed) >= self.cap {
            self.fast_dropped.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Spins (then yields) briefly waiting for work, before the worker
    /// pays for sleeping and being woken. True if work arrived.
    fn spin_for_work(&self) -> bool {
        for i in 0..96 {
            if self.len_hint.load(Ordering::Relaxed) > 0 {
                return true;
            }
            if i < 64 {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
        }
        false
    }

    /// Lets a batch build up before taking it (until `gather` signals are
    /// queued, at most `GATHER_WAIT`): a worker that took every signal as
    /// soon as it arrived would take the lock — and the cache lines of the
    /// queue — from the producer every couple of signals. It spins briefly,
    /// then sleeps until a producer queues the `gather`th signal or the
    /// wait is over: spinning for the whole wait would take a CPU that the
    /// producers may need (the benchmark machine has 2).
    fn gather_for_batch<'a>(&'a self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        drop(st);
        let start = Instant::now();
        for _ in 0..GATHER_SPINS {
            if self.len_hint.load(Ordering::Relaxed) >= self.gather {
                return lock(&self.state);
            }
            std::hint::spin_loop();
        }
        let mut st = lock(&self.state);
        let waited = start.elapsed();
        if st.buf.len() >= self.gather || st.closed || waited >= GATHER_WAIT {
            return st;
        }
        st.workers_gathering += 1;
        st = match self.not_empty.wait_timeout(st, GATHER_WAIT - waited) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
        st.workers_gathering -= 1;
        st
    }

    /// Offers a signal, according to the mode. Its size is counted and it
    /// is boxed before the lock is taken, so the critical section only
    /// moves pointers.
    #[inline]
    pub(crate) fn push(&self, signal: Signal) {
        let size = signal.approx_bytes();
        let boxed = boxed(signal);
        let mut st = lock(&self.state);
        // Dropped after the lock is released (user data's `Drop` may run).
        let garbage = st.trash.pop_front();
        if garbage.is_some() && st.trash.is_empty() {
            st.bytes -= st.trash_bytes;
            st.trash_bytes = 0;
        }
        if st.closed {
            st.dropped += 1;
            drop(st);
            recycle(garbage);
            drop(boxed);
            return;
        }
        let mut slid = None;
        if st.buf.len() >= self.cap {
            match self.mode {
                Mode::Dropping => {
                    st.dropped += 1;
                    drop(st);
                    recycle(garbage);
                    drop(boxed);
                    return;
                }
                Mode::Sliding => {
                    slid = st.buf.pop_front();
                    if let Some(old) = &slid {
                        st.bytes -= bytes_of(old);
                    }
                    st.dropped += 1;
                }
                Mode::Blocking => {
                    while st.buf.len() >= self.cap && !st.closed {
                        st.producers_waiting += 1;
                        st = match self.not_full.wait(st) {
                            Ok(g) => g,
                            Err(p) => p.into_inner(),
                        };
                        st.producers_waiting -= 1;
                    }
                    if st.closed {
                        st.dropped += 1;
                        drop(st);
                        recycle(garbage);
                        drop(boxed);
                        return;
                    }
                }
            }
        }
        st.buf.push_back(boxed);
        let mut evicted = Vec::new();
        if st.bytes > 0 && st.bytes + size > self.cap_bytes {
            match self.make_room(st, size, &mut evicted) {
                Some(g) => st = g,
                None => {
                    recycle(garbage);
                    drop(slid);
                    drop(evicted);
                    return;
                }
            }
        }
        st.bytes += size;
        // Only the transitions matter to the readers of the hint (empty ->
        // not empty for a spinning worker, a batch's worth for a gathering
        // one, full for `drop_if_full`), and
        // not writing it on every push keeps its cache line from bouncing
        // between the producer and the spinning worker.
        let len = st.buf.len();
        if len == 1
            || len == self.gather
            || (len >= self.cap && slid.is_none())
            || !evicted.is_empty()
        {
            self.len_hint.store(len, Ordering::Relaxed);
        }
        st.idle_flushed = false;
        let wake = st.workers_waiting > 0 || (st.workers_gathering > 0 && len == self.gather);
        drop(st);
        if wake {
            self.not_empty.notify_one();
        }
        recycle(garbage);
        drop(slid);
        drop(evicted);
    }

    /// The signal just pushed (the last in `buf`, of `size` bytes) would
    /// take the queue past `cap_bytes`: frees the trash, then does what the
    /// mode says. Returns the lock if the signal stays (its bytes not yet
    /// counted), `None` if it was dropped (counted). Signals given up are
    /// put in `evicted`, for the caller to drop after unlocking.
    #[cold]
    fn make_room<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        size: usize,
        evicted: &mut Vec<Boxed>,
    ) -> Option<MutexGuard<'a, State>> {
        let fits = |st: &State| st.bytes == 0 || st.bytes + size <= self.cap_bytes;
        evicted.extend(st.trash.drain(..));
        st.bytes -= st.trash_bytes;
        st.trash_bytes = 0;
        if fits(&st) {
            return Some(st);
        }
        match self.mode {
            Mode::Dropping => {}
            Mode::Sliding => {
                // The oldest waiting signals give way (never the new one,
                // the last in `buf`).
                while !fits(&st) && st.buf.len() > 1 {
                    if let Some(old) = st.buf.pop_front() {
                        st.bytes -= bytes_of(&old);
                        st.dropped += 1;
                        evicted.push(old);
                    }
                }
                if fits(&st) {
                    return Some(st);
                }
            }
            Mode::Blocking => {
                let signal = st.buf.pop_back();
                while (!fits(&st) || st.buf.len() >= self.cap) && !st.closed {
                    st.producers_waiting += 1;
                    st = match self.not_full.wait(st) {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                    st.producers_waiting -= 1;
                    // Handled signals handed back meanwhile go now.
                    evicted.extend(st.trash.drain(..));
                    st.bytes -= st.trash_bytes;
                    st.trash_bytes = 0;
                }
                if let Some(signal) = signal {
                    if !st.closed {
                        st.buf.push_back(signal);
                        return Some(st);
                    }
                    evicted.push(signal);
                }
                st.dropped += 1;
                return None;
            }
        }
        if let Some(new) = st.buf.pop_back() {
            evicted.push(new);
        }
        st.dropped += 1;
        None
    }

    /// A worker thread's loop: take a batch, handle it, repeat; flush the
    /// handler whenever the queue runs empty; exit when closed and drained.
    fn work(&self, handler: &dyn Handler) {
        let mut batch: VecDeque<Boxed> = VecDeque::with_capacity(self.cap);
        let mut st = lock(&self.state);
        loop {
            if st.buf.is_empty() && !st.closed {
                drop(st);
                let more = self.spin_for_work();
                st = lock(&self.state);
                if more && !st.buf.is_empty() {
                    continue;
                }
            }
            if st.buf.is_empty() {
                if !st.idle_flushed && st.in_flight == 0 {
                    // Idle: no producer is coming to free the handled
                    // signals, so their contents go now; their emptied
                    // boxes go back to the trash (they hold nothing, count
                    // no bytes) for the producers' next signals.
                    let mut trash = std::mem::take(&mut st.trash);
                    st.bytes -= st.trash_bytes;
                    st.trash_bytes = 0;
                    drop(st);
                    for b in trash.iter_mut() {
                        **b = None;
                    }
                    self.counters.flush(handler);
                    st = lock(&self.state);
                    if !st.closed && st.trash.len() + trash.len() <= self.cap {
                        if st.trash.is_empty() {
                            std::mem::swap(&mut st.trash, &mut trash);
                        } else {
                            st.trash.append(&mut trash);
                        }
                    }
                    if st.buf.is_empty() && st.in_flight == 0 {
                        st.idle_flushed = true;
                        self.idle.notify_all();
                    }
                    continue;
                }
                if st.closed {
                    break;
                }
                st.workers_waiting += 1;
                st = match self.not_empty.wait(st) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                st.workers_waiting -= 1;
                continue;
            }
            if st.buf.len() < self.gather && !st.closed {
                st = self.gather_for_batch(st);
                if st.buf.is_empty() {
                    continue;
                }
            }
            let batch_bytes = if self.n_threads == 1 {
                std::mem::swap(&mut st.buf, &mut batch);
                // Nothing else is in flight with one worker.
                st.bytes - st.trash_bytes
            } else {
                let take = st.buf.len().div_ceil(self.n_threads).max(1);
                batch.extend(st.buf.drain(..take));
                batch.iter().map(bytes_of).sum()
            };
            self.len_hint.store(st.buf.len(), Ordering::Relaxed);
            st.in_flight += batch.len() as u64;
            let wake_producers = st.producers_waiting > 0;
            drop(st);
            if wake_producers {
                self.not_full.notify_all();
            }
            let n = batch.len() as u64;
            self.counters
                .run_batch(handler, batch.iter().filter_map(|b| b.as_ref().as_ref()));
            st = lock(&self.state);
            st.in_flight -= n;
            let wake_producers = st.producers_waiting > 0;
            if !st.closed && !wake_producers && st.trash.len() + batch.len() <= self.cap {
                // Hand the handled signals back to the producers (see `trash`):
                // swapped in whole when the trash is empty, else appended
                // (pointer moves); their bytes stay counted until the trash
                // runs empty.
                if st.trash.is_empty() {
                    std::mem::swap(&mut st.trash, &mut batch);
                } else {
                    st.trash.append(&mut batch);
                }
                st.trash_bytes += batch_bytes;
            } else {
                st.bytes -= batch_bytes;
                drop(st);
                if wake_producers {
                    self.not_full.notify_all();
                }
                batch.clear();
                st = lock(&self.state);
            }
        }
        st.workers_alive -= 1;
        drop(st);
        self.idle.notify_all();
    }

    /// Current depth and drops.
    pub(crate) fn stats(&self) -> HandlerStats {
        let (queued, dropped, queued_bytes) = {
            let st = lock(&self.state);
            (
                st.buf.len() as u64 + st.in_flight,
                st.dropped + self.fast_dropped.load(Ordering::Relaxed),
                st.bytes as u64,
            )
        };
        let mut s = HandlerStats {
            queued,
            dropped,
            queued_bytes,
            ..HandlerStats::default()
        };
        self.counters.fill(&mut s);
        s
    }

    /// Waits until everything queued so far has been handled and the handler
    /// flushed. Returns the signals still pending at the deadline.
    pub(crate) fn flush(&self, deadline: Instant) -> u64 {
        let mut st = lock(&self.state);
        loop {
            let pending = st.buf.len() as u64 + st.in_flight;
            if (pending == 0 && st.idle_flushed) || st.workers_alive == 0 {
                return pending;
            }
            let now = Instant::now();
            if now >= deadline {
                return pending.max(1);
            }
            st = match self.idle.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Stops accepting signals and wakes everyone.
    fn close(&self) {
        lock(&self.state).closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    /// Closes, lets the workers drain, and waits for them to exit until the
    /// deadline. What is still queued then is discarded and counted as
    /// dropped. Returns the signals that were not handled, and whether every
    /// worker exited (a worker stuck in its handler's `handle` or `flush`,
    /// on a blocked sink say, is left behind: it exits on its own if that
    /// call ever returns).
    pub(crate) fn shutdown(&self, deadline: Instant, joins: Vec<JoinHandle<()>>) -> (u64, bool) {
        self.close();
        let mut st = lock(&self.state);
        while st.workers_alive > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = match self.idle.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        let finished = st.workers_alive == 0;
        let left = st.buf.len() as u64;
        let left_bytes: usize = st.buf.iter().map(bytes_of).sum();
        let queued = std::mem::take(&mut st.buf);
        let trash = std::mem::take(&mut st.trash);
        st.bytes -= left_bytes + st.trash_bytes;
        st.trash_bytes = 0;
        self.len_hint.store(0, Ordering::Relaxed);
        st.dropped += left;
        let pending = left + st.in_flight;
        drop(st);
        drop(trash);
        drop(queued);
        if finished {
            for j in joins {
                let _ = j.join();
            }
        }
        // Otherwise the workers are stuck in `handle` or `flush`; they exit
        // on their own once it returns (the queue is closed and empty).
        (pending, finished)
    }
}
