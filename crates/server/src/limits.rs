//! Process limits at start: the open-files limit (`RLIMIT_NOFILE`). The
//! server crate is the only one that touches the process's limits.

use telemere_lite::{event, Level, Telemetry};

/// Descriptors the server needs besides one per connection: the listener,
/// log files, the broker's connections, sockets in their handshake.
pub(crate) const FD_MARGIN: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (Linux's default soft
/// limit, 1024, is below the default `max-connections` plus what the
/// server needs besides), and warns when even the hard limit is below
/// `max_connections` + [`FD_MARGIN`]: connections past it would be refused
/// at `accept` (counted as `transport.accept-errors`) instead of by
/// `max-connections` with an HTTP 503. Returns the soft limit in force.
pub(crate) fn raise_nofile(telemetry: &Telemetry, max_connections: usize) -> Option<u64> {
    let resource = rlimit::Resource::NOFILE;
    let (soft, hard) = match rlimit::getrlimit(resource) {
        Ok(limits) => limits,
        Err(e) => {
            event!(tel: telemetry, level: Level::Warn, crate::events::FILE_LIMIT_LOW,
                serde_json::json!({"error": format!("cannot read RLIMIT_NOFILE: {e}")}));
            return None;
        }
    };
    let mut now = soft;
    if soft < hard {
        match rlimit::setrlimit(resource, hard, hard) {
            Ok(()) => {
                now = hard;
                event!(tel: telemetry, level: Level::Debug, crate::events::FILE_LIMIT_RAISED,
                    serde_json::json!({"from": soft, "to": hard}));
            }
            Err(e) => {
                event!(tel: telemetry, level: Level::Warn, crate::events::FILE_LIMIT_LOW,
                    serde_json::json!({"error": format!("cannot raise RLIMIT_NOFILE from {soft} to {hard}: {e}")}));
            }
        }
    }
    let needed = (max_connections as u64).saturating_add(FD_MARGIN);
    if now < needed {
        event!(tel: telemetry, level: Level::Warn, crate::events::FILE_LIMIT_LOW,
            serde_json::json!({
                "open-files-limit": now,
                "hard-limit": hard,
                "max-connections": max_connections,
                "needed": needed,
                "message": format!(
                    "the open-files limit ({now}) is below websocket.max-connections ({max_connections}) \
                     + {FD_MARGIN}: connections past about {} will fail at accept \
                     (transport.accept-errors), not get a 503; raise `ulimit -n` \
                     (LimitNOFILE= under systemd) or lower websocket.max-connections",
                    now.saturating_sub(FD_MARGIN))}));
    }
    Some(now)
}
