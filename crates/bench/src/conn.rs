//! One client connection over a real WebSocket, speaking either sente-lite's
//! JSON protocol (the types of `sente-lite-protocol`) or NATS's text
//! protocol, behind one API: connect, subscribe, publish, RPC request and
//! answer, and [`Conn::recv`] returning typed [`Event`]s.
//!
//! sente-lite: the first frame is `welcome`; `subscribe` is answered by
//! `subscription-result`, `publish` by `publish-result`; deliveries are
//! `channel-message` frames whose `data` is the payload; `rpc-request` is
//! answered by `rpc-request-result`, delivered to workers as `rpc-request`
//! and answered by them with `rpc-response`, which reaches the requester.
//!
//! NATS: the first operation is `INFO`; the client sends `CONNECT` + `PING`
//! and waits for `PONG`. A subscription (`SUB`) or a batch of publishes is
//! confirmed by a `PING`/`PONG` round trip. RPC uses a per-connection reply
//! inbox (`_INBOX.<conn>.<seq>`) and a queue group of workers. Server `PING`s
//! are answered inside `recv`, so an idle connection stays alive.

use crate::nats;
use crate::stats::Stamp;
use futures::{SinkExt, StreamExt};
use sente_lite_protocol::{ClientMessage, Data, ServerMessage};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Which server protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// sente-lite's JSON protocol.
    #[value(name = "sente")]
    Sente,
    /// NATS over its WebSocket listener.
    Nats,
    /// uWebSockets.js (Node) speaking sente-lite's protocol: our own small
    /// server on uWS topics (`crates/bench/uws`).
    Uws,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Sente => "sente-lite",
            Kind::Nats => "nats",
            Kind::Uws => "uws",
        }
    }
}

/// Where a server listens (always a loopback address: see `loopback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
}

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("tcp: {0}")]
    Io(#[from] std::io::Error),
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("nats protocol: {0}")]
    Nats(#[from] nats::ParseError),
    #[error("server said: {0}")]
    Server(String),
    #[error("unexpected frame: {0}")]
    Unexpected(String),
    #[error("connection closed by the server")]
    Closed,
}

/// An RPC request as a worker received it, to be answered with
/// [`Conn::answer`].
#[derive(Debug, Clone)]
pub struct RpcCall {
    /// sente-lite `request-id`, or the NATS reply subject.
    pub reply_to: String,
    /// The request payload: sente-lite `data`, or NATS bytes as a string.
    pub body: Body,
}

/// A payload in the form its protocol carries it.
#[derive(Debug, Clone)]
pub enum Body {
    Json(Data),
    Bytes(Vec<u8>),
}

/// What [`Conn::recv`] returns.
#[derive(Debug)]
pub enum Event {
    /// A published message (stamp decoded from the payload; `None` when the
    /// payload is not one of ours).
    Delivery(Option<Stamp>),
    /// Answer to a publish (sente-lite only).
    PublishAck { ok: bool },
    /// Answer to a subscribe (sente-lite), or a PONG confirming it (NATS).
    SubscribeAck { ok: bool },
    /// A NATS PONG (answers `flush`).
    Pong,
    /// An RPC request for this worker.
    Call(RpcCall),
    /// Answer to an `rpc-request`: accepted by the server (sente-lite only).
    RequestAck { ok: bool },
    /// The RPC response for this requester.
    Reply { stamp: Option<Stamp>, error: bool },
    /// An `error` frame or `-ERR` line.
    ServerError(String),
    /// Anything else (welcome, pong, unsubscription-result, ...).
    Other,
}

/// A connected client.
#[derive(Debug)]
pub struct Conn {
    kind: Kind,
    ws: WebSocketStream<TcpStream>,
    parser: nats::Parser,
    pending: VecDeque<Event>,
    next_sid: u64,
    /// NATS: the sid of this connection's reply inbox, if subscribed.
    inbox_sid: Option<u64>,
    inbox_prefix: String,
    /// sente-lite `conn-id` from `welcome`, or a local name for NATS.
    pub id: String,
}

/// The hot path: a `channel-message` whose `data` is a [`Stamp`], decoded
/// without building a JSON tree. Any other frame fails this decode or has
/// another `type`, and goes through [`ServerMessage`].
#[derive(Deserialize)]
struct FastFrame<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    data: Option<Stamp>,
}

impl Conn {
    /// Opens a TCP connection from `src` (a loopback address, or any local
    /// address when `None`), runs the WebSocket handshake and the protocol's
    /// greeting.
    pub async fn connect(
        target: Target,
        src: Option<IpAddr>,
        name: &str,
    ) -> Result<Conn, ConnError> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        if let Some(ip) = src {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{}/", target.addr);
        let (ws, _resp) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await?;
        let mut conn = Conn {
            kind: target.kind,
            ws,
            parser: nats::Parser::new(),
            pending: VecDeque::new(),
            next_sid: 1,
            inbox_sid: None,
            inbox_prefix: String::new(),
            id: name.to_owned(),
        };
        match target.kind {
            Kind::Sente | Kind::Uws => conn.sente_greeting().await?,
            Kind::Nats => conn.nats_greeting(name).await?,
        }
        Ok(conn)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    async fn sente_greeting(&mut self) -> Result<(), ConnError> {
        let text = self.next_text().await?;
        match serde_json::from_str::<ServerMessage>(&text) {
            Ok(ServerMessage::Welcome { conn_id, .. }) => {
                self.id = conn_id;
                Ok(())
            }
            _ => Err(ConnError::Unexpected(format!(
                "expected welcome, got {}",
                clip(&text)
            ))),
        }
    }

    async fn nats_greeting(&mut self, name: &str) -> Result<(), ConnError> {
        // INFO first, possibly split over frames.
        loop {
            match self.parser.next_op()? {
                Some(nats::Op::Info(_)) => break,
                Some(nats::Op::Err(e)) => return Err(ConnError::Server(e)),
                Some(other) => {
                    return Err(ConnError::Unexpected(format!(
                        "expected INFO, got {other:?}"
                    )))
                }
                None => self.read_into_parser().await?,
            }
        }
        self.send_bytes(nats::connect_frame(name)).await?;
        loop {
            match self.parser.next_op()? {
                Some(nats::Op::Pong) => return Ok(()),
                Some(nats::Op::Err(e)) => return Err(ConnError::Server(e)),
                Some(nats::Op::Ping) => self.send_bytes(nats::PONG.to_vec()).await?,
                Some(_) => {}
                None => self.read_into_parser().await?,
            }
        }
    }

    /// Sends a subscribe; its acknowledgement arrives as
    /// [`Event::SubscribeAck`] through `recv` (for NATS, the PONG of a PING
    /// sent right after the SUB).
    pub async fn send_subscribe(&mut self, channel: &str) -> Result<(), ConnError> {
        match self.kind {
            Kind::Sente | Kind::Uws => {
                self.send_client(&ClientMessage::Subscribe {
                    channel_id: channel.to_owned(),
                    recover: None,
                })
                .await
            }
            Kind::Nats => {
                let sid = self.sid();
                let mut frame = nats::sub_frame(channel, None, sid);
                frame.extend_from_slice(nats::PING);
                self.send_bytes(frame).await
            }
        }
    }

    /// Subscribes and waits for the acknowledgement.
    pub async fn subscribe(&mut self, channel: &str) -> Result<(), ConnError> {
        self.send_subscribe(channel).await?;
        self.wait_subscribed(channel).await
    }

    async fn wait_subscribed(&mut self, channel: &str) -> Result<(), ConnError> {
        loop {
            match self.recv().await? {
                Event::SubscribeAck { ok: true } => return Ok(()),
                Event::Pong if self.kind == Kind::Nats => return Ok(()),
                Event::SubscribeAck { ok: false } => {
                    return Err(ConnError::Server(format!("subscribe to {channel} refused")))
                }
                Event::ServerError(e) => return Err(ConnError::Server(e)),
                // Deliveries cannot precede the acknowledgement of the only
                // subscription; anything else is ignored.
                _ => {}
            }
        }
    }

    /// Subscribes as an RPC worker. NATS workers join the queue group
    /// `workers`, so each request reaches one of them.
    pub async fn subscribe_worker(&mut self, channel: &str) -> Result<(), ConnError> {
        match self.kind {
            Kind::Sente | Kind::Uws => self.subscribe(channel).await,
            Kind::Nats => {
                let sid = self.sid();
                let mut frame = nats::sub_frame(channel, Some("workers"), sid);
                frame.extend_from_slice(nats::PING);
                self.send_bytes(frame).await?;
                self.wait_subscribed(channel).await
            }
        }
    }

    /// Prepares RPC requests: NATS needs a reply inbox subscription.
    pub async fn prepare_requester(&mut self) -> Result<(), ConnError> {
        if self.kind == Kind::Nats && self.inbox_sid.is_none() {
            let sid = self.sid();
            self.inbox_prefix = format!("_INBOX.{}", self.id);
            let subject = format!("{}.*", self.inbox_prefix);
            let mut frame = nats::sub_frame(&subject, None, sid);
            frame.extend_from_slice(nats::PING);
            self.send_bytes(frame).await?;
            self.inbox_sid = Some(sid);
            self.wait_subscribed(&subject).await?;
        }
        Ok(())
    }

    /// Publishes a JSON payload text to `channel`.
    pub async fn publish(&mut self, channel: &str, payload: &str) -> Result<(), ConnError> {
        match self.kind {
            Kind::Sente | Kind::Uws => {
                let data = Data::from_json(payload.to_owned())
                    .map_err(|e| ConnError::Unexpected(format!("payload is not JSON: {e}")))?;
                self.send_client(&ClientMessage::Publish {
                    channel_id: channel.to_owned(),
                    data,
                    exclude_sender: false,
                })
                .await
            }
            Kind::Nats => {
                self.send_bytes(nats::pub_frame(channel, None, payload.as_bytes()))
                    .await
            }
        }
    }

    /// Sends an RPC request numbered `seq` (unique per connection).
    pub async fn request(
        &mut self,
        channel: &str,
        payload: &str,
        seq: u64,
        timeout_ms: u64,
    ) -> Result<(), ConnError> {
        match self.kind {
            Kind::Sente | Kind::Uws => {
                let data = Data::from_json(payload.to_owned())
                    .map_err(|e| ConnError::Unexpected(format!("payload is not JSON: {e}")))?;
                self.send_client(&ClientMessage::RpcRequest {
                    channel_id: channel.to_owned(),
                    data,
                    timeout_ms: Some(timeout_ms),
                })
                .await
            }
            Kind::Nats => {
                let reply = format!("{}.{seq}", self.inbox_prefix);
                self.send_bytes(nats::pub_frame(channel, Some(&reply), payload.as_bytes()))
                    .await
            }
        }
    }

    /// Answers an RPC request with its own payload (an echo worker).
    pub async fn answer(&mut self, call: RpcCall) -> Result<(), ConnError> {
        match (self.kind, call.body) {
            (Kind::Sente | Kind::Uws, Body::Json(data)) => {
                self.send_client(&ClientMessage::RpcResponse {
                    request_id: call.reply_to,
                    data,
                    error: false,
                })
                .await
            }
            (Kind::Nats, Body::Bytes(b)) => {
                self.send_bytes(nats::pub_frame(&call.reply_to, None, &b))
                    .await
            }
            (_, body) => Err(ConnError::Unexpected(format!(
                "body {body:?} does not fit {:?}",
                self.kind
            ))),
        }
    }

    /// NATS: sends a PING; its PONG arrives as [`Event::Pong`] once the
    /// server has processed everything sent before. sente-lite: nothing (its
    /// publishes are acknowledged one by one).
    pub async fn send_flush(&mut self) -> Result<(), ConnError> {
        match self.kind {
            Kind::Sente | Kind::Uws => Ok(()),
            Kind::Nats => self.send_bytes(nats::PING.to_vec()).await,
        }
    }

    /// Sends a WebSocket close frame and waits briefly for the server's.
    pub async fn close(mut self) -> Result<(), ConnError> {
        self.ws.close(None).await?;
        while let Some(m) = self.ws.next().await {
            if m.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// The next event. Server PINGs (NATS) are answered here. Cancel-safe:
    /// a dropped call loses no event already read.
    pub async fn recv(&mut self) -> Result<Event, ConnError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            match self.kind {
                Kind::Sente | Kind::Uws => {
                    let text = self.next_text().await?;
                    return Ok(decode_sente(&text));
                }
                Kind::Nats => {
                    self.drain_nats().await?;
                    if self.pending.is_empty() {
                        self.read_into_parser().await?;
                        self.drain_nats().await?;
                    }
                }
            }
        }
    }

    async fn drain_nats(&mut self) -> Result<(), ConnError> {
        while let Some(op) = self.parser.next_op()? {
            let ev = match op {
                nats::Op::Ping => {
                    self.send_bytes(nats::PONG.to_vec()).await?;
                    continue;
                }
                // A PONG answers a PING sent with a SUB or as a flush; the
                // caller knows which it is waiting for, so report both ways.
                nats::Op::Pong => Event::Pong,
                nats::Op::Ok | nats::Op::Info(_) => Event::Other,
                nats::Op::Err(e) => Event::ServerError(e),
                nats::Op::Msg {
                    sid,
                    reply,
                    payload,
                    ..
                } => {
                    if Some(sid) == self.inbox_sid {
                        Event::Reply {
                            stamp: serde_json::from_slice(&payload).ok(),
                            error: false,
                        }
                    } else if let Some(reply_to) = reply {
                        Event::Call(RpcCall {
                            reply_to,
                            body: Body::Bytes(payload),
                        })
                    } else {
                        Event::Delivery(serde_json::from_slice(&payload).ok())
                    }
                }
            };
            self.pending.push_back(ev);
        }
        Ok(())
    }

    fn sid(&mut self) -> u64 {
        let s = self.next_sid;
        self.next_sid += 1;
        s
    }

    async fn send_client(&mut self, msg: &ClientMessage) -> Result<(), ConnError> {
        let text = serde_json::to_string(msg)
            .map_err(|e| ConnError::Unexpected(format!("encode {msg}: {e}")))?;
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    async fn send_bytes(&mut self, bytes: Vec<u8>) -> Result<(), ConnError> {
        self.ws.send(Message::binary(bytes)).await?;
        Ok(())
    }

    /// Next text frame (sente-lite); control frames are skipped.
    async fn next_text(&mut self) -> Result<String, ConnError> {
        loop {
            match self.ws.next().await {
                None => return Err(ConnError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
                Some(Ok(Message::Binary(b))) => {
                    return String::from_utf8(b.to_vec())
                        .map_err(|_| ConnError::Unexpected("binary frame is not UTF-8".into()))
                }
                Some(Ok(Message::Close(_))) => return Err(ConnError::Closed),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Reads one data frame into the NATS parser.
    async fn read_into_parser(&mut self) -> Result<(), ConnError> {
        loop {
            match self.ws.next().await {
                None => return Err(ConnError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => {
                    self.parser.push(t.as_bytes());
                    return Ok(());
                }
                Some(Ok(Message::Binary(b))) => {
                    self.parser.push(&b);
                    return Ok(());
                }
                Some(Ok(Message::Close(_))) => return Err(ConnError::Closed),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// The client's WebSocket settings. tungstenite zero-fills its read buffer up
/// to `read_buffer_size` before every read (128 KiB by default): with
/// thousands of small frames per second that memset dominated the tool's own
/// CPU and inflated the measured latency, so read in 4 KiB steps (larger
/// frames still arrive whole; the buffer grows as needed).
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Decodes one sente-lite frame into an event.
pub fn decode_sente(text: &str) -> Event {
    if let Ok(f) = serde_json::from_str::<FastFrame<'_>>(text) {
        if f.ty == "channel-message" {
            return Event::Delivery(f.data);
        }
    }
    match serde_json::from_str::<ServerMessage>(text) {
        Ok(ServerMessage::ChannelMessage(m)) => {
            Event::Delivery(serde_json::from_str(m.data.as_json()).ok())
        }
        Ok(ServerMessage::SubscriptionResult { success, .. }) => {
            Event::SubscribeAck { ok: success }
        }
        Ok(ServerMessage::PublishResult { success, .. }) => Event::PublishAck { ok: success },
        Ok(ServerMessage::RpcRequest(r)) => Event::Call(RpcCall {
            reply_to: r.request_id,
            body: Body::Json(r.data),
        }),
        Ok(ServerMessage::RpcRequestResult { delivery, .. }) => Event::RequestAck {
            ok: delivery.success,
        },
        Ok(ServerMessage::RpcResponse { data, error, .. }) => Event::Reply {
            stamp: serde_json::from_str(data.as_json()).ok(),
            error,
        },
        Ok(ServerMessage::Error(e)) => Event::ServerError(format!("{}: {}", e.reason, e.message)),
        Ok(_) => Event::Other,
        Err(_) => Event::ServerError(format!("undecodable frame: {}", clip(text))),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}
