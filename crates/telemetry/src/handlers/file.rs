use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{HandlerError, TelemetryError};
use crate::handler::Handler;
use crate::signal::Signal;

/// Options of a [`FileHandler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileOptions {
    /// Rotate when the file would grow past this many bytes (none: never).
    /// Rotation renames `app.log` to `app.log.1`, `app.log.1` to
    /// `app.log.2`, ... keeping `keep` old files, and starts a new file.
    pub max_bytes: Option<u64>,
    /// Old files kept by rotation (default 5; 0 deletes the old file).
    pub keep: usize,
    /// Write buffer size in bytes (default 64 KiB).
    pub buffer_bytes: usize,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            max_bytes: None,
            keep: 5,
            buffer_bytes: 64 * 1024,
        }
    }
}

impl FileOptions {
    /// Size-based rotation.
    pub fn rotate(max_bytes: u64, keep: usize) -> Self {
        FileOptions {
            max_bytes: Some(max_bytes),
            keep,
            ..Self::default()
        }
    }
}

struct Out {
    file: File,
    /// Bytes written to `file` (flushed or not): what rotation looks at.
    size: u64,
    /// Lines not yet written to `file`, written in one `write_all` when it
    /// reaches `buffer_bytes` or on `flush` (each line is formatted right
    /// into it, no intermediate copy).
    buf: Vec<u8>,
}

/// Appends each signal as one JSON line to a file, through a write buffer
/// that is flushed whenever the handler's queue runs empty (or on `flush`).
pub struct FileHandler {
    path: PathBuf,
    opts: FileOptions,
    out: Mutex<Out>,
}

impl std::fmt::Debug for FileHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHandler")
            .field("path", &self.path)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn open(path: &Path) -> Result<(File, u64), TelemetryError> {
    let err = |source| TelemetryError::OpenFile {
        path: path.to_owned(),
        source,
    };
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    let size = f.metadata().map_err(err)?.len();
    Ok((f, size))
}

impl FileHandler {
    /// Opens (creating or appending to) `path`.
    pub fn new(path: impl AsRef<Path>) -> Result<Self, TelemetryError> {
        Self::with_options(path, FileOptions::default())
    }

    /// Opens `path` with options.
    pub fn with_options(path: impl AsRef<Path>, opts: FileOptions) -> Result<Self, TelemetryError> {
        let path = path.as_ref().to_owned();
        let (file, size) = open(&path)?;
        Ok(FileHandler {
            path,
            opts,
            out: Mutex::new(Out {
                file,
                size,
                buf: Vec::with_capacity(opts.buffer_bytes.clamp(1, 1 << 24) + 1024),
            }),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Out> {
        match self.out.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    /// Rotates; the caller has written (or dropped) the old file's bytes.
    fn rotate(&self, out: &mut Out) -> Result<(), HandlerError> {
        if self.opts.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.opts.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        let (file, size) = open(&self.path)?;
        out.file = file;
        out.size = size;
        Ok(())
    }
}

/// Writes out the whole buffer; on an error the buffer is emptied anyway
/// (those lines are lost, the error is counted) so it cannot grow.
fn write_out(out: &mut Out) -> std::io::Result<()> {
    if out.buf.is_empty() {
        return Ok(());
    }
    let res = out.file.write_all(&out.buf);
    out.buf.clear();
    res
}

impl Handler for FileHandler {
    fn handle(&self, signal: &Signal) -> Result<(), HandlerError> {
        let mut guard = self.lock();
        let out = &mut *guard;
        let start = out.buf.len();
        crate::jsonl::write_line(signal, &mut out.buf);
        let len = (out.buf.len() - start) as u64;
        if let Some(max) = self.opts.max_bytes {
            // `size` counts the buffered lines before this one too.
            if out.size > 0 && out.size + len > max {
                let res = out
                    .file
                    .write_all(&out.buf[..start])
                    .map_err(HandlerError::from)
                    .and_then(|()| self.rotate(out));
                out.buf.drain(..start);
                if let Err(e) = res {
                    out.buf.clear();
                    return Err(e);
                }
            }
        }
        out.size += len;
        if out.buf.len() >= self.opts.buffer_bytes {
            write_out(out)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), HandlerError> {
        let mut out = self.lock();
        write_out(&mut out)?;
        out.file.flush()?;
        Ok(())
    }
}

impl crate::Telemetry {
    /// Adds a JSON-lines [`FileHandler`] writing to `path`, async
    /// (`Dropping`, buffer 1024, one worker), as handler `id`.
    pub fn add_file_handler(
        &self,
        id: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<(), TelemetryError> {
        self.add_file_handler_with(
            id,
            path,
            FileOptions::default(),
            crate::HandlerOptions::async_(),
        )
    }

    /// [`add_file_handler`](Self::add_file_handler) with file and handler options.
    pub fn add_file_handler_with(
        &self,
        id: impl Into<String>,
        path: impl AsRef<Path>,
        file: FileOptions,
        options: crate::HandlerOptions,
    ) -> Result<(), TelemetryError> {
        let h = FileHandler::with_options(path, file)?;
        self.add_handler(id, h, options)
    }
}
