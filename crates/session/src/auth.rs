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
    /// `info`).
    pub info: Option<Value>,
    /// Channel-id patterns the user is granted (a token's `channels`
    /// claim; `*` matches any run of characters).
    pub channels: Vec<String>,
    /// When the identity stops being valid, in ms since the epoch (a
    /// token's `exp` plus the authorizer's leeway). The session closes the
    /// connection then (4002 `token-expired`) unless a fresh token for the
    /// same user arrived by `authenticate`.
    pub expires_at_ms: Option<i64>,
}

impl Identity {
    /// No user.
    pub fn anonymous() -> Identity {
        Identity::default()
    }

    /// An authenticated user with no grants and no expiry.
    pub fn user(user_id: impl Into<String>) -> Identity {
        Identity {
            user_id: Some(user_id.into()),
            ..Identity::default()
        }
    }

    /// Whether a user is known (a token was accepted).
    pub fn is_authenticated(&self) -> bool {
        self.user_id.is_some()
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
    /// A refusal with reason `unauthorized`: no acceptable credentials.
    pub fn unauthorized(message: impl Into<String>) -> Refusal {
        Refusal {
            reason: Reason::Unauthorized,
            message: message.into(),
        }
    }

    /// A refusal with reason `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal {
            reason: Reason::Forbidden,
            message: message.into(),
        }
    }
}

/// Decides who a connection is and what it may do. The
/// [`Session`](crate::Session) asks it on connect, on `authenticate`, and
/// before every subscribe, publish, RPC request and channel listing, so the
/// same rules hold whichever transport carries the frames. Every method
/// allows by default.
pub trait Authorizer: Send + Sync + 'static {
    /// Identifies a connection as it opens; a refusal keeps it from opening
    /// (HTTP 401 for `unauthorized`, 403 for `forbidden`). A connection it
    /// lets open anonymously where [`allows_anonymous`](Self::allows_anonymous)
    /// is false must present a token by `authenticate` before anything else.
    fn connect(&self, info: &ConnectInfo) -> Result<Identity, Refusal> {
        let _ = info;
        Ok(Identity::anonymous())
    }

    /// Checks a token sent in an `authenticate` frame. The default takes
    /// none.
    fn authenticate(&self, token: &str) -> Result<Identity, Refusal> {
        let _ = token;
        Err(Refusal::unauthorized("this server accepts no tokens"))
    }

    /// Whether a connection without a user may do anything but
    /// `authenticate` and `ping`. Default: yes.
    fn allows_anonymous(&self) -> bool {
        true
    }

    /// How long a connection that must authenticate has to do it before
    /// it is closed with 4001 `unauthorized`. Default: 10 s.
    fn auth_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(10)
    }

    /// May `who` subscribe to `channel` (and so see its RPC requests, and
    /// its name in `list-channels`)?
    fn subscribe(&self, who: &Identity, conn: &ConnAddr, channel: &str) -> Result<(), Refusal> {
        let _ = (who, conn, channel);
        Ok(())
    }

    /// May `who` publish to `channel`? `subscribed` says whether the
    /// connection is subscribed to it.
    fn publish(
        &self,
        who: &Identity,
        conn: &ConnAddr,
        channel: &str,
        subscribed: bool,
    ) -> Result<(), Refusal> {
        let _ = (who, conn, channel, subscribed);
        Ok(())
    }

    /// May `who` send an RPC request to `channel`'s workers? `subscribed`
    /// says whether the connection is subscribed to it.
    fn rpc_call(
        &self,
        who: &Identity,
        conn: &ConnAddr,
        channel: &str,
        subscribed: bool,
    ) -> Result<(), Refusal> {
        let _ = (who, conn, channel, subscribed);
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
