//! Limits that keep telemetry from being turned against its program: every
//! string in a signal is cut to a maximum length (with its full length
//! noted), and a handler can throttle the signals of each source (a data
//! field such as a connection id) with a token bucket.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::TelemetryError;
use crate::level::Level;
use crate::signal::{Data, ErrorInfo, Signal};
use crate::telemetry::Payload;

/// The longest string (in bytes) a signal keeps by default
/// ([`Telemetry::set_max_field_bytes`](crate::Telemetry::set_max_field_bytes)).
pub const DEFAULT_MAX_FIELD_BYTES: usize = 256;

/// `s` cut to at most `max` bytes (at a char boundary) followed by
/// `…[N bytes]`, N being the full length of `s`; `None` when `s` fits.
pub(crate) fn cut_str(s: &str, max: usize) -> Option<String> {
    if s.len() <= max {
        return None;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 24);
    out.push_str(&s[..end]);
    let _ = write!(out, "…[{} bytes]", s.len());
    Some(out)
}

fn cut_cow(c: &mut Cow<'static, str>, max: usize) {
    if let Some(cut) = cut_str(c, max) {
        *c = Cow::Owned(cut);
    }
}

fn cut_string(s: &mut String, max: usize) {
    if let Some(cut) = cut_str(s, max) {
        *s = cut;
    }
}

/// Cuts every string (and object key) of `v`; true if anything changed.
fn cut_value(v: &mut Value, max: usize) -> bool {
    match v {
        Value::String(s) => match cut_str(s, max) {
            Some(cut) => {
                *s = cut;
                true
            }
            None => false,
        },
        Value::Array(a) => a.iter_mut().fold(false, |ch, x| cut_value(x, max) | ch),
        Value::Object(m) => {
            let long_key = m.keys().any(|k| k.len() > max);
            if long_key {
                let old = std::mem::take(m);
                for (k, mut x) in old {
                    cut_value(&mut x, max);
                    m.insert(cut_str(&k, max).unwrap_or(k), x);
                }
                true
            } else {
                m.values_mut().fold(false, |ch, x| cut_value(x, max) | ch)
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Whether some string of the JSON text `json` is longer than `max` bytes
/// as written (escapes included, so never shorter than the string itself).
/// One pass over the bytes; text no longer than `max` never has one.
fn has_long_string(json: &str, max: usize) -> bool {
    if json.len() <= max {
        return false;
    }
    let b = json.as_bytes();
    let mut i = 0;
    let mut start = None;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1, // only inside strings: skip the escaped byte
            b'"' => match start.take() {
                None => start = Some(i + 1),
                Some(s) => {
                    if i - s > max {
                        return true;
                    }
                }
            },
            _ => {}
        }
        i += 1;
    }
    false
}

/// `raw` with every string longer than `max` bytes cut (for
/// [`LazyValue`](crate::LazyValue), cut when it is serialized): returned as
/// is when it has none, the common case.
pub(crate) fn cut_raw(
    raw: Box<serde_json::value::RawValue>,
    max: usize,
) -> Result<Box<serde_json::value::RawValue>, serde_json::Error> {
    if !has_long_string(raw.get(), max) {
        return Ok(raw);
    }
    let mut v: Value = serde_json::from_str(raw.get())?;
    cut_value(&mut v, max);
    serde_json::value::to_raw_value(&v)
}

pub(crate) fn cut_data(d: &mut Data, max: usize) {
    match d {
        Data::Value(v) => {
            cut_value(v, max);
        }
        Data::Json(raw) => {
            if has_long_string(raw.get(), max) {
                if let Ok(mut v) = serde_json::from_str::<Value>(raw.get()) {
                    cut_value(&mut v, max);
                    *d = Data::Value(v);
                }
            }
        }
        Data::Lazy(l) => l.limit_field_bytes(max),
    }
}

fn cut_error(e: &mut ErrorInfo, max: usize) {
    cut_string(&mut e.message, max);
    for s in &mut e.sources {
        cut_string(s, max);
    }
}

/// Cuts the message, the data's strings and the error of a payload.
#[inline]
pub(crate) fn cut_payload(p: &mut Payload, max: usize) {
    if let Some(m) = &mut p.message {
        cut_cow(m, max);
    }
    if let Some(d) = &mut p.data {
        cut_data(d, max);
    }
    if let Some(e) = &mut p.error {
        cut_error(e, max);
    }
}

/// Cuts every string of a ready-made signal (id, module and file too: a
/// bridge may fill them from its input).
pub(crate) fn cut_signal(s: &mut Signal, max: usize) {
    if let Some(id) = &mut s.id {
        cut_cow(id, max);
    }
    if let Some(m) = &mut s.message {
        cut_cow(m, max);
    }
    if let Some(d) = &mut s.data {
        cut_data(d, max);
    }
    if let Some(e) = &mut s.error {
        cut_error(e, max);
    }
    cut_cow(&mut s.module, max);
    if let Some(f) = &mut s.file {
        cut_cow(f, max);
    }
}

// ---- size estimate -------------------------------------------------

fn value_bytes(v: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    NODE + match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(value_bytes).sum(),
        Value::Object(m) => m.iter().map(|(k, x)| k.len() + 32 + value_bytes(x)).sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

// Borrowed or owned matters here (a borrowed string holds no memory).
#[allow(clippy::ptr_arg)]
fn cow_bytes(c: &Cow<'static, str>) -> usize {
    match c {
        Cow::Borrowed(_) => 0,
        Cow::Owned(s) => s.len(),
    }
}

impl Signal {
    /// About how many bytes of memory the signal holds (its own size plus
    /// what its strings, data and error hold): what an async queue's
    /// `buffer_bytes` counts. Data wrapped in [`Lazy`](crate::Lazy) counts
    /// as a fixed 64 bytes (its value is not looked into). The same signal
    /// always gives the same estimate.
    pub fn approx_bytes(&self) -> usize {
        let mut n = std::mem::size_of::<Signal>();
        n += self.id.as_ref().map_or(0, cow_bytes);
        n += self.message.as_ref().map_or(0, cow_bytes);
        n += cow_bytes(&self.module);
        n += self.file.as_ref().map_or(0, cow_bytes);
        n += match &self.data {
            None => 0,
            Some(Data::Json(raw)) => raw.get().len() + 16,
            Some(Data::Value(v)) => value_bytes(v),
            Some(Data::Lazy(_)) => 64,
        };
        if let Some(e) = &self.error {
            n += std::mem::size_of::<ErrorInfo>()
                + e.message.len()
                + e.sources.iter().map(|s| s.len() + 24).sum::<usize>();
        }
        n
    }
}

// ---- throttle --------------------------------------------------------

/// Per-source throttling of one handler's signals: signals at or above
/// `min_level` whose data names a source (the first of `fields` present as
/// a top-level field: a connection id, say) get a token bucket per source
/// holding `max` signals and refilled at `max` per `per`. A signal that
/// finds its bucket empty is not given to the handler and is counted in
/// its `throttled` stat. Signals without such a field are never throttled.
///
/// At most `max_keys` sources are tracked; a new one beyond that evicts the
/// one tracked longest (which starts again with a full bucket if it comes
/// back).
///
/// ```
/// use std::time::Duration;
/// use telemere_lite::{event, CaptureHandler, HandlerOptions, Level, Telemetry, Throttle};
///
/// let tel = Telemetry::new();
/// let capture = CaptureHandler::new();
/// let throttle = Throttle::by_field("conn-id", 3, Duration::from_secs(60));
/// tel.add_handler("c", capture.clone(), HandlerOptions::sync().throttle(throttle)).unwrap();
/// for _ in 0..10 {
///     event!(tel: &tel, level: Level::Warn, "app/bad-frame", serde_json::json!({"conn-id": "c-1"}));
/// }
/// event!(tel: &tel, level: Level::Warn, "app/bad-frame", serde_json::json!({"conn-id": "c-2"}));
/// assert_eq!(capture.len(), 4);
/// assert_eq!(tel.handler_stats()["c"].throttled, 7);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    /// The data fields naming a signal's source, tried in order.
    pub fields: Vec<Cow<'static, str>>,
    /// Signals below this level are never throttled (default `Warn`).
    pub min_level: Level,
    /// Bucket size: signals let through at once, and per `per` after that.
    pub max: u32,
    /// The refill period.
    pub per: Duration,
    /// Sources tracked at most (default 10,000).
    pub max_keys: usize,
}

impl Throttle {
    /// Throttles `Warn` and above by the data field `field`: `max` signals
    /// per `per` per source.
    pub fn by_field(field: impl Into<Cow<'static, str>>, max: u32, per: Duration) -> Self {
        Throttle {
            fields: vec![field.into()],
            min_level: Level::Warn,
            max,
            per,
            max_keys: 10_000,
        }
    }

    /// Adds another field naming the source (tried after the others).
    pub fn or_field(mut self, field: impl Into<Cow<'static, str>>) -> Self {
        self.fields.push(field.into());
        self
    }

    /// Sets the lowest level throttled.
    pub fn min_level(mut self, level: Level) -> Self {
        self.min_level = level;
        self
    }

    /// Sets how many sources are tracked at most.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self
    }

    pub(crate) fn compile(&self) -> Result<Throttler, TelemetryError> {
        if self.max == 0 || self.per.is_zero() || self.max_keys == 0 || self.fields.is_empty() {
            return Err(TelemetryError::InvalidOptions(format!(
                "throttle: max ({}), per ({:?}), max_keys ({}) and the fields ({}) must be \
                 more than zero",
                self.max,
                self.per,
                self.max_keys,
                self.fields.len()
            )));
        }
        Ok(Throttler {
            spec: self.clone(),
            state: Mutex::new(Buckets::default()),
            throttled: AtomicU64::new(0),
        })
    }
}

#[derive(Debug, Default)]
struct Buckets {
    /// source → (tokens, last refill)
    map: HashMap<String, (f64, Instant)>,
    /// Sources in the order they were first tracked (for eviction).
    order: VecDeque<String>,
}

/// A compiled [`Throttle`] with its state.
#[derive(Debug)]
pub(crate) struct Throttler {
    spec: Throttle,
    state: Mutex<Buckets>,
    throttled: AtomicU64,
}

/// The source a signal's data names, as text.
fn source_of(data: &Data, fields: &[Cow<'static, str>]) -> Option<String> {
    let text = |v: Value| match v {
        Value::String(s) => Some(s),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    match data {
        Data::Value(v) => fields
            .iter()
            .find_map(|f| v.get(f.as_ref()).cloned().and_then(text)),
        Data::Json(_) | Data::Lazy(_) => {
            let v = data.to_value();
            fields
                .iter()
                .find_map(|f| v.get(f.as_ref()).cloned().and_then(text))
        }
    }
}

impl Throttler {
    pub(crate) fn min_level(&self) -> Level {
        self.spec.min_level
    }

    pub(crate) fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Whether the handler gets this signal (and takes a token if so).
    pub(crate) fn allow(&self, level: Level, data: Option<&Data>) -> bool {
        if level < self.spec.min_level {
            return true;
        }
        let Some(key) = data.and_then(|d| source_of(d, &self.spec.fields)) else {
            return true;
        };
        let key = match cut_str(&key, DEFAULT_MAX_FIELD_BYTES) {
            Some(cut) => cut,
            None => key,
        };
        let now = Instant::now();
        let max = f64::from(self.spec.max);
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let st = &mut *st;
        let entry = match st.map.get_mut(&key) {
            Some(e) => e,
            None => {
                while st.map.len() >= self.spec.max_keys {
                    match st.order.pop_front() {
                        Some(old) => {
                            st.map.remove(&old);
                        }
                        None => break,
                    }
                }
                st.order.push_back(key.clone());
                st.map.entry(key).or_insert((max, now))
            }
        };
        let elapsed = now.saturating_duration_since(entry.1).as_secs_f64();
        entry.0 = (entry.0 + elapsed / self.spec.per.as_secs_f64() * max).min(max);
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            true
        } else {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_cut_at_char_boundaries_with_their_length() {
        assert_eq!(cut_str("abc", 3), None);
        assert_eq!(cut_str("abcd", 3).as_deref(), Some("abc…[4 bytes]"));
        // "é" is 2 bytes: a cut inside it backs off to before it.
        assert_eq!(cut_str("aéé", 2).as_deref(), Some("a…[5 bytes]"));
        assert_eq!(cut_str("x", 0).as_deref(), Some("…[1 bytes]"));
    }

    #[test]
    fn long_strings_are_found_in_json_text_escapes_included() {
        assert!(!has_long_string(r#"{"a":"1234"}"#, 4));
        assert!(has_long_string(r#"{"a":"12345"}"#, 4));
        assert!(has_long_string(r#"{"12345":1}"#, 4));
        // Escaped quotes do not end a string.
        assert!(has_long_string(r#"{"a":"1\"2\"3"}"#, 6));
        assert!(!has_long_string(r#"["1\"", "2\""]"#, 3));
    }

    #[test]
    fn data_of_every_kind_is_cut() {
        let long = "x".repeat(1000);
        let mut v = Data::Value(json!({"a": [long.clone()], long.clone(): 1, "n": 2}));
        cut_data(&mut v, 8);
        let got = v.to_value();
        assert_eq!(got["a"][0], "xxxxxxxx…[1000 bytes]");
        assert_eq!(got["xxxxxxxx…[1000 bytes]"], 1);
        assert_eq!(got["n"], 2);

        let mut j = Data::from_serialize(&json!({"a": long.clone()}));
        cut_data(&mut j, 8);
        assert_eq!(j.to_value()["a"], "xxxxxxxx…[1000 bytes]");

        let mut l = Data::Lazy(crate::LazyValue::new(vec![long.clone()]));
        cut_data(&mut l, 8);
        assert_eq!(l.to_value()[0], "xxxxxxxx…[1000 bytes]");
        assert_eq!(l.to_string(), r#"["xxxxxxxx…[1000 bytes]"]"#);
    }

    #[test]
    fn the_estimate_counts_what_the_signal_holds() {
        let mut s = Signal::new(crate::Kind::Log, Level::Info, None, "m".into());
        let base = s.approx_bytes();
        s.message = Some(Cow::Owned("y".repeat(10_000)));
        assert!(s.approx_bytes() >= base + 10_000);
        s.data = Some(Data::Value(json!({"k": "z".repeat(5_000)})));
        assert!(s.approx_bytes() >= base + 15_000);
    }

    #[test]
    fn buckets_refill_and_are_bounded() {
        let t = Throttle::by_field("conn-id", 2, Duration::from_secs(3600))
            .max_keys(2)
            .compile()
            .unwrap();
        let d = |c: &str| Data::Value(json!({ "conn-id": c }));
        assert!(t.allow(Level::Warn, Some(&d("a"))));
        assert!(t.allow(Level::Warn, Some(&d("a"))));
        assert!(!t.allow(Level::Warn, Some(&d("a"))));
        assert!(t.allow(Level::Info, Some(&d("a"))), "below min_level");
        assert!(t.allow(Level::Warn, None), "no source");
        assert!(t.allow(Level::Warn, Some(&d("b"))));
        // A third source evicts the first, which comes back with a full bucket.
        assert!(t.allow(Level::Warn, Some(&d("c"))));
        assert!(t.allow(Level::Warn, Some(&d("a"))));
        assert_eq!(t.throttled(), 1);
        assert!(Throttle::by_field("x", 0, Duration::from_secs(1))
            .compile()
            .is_err());
    }
}
