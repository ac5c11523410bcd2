//! [`Session`]: one connection's protocol state machine.

use crate::auth::{Authorizer, ConnectInfo, Identity, Refusal};
use crate::events;
use parking_lot::{Mutex, RwLock};
use sente_lite_channels::{
    ConnAddr, ConnId, Engine, EngineError, Frame, RpcSent, Sink, Subscribed,
};
use sente_lite_protocol::{
    decode_client, now_ms, ClientInfo, ClientMessage, Delivery, Reason, ServerMessage,
};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use telemere_lite::{event, Level, Telemetry};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Close code of a connection that did not authenticate in time.
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
/// Close code of a connection whose token expired.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4002;

/// Most channels one `list-channels` answer names when it asks for no
/// `limit`.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Most channels one `list-channels` answer names whatever it asks.
pub const MAX_LIST_LIMIT: usize = 1_000;

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
    /// Replaced whole by a successful `authenticate`.
    identity: RwLock<Arc<Identity>>,
    /// The deadline that closes the connection (authentication, token
    /// expiry), armed only when there is one.
    watch: OnceLock<Arc<Watch>>,
    telemetry: Telemetry,
}

/// The one deadline of a session, watched by a task spawned the first
/// time one is armed.
struct Watch {
    deadline: Mutex<Option<Deadline>>,
    changed: Notify,
    /// The session ended: the task stops.
    ended: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadline {
    at: Instant,
    code: u16,
    reason: Reason,
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
            .field("identity", &*self.identity.read())
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
                    user_id: identity.user_id.clone(),
                }
                .to_json(),
            )
        };
        let conn = engine.connect_with_greeting(Arc::clone(&sink), welcome)?;
        if identity.user_id.is_some() || identity.info.is_some() {
            // Subscribed to nothing yet: only the hub needs to know.
            engine.hub().set_client(conn, client_info(&identity));
        }
        let session = Session {
            addr: engine.addr(conn),
            engine: engine.clone(),
            conn,
            sink,
            authorizer,
            identity: RwLock::new(Arc::new(identity)),
            watch: OnceLock::new(),
            telemetry: engine.telemetry().clone(),
        };
        session.arm();
        Ok(session)
    }

    /// Sets the deadline the identity calls for: the authentication
    /// timeout for a connection that must authenticate and has not, the
    /// token's expiry for one that has, none otherwise.
    fn arm(&self) {
        let who = self.identity();
        let deadline = if !who.is_authenticated() && !self.authorizer.allows_anonymous() {
            Some(Deadline {
                at: Instant::now() + self.authorizer.auth_timeout(),
                code: CLOSE_UNAUTHORIZED,
                reason: Reason::Unauthorized,
            })
        } else {
            who.expires_at_ms.map(|exp| Deadline {
                at: Instant::now()
                    + Duration::from_millis(u64::try_from(exp - now_ms()).unwrap_or(0)),
                code: CLOSE_TOKEN_EXPIRED,
                reason: Reason::TokenExpired,
            })
        };
        match (self.watch.get(), deadline) {
            (None, None) => {}
            (Some(w), d) => {
                *w.deadline.lock() = d;
                w.changed.notify_one();
            }
            (None, Some(d)) => {
                // Without a runtime (a synchronous embedder) nothing can
                // wait; the per-frame check still refuses an expired token.
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let w = Arc::new(Watch {
                    deadline: Mutex::new(Some(d)),
                    changed: Notify::new(),
                    ended: AtomicBool::new(false),
                });
                if self.watch.set(Arc::clone(&w)).is_ok() {
                    rt.spawn(watch(w, Arc::clone(&self.sink), self.engine.clone()));
                }
            }
        }
    }

    /// The connection's id on this node.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The connection's cluster address (its wire id).
    pub fn addr(&self) -> &ConnAddr {
        &self.addr
    }

    /// Who the connection is now.
    pub fn identity(&self) -> Arc<Identity> {
        Arc::clone(&self.identity.read())
    }

    /// Whether the connection may do more than `authenticate` and `ping`
    /// now; closes it (4002) when its token has expired.
    fn admitted(&self, who: &Identity) -> Result<(), Reason> {
        if let Some(exp) = who.expires_at_ms {
            if exp <= now_ms() {
                self.sink.close(CLOSE_TOKEN_EXPIRED, Reason::TokenExpired);
                return Err(Reason::TokenExpired);
            }
        }
        if who.is_authenticated() || self.authorizer.allows_anonymous() {
            Ok(())
        } else {
            Err(Reason::Unauthorized)
        }
    }

    fn reply(&self, msg: &ServerMessage) {
        self.sink.offer_one(&Frame::new(msg.to_json()));
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
        if !matches!(
            msg,
            ClientMessage::Authenticate { .. } | ClientMessage::Ping { .. }
        ) {
            if let Err(reason) = self.admitted(&self.identity()) {
                self.engine.record_refusal(reason);
                self.reply(&ServerMessage::error(
                    reason,
                    match reason {
                        Reason::TokenExpired => "the connection's token expired",
                        _ => {
                            "authenticate first: send {\"type\":\"authenticate\",\"token\":\"...\"}"
                        }
                    },
                    None,
                ));
                return Handled::ErrorSent;
            }
        }
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

    fn authenticate(&self, token: &str) -> ServerMessage {
        let failed = |reason: Reason| ServerMessage::AuthenticateResult {
            success: false,
            user_id: None,
            expires_at: None,
            reason: Some(reason),
        };
        let new = match self.authorizer.authenticate(token) {
            Ok(new) => new,
            Err(r) => {
                self.engine.record_refusal(r.reason);
                return failed(r.reason);
            }
        };
        {
            let mut cur = self.identity.write();
            // A fresh token keeps the connection's user: one connection is
            // never two users.
            if cur.is_authenticated() && cur.user_id != new.user_id {
                drop(cur);
                self.engine.record_refusal(Reason::Forbidden);
                return failed(Reason::Forbidden);
            }
            *cur = Arc::new(new);
        }
        self.arm();
        let who = self.identity();
        ServerMessage::AuthenticateResult {
            success: true,
            user_id: who.user_id.clone(),
            expires_at: who.expires_at_ms,
            reason: None,
        }
    }

    async fn list_channels(&self, limit: Option<u64>, cursor: Option<String>) -> ServerMessage {
        let limit = limit
            .map_or(DEFAULT_LIST_LIMIT, |l| {
                usize::try_from(l).unwrap_or(usize::MAX)
            })
            .min(MAX_LIST_LIMIT);
        let who = self.identity();
        let auth = &*self.authorizer;
        let visible = |id: &str| auth.subscribe(&who, &self.addr, id).is_ok();
        match self
            .engine
            .list_channels_page(cursor.as_deref(), limit, &visible)
            .await
        {
            Ok((channels, next_cursor)) => ServerMessage::ChannelList {
                channels,
                next_cursor,
            },
            Err(e) => ServerMessage::error(e.reason(), e.to_string(), None),
        }
    }

    /// Whether `who` may read a channel's history and presence: whoever
    /// may subscribe to it (a refusal is counted).
    fn may_read(&self, who: &Identity, channel_id: &str) -> Result<(), Reason> {
        self.authorizer
            .subscribe(who, &self.addr, channel_id)
            .map_err(|r| {
                self.engine.record_refusal(r.reason);
                r.reason
            })
    }

    async fn route(&self, msg: ClientMessage) -> Option<ServerMessage> {
        let engine = &self.engine;
        let conn = self.conn;
        let auth = &*self.authorizer;
        let who = self.identity();
        let who = &*who;
        match msg {
            ClientMessage::Subscribe {
                channel_id,
                recover,
            } => {
                if let Err(r) = auth.subscribe(who, &self.addr, &channel_id) {
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
                            offset: Some(s.position.offset),
                            epoch: Some(s.position.epoch.to_string()),
                            recovered: s.recovered.map(|r| r.is_ok()),
                            recovered_count: s.recovered.and_then(Result::ok),
                            recover_reason: s.recovered.and_then(Result::err),
                            reason: None,
                        }
                        .to_json(),
                    )
                };
                // On success the engine queues the result itself, before any
                // message published after the subscription (and, when it
                // recovers, the missed messages right after it).
                match engine
                    .subscribe_recovering(conn, &channel_id, recover.as_ref(), Some(&ok))
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
                let result = match auth.publish(
                    who,
                    &self.addr,
                    &channel_id,
                    engine.hub().is_subscribed(conn, &channel_id),
                ) {
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
                if let Err(r) = auth.rpc_call(
                    who,
                    &self.addr,
                    &channel_id,
                    engine.hub().is_subscribed(conn, &channel_id),
                ) {
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
                let user = who.user_id.as_deref();
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
            ClientMessage::ListChannels { limit, cursor } => {
                Some(self.list_channels(limit, cursor).await)
            }
            ClientMessage::Authenticate { token } => {
                let result = self.authenticate(&token);
                if matches!(
                    result,
                    ServerMessage::AuthenticateResult { success: true, .. }
                ) {
                    let who = self.identity();
                    engine.set_client(conn, client_info(&who)).await;
                }
                Some(result)
            }
            ClientMessage::Presence { channel_id } => {
                // Who may subscribe may see who else is subscribed.
                if let Err(reason) = self.may_read(who, &channel_id) {
                    return Some(presence_failed(channel_id, reason));
                }
                Some(match engine.presence(&channel_id).await {
                    Ok(clients) => ServerMessage::PresenceResult {
                        channel_id,
                        success: true,
                        clients: Some(clients),
                        reason: None,
                    },
                    Err(e) => presence_failed(channel_id, e.reason()),
                })
            }
            ClientMessage::PresenceStats { channel_id } => {
                let stats = match self.may_read(who, &channel_id) {
                    Ok(()) => engine
                        .presence_stats(&channel_id)
                        .await
                        .map_err(|e| e.reason()),
                    Err(reason) => Err(reason),
                };
                Some(match stats {
                    Ok((clients, users)) => ServerMessage::PresenceStatsResult {
                        channel_id,
                        success: true,
                        clients: Some(clients),
                        users: Some(users),
                        reason: None,
                    },
                    Err(reason) => ServerMessage::PresenceStatsResult {
                        channel_id,
                        success: false,
                        clients: None,
                        users: None,
                        reason: Some(reason),
                    },
                })
            }
            ClientMessage::History {
                channel_id,
                since,
                limit,
            } => {
                // Who may subscribe may read what subscribers were sent.
                if let Err(reason) = self.may_read(who, &channel_id) {
                    return Some(history_failed(channel_id, reason, None));
                }
                Some(
                    match engine.history(&channel_id, since.as_ref(), limit).await {
                        Ok(page) => match page.messages {
                            Ok(messages) => ServerMessage::HistoryResult {
                                channel_id,
                                success: true,
                                messages: Some(messages),
                                offset: Some(page.position.offset),
                                epoch: Some(page.position.epoch.to_string()),
                                reason: None,
                            },
                            Err(reason) => history_failed(channel_id, reason, Some(&page.position)),
                        },
                        Err(e) => history_failed(channel_id, e.reason(), None),
                    },
                )
            }
            ClientMessage::GetSubscriptions => {
                // The connection is registered for as long as its session
                // lives.
                let subscriptions = engine.subscriptions(conn).unwrap_or_default();
                Some(ServerMessage::SubscriptionList { subscriptions })
            }
        }
    }
}

/// Waits for the session's deadline and closes the connection at it; ends
/// when the session does.
async fn watch(w: Arc<Watch>, sink: Arc<dyn Sink>, engine: Engine) {
    loop {
        let changed = w.changed.notified();
        if w.ended.load(Ordering::Acquire) {
            return;
        }
        let current = *w.deadline.lock();
        match current {
            None => changed.await,
            Some(d) => {
                let fired = tokio::time::timeout_at(d.at, changed).await.is_err();
                if fired && !w.ended.load(Ordering::Acquire) && *w.deadline.lock() == Some(d) {
                    engine.record_refusal(d.reason);
                    sink.close(d.code, d.reason);
                    return;
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(w) = self.watch.get() {
            w.ended.store(true, Ordering::Release);
            w.changed.notify_one();
        }
    }
}

/// What presence shows of a connection: its user id and token `info`.
fn client_info(who: &Identity) -> ClientInfo {
    ClientInfo {
        user_id: who.user_id.clone(),
        info: who.info.clone(),
    }
}

fn presence_failed(channel_id: String, reason: Reason) -> ServerMessage {
    ServerMessage::PresenceResult {
        channel_id,
        success: false,
        clients: None,
        reason: Some(reason),
    }
}

fn history_failed(
    channel_id: String,
    reason: Reason,
    position: Option<&sente_lite_channels::StreamPosition>,
) -> ServerMessage {
    ServerMessage::HistoryResult {
        channel_id,
        success: false,
        messages: None,
        offset: position.map(|p| p.offset),
        epoch: position.map(|p| p.epoch.to_string()),
        reason: Some(reason),
    }
}

fn subscription_failed(channel_id: String, reason: Reason) -> ServerMessage {
    ServerMessage::SubscriptionResult {
        channel_id,
        success: false,
        subscriber_count: None,
        retained_messages: None,
        retained_omitted: 0,
        offset: None,
        epoch: None,
        recovered: None,
        recovered_count: None,
        recover_reason: None,
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
