//! [`Admission`]: a place among `max-connections`, and among its client
//! address's `max-connections-per-ip`.

use crate::shared::Shared;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A place among `max-connections` (and its address's
/// `max-connections-per-ip`), given back when dropped.
pub(crate) struct Admission {
    shared: Arc<Shared>,
    ip: Option<IpAddr>,
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The server has `max-connections`.
    MaxConnections,
    /// The client address has `max-connections-per-ip`.
    MaxConnectionsPerIp,
}

impl Admission {
    /// A place for a connection from `ip` (the client's address, when
    /// known), if one is free.
    pub(crate) fn try_new(shared: &Arc<Shared>, ip: Option<IpAddr>) -> Result<Admission, Refused> {
        if let Some(ip) = ip {
            if !shared
                .per_ip
                .try_enter(ip, shared.config.max_connections_per_ip)
            {
                return Err(Refused::MaxConnectionsPerIp);
            }
        }
        let max = shared.config.max_connections;
        let admitted = shared
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            });
        if admitted.is_err() {
            // Not admitted: the address's place goes back.
            if let Some(ip) = ip {
                shared.per_ip.leave(ip);
            }
            return Err(Refused::MaxConnections);
        }
        Ok(Admission {
            shared: Arc::clone(shared),
            ip,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.shared.per_ip.leave(ip);
        }
        self.shared.admitted.fetch_sub(1, Ordering::SeqCst);
        self.shared.conn_closed.notify_waiters();
    }
}
