//! sente-lite-channels: the channel engine of sente-lite.
//!
//! One node of the engine is three parts and their wiring:
//!
//! - the [`Hub`]: this node's connections (in a `slab`, with
//!   generation-checked [`ConnId`]s) and each channel's local subscribers;
//!   synchronous, never waiting, fanning one shared [`Frame`] out to the
//!   connections' [`Sink`]s;
//! - a [`Broker`]: channels themselves (existence, config, cluster-wide
//!   counts), each message's stream position (`offset`, `epoch`), retained
//!   history, message ids, and delivery to every node's hub.
//!   [`LocalBroker`], the default, is one process;
//! - the RPC router: pending requests, correlation, timeouts;
//! - the [`Engine`]: the node that wires them and is the API of every
//!   operation.
//!
//! It knows nothing of HTTP, WebSocket or warp: a connection is an id plus
//! an outbound [`Sink`] that the transport implements.
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
//! engine.subscribe(alice, "chat").await.unwrap();
//! let out = engine.publish(None, "chat", serde_json::json!({"text": "hi"}), false).await.unwrap();
//! assert_eq!(out.delivered_to, 1);
//! assert_eq!(out.position.offset, 1);
//! assert!(inbox.0.lock().unwrap()[0].contains(r#""type":"channel-message""#));
//! # }
//! ```
//!
//! Operations fail with an [`EngineError`] whose [`EngineError::reason`] is
//! the stable wire reason of docs/PROTOCOL.md.

mod broker;
mod config;
mod conn;
mod error;
pub mod events;
mod frames;
pub mod history;
mod hub;
mod local;
mod map;
mod node;
mod rpc;
mod stats;

pub use broker::{
    Broker, BrokerHealth, BrokerTotals, ChannelMeta, Create, JoinFn, JoinView, NodeHandle,
    Publication, Published, Reply, RetainedView, Sent, StreamPosition,
};
pub use config::{namespace_of, EngineConfig, Namespace};
pub use conn::{ConnAddr, ConnId, Frame, Offer, ParseConnIdError, Sink};
pub use error::{EngineError, NoRuntime};
pub use frames::channel_message_head;
pub use history::{History, Recovery};
pub use hub::{Dispatched, FanOut, Hub, Joined, Left, SMALL_FAN_OUT};
pub use local::LocalBroker;
pub use node::{ChannelInfo, Engine, HistoryPage, ReplyFn, RpcSent, Subscribed};
pub use stats::{ChannelStat, ChannelStats, EngineCounters, EngineHealth, LimitStats};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
