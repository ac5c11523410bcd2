//! The telemetry instance: configuration snapshot, fast gate, dispatch,
//! handler management, lifecycle.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::TelemetryError;
use crate::filter::{CompiledFilter, Filter};
use crate::handler::{Counters, Dispatch, Handler, HandlerOptions, HandlerStats, Queue};
use crate::level::Level;
use crate::limits::{cut_payload, cut_signal, Throttler, DEFAULT_MAX_FIELD_BYTES};
use crate::signal::{Callsite, Data, ErrorInfo, Kind, Signal};
use crate::timestamp::Clock;

/// At most this many handlers per instance (a signal's set of interested
/// handlers is a 64-bit mask).
pub const MAX_HANDLERS: usize = 64;

/// The gate value meaning "no handler wants anything".
const OFF: u8 = u8::MAX;

/// A telemetry instance: its filters, its handlers and their stats.
///
/// Cloning is cheap and gives another handle to the same instance.
/// [`Telemetry::new`] makes an independent instance; [`global`] is the
/// process-wide default that the macros use when no `tel:` is given.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    uid: u64,
    /// The lowest level any handler could accept, or `OFF`.
    gate: AtomicU8,
    /// Bumped on each configuration change (invalidates thread caches).
    generation: AtomicU64,
    config: Mutex<Arc<Config>>,
    /// Serializes configuration changes (held across worker start/stop).
    admin: Mutex<()>,
    /// Strings of a signal longer than this are cut.
    max_field_bytes: AtomicUsize,
    /// The [`Clock`] of the macros' signals, as `Clock::as_u8`.
    clock: AtomicU8,
}

struct Config {
    generation: u64,
    filter: Arc<CompiledFilter>,
    handlers: Vec<Arc<Slot>>,
    /// The handlers with a throttle, as a mask.
    throttled: u64,
}

/// One registered handler.
struct Slot {
    id: String,
    filter: CompiledFilter,
    throttle: Option<Throttler>,
    kind: SlotKind,
    drain_timeout: Duration,
    joins: Mutex<Vec<JoinHandle<()>>>,
}

enum SlotKind {
    Sync {
        handler: Arc<dyn Handler>,
        counters: Box<Counters>,
    },
    Async {
        queue: Arc<Queue>,
        handler: Arc<dyn Handler>,
    },
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cfg = self.snapshot();
        f.debug_struct("Telemetry")
            .field("uid", &self.inner.uid)
            .field("filter", &cfg.filter.source)
            .field(
                "handlers",
                &cfg.handlers
                    .iter()
                    .map(|h| h.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`Telemetry::shutdown`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Handlers stopped.
    pub handlers: usize,
    /// Final stats of each handler.
    pub stats: BTreeMap<String, HandlerStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The payload the macros build lazily (only when a handler wants the signal).
#[derive(Debug, Default)]
pub struct Payload {
    /// The message.
    pub message: Option<Cow<'static, str>>,
    /// Structured data.
    pub data: Option<Data>,
    /// An attached error.
    pub error: Option<ErrorInfo>,
}

/// Thread-local cache of configuration snapshots, so that the hot path
/// reads one atomic (the generation) instead of taking a lock and touching
/// a shared reference count.
struct CacheEntry {
    uid: u64,
    config: Arc<Config>,
}

thread_local! {
    static CACHE: RefCell<Vec<CacheEntry>> = const { RefCell::new(Vec::new()) };
}

const CACHE_SLOTS: usize = 4;

impl Telemetry {
    /// A new, independent instance with no handlers and no filter.
    pub fn new() -> Telemetry {
        static NEXT_UID: AtomicU64 = AtomicU64::new(1);
        let filter = match Filter::default().compile() {
            Ok(f) => f,
            Err(_) => unreachable!("the empty filter is valid"),
        };
        Telemetry {
            inner: Arc::new(Inner {
                uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
                gate: AtomicU8::new(OFF),
                generation: AtomicU64::new(0),
                config: Mutex::new(Arc::new(Config {
                    generation: 0,
                    filter: Arc::new(filter),
                    handlers: Vec::new(),
                    throttled: 0,
                })),
                admin: Mutex::new(()),
                max_field_bytes: AtomicUsize::new(DEFAULT_MAX_FIELD_BYTES),
                clock: AtomicU8::new(Clock::default().as_u8()),
            }),
        }
    }

    // ---- hot path ----------------------------------------------------

    /// The fast check the macros make first: one relaxed atomic load. False
    /// means no handler can want a signal of this level.
    #[inline(always)]
    pub fn level_enabled(&self, level: Level) -> bool {
        level.as_u8() >= self.inner.gate.load(Ordering::Relaxed)
    }

    /// Whether some handler would accept a signal of this level and id from
    /// any module, ignoring sampling and rate limits (which are decided per
    /// signal).
    pub fn enabled(&self, level: Level, id: &str) -> bool {
        self.enabled_in(level, Some(id), "")
    }

    /// Like [`enabled`](Self::enabled) with a module path; `id` may be absent.
    pub fn enabled_in(&self, level: Level, id: Option<&str>, module: &str) -> bool {
        if !self.level_enabled(level) {
            return false;
        }
        self.with_config(|cfg| {
            cfg.filter.static_pass(level, id, module)
                && cfg
                    .handlers
                    .iter()
                    .any(|h| h.filter.static_pass(level, id, module))
        })
    }

    #[inline]
    fn with_config<R>(&self, f: impl FnOnce(&Config) -> R) -> R {
        let gen = self.inner.generation.load(Ordering::Acquire);
        let uid = self.inner.uid;
        let mut f = Some(f);
        let cached = CACHE.try_with(|c| {
            let c = c.try_borrow().ok()?;
            let e = c
                .iter()
                .find(|e| e.uid == uid && e.config.generation == gen)?;
            let f = f.take()?;
            Some(f(&e.config))
        });
        if let Ok(Some(r)) = cached {
            return r;
        }
        let cfg = self.snapshot();
        let _ = CACHE.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c.retain(|e| e.uid != uid);
                if c.len() >= CACHE_SLOTS {
                    c.remove(0);
                }
                c.push(CacheEntry {
                    uid,
                    config: cfg.clone(),
                });
            }
        });
        match f.take() {
            Some(f) => f(&cfg),
            None => unreachable!("f is only taken when it is called"),
        }
    }

    fn snapshot(&self) -> Arc<Config> {
        lock(&self.inner.config).clone()
    }

    /// Emits a signal whose payload is built only if a handler wants it.
    /// The macros call this after [`level_enabled`](Self::level_enabled).
    #[doc(hidden)]
    #[inline]
    pub fn __emit(
        &self,
        kind: Kind,
        level: Level,
        id: Option<&'static str>,
        callsite: &'static Callsite,
        payload: impl FnOnce() -> Payload,
    ) {
        self.with_config(|cfg| {
            let module = callsite.module;
            if !cfg.filter.pass(level, id, module) {
                return;
            }
            let mask = interested(cfg, level, id, module);
            if mask == 0 {
                return;
            }
            let mask = drop_where_full(cfg, mask);
            if mask == 0 {
                return;
            }
            // User code (message, data, error) runs here, outside any lock;
            // so does assembling the signal (an async handler's queue takes
            // it boxed: its lock only guards pointer moves).
            let mut p = payload();
            cut_payload(&mut p, self.inner.max_field_bytes.load(Ordering::Relaxed));
            let mask = throttle(cfg, mask, level, p.data.as_ref());
            if mask == 0 {
                return;
            }
            let time = Clock::from_u8(self.inner.clock.load(Ordering::Relaxed)).now();
            let thread = crate::signal::ThreadInfo::current();
            let correlation = crate::correlation::current_correlation();
            deliver_with(cfg, mask, move || Signal {
                kind,
                id: id.map(Cow::Borrowed),
                level,
                message: p.message,
                data: p.data,
                error: p.error.map(Box::new),
                module: Cow::Borrowed(module),
                file: Some(Cow::Borrowed(callsite.file)),
                line: Some(callsite.line),
                time,
                thread,
                correlation,
            });
        });
    }

    /// Emits a ready-made signal (used by the bridges; also handy for
    /// forwarding signals between instances). Filters apply as usual.
    pub fn emit_signal(&self, mut signal: Signal) {
        if !self.level_enabled(signal.level) {
            return;
        }
        self.with_config(|cfg| {
            let id = signal.id.as_deref();
            if !cfg.filter.pass(signal.level, id, &signal.module) {
                return;
            }
            let mask = interested(cfg, signal.level, id, &signal.module);
            if mask == 0 {
                return;
            }
            cut_signal(
                &mut signal,
                self.inner.max_field_bytes.load(Ordering::Relaxed),
            );
            let mask = throttle(cfg, mask, signal.level, signal.data.as_ref());
            if mask != 0 {
                deliver(cfg, mask, signal);
            }
        });
    }

    /// Sets the longest string, in bytes, that a signal keeps (default
    /// [`DEFAULT_MAX_FIELD_BYTES`], 256): its message, every string and
    /// object key of its data, its error's message and sources (and, for
    /// [`emit_signal`](Self::emit_signal), its id, module and file). A
    /// longer string is cut at a char boundary at or below `max` and
    /// followed by `…[N bytes]`, N being its full length. `usize::MAX`
    /// keeps everything. Data wrapped in [`Lazy`](crate::Lazy) is cut when
    /// it is serialized.
    ///
    /// Only signals some handler takes are looked at: the cost of a signal
    /// filtered out is unchanged.
    pub fn set_max_field_bytes(&self, max: usize) {
        self.inner.max_field_bytes.store(max, Ordering::Relaxed);
    }

    /// Sets the clock the macros stamp signals with (default
    /// [`Clock::Precise`]). [`Clock::Coarse`] makes an accepted signal
    /// about 25-40 ns cheaper at the price of timestamps that advance once
    /// a scheduler tick (1-4 ms). Signals made elsewhere (the bridges,
    /// [`Signal::new`]) keep the precise clock.
    pub fn set_clock(&self, clock: Clock) {
        self.inner.clock.store(clock.as_u8(), Ordering::Relaxed);
    }

    /// The clock the macros stamp signals with (see
    /// [`set_clock`](Self::set_clock)).
    pub fn clock(&self) -> Clock {
        Clock::from_u8(self.inner.clock.load(Ordering::Relaxed))
    }

    /// The longest string a signal keeps (see
    /// [`set_max_field_bytes`](Self::set_max_field_bytes)).
    pub fn max_field_bytes(&self) -> usize {
        self.inner.max_field_bytes.load(Ordering::Relaxed)
    }

    // ---- configuration ---------------------------------------------

    /// Changes the configuration under the admin lock and publishes it.
    /// A change that keeps the instance filter passes `cfg.filter.clone()`:
    /// the `Arc` is shared, and with it the rate limiter's state.
    fn update(
        &self,
        f: impl FnOnce(&Config) -> Result<(Arc<CompiledFilter>, Vec<Arc<Slot>>), TelemetryError>,
    ) -> Result<(), TelemetryError> {
        let mut cfg_guard = lock(&self.inner.config);
        let (filter, handlers) = f(&cfg_guard)?;
        let generation = cfg_guard.generation + 1;
        let gate = if handlers.is_empty() {
            OFF
        } else {
            let floor = filter.floor();
            handlers
                .iter()
                .map(|h| h.filter.floor().max(floor).as_u8())
                .min()
                .unwrap_or(OFF)
        };
        let throttled = handlers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.throttle.is_some())
            .fold(0u64, |m, (i, _)| m | (1 << i));
        *cfg_guard = Arc::new(Config {
            generation,
            filter,
            handlers,
            throttled,
        });
        self.inner.generation.store(generation, Ordering::Release);
        self.inner.gate.store(gate, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the instance-wide filter (applies to every handler).
    pub fn set_filter(&self, filter: Filter) -> Result<(), TelemetryError> {
        let compiled = filter.compile()?;
        let _admin = lock(&self.inner.admin);
        self.update(|cfg| Ok((Arc::new(compiled), cfg.handlers.clone())))
    }

    /// The instance-wide filter.
    pub fn filter(&self) -> Filter {
        self.snapshot().filter.source.clone()
    }

    /// Sets the instance-wide minimum level.
    pub fn set_min_level(&self, level: Level) {
        self.modify_filter(|f| f.min_level = Some(level));
    }

    /// Sets the minimum level of the modules under `prefix`
    /// (`"my_crate::db"`); the longest matching prefix wins.
    pub fn set_module_level(&self, prefix: &str, level: Level) {
        let prefix = prefix.to_owned();
        self.modify_filter(move |f| {
            f.module_levels.retain(|(p, _)| *p != prefix);
            f.module_levels.push((prefix, level));
        });
    }

    fn modify_filter(&self, change: impl FnOnce(&mut Filter)) {
        let _admin = lock(&self.inner.admin);
        let mut f = self.filter();
        change(&mut f);
        // Level changes cannot make a valid filter invalid.
        if let Ok(compiled) = f.compile() {
            let _ = self.update(|cfg| Ok((Arc::new(compiled), cfg.handlers.clone())));
        }
    }

    /// Adds a handler under `id`, replacing (and draining) any handler with
    /// the same id.
    pub fn add_handler<H: Handler>(
        &self,
        id: impl Into<String>,
        handler: H,
        options: HandlerOptions,
    ) -> Result<(), TelemetryError> {
        self.add_handler_arc(id.into(), Arc::new(handler), options)
    }

    /// [`add_handler`](Self::add_handler) with a shared handler.
    pub fn add_handler_arc(
        &self,
        id: String,
        handler: Arc<dyn Handler>,
        options: HandlerOptions,
    ) -> Result<(), TelemetryError> {
        let filter = options.filter.compile()?;
        let throttle = options.throttle.as_ref().map(|t| t.compile()).transpose()?;
        let _admin = lock(&self.inner.admin);
        let (kind, joins) = match options.dispatch {
            Dispatch::Sync => (
                SlotKind::Sync {
                    handler,
                    counters: Box::default(),
                },
                Vec::new(),
            ),
            Dispatch::Async {
                mode,
                buffer_size,
                buffer_bytes,
                n_threads,
            } => {
                let (queue, joins) = Queue::start(
                    &id,
                    handler.clone(),
                    mode,
                    buffer_size,
                    buffer_bytes,
                    n_threads,
                )?;
                (SlotKind::Async { queue, handler }, joins)
            }
        };
        let slot = Arc::new(Slot {
            id: id.clone(),
            filter,
            throttle,
            kind,
            drain_timeout: options.drain_timeout,
            joins: Mutex::new(joins),
        });
        let mut old = None;
        let res = self.update(|cfg| {
            let mut handlers = cfg.handlers.clone();
            if let Some(pos) = handlers.iter().position(|h| h.id == id) {
                old = Some(handlers.remove(pos));
            } else if handlers.len() >= MAX_HANDLERS {
                return Err(TelemetryError::TooManyHandlers { max: MAX_HANDLERS });
            }
            handlers.push(slot.clone());
            Ok((cfg.filter.clone(), handlers))
        });
        if let Err(e) = res {
            slot.stop(Instant::now());
            return Err(e);
        }
        if let Some(old) = old {
            old.stop(Instant::now() + old.drain_timeout);
        }
        Ok(())
    }

    /// Removes the handler `id`, draining its queue (up to its
    /// `drain_timeout`). False if there was no such handler.
    pub fn remove_handler(&self, id: &str) -> bool {
        let _admin = lock(&self.inner.admin);
        let mut removed = None;
        let _ = self.update(|cfg| {
            let mut handlers = cfg.handlers.clone();
            if let Some(pos) = handlers.iter().position(|h| h.id == id) {
                removed = Some(handlers.remove(pos));
            }
            Ok((cfg.filter.clone(), handlers))
        });
        match removed {
            Some(slot) => {
                slot.stop(Instant::now() + slot.drain_timeout);
                true
            }
            None => false,
        }
    }

    /// The ids of the handlers, in the order they were added.
    pub fn handler_ids(&self) -> Vec<String> {
        self.snapshot()
            .handlers
            .iter()
            .map(|h| h.id.clone())
            .collect()
    }

    /// Each handler's stats, by handler id.
    pub fn handler_stats(&self) -> BTreeMap<String, HandlerStats> {
        self.snapshot()
            .handlers
            .iter()
            .map(|h| (h.id.clone(), h.stats()))
            .collect()
    }

    // ---- lifecycle -------------------------------------------------

    /// Returns a guard that shuts this instance down (draining async
    /// queues, up to 5 s) when dropped.
    pub fn startup(&self) -> TelemetryGuard {
        TelemetryGuard {
            telemetry: self.clone(),
            deadline: Duration::from_secs(5),
        }
    }

    /// Waits until every async queue is drained and every handler flushed,
    /// without stopping anything. Errors if the deadline passes first.
    pub fn flush(&self, deadline: Duration) -> Result<(), TelemetryError> {
        let until = Instant::now() + deadline;
        let cfg = self.snapshot();
        let mut pending = 0;
        let mut late = Vec::new();
        for h in &cfg.handlers {
            let p = match &h.kind {
                SlotKind::Sync { handler, counters } => {
                    counters.flush(&**handler);
                    0
                }
                SlotKind::Async { queue, .. } => queue.flush(until),
            };
            if p > 0 {
                pending += p;
                late.push(h.id.clone());
            }
        }
        if late.is_empty() {
            Ok(())
        } else {
            Err(TelemetryError::Deadline {
                pending,
                handlers: late,
            })
        }
    }

    /// Removes every handler: async queues stop accepting, drain, and their
    /// workers exit, all within `deadline`; then every handler is flushed.
    /// Signals still queued at the deadline are discarded (counted as
    /// `dropped` in the returned stats) and reported as an error.
    /// The instance stays usable: handlers can be added again.
    pub fn shutdown(&self, deadline: Duration) -> Result<ShutdownReport, TelemetryError> {
        let until = Instant::now() + deadline;
        let _admin = lock(&self.inner.admin);
        let mut slots = Vec::new();
        let _ = self.update(|cfg| {
            slots = cfg.handlers.clone();
            Ok((cfg.filter.clone(), Vec::new()))
        });
        let mut report = ShutdownReport {
            handlers: slots.len(),
            stats: BTreeMap::new(),
        };
        let mut pending = 0;
        let mut late = Vec::new();
        for s in &slots {
            let p = s.stop(until);
            if p > 0 {
                pending += p;
                late.push(s.id.clone());
            }
            report.stats.insert(s.id.clone(), s.stats());
        }
        if late.is_empty() {
            Ok(report)
        } else {
            Err(TelemetryError::Deadline {
                pending,
                handlers: late,
            })
        }
    }
}

/// The handlers (as a bit mask) that want this signal.
#[inline]
fn interested(cfg: &Config, level: Level, id: Option<&str>, module: &str) -> u64 {
    let mut mask = 0u64;
    for (i, h) in cfg.handlers.iter().enumerate() {
        if h.filter.pass(level, id, module) {
            mask |= 1 << i;
        }
    }
    mask
}

/// Removes from the mask each handler whose throttle holds this signal
/// back (counted in its stats).
#[inline]
fn throttle(cfg: &Config, mask: u64, level: Level, data: Option<&Data>) -> u64 {
    let mut m = mask & cfg.throttled;
    if m == 0 {
        return mask;
    }
    let mut out = mask;
    while m != 0 {
        let i = m.trailing_zeros() as usize;
        m &= m - 1;
        if let Some(t) = cfg.handlers.get(i).and_then(|s| s.throttle.as_ref()) {
            if level >= t.min_level() && !t.allow(level, data) {
                out &= !(1 << i);
            }
        }
    }
    out
}

/// Counts a drop for (and removes from the mask) each `Dropping` handler
/// whose queue is full, before the signal is built.
#[inline]
fn drop_where_full(cfg: &Config, mask: u64) -> u64 {
    let mut out = mask;
    let mut m = mask;
    while m != 0 {
        let i = m.trailing_zeros() as usize;
        m &= m - 1;
        if let Some(Slot {
            kind: SlotKind::Async { queue, .. },
            ..
        }) = cfg.handlers.get(i).map(|s| &**s)
        {
            if queue.drop_if_full() {
                out &= !(1 << i);
            }
        }
    }
    out
}

/// Like [`deliver`], with the signal assembled by `make` (no user code),
/// called once the handlers are known.
#[inline(always)]
fn deliver_with(cfg: &Config, mask: u64, make: impl FnOnce() -> Signal) {
    if mask & (mask - 1) == 0 {
        if let Some(slot) = cfg.handlers.get(mask.trailing_zeros() as usize) {
            slot.offer_with(make);
        }
        return;
    }
    deliver(cfg, mask, make());
}

/// Hands the signal to each handler of the mask (a clone to all but the last).
#[inline]
fn deliver(cfg: &Config, mut mask: u64, signal: Signal) {
    loop {
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        let Some(slot) = cfg.handlers.get(i) else {
            return;
        };
        if mask == 0 {
            slot.offer_with(move || signal);
            return;
        }
        let copy = signal.clone();
        slot.offer_with(move || copy);
    }
}

impl Slot {
    #[inline(always)]
    fn offer_with(&self, make: impl FnOnce() -> Signal) {
        match &self.kind {
            SlotKind::Sync { handler, counters } => counters.run(&**handler, &make()),
            SlotKind::Async { queue, .. } => queue.push(make()),
        }
    }

    fn stats(&self) -> HandlerStats {
        let mut s = match &self.kind {
            SlotKind::Sync { counters, .. } => {
                let mut s = HandlerStats::default();
                counters.fill(&mut s);
                s
            }
            SlotKind::Async { queue, .. } => queue.stats(),
        };
        s.rate_limited = self.filter.rate_limited();
        s.throttled = self.throttle.as_ref().map_or(0, Throttler::throttled);
        s
    }

    /// Drains and stops; returns the signals not handled.
    fn stop(&self, until: Instant) -> u64 {
        match &self.kind {
            SlotKind::Sync { handler, counters } => {
                counters.flush(&**handler);
                0
            }
            SlotKind::Async { queue, handler } => {
                let joins = std::mem::take(&mut *lock(&self.joins));
                let (pending, finished) = queue.shutdown(until, joins);
                if pending == 0 && finished {
                    // The worker flushed at idle; flush once more for handlers
                    // whose flush is not idempotent with their buffering.
                    // Never while a worker is still inside the handler: one
                    // stuck on a blocked sink (in `handle` or in its idle
                    // `flush`) would hold this call, and the deadline, forever.
                    queue.counters.flush(&**handler);
                }
                pending.max(u64::from(!finished))
            }
        }
    }
}

/// Shuts its instance down when dropped (see [`Telemetry::startup`]).
#[must_use = "dropping the guard shuts telemetry down"]
#[derive(Debug)]
pub struct TelemetryGuard {
    telemetry: Telemetry,
    deadline: Duration,
}

impl TelemetryGuard {
    /// Sets how long the drop waits for queues to drain.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The guarded instance.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.telemetry.shutdown(self.deadline);
    }
}

/// The process-wide default instance, used by the macros when no `tel:` is
/// given. It starts with no handlers (so every signal is filtered out).
pub fn global() -> &'static Telemetry {
    static GLOBAL: OnceLock<Telemetry> = OnceLock::new();
    GLOBAL.get_or_init(Telemetry::new)
}

/// Starts the global instance: adds a text console handler `"console"`
/// (stderr, `Info` and above) if it has no handler yet, and returns the
/// guard that drains and shuts it down when dropped.
pub fn startup() -> TelemetryGuard {
    let g = global();
    if g.handler_ids().is_empty() {
        let _ = g.add_handler(
            "console",
            crate::handlers::ConsoleHandler::stderr(),
            HandlerOptions::sync().min_level(Level::Info),
        );
    }
    g.startup()
}

/// Shuts the global instance down (see [`Telemetry::shutdown`]).
pub fn shutdown(deadline: Duration) -> Result<ShutdownReport, TelemetryError> {
    global().shutdown(deadline)
}

/// The global instance's handler stats.
pub fn handler_stats() -> BTreeMap<String, HandlerStats> {
    global().handler_stats()
}

/// Adds a handler to the global instance.
pub fn add_handler<H: Handler>(
    id: impl Into<String>,
    handler: H,
    options: HandlerOptions,
) -> Result<(), TelemetryError> {
    global().add_handler(id, handler, options)
}

/// Removes a handler from the global instance.
pub fn remove_handler(id: &str) -> bool {
    global().remove_handler(id)
}

/// Sets the global instance's minimum level.
pub fn set_min_level(level: Level) {
    global().set_min_level(level)
}
