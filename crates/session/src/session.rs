//! [`Session`]: one connection's protocol state machine.

use crate::auth::{Authorizer, ConnectInfo, Identity, Refusal};
use crate::events;
use sente_lite_channels::{
    ConnAddr, ConnId, Engine, EngineError, Frame, RpcSent, Sink, Subscribed,
};
use sente_lite_protocol::{decode_client, now_ms, ClientMessage, Delivery, Reason, ServerMessage};
use std::fmt;
use std::sync::Arc;
use telemere_lite::{event, Level, Telemetry};

/// One connection speaking docs/PROTOCOL.md: it greets the client
/// (`welcome`), decodes each text frame, asks the [`Authorizer`], routes the
/// frame to the [`Engine`] and queues the reply on the connection's own
/// sink, so replies are ordered with the deliveries around them.
///
/// It knows nothing of the transport: the transport hands it text frames
/// and writes whatever reaches the sink.
pub struct Session {
    engine: Engine,
    conn: ConnId,
    addr: ConnAddr,
    sink: Arc<dyn Sink>,
    authorizer: Arc<dyn Authorizer>,
    identity: Identity,
    telemetry: Telemetry,
}

/// What handling one frame came to, for the transport's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Routed; the reply (if any) is queued.
    Routed,
    /// Refused before routing (undecodable, binary): an `error` frame is
    /// queued.
    ErrorSent,
}

/// Why a session could not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The authorizer refused the connection.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The engine refused it (`max-connections-reached`).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl OpenError {
    /// The wire reason.
    pub fn reason(&self) -> Reason {
        match self {
            OpenError::Refused(r) => r.reason,
            OpenError::Engine(e) => e.reason(),
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("conn", &self.addr.to_string())
            .field("identity", &self.identity)
            .finish()
    }
}

impl Session {
    /// Asks `authorizer` who the connection described by `info` is. A
    /// transport calls this before it accepts the connection (to refuse it
    /// with an HTTP status), then [`Session::open`] with the identity.
    pub fn authorize(authorizer: &dyn Authorizer, info: &ConnectInfo) -> Result<Identity, Refusal> {
        authorizer.connect(info)
    }

    /// Registers the connection with the engine and queues its `welcome`
    /// before anything else can reach it.
    pub fn open(
        engine: &Engine,
        sink: Arc<dyn Sink>,
        authorizer: Arc<dyn Authorizer>,
        identity: Identity,
    ) -> Result<Session, OpenError> {
        let welcome = |addr: &ConnAddr| {
            Frame::new(
                ServerMessage::Welcome {
                    conn_id: addr.to_string(),
                    server_time: now_ms(),
                }
                .to_json(),
            )
        };
        let conn = engine.connect_with_greeting(Arc::clone(&sink), welcome)?;
        Ok(Session {
            addr: engine.addr(conn),
            engine: engine.clone(),
            conn,
            sink,
            authorizer,
            identity,
            telemetry: engine.telemetry().clone(),
        })
    }

    /// The connection's id on this node.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The connection's cluster address (its wire id).
    pub fn addr(&self) -> &ConnAddr {
        &self.addr
    }

    /// Who the connection is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn reply(&self, msg: &ServerMessage) {
        self.sink.offer(&Frame::new(msg.to_json()));
    }

    /// Handles one text frame. Every reply goes through the connection's
    /// own sink.
    pub async fn handle_text(&self, text: &str) -> Handled {
        let tel = &self.telemetry;
        let msg = match decode_client(text) {
            Ok(m) => m,
            Err(e) => {
                event!(tel: tel, level: Level::Debug, events::MESSAGE_PROCESSED, serde_json::json!({
                    "conn-id": self.addr.to_string(), "error": e.reason, "message": &e.message}));
                self.reply(&ServerMessage::from(e));
                return Handled::ErrorSent;
            }
        };
        let ty = msg.type_name();
        event!(tel: tel, level: Level::Trace, events::MESSAGE_ROUTING,
            serde_json::json!({"conn-id": self.addr.to_string(), "type": ty}));
        if let Some(reply) = self.route(msg).await {
            self.reply(&reply);
        }
        event!(tel: tel, level: Level::Trace, events::MESSAGE_PROCESSED, serde_json::json!({
            "conn-id": self.addr.to_string(), "type": ty}));
        Handled::Routed
    }

    /// Handles a binary frame: refused, only JSON text frames are spoken.
    pub fn handle_binary(&self) -> Handled {
        self.reply(&ServerMessage::error(
            Reason::BinaryNotSupported,
            "binary frames are not supported; send JSON as text frames",
            None,
        ));
        Handled::ErrorSent
    }

    /// Ends the session: the engine offers the connection nothing more, it
    /// leaves every channel and its pending RPC requests are dropped.
    pub async fn close(self) {
        self.engine.disconnect(self.conn).await;
    }

    async fn route(&self, msg: ClientMessage) -> Option<ServerMessage> {
        let engine = &self.engine;
        let conn = self.conn;
        let auth = &*self.authorizer;
        match msg {
            ClientMessage::Subscribe { channel_id } => {
                if let Err(r) = auth.subscribe(&self.identity, &self.addr, &channel_id) {
                    engine.record_refusal(r.reason);
                    return Some(subscription_failed(channel_id, r.reason));
                }
                let ok = |s: &Subscribed| {
                    Frame::new(
                        ServerMessage::SubscriptionResult {
                            channel_id: channel_id.clone(),
                            success: true,
                            subscriber_count: Some(s.subscriber_count),
                            retained_messages: Some(s.retained_messages.clone()),
                            retained_omitted: s.retained_omitted,
                            reason: None,
                        }
                        .to_json(),
                    )
                };
                // On success the engine queues the result itself, before any
                // message published after the subscription.
                match engine
                    .subscribe_with_reply(conn, &channel_id, Some(&ok))
                    .await
                {
                    Ok(_) => None,
                    Err(e) => Some(subscription_failed(channel_id, e.reason())),
                }
            }
            ClientMessage::Unsubscribe { channel_id } => {
                let r = engine.unsubscribe(conn, &channel_id).await;
                Some(ServerMessage::UnsubscriptionResult {
                    channel_id,
                    success: r.is_ok(),
                    reason: r.err().map(|e| e.reason()),
                })
            }
            ClientMessage::Publish {
                channel_id,
                data,
                exclude_sender,
            } => {
                let result = match auth.publish(&self.identity, &self.addr, &channel_id) {
                    Ok(()) => engine
                        .publish(Some(conn), &channel_id, data, exclude_sender)
                        .await
                        .map_err(|e| e.reason()),
                    Err(r) => {
                        engine.record_refusal(r.reason);
                        Err(r.reason)
                    }
                };
                Some(match result {
                    Ok(p) => ServerMessage::PublishResult {
                        channel_id,
                        success: true,
                        message_id: Some(p.message_id),
                        delivered_to: Some(p.delivered_to),
                        reason: None,
                    },
                    Err(reason) => ServerMessage::PublishResult {
                        channel_id,
                        success: false,
                        message_id: None,
                        delivered_to: None,
                        reason: Some(reason),
                    },
                })
            }
            ClientMessage::RpcRequest {
                channel_id,
                data,
                timeout_ms,
            } => {
                if let Err(r) = auth.rpc_call(&self.identity, &self.addr, &channel_id) {
                    engine.record_refusal(r.reason);
                    return Some(rpc_failed(channel_id, r.reason));
                }
                let ok = |sent: &RpcSent| {
                    Frame::new(
                        ServerMessage::RpcRequestResult {
                            request_id: Some(sent.request_id.clone()),
                            channel_id: channel_id.clone(),
                            delivery: Delivery {
                                success: true,
                                delivered_to: sent.delivered_to,
                                subscribers: Some(sent.subscribers.clone()),
                                reason: None,
                            },
                        }
                        .to_json(),
                    )
                };
                // On success the engine queues the result itself, before any
                // response or timeout of the request can reach us.
                match engine
                    .send_rpc_request_with_reply(conn, &channel_id, data, timeout_ms, Some(&ok))
                    .await
                {
                    Ok(_) => None,
                    Err(e) => Some(rpc_failed(channel_id, e.reason())),
                }
            }
            ClientMessage::RpcResponse {
                request_id,
                data,
                error,
            } => {
                // Only a connection the request was sent to may answer; the
                // requester is told who did.
                let user = self.identity.user_id.as_deref();
                let r = engine
                    .send_rpc_response(conn, user, &request_id, data, error)
                    .await;
                Some(ServerMessage::RpcResponseResult {
                    request_id,
                    success: r.is_ok(),
                    reason: r.err().map(|e| e.reason()),
                })
            }
            ClientMessage::Ping { timestamp } => Some(ServerMessage::Pong {
                timestamp: now_ms(),
                original_timestamp: timestamp,
            }),
            ClientMessage::ListChannels => match engine.list_channels().await {
                Ok(channels) => Some(ServerMessage::ChannelList { channels }),
                Err(e) => Some(ServerMessage::error(e.reason(), e.to_string(), None)),
            },
            ClientMessage::GetSubscriptions => {
                // The connection is registered for as long as its session
                // lives.
                let subscriptions = engine.subscriptions(conn).unwrap_or_default();
                Some(ServerMessage::SubscriptionList { subscriptions })
            }
        }
    }
}

fn subscription_failed(channel_id: String, reason: Reason) -> ServerMessage {
    ServerMessage::SubscriptionResult {
        channel_id,
        success: false,
        subscriber_count: None,
        retained_messages: None,
        retained_omitted: 0,
        reason: Some(reason),
    }
}

fn rpc_failed(channel_id: String, reason: Reason) -> ServerMessage {
    ServerMessage::RpcRequestResult {
        request_id: None,
        channel_id,
        delivery: Delivery {
            success: false,
            delivered_to: 0,
            subscribers: None,
            reason: Some(reason),
        },
    }
}
