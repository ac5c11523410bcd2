//! The [`Authorizer`] hook: who a connection is, and what it may do.

use sente_lite_channels::ConnAddr;
use sente_lite_protocol::Reason;
use serde_json::Value;
use std::fmt;
use std::net::SocketAddr;

/// What the transport knows of a connection when it opens, before any
/// frame: enough for an authorizer to decide who it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The peer's address, as the transport sees it.
    pub peer: Option<SocketAddr>,
    /// The request path and query (`/?token=...`).
    pub target: String,
    /// Request headers (names lower-case), in order.
    pub headers: Vec<(String, String)>,
}

impl ConnectInfo {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Who a connection is. Anonymous unless an authorizer says otherwise.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The user's id (a token's `sub`), when known.
    pub user_id: Option<String>,
    /// Whatever the authorizer wants to keep about the user (a token's
    /// `info`, its grants).
    pub info: Option<Value>,
}

impl Identity {
    /// No user.
    pub fn anonymous() -> Identity {
        Identity::default()
    }
}

/// A refused operation: the `reason` of its `success: false` result, and a
/// sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Refusal {
    /// The wire reason (`forbidden`, `unauthorized`, ...).
    pub reason: Reason,
    /// For humans.
    pub message: String,
}

impl Refusal {
    /// A refusal with reason `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal {
            reason: Reason::Forbidden,
            message: message.into(),
        }
    }
}

/// Decides who a connection is and what it may do. The [`Session`]
/// (crate::Session) asks it on connect and before every subscribe, publish
/// and RPC request, so the same rules hold whichever transport carries the
/// frames. Every method allows by default.
pub trait Authorizer: Send + Sync + 'static {
    /// Identifies a connection as it opens; a refusal keeps it from opening.
    fn connect(&self, info: &ConnectInfo) -> Result<Identity, Refusal> {
        let _ = info;
        Ok(Identity::anonymous())
    }

    /// May `who` subscribe to `channel` (and so see its RPC requests)?
    fn subscribe(&self, who: &Identity, conn: &ConnAddr, channel: &str) -> Result<(), Refusal> {
        let _ = (who, conn, channel);
        Ok(())
    }

    /// May `who` publish to `channel`?
    fn publish(&self, who: &Identity, conn: &ConnAddr, channel: &str) -> Result<(), Refusal> {
        let _ = (who, conn, channel);
        Ok(())
    }

    /// May `who` send an RPC request to `channel`'s workers?
    fn rpc_call(&self, who: &Identity, conn: &ConnAddr, channel: &str) -> Result<(), Refusal> {
        let _ = (who, conn, channel);
        Ok(())
    }
}

/// Allows everything: the default, which keeps the seed's anonymous
/// examples working.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {}

impl fmt::Debug for dyn Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorizer")
    }
}
