//! sente-lite-auth: who a connection is, and what it may do.
//!
//! The [`JwtAuthorizer`] plugs into the session's
//! [`Authorizer`](sente_lite_session::Authorizer) hook, so the WebSocket
//! transport, the Rust API and any later transport apply the same rules on
//! every node:
//!
//! - **Identity** from a JSON Web Token ([`JwtVerifier`]): HS256/384/512
//!   with a shared secret, RS*/PS*, ES256/ES384 or EdDSA with a PEM public
//!   key. `sub` is the user id, `exp` is enforced (with a small leeway),
//!   `channels` lists the channel-id patterns the user is granted (`*`
//!   matches any run of characters, [`wildcard_match`]), `info` is kept
//!   for presence. `alg: none`, an algorithm of the wrong family for the
//!   key, a bad signature, a malformed or an expired token are refused.
//! - **Permissions** per channel namespace ([`Policy`], [`Rules`],
//!   [`Who`]): a channel `ns:rest` is in namespace `ns`; each namespace says
//!   who may subscribe (`anyone`, `authenticated`, `granted`), publish and
//!   call its workers (those, plus `subscribers` and `nobody`). The default
//!   namespace allows anyone everything.
//!
//! It knows nothing of sockets, HTTP or the engine's internals: it reads
//! tokens and answers yes or no.
//!
//! ```
//! use sente_lite_auth::{JwtAuthorizer, JwtKeys, JwtVerifier, Policy, Rules, Who};
//! use sente_lite_session::{Authorizer, Identity};
//! use std::time::Duration;
//!
//! let verifier = JwtVerifier::new(JwtKeys {
//!     hmac_secret: Some(b"s3cret".to_vec()),
//!     ..JwtKeys::default()
//! })
//! .unwrap();
//! let policy = Policy {
//!     default: Rules::default(),
//!     namespaces: vec![(
//!         "private".into(),
//!         Rules { subscribe: Who::Granted, publish: Who::Granted, rpc_call: Who::Nobody },
//!     )],
//! };
//! let auth = JwtAuthorizer::new(Some(verifier), false, Duration::from_secs(10), policy);
//! let conn = "conn-1-1".parse().unwrap();
//! assert!(auth.subscribe(&Identity::anonymous(), &conn, "lobby").is_ok());
//! assert!(auth.subscribe(&Identity::anonymous(), &conn, "private:x").is_err());
//! assert!(!auth.allows_anonymous());
//! ```

mod jwt;
mod policy;

pub use jwt::{
    JwtKeys, JwtVerifier, KeyError, TokenError, MAX_GRANTS, MAX_GRANT_BYTES, MAX_TOKEN_BYTES,
};
pub use policy::{presented_token, JwtAuthorizer, Policy, Rules, UnknownWho, Who};
pub use sente_lite_protocol::wildcard_match;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
