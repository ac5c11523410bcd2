//! Built-in handlers: console (text or JSON), JSON-lines file with optional
//! size-based rotation, and an in-memory capture for tests.

mod capture;
mod console;
mod file;

pub use capture::CaptureHandler;
pub use console::{ConsoleHandler, Format, Stream};
pub use file::{FileHandler, FileOptions};
