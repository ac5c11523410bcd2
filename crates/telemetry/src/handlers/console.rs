use std::io::Write;

use crate::error::HandlerError;
use crate::handler::Handler;
use crate::signal::Signal;

/// The output format of a [`ConsoleHandler`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// One human-readable line per signal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Which standard stream a [`ConsoleHandler`] writes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    #[default]
    Stderr,
}

/// Writes each signal as one line to stdout or stderr.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsoleHandler {
    format: Format,
    stream: Stream,
}

impl ConsoleHandler {
    /// Text to stderr.
    pub fn stderr() -> Self {
        Self::default()
    }

    /// Text to stdout.
    pub fn stdout() -> Self {
        ConsoleHandler {
            stream: Stream::Stdout,
            ..Self::default()
        }
    }

    /// Any format and stream.
    pub fn new(format: Format, stream: Stream) -> Self {
        ConsoleHandler { format, stream }
    }

    /// The same stream in JSON.
    pub fn json(mut self) -> Self {
        self.format = Format::Json;
        self
    }

    fn line(&self, signal: &Signal) -> Vec<u8> {
        match self.format {
            Format::Text => {
                let mut s = signal.to_text();
                s.push('\n');
                s.into_bytes()
            }
            Format::Json => {
                let mut v = Vec::with_capacity(256);
                let _ = signal.write_json_line(&mut v);
                v
            }
        }
    }
}

impl Handler for ConsoleHandler {
    fn handle(&self, signal: &Signal) -> Result<(), HandlerError> {
        // Format first, then write the whole line at once so lines of
        // concurrent threads do not interleave.
        let line = self.line(signal);
        match self.stream {
            Stream::Stdout => std::io::stdout().lock().write_all(&line)?,
            Stream::Stderr => std::io::stderr().lock().write_all(&line)?,
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), HandlerError> {
        match self.stream {
            Stream::Stdout => std::io::stdout().flush()?,
            Stream::Stderr => std::io::stderr().flush()?,
        }
        Ok(())
    }
}
