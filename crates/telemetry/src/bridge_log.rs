//! Bridge from the `log` facade (feature `log`): each record becomes a log
//! signal of the chosen instance (message = the formatted record, module and
//! `file:line` from the record, `data = {"target": ..}` when the target is
//! not the module path).

use std::borrow::Cow;

use crate::level::Level;
use crate::signal::{Data, Kind, Signal};
use crate::telemetry::Telemetry;

/// A `log::Log` that forwards records to a [`Telemetry`] instance.
#[derive(Debug, Clone)]
pub struct LogBridge {
    telemetry: Telemetry,
}

impl LogBridge {
    /// A bridge into `telemetry`.
    pub fn new(telemetry: Telemetry) -> Self {
        LogBridge { telemetry }
    }
}

fn level(l: log::Level) -> Level {
    match l {
        log::Level::Error => Level::Error,
        log::Level::Warn => Level::Warn,
        log::Level::Info => Level::Info,
        log::Level::Debug => Level::Debug,
        log::Level::Trace => Level::Trace,
    }
}

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let lvl = level(metadata.level());
        self.telemetry.enabled_in(lvl, None, metadata.target())
    }

    fn log(&self, record: &log::Record<'_>) {
        let lvl = level(record.level());
        if !self.telemetry.level_enabled(lvl) {
            return;
        }
        let module: Cow<'static, str> = match record.module_path_static() {
            Some(m) => Cow::Borrowed(m),
            None => Cow::Owned(record.module_path().unwrap_or(record.target()).to_owned()),
        };
        if !self.telemetry.enabled_in(lvl, None, &module) {
            return;
        }
        let mut s = Signal::new(Kind::Log, lvl, None, module);
        s.message = Some(match record.args().as_str() {
            Some(m) => Cow::Borrowed(m),
            None => Cow::Owned(record.args().to_string()),
        });
        if record.module_path() != Some(record.target()) {
            s.data = Some(Data::Value(
                serde_json::json!({ "target": record.target() }),
            ));
        }
        s.file = record
            .file_static()
            .map(Cow::Borrowed)
            .or_else(|| record.file().map(|f| Cow::Owned(f.to_owned())));
        s.line = record.line();
        self.telemetry.emit_signal(s);
    }

    fn flush(&self) {
        let _ = self.telemetry.flush(std::time::Duration::from_secs(5));
    }
}

/// Installs a [`LogBridge`] into `telemetry` as the `log` crate's logger and
/// sets `log`'s max level to `max_level`. Fails if a logger is already set.
pub fn install_log_bridge(
    telemetry: Telemetry,
    max_level: log::LevelFilter,
) -> Result<(), log::SetLoggerError> {
    log::set_boxed_logger(Box::new(LogBridge::new(telemetry)))?;
    log::set_max_level(max_level);
    Ok(())
}
