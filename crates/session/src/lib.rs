//! sente-lite-session: the protocol state machine of one connection.
//!
//! A [`Session`] is what a connection is between its open and its close,
//! whatever carries its frames: it greets the client with `welcome`, decodes
//! each text frame (`decode_client`, which never panics), asks the
//! [`Authorizer`] whether the operation is allowed, routes it to the channel
//! [`Engine`](sente_lite_channels::Engine), and queues the reply on the
//! connection's own [`Sink`](sente_lite_channels::Sink), ordered with the
//! deliveries around it.
//!
//! It knows nothing of warp, tungstenite, HTTP or sockets: a transport
//! implements the sink, hands the session text frames, and writes what the
//! sink queued.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use sente_lite_channels::{Engine, EngineConfig, Frame, Offer, Sink};
//! use sente_lite_session::{AllowAll, Identity, Session};
//! use std::sync::{Arc, Mutex};
//!
//! #[derive(Default)]
//! struct Outbox(Mutex<Vec<String>>);
//! impl Sink for Outbox {
//!     fn offer(&self, frame: &Frame) -> Offer {
//!         self.0.lock().unwrap().push(frame.as_str().to_owned());
//!         Offer::Queued
//!     }
//! }
//!
//! let engine = Engine::new(EngineConfig::default()).unwrap();
//! let out = Arc::new(Outbox::default());
//! let session = Session::open(&engine, out.clone(), Arc::new(AllowAll), Identity::anonymous()).unwrap();
//! session.handle_text(r#"{"type":"subscribe","channel-id":"chat"}"#).await;
//! let frames = out.0.lock().unwrap().clone();
//! assert!(frames[0].contains(r#""type":"welcome""#));
//! assert!(frames[1].contains(r#""type":"subscription-result""#));
//! session.close().await;
//! # }
//! ```

mod auth;
pub mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod session;

pub use auth::{AllowAll, Authorizer, ConnectInfo, Identity, Refusal};
pub use session::{
    Handled, OpenError, Session, CLOSE_TOKEN_EXPIRED, CLOSE_UNAUTHORIZED, DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
