//! [`Admission`]: a place among `max-connections`.

use crate::shared::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A place among `max-connections`, given back when dropped.
pub(crate) struct Admission {
    shared: Arc<Shared>,
}

impl Admission {
    /// A place, if one is free.
    pub(crate) fn try_new(shared: &Arc<Shared>) -> Option<Admission> {
        let max = shared.config.max_connections;
        shared
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Admission {
            shared: Arc::clone(shared),
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.admitted.fetch_sub(1, Ordering::SeqCst);
        self.shared.conn_closed.notify_waiters();
    }
}
