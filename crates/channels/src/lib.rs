//! sente-lite-channels: the channel engine of sente-lite.
//!
//! The [`Engine`] owns every piece of pub/sub state: connections (in a
//! `slab`, with generation-checked [`ConnId`]s), channels with their
//! subscribers and retained messages, and pending RPC requests with their
//! timer. It knows nothing of HTTP, WebSocket or warp: a connection is an id
//! plus an outbound [`Sink`] that the transport implements, and every frame
//! the engine produces is a serialized [`Frame`] shared by all its recipients.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use sente_lite_channels::{Engine, EngineConfig, Frame, Offer, Sink};
//! use std::sync::{Arc, Mutex};
//!
//! #[derive(Default)]
//! struct Inbox(Mutex<Vec<String>>);
//! impl Sink for Inbox {
//!     fn offer(&self, frame: &Frame) -> Offer {
//!         self.0.lock().unwrap().push(frame.as_str().to_owned());
//!         Offer::Queued
//!     }
//! }
//!
//! let engine = Engine::new(EngineConfig::default()).unwrap();
//! let inbox = Arc::new(Inbox::default());
//! let alice = engine.connect(inbox.clone()).unwrap();
//! engine.subscribe(alice, "chat").unwrap();
//! let out = engine.publish(None, "chat", serde_json::json!({"text": "hi"}), false).unwrap();
//! assert_eq!(out.delivered_to, 1);
//! assert!(inbox.0.lock().unwrap()[0].contains(r#""type":"channel-message""#));
//! # }
//! ```
//!
//! Operations fail with an [`EngineError`] whose [`EngineError::reason`] is
//! the stable wire reason of docs/PROTOCOL.md.

mod config;
mod conn;
mod engine;
mod error;
pub mod events;
mod frames;
mod map;
mod rpc;

pub use config::EngineConfig;
pub use conn::{ConnId, Frame, Offer, ParseConnIdError, Sink};
pub use engine::{ChannelInfo, Engine, EngineCounters, Published, Subscribed};
pub use error::{EngineError, NoRuntime};
pub use rpc::RpcSent;
