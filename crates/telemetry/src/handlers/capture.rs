use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::HandlerError;
use crate::handler::Handler;
use crate::signal::Signal;

#[derive(Debug, Default)]
struct Shared {
    signals: Mutex<Vec<Signal>>,
    changed: Condvar,
}

/// Keeps every signal in memory, for tests. Clones share the same store:
/// register one clone as the handler and inspect another.
#[derive(Clone, Debug, Default)]
pub struct CaptureHandler {
    shared: Arc<Shared>,
}

impl CaptureHandler {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Signal>> {
        match self.shared.signals.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A copy of the signals captured so far, in arrival order.
    pub fn signals(&self) -> Vec<Signal> {
        self.lock().clone()
    }

    /// Takes the captured signals out, leaving the capture empty.
    pub fn take(&self) -> Vec<Signal> {
        std::mem::take(&mut *self.lock())
    }

    /// How many signals were captured.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The ids of the captured signals.
    pub fn ids(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|s| s.id.as_deref().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits (on a condition variable, not by polling) until at least `n`
    /// signals are captured; false if `timeout` passes first.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut g = self.lock();
        while g.len() < n {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            g = match self.shared.changed.wait_timeout(g, until - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

impl Handler for CaptureHandler {
    fn handle(&self, signal: &Signal) -> Result<(), HandlerError> {
        self.lock().push(signal.clone());
        self.shared.changed.notify_all();
        Ok(())
    }
}
