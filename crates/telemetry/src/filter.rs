//! Filters: minimum level, per-module minimum levels, id allow/deny lists,
//! sampling and rate limiting. The same [`Filter`] is used for the instance
//! (all handlers) and per handler (which can only narrow further).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::TelemetryError;
use crate::level::Level;

/// At most `max` signals per `per` (a fixed window that starts with the first
/// signal after the previous window ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Signals let through per window.
    pub max: u64,
    /// The window length.
    pub per: Duration,
}

/// Which signals pass. Every part is optional; an empty filter passes all.
///
/// Id patterns are exact ids, or prefixes ending in `*`
/// (`"sente-lite.channels/*"`). Id filters apply to signals that have an
/// id; id-less log signals are not affected by them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// The minimum level (none: every level).
    pub min_level: Option<Level>,
    /// `(module prefix, minimum level)`: the longest prefix matching a
    /// signal's module path (on `::` boundaries) replaces `min_level`.
    pub module_levels: Vec<(String, Level)>,
    /// If set, only signals whose id matches one of these pass.
    pub allow_ids: Option<Vec<String>>,
    /// Signals whose id matches one of these never pass.
    pub deny_ids: Vec<String>,
    /// Fraction of signals kept, in `0.0..=1.0` (none: all).
    pub sample_rate: Option<f64>,
    /// At most N signals per window.
    pub rate_limit: Option<RateLimit>,
}

impl Filter {
    /// An empty filter (passes everything).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the minimum level.
    pub fn min_level(mut self, level: Level) -> Self {
        self.min_level = Some(level);
        self
    }

    /// Adds a per-module minimum level.
    pub fn module_level(mut self, prefix: impl Into<String>, level: Level) -> Self {
        self.module_levels.push((prefix.into(), level));
        self
    }

    /// Adds an allowed id pattern (turning the allow list on).
    pub fn allow_id(mut self, pattern: impl Into<String>) -> Self {
        self.allow_ids
            .get_or_insert_with(Vec::new)
            .push(pattern.into());
        self
    }

    /// Adds a denied id pattern.
    pub fn deny_id(mut self, pattern: impl Into<String>) -> Self {
        self.deny_ids.push(pattern.into());
        self
    }

    /// Keeps a fraction `rate` (`0.0..=1.0`) of the signals, at random.
    pub fn sample_rate(mut self, rate: f64) -> Self {
        self.sample_rate = Some(rate);
        self
    }

    /// Lets at most `max` signals through per `per`.
    pub fn rate_limit(mut self, max: u64, per: Duration) -> Self {
        self.rate_limit = Some(RateLimit { max, per });
        self
    }

    pub(crate) fn compile(&self) -> Result<CompiledFilter, TelemetryError> {
        if let Some(r) = self.sample_rate {
            if !(0.0..=1.0).contains(&r) {
                return Err(TelemetryError::InvalidFilter(format!(
                    "sample_rate {r} is not within 0.0..=1.0"
                )));
            }
        }
        if let Some(rl) = self.rate_limit {
            if rl.per.is_zero() {
                return Err(TelemetryError::InvalidFilter(
                    "rate_limit window must be longer than zero".to_owned(),
                ));
            }
        }
        let mut module_levels: Vec<(String, Level)> = self
            .module_levels
            .iter()
            .map(|(p, l)| (p.trim_end_matches("::").to_owned(), *l))
            .collect();
        // Longest prefix first: the first match wins.
        module_levels.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let threshold = match self.sample_rate {
            None => None,
            Some(r) if r >= 1.0 => None,
            Some(r) => Some((r * (u64::MAX as f64)) as u64),
        };
        Ok(CompiledFilter {
            min_level: self.min_level.unwrap_or(Level::Trace),
            level_only: self.module_levels.is_empty()
                && self.allow_ids.is_none()
                && self.deny_ids.is_empty()
                && threshold.is_none()
                && self.rate_limit.is_none(),
            module_levels,
            allow: self
                .allow_ids
                .as_ref()
                .map(|v| v.iter().map(|p| Pattern::new(p)).collect()),
            deny: self.deny_ids.iter().map(|p| Pattern::new(p)).collect(),
            sample_threshold: threshold,
            limiter: self.rate_limit.map(Limiter::new),
            source: self.clone(),
        })
    }
}

#[derive(Debug)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn new(p: &str) -> Self {
        match p.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.to_owned()),
            None => Pattern::Exact(p.to_owned()),
        }
    }

    fn matches(&self, id: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == id,
            Pattern::Prefix(p) => id.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug)]
struct Limiter {
    limit: RateLimit,
    /// (window start, signals let through in it)
    state: Mutex<(Option<Instant>, u64)>,
    limited: AtomicU64,
}

impl Limiter {
    fn new(limit: RateLimit) -> Self {
        Limiter {
            limit,
            state: Mutex::new((None, 0)),
            limited: AtomicU64::new(0),
        }
    }

    fn allow(&self) -> bool {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        let fresh = match st.0 {
            None => true,
            Some(start) => now.duration_since(start) >= self.limit.per,
        };
        if fresh {
            *st = (Some(now), 0);
        }
        if st.1 < self.limit.max {
            st.1 += 1;
            true
        } else {
            drop(st);
            self.limited.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// A filter ready for the hot path.
#[derive(Debug)]
pub(crate) struct CompiledFilter {
    min_level: Level,
    /// Nothing but `min_level` to check (the common case): `pass` is one
    /// comparison.
    level_only: bool,
    module_levels: Vec<(String, Level)>,
    allow: Option<Vec<Pattern>>,
    deny: Vec<Pattern>,
    sample_threshold: Option<u64>,
    limiter: Option<Limiter>,
    pub(crate) source: Filter,
}

fn module_matches(prefix: &str, module: &str) -> bool {
    module.starts_with(prefix)
        && (module.len() == prefix.len() || module[prefix.len()..].starts_with("::"))
}

impl CompiledFilter {
    /// The lowest level that can pass this filter.
    pub(crate) fn floor(&self) -> Level {
        self.module_levels
            .iter()
            .map(|(_, l)| *l)
            .fold(self.min_level, Ord::min)
    }

    /// Level, module and id checks (deterministic, no side effects).
    #[inline]
    pub(crate) fn static_pass(&self, level: Level, id: Option<&str>, module: &str) -> bool {
        let min = self
            .module_levels
            .iter()
            .find(|(p, _)| module_matches(p, module))
            .map_or(self.min_level, |(_, l)| *l);
        if level < min {
            return false;
        }
        if let Some(id) = id {
            if self.deny.iter().any(|p| p.matches(id)) {
                return false;
            }
            if let Some(allow) = &self.allow {
                if !allow.iter().any(|p| p.matches(id)) {
                    return false;
                }
            }
        }
        true
    }

    /// Sampling and rate limiting (stateful: call once per signal, after
    /// [`static_pass`](Self::static_pass)).
    #[inline]
    pub(crate) fn dynamic_pass(&self) -> bool {
        if let Some(t) = self.sample_threshold {
            if random_u64() > t {
                return false;
            }
        }
        match &self.limiter {
            Some(l) => l.allow(),
            None => true,
        }
    }

    #[inline]
    pub(crate) fn pass(&self, level: Level, id: Option<&str>, module: &str) -> bool {
        if self.level_only {
            return level >= self.min_level;
        }
        self.static_pass(level, id, module) && self.dynamic_pass()
    }

    /// Signals refused by the rate limiter so far.
    pub(crate) fn rate_limited(&self) -> u64 {
        self.limiter
            .as_ref()
            .map_or(0, |l| l.limited.load(Ordering::Relaxed))
    }
}

/// A per-thread xorshift generator: sampling needs speed, not quality.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE
        .try_with(|s| {
            let mut x = s.get();
            if x == 0 {
                // Seed from the address of a local and the time.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                x = (t ^ (s as *const _ as u64).rotate_left(32)) | 1;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.set(x);
            x
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_modules_and_ids() {
        let f = Filter::new()
            .min_level(Level::Info)
            .module_level("app::db", Level::Warn)
            .module_level("app::db::pool", Level::Trace)
            .deny_id("x/secret")
            .allow_id("x/*")
            .compile()
            .unwrap();
        assert!(f.static_pass(Level::Info, Some("x/a"), "app"));
        assert!(!f.static_pass(Level::Debug, Some("x/a"), "app"));
        assert!(!f.static_pass(Level::Info, Some("x/a"), "app::db"));
        assert!(f.static_pass(Level::Info, Some("x/a"), "app::dbx"));
        assert!(f.static_pass(Level::Trace, Some("x/a"), "app::db::pool::conn"));
        assert!(!f.static_pass(Level::Info, Some("x/secret"), "app"));
        assert!(!f.static_pass(Level::Info, Some("y/a"), "app"));
        assert!(f.static_pass(Level::Info, None, "app"));
        assert_eq!(f.floor(), Level::Trace);
    }

    #[test]
    fn rate_limit_counts_exactly() {
        let f = Filter::new()
            .rate_limit(3, Duration::from_secs(3600))
            .compile()
            .unwrap();
        let passed = (0..10).filter(|_| f.dynamic_pass()).count();
        assert_eq!(passed, 3);
        assert_eq!(f.rate_limited(), 7);
    }

    #[test]
    fn sampling_keeps_about_the_rate() {
        let f = Filter::new().sample_rate(0.25).compile().unwrap();
        let n = 100_000;
        let kept = (0..n).filter(|_| f.dynamic_pass()).count();
        assert!((20_000..30_000).contains(&kept), "kept {kept}");
        let none = Filter::new().sample_rate(0.0).compile().unwrap();
        assert!((0..1000).all(|_| !none.dynamic_pass()));
        assert!(Filter::new().sample_rate(1.5).compile().is_err());
    }
}
