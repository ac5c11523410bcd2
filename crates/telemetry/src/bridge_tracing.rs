//! Bridge from `tracing` (feature `tracing`): a `tracing-subscriber` layer
//! that turns each event into a log signal (message = the `message` field,
//! the other fields as a JSON object in `data`; the `id` field, if any,
//! becomes the signal id).

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::level::Level;
use crate::signal::{Data, Kind, Signal};
use crate::telemetry::Telemetry;

/// A `tracing_subscriber::Layer` that forwards events to a [`Telemetry`]
/// instance (tracing's `ERROR..TRACE` map to the same telemere levels).
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// let tel = telemere_lite::Telemetry::new();
/// let subscriber = tracing_subscriber::registry().with(telemere_lite::TelemereLayer::new(tel));
/// tracing::subscriber::with_default(subscriber, || tracing::info!(user = 7, "hello"));
/// ```
#[derive(Debug, Clone)]
pub struct TelemereLayer {
    telemetry: Telemetry,
}

impl TelemereLayer {
    /// A layer into `telemetry`.
    pub fn new(telemetry: Telemetry) -> Self {
        TelemereLayer { telemetry }
    }
}

fn level(l: &tracing::Level) -> Level {
    match *l {
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warn,
        tracing::Level::INFO => Level::Info,
        tracing::Level::DEBUG => Level::Debug,
        _ => Level::Trace,
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    id: Option<String>,
    data: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = Some(text),
            "id" => self.id = Some(text),
            name => {
                self.data.insert(name.to_owned(), Value::String(text));
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            name => {
                self.data
                    .insert(name.to_owned(), Value::String(value.to_owned()));
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.data.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.data.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.data.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.data.insert(field.name().to_owned(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.data
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }
}

impl<S: Subscriber> Layer<S> for TelemereLayer {
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.telemetry.level_enabled(level(metadata.level()))
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let lvl = level(meta.level());
        if !self
            .telemetry
            .enabled_in(lvl, None, meta.module_path().unwrap_or(meta.target()))
        {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let module = Cow::Borrowed(meta.module_path().unwrap_or(meta.target()));
        let mut s = Signal::new(Kind::Log, lvl, fields.id.map(Cow::Owned), module);
        s.message = fields.message.map(Cow::Owned);
        if !fields.data.is_empty() {
            s.data = Some(Data::Value(Value::Object(fields.data)));
        }
        s.file = meta.file().map(Cow::Borrowed);
        s.line = meta.line();
        self.telemetry.emit_signal(s);
    }
}
