//! One WebSocket connection's task: it reads frames into its [`Session`],
//! writes what the socket did not take at once (in batches, when the
//! socket is writable again), pings, and closes.

use crate::admission::Admission;
use crate::events;
use crate::rate::{Admit, FrameRate};
use crate::shared::Shared;
use crate::sink::{ConnSink, Next};
use crate::stats::Counters;
use crate::wire::{Inbound, Stream};
use futures::{SinkExt, StreamExt};
use sente_lite_channels::{ConnId, Frame, Offer, Sink};
use sente_lite_protocol::{Reason, ServerMessage};
use sente_lite_session::{Handled, Identity, Session};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use telemere_lite::{event, Level};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<Inbound>;
/// How long a closing connection waits for the client's close reply.
const CLOSE_LINGER: Duration = Duration::from_millis(1_000);

/// Why a connection ends; decides the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server is stopping: drain, then 1001.
    Shutdown,
    /// Outbound queue overflow or a write past `message-timeout`: 1008.
    SlowConsumer,
    /// No frame from the client for two heartbeat intervals: 1001.
    HeartbeatTimeout,
    /// A frame over `max-message-bytes`: 1009.
    TooLarge,
    /// More frames refused for `max-frames-per-second` within a second
    /// than `max-refused-frames-per-second`: drain (the `rate-limited`
    /// errors say why), then 1008.
    RateLimited,
    /// The broker lost messages of a channel this connection is
    /// subscribed to: 1012, so the client reconnects and resubscribes.
    BrokerReconnect,
    /// The session closed the connection (4001 `unauthorized`, 4002
    /// `token-expired`).
    Closed(u16, Reason),
    /// The client sent a close frame.
    ClientClosed,
    /// The socket failed or the peer vanished.
    Gone,
}

impl End {
    fn close(self) -> Option<(u16, &'static str)> {
        match self {
            End::Shutdown => Some((1001, "server-shutdown")),
            End::SlowConsumer => Some((1008, Reason::SlowConsumer.as_str())),
            End::HeartbeatTimeout => Some((1001, "heartbeat-timeout")),
            End::TooLarge => Some((1009, Reason::MessageTooLarge.as_str())),
            End::RateLimited => Some((1008, Reason::RateLimited.as_str())),
            End::BrokerReconnect => Some((1012, "broker-reconnect")),
            End::Closed(code, reason) => Some((code, reason.as_str())),
            End::ClientClosed | End::Gone => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            End::Shutdown => "server-shutdown",
            End::SlowConsumer => "slow-consumer",
            End::HeartbeatTimeout => "heartbeat-timeout",
            End::TooLarge => "message-too-large",
            End::RateLimited => "rate-limited",
            End::BrokerReconnect => "broker-reconnect",
            End::Closed(_, reason) => reason.as_str(),
            End::ClientClosed => "client-closed",
            End::Gone => "connection-lost",
        }
    }
}

enum WriteError {
    Overflowed,
    Timeout,
    Io,
}

/// Runs one connection from upgrade to close: `read` is what was read of
/// the stream past the upgrade request.
pub(crate) async fn run(
    stream: Stream,
    read: Vec<u8>,
    config: WebSocketConfig,
    shared: Arc<Shared>,
    admission: Admission,
    identity: Identity,
) {
    let cfg = &shared.config;
    let inbound = Inbound::new(stream, |direct| {
        ConnSink::new(
            cfg.max_outbound_frames,
            cfg.max_outbound_bytes,
            Arc::clone(&shared.sinks),
            direct,
        )
    });
    let sink = Arc::clone(inbound.sink());
    let mut ws =
        WebSocketStream::from_partially_read(inbound, read, Role::Server, Some(config)).await;
    let session = match Session::open(
        &shared.engine,
        Arc::clone(&sink) as Arc<dyn Sink>,
        Arc::clone(&shared.authorizer),
        identity,
    ) {
        Ok(s) => s,
        Err(e) => {
            // Admission keeps this rare (two limits in step); answer clearly.
            let frame = ServerMessage::error(e.reason(), e.to_string(), None).to_json();
            Box::pin(async move {
                let _ = ws.send(Message::text(frame)).await;
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Again,
                        reason: e.reason().as_str().into(),
                    }))
                    .await;
            })
            .await;
            return;
        }
    };
    let conn = session.conn();
    let conn_id = session.addr().to_string();
    Counters::bump(&shared.counters.connections_accepted);
    let tel = &shared.telemetry;
    event!(tel: tel, level: Level::Debug, events::WEBSOCKET_OPENED, serde_json::json!({"conn-id": &conn_id}));
    event!(tel: tel, level: Level::Debug, events::CONNECTION_ADDED, serde_json::json!({"conn-id": &conn_id}));

    let hb = cfg.heartbeat_interval.max(Duration::from_millis(1));
    let mut last_seen = Instant::now();
    let mut rate = FrameRate::new(
        cfg.max_frames_per_second,
        cfg.frames_burst,
        cfg.max_refused_frames_per_second,
        last_seen.into_std(),
    );
    let registration = shared.register(&sink);

    // Not biased: a client that is sent a long stream is still read (its
    // pongs keep it alive), and one that sends a long stream still gets its
    // replies. Stop and overflow come first within the sink's own order.
    let end = loop {
        tokio::select! {
            next = sink.next() => match next {
                Next::Write => {
                    match write_queued(&mut ws, &shared, &sink, conn).await {
                        Ok(()) => {}
                        Err(WriteError::Overflowed | WriteError::Timeout) => break End::SlowConsumer,
                        Err(WriteError::Io) => break End::Gone,
                    }
                }
                Next::Overflowed => break End::SlowConsumer,
                Next::Stop => break End::Shutdown,
                Next::Reconnect => break End::BrokerReconnect,
                Next::Close(code, reason) => break End::Closed(code, reason),
                Next::Beat => {
                    if last_seen.elapsed() >= hb * 2 {
                        break End::HeartbeatTimeout;
                    }
                    let deadline = Instant::now() + cfg.message_timeout;
                    let ping = Box::pin(timeout_at(deadline, ws.feed(Message::Ping(bytes::Bytes::new()))));
                    match ping.await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break End::Gone,
                        Err(_) => break End::SlowConsumer,
                    }
                    match flush_progressing(&mut ws, &sink, cfg.message_timeout).await {
                        Ok(()) => {}
                        Err(WriteError::Overflowed | WriteError::Timeout) => break End::SlowConsumer,
                        Err(WriteError::Io) => break End::Gone,
                    }
                }
            },
            msg = ws.next() => {
                last_seen = Instant::now();
                // Text and binary frames count against the rate; control
                // frames (ping, pong, close) do not.
                if matches!(msg, Some(Ok(Message::Text(_) | Message::Binary(_)))) {
                    match rate.admit(last_seen.into_std()) {
                        Admit::Pass => {}
                        Admit::Refuse => {
                            Counters::bump(&shared.counters.frames_received);
                            Counters::bump(&shared.counters.frames_rate_limited);
                            if refuse_rate_limited(&sink, cfg.max_frames_per_second) {
                                Counters::bump(&shared.counters.error_frames_sent);
                            }
                            continue;
                        }
                        Admit::Close => {
                            Counters::bump(&shared.counters.frames_received);
                            Counters::bump(&shared.counters.frames_rate_limited);
                            break End::RateLimited;
                        }
                    }
                }
                let handled = match msg {
                    Some(Ok(Message::Text(text))) => {
                        event!(tel: tel, level: Level::Trace, events::WEBSOCKET_MESSAGE_RECEIVED,
                            serde_json::json!({"conn-id": &conn_id, "bytes": text.len()}));
                        // Boxed: the session's nested futures (subscribe,
                        // publish, RPC) would otherwise be part of every
                        // connection task's size, idle or not; one
                        // allocation per client frame is cheaper than
                        // that resident memory.
                        Box::pin(session.handle_text(text.as_str())).await
                    }
                    Some(Ok(Message::Binary(_))) => session.handle_binary(),
                    Some(Ok(Message::Close(_))) => break End::ClientClosed,
                    Some(Ok(_)) => continue, // ping, pong: liveness only
                    Some(Err(WsError::Capacity(_))) => break End::TooLarge,
                    Some(Err(_)) | None => break End::Gone,
                };
                Counters::bump(&shared.counters.frames_received);
                if handled == Handled::ErrorSent {
                    Counters::bump(&shared.counters.error_frames_sent);
                }
            }
        }
    };

    // From here on the engine offers this connection nothing more.
    Box::pin(session.close()).await;
    sink.close();
    event!(tel: tel, level: Level::Debug, events::CONNECTION_REMOVED,
        serde_json::json!({"conn-id": &conn_id, "cause": end.name()}));
    match end {
        End::SlowConsumer => Counters::bump(&shared.counters.closed_slow_consumer),
        End::HeartbeatTimeout => Counters::bump(&shared.counters.closed_heartbeat_timeout),
        End::TooLarge => Counters::bump(&shared.counters.closed_message_too_large),
        End::RateLimited => Counters::bump(&shared.counters.closed_rate_limited),
        _ => {}
    }
    if matches!(
        end,
        End::SlowConsumer | End::HeartbeatTimeout | End::TooLarge | End::RateLimited
    ) {
        event!(tel: tel, level: Level::Warn, events::WEBSOCKET_ERROR,
            serde_json::json!({"conn-id": &conn_id, "reason": end.name()}));
    }
    if matches!(end, End::Shutdown | End::RateLimited) {
        // Deliver what was queued before the stop (for a rate-limited
        // client: the `rate-limited` errors that say why it is closed),
        // within the drain deadline.
        let deadline = Instant::now() + cfg.shutdown_drain;
        let _ = until_overflow(&sink, timeout_at(deadline, ws.flush())).await;
    }
    Box::pin(close(&mut ws, end, cfg.message_timeout)).await;
    Counters::bump(&shared.counters.connections_closed);
    shared.unregister(registration);
    event!(tel: tel, level: Level::Debug, events::WEBSOCKET_CLOSED, serde_json::json!({
        "conn-id": &conn_id, "cause": end.name(),
        "code": end.close().map(|c| c.0)}));
    drop(admission);
}

/// Queues the `error` `rate-limited` answer to a refused frame; false when
/// the queue would not take it (the connection is closing as a slow
/// consumer, or already closing).
fn refuse_rate_limited(sink: &ConnSink, rate: u32) -> bool {
    let frame = ServerMessage::error(
        Reason::RateLimited,
        format!(
            "more than {rate} frames per second (websocket.max-frames-per-second); \
             this frame was not processed"
        ),
        None,
    )
    .to_json();
    sink.offer(&Frame::new(frame)) == Offer::Queued
}

/// Writes what is queued (the socket did not take it at once), in batches
/// of several frames per syscall, until the queue is empty.
async fn write_queued(
    ws: &mut Ws,
    shared: &Shared,
    sink: &ConnSink,
    conn: ConnId,
) -> Result<(), WriteError> {
    let before = sink.frames_sent.load(Ordering::Relaxed);
    flush_progressing(ws, sink, shared.config.message_timeout).await?;
    event!(tel: &shared.telemetry, level: Level::Trace, events::MESSAGE_SENT,
        serde_json::json!({"conn-id": conn.to_string(),
            "frames": sink.frames_sent.load(Ordering::Relaxed).saturating_sub(before)}));
    Ok(())
}

/// Writes the queue until it is empty. A slow consumer is one whose socket
/// took nothing of it for `timeout`: a client that reads, though slower
/// than it is sent to, is bounded by its queue instead (a queue that
/// conflates `latest` messages never empties under a steady overload).
async fn flush_progressing(
    ws: &mut Ws,
    sink: &ConnSink,
    timeout: Duration,
) -> Result<(), WriteError> {
    loop {
        let writes = sink.socket_writes.load(Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        match until_overflow(sink, timeout_at(deadline, ws.flush())).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => return Err(WriteError::Io),
            Err(WriteError::Timeout) if sink.socket_writes.load(Ordering::Relaxed) != writes => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs a write, or gives up on it when the connection is closed for the
/// server-wide total meanwhile (it held the most when the total was
/// passed): a client that does not read cannot keep its task, and the
/// write buffer, waiting until `message-timeout` while memory is short.
/// The write is polled first, so one that completes at once costs nothing
/// more.
async fn until_overflow<T>(
    sink: &ConnSink,
    write: impl std::future::Future<Output = Result<T, tokio::time::error::Elapsed>>,
) -> Result<T, WriteError> {
    tokio::select! {
        biased;
        done = write => done.map_err(|_| WriteError::Timeout),
        () = sink.evicted() => Err(WriteError::Overflowed),
    }
}

/// Sends our close frame (if the end calls for one), then lets the client
/// answer for a moment so the close handshake completes.
async fn close(ws: &mut Ws, end: End, write_timeout: Duration) {
    let frame = end.close().map(|(code, reason)| CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    });
    if end == End::Gone {
        return;
    }
    let deadline = Instant::now() + write_timeout.min(CLOSE_LINGER);
    // For a client's close, tungstenite has queued the echo: close() sends it.
    if timeout_at(deadline, ws.close(frame)).await.is_err() {
        return;
    }
    let linger = Instant::now() + CLOSE_LINGER;
    while let Ok(Some(Ok(_))) = timeout_at(linger, ws.next()).await {}
}
