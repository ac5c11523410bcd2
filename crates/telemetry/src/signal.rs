//! The signal: what every macro, bridge and handler deals in.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::correlation::CorrelationId;
use crate::level::Level;
use crate::timestamp::{write_rfc3339, Rfc3339};

/// Whether a signal came from [`event!`](crate::event) (an id first) or from
/// a log macro / bridge (a message first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `event!(id, data)`.
    Event,
    /// `info!(msg, data)` and friends, and the `log`/`tracing` bridges.
    Log,
}

/// Structured data attached to a signal.
///
/// Data given as a `serde_json::Value` is kept as is; data wrapped in
/// [`Lazy`] is kept as is and serialized by whoever reads it (the worker of
/// an async handler); any other `Serialize` value is serialized once, on
/// the emitting thread, into compact JSON text that the JSON formatters
/// write verbatim.
#[derive(Clone)]
pub enum Data {
    /// Compact JSON text.
    Json(Box<RawValue>),
    /// A JSON value.
    Value(Value),
    /// A value serialized only when read (see [`Lazy`] and [`LazyValue`]).
    Lazy(LazyValue),
}

/// Marks signal data to be captured as is (moved, not serialized) and
/// serialized later, off the emitting thread: the cheapest way to attach
/// data on a hot path. The value must be `'static + Send + Sync`.
///
/// ```
/// # use telemere_lite::{event, Lazy};
/// #[derive(serde::Serialize)]
/// struct Published { conn: u64, channel: &'static str }
/// event!("app/published", Lazy(Published { conn: 7, channel: "chat" }));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lazy<T>(pub T);

/// A captured value that can be serialized later ([`Data::Lazy`]).
pub trait LazyData: Send + Sync + 'static {
    /// Serializes the value to compact JSON.
    fn to_raw(&self) -> Result<Box<RawValue>, serde_json::Error>;
}

impl<T: Serialize + Send + Sync + 'static> LazyData for T {
    fn to_raw(&self) -> Result<Box<RawValue>, serde_json::Error> {
        serde_json::value::to_raw_value(self)
    }
}

/// A captured value ([`Data::Lazy`]) and the longest string its serialized
/// form keeps: one allocation (the value's `Arc`), the limit set by
/// [`Telemetry::set_max_field_bytes`](crate::Telemetry::set_max_field_bytes)
/// travelling with it, so that cutting costs nothing until it is read.
#[derive(Clone)]
pub struct LazyValue {
    value: Arc<dyn LazyData>,
    max_field_bytes: usize,
}

impl fmt::Debug for LazyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyValue")
            .field("max_field_bytes", &self.max_field_bytes)
            .finish_non_exhaustive()
    }
}

impl LazyValue {
    /// Captures `value`, with no limit on its strings.
    pub fn new(value: impl LazyData) -> Self {
        Self::from_arc(Arc::new(value))
    }

    /// Captures a shared value, with no limit on its strings.
    pub fn from_arc(value: Arc<dyn LazyData>) -> Self {
        LazyValue {
            value,
            max_field_bytes: usize::MAX,
        }
    }

    /// The longest string (in bytes) the serialized form keeps.
    pub fn max_field_bytes(&self) -> usize {
        self.max_field_bytes
    }

    /// Lowers the longest string the serialized form keeps (never raises it).
    pub fn limit_field_bytes(&mut self, max: usize) {
        self.max_field_bytes = self.max_field_bytes.min(max);
    }

    /// Serializes the value to compact JSON, its strings cut to
    /// [`max_field_bytes`](Self::max_field_bytes) (each followed by
    /// `…[N bytes]`).
    pub fn to_raw(&self) -> Result<Box<RawValue>, serde_json::Error> {
        let raw = self.value.to_raw()?;
        crate::limits::cut_raw(raw, self.max_field_bytes)
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Data::Json(raw) => f.debug_tuple("Json").field(&raw.get()).finish(),
            Data::Value(v) => f.debug_tuple("Value").field(v).finish(),
            Data::Lazy(_) => f.debug_tuple("Lazy").field(&self.to_string()).finish(),
        }
    }
}

fn serialize_error(e: &serde_json::Error) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("serialize-error".to_owned(), Value::String(e.to_string()));
    Value::Object(m)
}

impl Data {
    /// Captures any serializable value. A value that fails to serialize
    /// (a map with non-string keys, say) becomes `{"serialize-error": "..."}`.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Data {
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => Data::Json(raw),
            Err(e) => Data::Value(serialize_error(&e)),
        }
    }

    /// The data as a JSON value (parses the text form).
    pub fn to_value(&self) -> Value {
        match self {
            Data::Value(v) => v.clone(),
            Data::Json(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            Data::Lazy(l) => match l.to_raw() {
                Ok(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
                Err(e) => serialize_error(&e),
            },
        }
    }

    /// Looks a top-level field up (for data that is a JSON object).
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Data::Value(v) => v.get(key).cloned(),
            Data::Json(_) | Data::Lazy(_) => self.to_value().get(key).cloned(),
        }
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::Json(raw) => raw.serialize(s),
            Data::Value(v) => v.serialize(s),
            Data::Lazy(l) => match l.to_raw() {
                Ok(raw) => raw.serialize(s),
                Err(e) => serialize_error(&e).serialize(s),
            },
        }
    }
}

impl fmt::Display for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Data::Json(raw) => f.write_str(raw.get()),
            Data::Value(v) => write!(f, "{v}"),
            Data::Lazy(l) => match l.to_raw() {
                Ok(raw) => f.write_str(raw.get()),
                Err(e) => write!(f, "{}", serialize_error(&e)),
            },
        }
    }
}

/// The error attached to a signal: its message and its `source()` chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorInfo {
    /// `Display` of the error.
    pub message: String,
    /// `Display` of each `source()`, outermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl ErrorInfo {
    /// Captures a `std::error::Error` with its source chain.
    pub fn from_error<E: std::error::Error + ?Sized>(e: &E) -> Self {
        let mut sources = Vec::new();
        let mut cur = e.source();
        while let Some(s) = cur {
            sources.push(s.to_string());
            cur = s.source();
        }
        ErrorInfo {
            message: e.to_string(),
            sources,
        }
    }

    /// Captures anything `Display`.
    pub fn from_display<E: fmt::Display + ?Sized>(e: &E) -> Self {
        ErrorInfo {
            message: e.to_string(),
            sources: Vec::new(),
        }
    }
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for s in &self.sources {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

/// The thread a signal was emitted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ThreadInfo {
    /// A small number unique to the thread within the process (1, 2, ...).
    pub id: u64,
    /// The thread's name, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'static str>,
}

impl ThreadInfo {
    /// The calling thread (cached per thread: no allocation after the first call).
    #[inline]
    pub fn current() -> ThreadInfo {
        thread_local! {
            static INFO: Cell<Option<ThreadInfo>> = const { Cell::new(None) };
        }
        INFO.try_with(|c| match c.get() {
            Some(info) => info,
            None => {
                let info = ThreadInfo::compute();
                c.set(Some(info));
                info
            }
        })
        .unwrap_or_else(|_| ThreadInfo::compute())
    }

    fn compute() -> ThreadInfo {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let t = std::thread::current();
        ThreadInfo {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            name: t.name().map(intern),
        }
    }
}

/// Thread names are interned (leaked once per distinct name) so that a
/// signal carries a `&'static str` and copying it costs nothing.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let set = NAMES.get_or_init(|| Mutex::new(HashSet::new()));
    let mut set = match set.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(s) = set.get(name) {
        return s;
    }
    let s: &'static str = Box::leak(name.to_owned().into_boxed_str());
    set.insert(s);
    s
}

/// Where a signal was emitted: a `static` made by the macros.
#[derive(Debug)]
pub struct Callsite {
    /// `module_path!()`.
    pub module: &'static str,
    /// `file!()`.
    pub file: &'static str,
    /// `line!()`.
    pub line: u32,
}

/// One telemetry signal.
#[derive(Clone, Debug)]
pub struct Signal {
    /// Event or log.
    pub kind: Kind,
    /// The signal id (`"sente-lite.channels/channel-created"`); always set for
    /// events, optional for logs.
    pub id: Option<Cow<'static, str>>,
    /// The level.
    pub level: Level,
    /// The message, for logs.
    pub message: Option<Cow<'static, str>>,
    /// Structured data.
    pub data: Option<Data>,
    /// An attached error.
    pub error: Option<Box<ErrorInfo>>,
    /// The module path of the emitting code.
    pub module: Cow<'static, str>,
    /// The source file, when known.
    pub file: Option<Cow<'static, str>>,
    /// The source line, when known.
    pub line: Option<u32>,
    /// When the signal was made.
    pub time: SystemTime,
    /// The emitting thread.
    pub thread: ThreadInfo,
    /// The correlation scope it was emitted in, if any.
    pub correlation: Option<CorrelationId>,
}

impl Signal {
    /// A signal of the calling thread and correlation scope, made now, with
    /// no message, data or error.
    pub fn new(
        kind: Kind,
        level: Level,
        id: Option<Cow<'static, str>>,
        module: Cow<'static, str>,
    ) -> Self {
        Signal {
            kind,
            id,
            level,
            message: None,
            data: None,
            error: None,
            module,
            file: None,
            line: None,
            time: SystemTime::now(),
            thread: ThreadInfo::current(),
            correlation: crate::correlation::current_correlation(),
        }
    }

    /// `file:line`, when known.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_deref()?;
        Some(match self.line {
            Some(l) => format!("{file}:{l}"),
            None => file.to_owned(),
        })
    }

    /// The signal as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The signal as one line of human-readable text (no newline).
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(128);
        let _ = self.write_text(&mut s);
        s
    }

    /// Writes the human-readable form:
    /// `2025-01-02T03:04:05.678901Z INFO  module [id] message data={..} error=".." corr=c-1 thread=main file.rs:12`.
    pub fn write_text(&self, s: &mut String) -> fmt::Result {
        write_rfc3339(s, self.time)?;
        write!(
            s,
            " {:<6} {}",
            self.level.as_str().to_ascii_uppercase(),
            self.module
        )?;
        if let Some(id) = &self.id {
            write!(s, " [{id}]")?;
        }
        if let Some(m) = &self.message {
            write!(s, " {m}")?;
        }
        if let Some(d) = &self.data {
            write!(s, " data={d}")?;
        }
        if let Some(e) = &self.error {
            write!(s, " error={:?}", e.to_string())?;
        }
        if let Some(c) = self.correlation {
            write!(s, " corr={c}")?;
        }
        match self.thread.name {
            Some(n) => write!(s, " thread={n}")?,
            None => write!(s, " thread=#{}", self.thread.id)?,
        }
        if let Some(file) = &self.file {
            write!(s, " {file}")?;
            if let Some(l) = self.line {
                write!(s, ":{l}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("time", &Rfc3339(self.time))?;
        m.serialize_entry("level", &self.level)?;
        m.serialize_entry("kind", &self.kind)?;
        if let Some(id) = &self.id {
            m.serialize_entry("id", id)?;
        }
        if let Some(msg) = &self.message {
            m.serialize_entry("msg", msg)?;
        }
        if let Some(d) = &self.data {
            m.serialize_entry("data", d)?;
        }
        if let Some(e) = &self.error {
            m.serialize_entry("error", e)?;
        }
        m.serialize_entry("module", &self.module)?;
        if let Some(f) = &self.file {
            m.serialize_entry("file", f)?;
        }
        if let Some(l) = self.line {
            m.serialize_entry("line", &l)?;
        }
        m.serialize_entry("thread", &self.thread)?;
        if let Some(c) = &self.correlation {
            m.serialize_entry("correlation", c)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let mut sig = Signal::new(Kind::Event, Level::Warn, Some("a/b".into()), "m::n".into());
        sig.data = Some(Data::from_serialize(&serde_json::json!({"k": 1})));
        sig.error = Some(Box::new(ErrorInfo::from_display(&"bad")));
        sig.file = Some("f.rs".into());
        sig.line = Some(7);
        let v: Value = serde_json::from_str(&sig.to_json()).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["kind"], "event");
        assert_eq!(v["id"], "a/b");
        assert_eq!(v["data"]["k"], 1);
        assert_eq!(v["error"]["message"], "bad");
        assert_eq!(v["line"], 7);
        assert!(sig.to_text().contains("WARN"));
    }

    #[test]
    fn unserializable_data_is_captured_as_an_error() {
        let mut m = std::collections::HashMap::new();
        m.insert(vec![1u8], 1);
        let d = Data::from_serialize(&m);
        assert!(d.get("serialize-error").is_some());
    }
}
