//! Correlation ids: every signal emitted inside a correlation scope carries
//! the scope's id, in synchronous code ([`with_correlation`]) and in async
//! tasks ([`CorrelateExt::with_correlation`]), without tying the crate to an
//! async runtime.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};

/// An id stamped on every signal emitted inside its scope.
///
/// Serialized as a number; shown as `c-<hex>` in text output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CorrelationId(pub u64);

impl CorrelationId {
    /// A fresh id, unique within the process.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        CorrelationId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<u64> for CorrelationId {
    fn from(v: u64) -> Self {
        CorrelationId(v)
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c-{:x}", self.0)
    }
}

thread_local! {
    static CURRENT: Cell<Option<CorrelationId>> = const { Cell::new(None) };
}

/// The correlation id of the current scope, if any.
#[inline]
pub fn current_correlation() -> Option<CorrelationId> {
    CURRENT.try_with(Cell::get).ok().flatten()
}

/// Restores the previous correlation when dropped (also on panic).
struct Restore(Option<CorrelationId>);

impl Drop for Restore {
    fn drop(&mut self) {
        let prev = self.0;
        let _ = CURRENT.try_with(|c| c.set(prev));
    }
}

fn enter(id: Option<CorrelationId>) -> Restore {
    Restore(CURRENT.try_with(|c| c.replace(id)).ok().flatten())
}

/// Runs `f` with `id` as the current correlation; every signal emitted by
/// `f` on this thread carries it. Scopes nest; the previous id comes back
/// afterwards, also if `f` panics.
pub fn with_correlation<R>(id: CorrelationId, f: impl FnOnce() -> R) -> R {
    let _restore = enter(Some(id));
    f()
}

/// A future that runs with a correlation id set around each of its polls, so
/// the id follows the task across `.await` points and threads of any
/// executor. Made by [`CorrelateExt::with_correlation`].
#[derive(Debug)]
pub struct Correlated<F> {
    inner: Pin<Box<F>>,
    id: Option<CorrelationId>,
}

impl<F: Future> Future for Correlated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // `Correlated` is Unpin (the inner future is boxed), so no unsafe pinning.
        let this = self.get_mut();
        let _restore = enter(this.id);
        this.inner.as_mut().poll(cx)
    }
}

/// Attaches a correlation id to a future (see [`Correlated`]).
pub trait CorrelateExt: Future + Sized {
    /// Runs this future with `id` as the current correlation during every poll.
    fn with_correlation(self, id: CorrelationId) -> Correlated<Self> {
        Correlated {
            inner: Box::pin(self),
            id: Some(id),
        }
    }

    /// Runs this future with the correlation that is current now (or none,
    /// if none is), for example to carry it into a spawned task.
    fn in_current_correlation(self) -> Correlated<Self> {
        Correlated {
            inner: Box::pin(self),
            id: current_correlation(),
        }
    }
}

impl<F: Future> CorrelateExt for F {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore_on_panic() {
        assert_eq!(current_correlation(), None);
        let a = CorrelationId(1);
        let b = CorrelationId(2);
        with_correlation(a, || {
            assert_eq!(current_correlation(), Some(a));
            with_correlation(b, || assert_eq!(current_correlation(), Some(b)));
            assert_eq!(current_correlation(), Some(a));
            let r = std::panic::catch_unwind(|| with_correlation(b, || panic!("boom")));
            assert!(r.is_err());
            assert_eq!(current_correlation(), Some(a));
        });
        assert_eq!(current_correlation(), None);
    }
}
