//! Signal levels.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The level of a signal, ordered `Trace < Debug < Info < Warn < Error < Fatal < Report`.
///
/// `Report` sits above `Fatal`: it is for signals that must always reach the
/// handlers (audit records, periodic reports), whatever the minimum level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Level {
    /// Very fine-grained diagnostics.
    Trace = 0,
    /// Diagnostics useful while developing.
    Debug = 1,
    /// Normal operation worth recording.
    Info = 2,
    /// Something unexpected that the program handled.
    Warn = 3,
    /// An operation failed.
    Error = 4,
    /// The program (or a major part of it) cannot go on.
    Fatal = 5,
    /// Always wanted: audit records, reports.
    Report = 6,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 7] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
        Level::Report,
    ];

    /// The lowercase name (`"info"`), as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
            Level::Report => "report",
        }
    }

    pub(crate) const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The error of [`Level::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level {0:?} (expected trace, debug, info, warn, error, fatal or report)")]
pub struct ParseLevelError(pub String);

impl FromStr for Level {
    type Err = ParseLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .iter()
            .copied()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .or_else(|| {
                s.trim()
                    .eq_ignore_ascii_case("warning")
                    .then_some(Level::Warn)
            })
            .ok_or_else(|| ParseLevelError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_names() {
        assert!(Level::Trace < Level::Debug && Level::Fatal < Level::Report);
        // The instance's level gate compares `as_u8` values.
        assert!(Level::ALL.windows(2).all(|w| w[0].as_u8() < w[1].as_u8()));
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>(), Ok(l));
            assert_eq!(
                serde_json::to_string(&l).unwrap(),
                format!("\"{}\"", l.as_str())
            );
        }
        assert!("nope".parse::<Level>().is_err());
    }
}
