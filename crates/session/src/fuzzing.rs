//! The checks behind the fuzz targets in `fuzz/` and their replay on stable
//! (`tests/fuzz_corpus.rs`): one function per target, fed the raw input
//! bytes, that panics when a property fails. libFuzzer reports the panic as
//! a crash; the replay test reports it as a failed test. Not a public API:
//! only built with the `fuzzing` feature.
//!
//! - [`decode_client`]: the frame decoder never panics; what it accepts
//!   re-encodes to a frame it decodes to the same message, with `data` byte
//!   for byte; what it refuses gets one of its three reasons and a bounded
//!   message.
//! - [`session`]: a sequence of frames from [`CONNECTIONS`] connections
//!   (format in [`session`]'s docs) against an engine with small limits
//!   ([`engine_config`]): every frame a sink is offered is a JSON object
//!   with a `type`; every text frame gets exactly one reply of the type
//!   its message calls for; after every step the engine's counts of
//!   connections, channels, subscriptions and pending requests are within
//!   the limits and agree with each other; a sink that overflows is closed
//!   as the transport would and its connection's slot is free again; after
//!   the last close nothing is left registered, subscribed or pending, and
//!   no task is left on the runtime once the engine is dropped.

use crate::{AllowAll, Identity, Session};
use sente_lite_channels::{Engine, EngineConfig, Frame, Offer, Sink};
use sente_lite_protocol::{ChannelConfig, ClientMessage, Reason, ServerMessage};
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The longest `message` a decode error may carry: it is sent to the client
/// and logged, so it must not grow with the frame.
pub const MAX_DECODE_ERROR_MESSAGE: usize = 256;

/// Checks [`sente_lite_protocol::decode_client`] on `input` (as text, with
/// invalid UTF-8 replaced, as a WebSocket text frame cannot carry it).
pub fn decode_client(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    match sente_lite_protocol::decode_client(&text) {
        Ok(msg) => {
            let again = serde_json::to_string(&msg).expect("a decoded message serializes");
            let back = sente_lite_protocol::decode_client(&again)
                .unwrap_or_else(|e| panic!("re-encoded {again} does not decode: {e}"));
            assert_same(&msg, &back, &again);
        }
        Err(e) => {
            assert!(
                matches!(
                    e.reason,
                    Reason::InvalidJson | Reason::InvalidMessage | Reason::UnknownMessageType
                ),
                "unexpected decode reason {:?}",
                e.reason
            );
            assert!(
                e.message.len() <= MAX_DECODE_ERROR_MESSAGE,
                "a decode error message of {} bytes: {}",
                e.message.len(),
                e.message
            );
            let frame = ServerMessage::from(e).to_json();
            let v: Value = serde_json::from_str(&frame)
                .unwrap_or_else(|err| panic!("error frame {frame} is not JSON: {err}"));
            assert_eq!(v["type"], "error", "{frame}");
        }
    }
}

/// `a` and `b` are the same message, `data` byte for byte. A ping's
/// timestamp is any JSON value and only compared as present or not (a float
/// need not survive a parse and print exactly).
fn assert_same(a: &ClientMessage, b: &ClientMessage, json: &str) {
    use ClientMessage as M;
    match (a, b) {
        (M::Ping { timestamp: x }, M::Ping { timestamp: y }) => {
            assert_eq!(x.is_some(), y.is_some(), "ping timestamp lost in {json}");
        }
        _ => assert_eq!(a, b, "decode(encode(m)) != m for {json}"),
    }
    let data = |m: &ClientMessage| match m {
        M::Publish { data, .. } | M::RpcRequest { data, .. } | M::RpcResponse { data, .. } => {
            Some(data.as_json().to_owned())
        }
        _ => None,
    };
    assert_eq!(data(a), data(b), "data not relayed byte for byte in {json}");
}

/// How many connections a [`session`] input speaks for.
pub const CONNECTIONS: usize = 3;

/// Frames a [`Recorder`] holds before it overflows (the transport's
/// outbound queue; the harness drains it on [`DRAIN`]).
pub const SINK_MAX_FRAMES: usize = 32;

/// Bytes a [`Recorder`] holds before it overflows.
pub const SINK_MAX_BYTES: usize = 16 * 1024;

/// Separates the frames of a [`session`] input (a byte no JSON text
/// contains unescaped).
pub const SEPARATOR: u8 = 0x00;
/// A chunk starting with this byte makes the next connection the current
/// one.
pub const NEXT_CONNECTION: u8 = 0x01;
/// A chunk starting with this byte hands the current connection a binary
/// frame.
pub const BINARY: u8 = 0x02;
/// A chunk starting with this byte closes the current connection and opens
/// a new one in its place.
pub const RECONNECT: u8 = 0x03;
/// A chunk starting with this byte expires due RPC requests now.
pub const EXPIRE_RPC: u8 = 0x04;
/// A chunk starting with this byte empties the current connection's sink
/// (its client read everything).
pub const DRAIN: u8 = 0x05;
/// In a text frame, replaced by the id of the last `rpc-request` the
/// current connection was sent, so responses can find their request.
pub const LAST_REQUEST_ID: &str = "$REQ";

/// The engine a [`session`] input runs against: limits small enough for
/// a short input to reach every one of them.
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        auto_create: true,
        default_channel: ChannelConfig {
            max_subscribers: 2,
            message_retention: 2,
            rpc_timeout_ms: 1_000,
            telemetry_enabled: true,
            ..ChannelConfig::default()
        },
        max_channels: 4,
        max_channel_id_bytes: 32,
        max_connections: CONNECTIONS,
        max_pending_rpc: 4,
        max_pending_rpc_per_connection: 2,
        max_rpc_timeout_ms: 1_000,
        max_subscriptions_per_connection: 3,
        max_retained_bytes: 4 << 10,
        max_retained_bytes_total: 8 << 10,
        ..EngineConfig::default()
    }
}

/// Runs `input` as frames of [`CONNECTIONS`] sessions and checks them (see
/// the module docs).
///
/// The input is split at [`SEPARATOR`] bytes. A chunk starting with one of
/// the control bytes ([`NEXT_CONNECTION`], [`BINARY`], [`RECONNECT`],
/// [`EXPIRE_RPC`], [`DRAIN`]) does that; any other non-empty chunk is a
/// text frame (invalid UTF-8 replaced, [`LAST_REQUEST_ID`] substituted)
/// for the current connection, the first one at the start.
pub fn session(input: &[u8]) {
    RUNTIME.with(|rt| {
        rt.block_on(run_session(input));
        // Dropping the engine wakes its RPC timer, which then ends; let it.
        for _ in 0..64 {
            if rt.metrics().num_alive_tasks() == 0 {
                break;
            }
            rt.block_on(tokio::task::yield_now());
        }
        assert_eq!(
            rt.metrics().num_alive_tasks(),
            0,
            "a task outlived its engine"
        );
    });
}

thread_local! {
    /// One current-thread runtime per thread (the engine needs one to spawn
    /// its RPC timer).
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

async fn run_session(input: &[u8]) {
    let config = engine_config();
    let engine = Engine::new(config.clone()).expect("inside a runtime");
    let mut conns: Vec<Conn> = (0..CONNECTIONS).map(|_| Conn::open(&engine)).collect();
    let mut current = 0;
    for chunk in input.split(|b| *b == SEPARATOR) {
        match chunk.first() {
            None => continue,
            Some(&NEXT_CONNECTION) => current = (current + 1) % CONNECTIONS,
            Some(&BINARY) => {
                let c = &conns[current];
                let before = c.sink.replies();
                c.session.handle_binary();
                c.sink.expect_one_reply(before, "error", "a binary frame");
            }
            Some(&RECONNECT) => reopen(&mut conns, current, &engine).await,
            Some(&EXPIRE_RPC) => {
                engine.cleanup_expired_rpc_requests();
            }
            Some(&DRAIN) => conns[current].sink.drain(),
            Some(_) => {
                let c = &conns[current];
                let mut text = String::from_utf8_lossy(chunk).into_owned();
                if let Some(id) = c.sink.last_request_id() {
                    text = text.replace(LAST_REQUEST_ID, &id);
                }
                let expected = match sente_lite_protocol::decode_client(&text) {
                    Ok(m) => reply_type(&m),
                    Err(_) => "error",
                };
                let before = c.sink.replies();
                c.session.handle_text(&text).await;
                c.sink.expect_one_reply(before, expected, &text);
            }
        }
        // A transport closes a connection whose queue overflowed.
        for i in 0..conns.len() {
            if conns[i].sink.overflowed() {
                reopen(&mut conns, i, &engine).await;
            }
        }
        check_engine(&engine, &config, &conns);
    }
    for c in conns {
        c.session.close().await;
    }
    assert_eq!(engine.connection_count(), 0, "connections left registered");
    assert_eq!(engine.total_subscriptions(), 0, "subscriptions left over");
    assert_eq!(engine.pending_rpc_requests(), 0, "requests left pending");
    assert!(engine.channel_count() <= config.max_channels);
}

/// The type of the frame that answers `m`.
fn reply_type(m: &ClientMessage) -> &'static str {
    match m {
        ClientMessage::Subscribe { .. } => "subscription-result",
        ClientMessage::Unsubscribe { .. } => "unsubscription-result",
        ClientMessage::Publish { .. } => "publish-result",
        ClientMessage::RpcRequest { .. } => "rpc-request-result",
        ClientMessage::RpcResponse { .. } => "rpc-response-result",
        ClientMessage::Ping { .. } => "pong",
        ClientMessage::ListChannels { .. } => "channel-list",
        ClientMessage::Authenticate { .. } => "authenticate-result",
        ClientMessage::GetSubscriptions => "subscription-list",
        ClientMessage::History { .. } => "history-result",
        ClientMessage::Presence { .. } => "presence-result",
        ClientMessage::PresenceStats { .. } => "presence-stats-result",
    }
}

/// The frame types that answer a client's frame (the others are
/// deliveries: `channel-message`, `rpc-request`, `rpc-response`, ...).
const REPLY_TYPES: [&str; 13] = [
    "authenticate-result",
    "subscription-result",
    "unsubscription-result",
    "publish-result",
    "rpc-request-result",
    "rpc-response-result",
    "pong",
    "channel-list",
    "subscription-list",
    "history-result",
    "presence-result",
    "presence-stats-result",
    "error",
];

fn check_engine(engine: &Engine, config: &EngineConfig, conns: &[Conn]) {
    let channels = engine.channel_count();
    assert!(
        channels <= config.max_channels,
        "{channels} channels > max-channels {}",
        config.max_channels
    );
    assert_eq!(engine.connection_count(), conns.len(), "connection count");
    let mut subscriptions = 0;
    for c in conns {
        let mut subs = engine
            .subscriptions(c.session.conn())
            .expect("an open session's connection is registered");
        let n = subs.len();
        subs.sort();
        subs.dedup();
        assert_eq!(subs.len(), n, "a channel listed twice in {subs:?}");
        assert!(n <= channels, "{n} subscriptions but {channels} channels");
        subscriptions += n;
    }
    assert_eq!(
        engine.total_subscriptions(),
        subscriptions,
        "total subscriptions != the connections' own"
    );
    assert!(
        subscriptions <= channels * config.default_channel.max_subscribers,
        "{subscriptions} subscriptions over max-subscribers"
    );
    let pending = engine.pending_rpc_requests();
    assert!(
        pending <= config.max_pending_rpc
            && pending <= conns.len() * config.max_pending_rpc_per_connection,
        "{pending} pending requests over the limits"
    );
}

/// One connection: its session and the sink it writes to.
struct Conn {
    session: Session,
    sink: Arc<Recorder>,
}

impl Conn {
    fn open(engine: &Engine) -> Conn {
        let sink = Arc::new(Recorder::default());
        let session = Session::open(
            engine,
            Arc::clone(&sink) as Arc<dyn Sink>,
            Arc::new(AllowAll),
            Identity::anonymous(),
        )
        .unwrap_or_else(|e| panic!("a free connection slot refused: {e}"));
        assert_eq!(
            sink.take_types().first().map(String::as_str),
            Some("welcome"),
            "the first frame is the welcome"
        );
        Conn { session, sink }
    }
}

/// Closes connection `i` and opens a new one in its place (within the
/// limit of [`CONNECTIONS`] connections only if the close freed the slot).
async fn reopen(conns: &mut Vec<Conn>, i: usize, engine: &Engine) {
    let old = conns.remove(i);
    old.session.close().await;
    conns.insert(i, Conn::open(engine));
}

/// A sink that checks and keeps what it is offered, up to
/// [`SINK_MAX_FRAMES`] frames and [`SINK_MAX_BYTES`] bytes; past those it
/// refuses the frame (`Full`) and everything after it (`Closed`), as the
/// transport's queue does.
#[derive(Default)]
struct Recorder(Mutex<RecorderState>);

#[derive(Default)]
struct RecorderState {
    /// Types of the frames held, oldest first.
    types: Vec<String>,
    bytes: usize,
    overflowed: bool,
    /// Reply frames offered so far (held or not), and the last one's type.
    replies: usize,
    last_reply: String,
    last_request_id: Option<String>,
}

impl Recorder {
    fn state(&self) -> MutexGuard<'_, RecorderState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn replies(&self) -> usize {
        self.state().replies
    }

    fn overflowed(&self) -> bool {
        self.state().overflowed
    }

    fn last_request_id(&self) -> Option<String> {
        self.state().last_request_id.clone()
    }

    fn drain(&self) {
        let mut s = self.state();
        s.types.clear();
        s.bytes = 0;
    }

    fn take_types(&self) -> Vec<String> {
        let mut s = self.state();
        s.bytes = 0;
        std::mem::take(&mut s.types)
    }

    fn expect_one_reply(&self, before: usize, ty: &str, frame: &str) {
        let s = self.state();
        assert_eq!(
            s.replies - before,
            1,
            "not exactly one reply to {frame:?} (last reply {})",
            s.last_reply
        );
        assert_eq!(s.last_reply, ty, "wrong reply to {frame:?}");
    }
}

impl Sink for Recorder {
    fn offer(&self, frame: &Frame) -> Offer {
        let text = frame.as_str();
        let v: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("the server sent a frame that is not JSON ({e}): {text}"));
        let ty = v["type"]
            .as_str()
            .unwrap_or_else(|| panic!("a frame without a string type: {text}"))
            .to_owned();
        let config = engine_config();
        if ty == "subscription-result" {
            let retained = v["retained-messages"].as_array().map_or(0, Vec::len);
            assert!(
                retained <= config.default_channel.message_retention,
                "{retained} retained messages replayed: {text}"
            );
        }
        if ty == "channel-list" {
            let n = v["channels"].as_object().map_or(0, |m| m.len());
            assert!(n <= config.max_channels, "{n} channels listed: {text}");
        }
        let mut s = self.state();
        if REPLY_TYPES.contains(&ty.as_str()) {
            s.replies += 1;
            s.last_reply.clone_from(&ty);
        }
        if ty == "rpc-request" {
            s.last_request_id = v["request-id"].as_str().map(str::to_owned);
        }
        if s.overflowed {
            return Offer::Closed;
        }
        if s.types.len() >= SINK_MAX_FRAMES || s.bytes + text.len() > SINK_MAX_BYTES {
            s.overflowed = true;
            return Offer::Full;
        }
        s.bytes += text.len();
        s.types.push(ty);
        Offer::Queued
    }
}
