//! One WebSocket connection: its outbound sink and the task that reads
//! frames, writes queued frames in batches, pings, and closes.

use crate::stats::Counters;
use crate::upgrade::Admission;
use crate::{events, handle, Shared};
use futures::task::AtomicWaker;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use sente_lite_channels::{ConnId, Frame, Offer, Sink};
use sente_lite_protocol::{now_ms, Reason, ServerMessage};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use telemere_lite::{event, Level};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Most frames gathered into one write.
const MAX_BATCH_FRAMES: usize = 256;
/// Most bytes gathered into one write.
const MAX_BATCH_BYTES: usize = 64 * 1024;
/// How long a closing connection waits for the client's close reply.
const CLOSE_LINGER: Duration = Duration::from_millis(1_000);

/// The outbound side the engine offers frames to: a queue bounded in frames
/// and in bytes, drained by the connection's task. A frame that does not
/// fit marks the connection a slow consumer and wakes its task to close it:
/// the connection never stays open having silently missed a frame.
///
/// The queue is a `VecDeque` under an uncontended lock plus an
/// `AtomicWaker`: offering wakes the task only when the queue goes from empty
/// to non-empty, and waiting allocates nothing. It starts with no buffer and
/// gives back a large one once drained, so an idle connection holds little.
pub(crate) struct ConnSink {
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    max_frames: usize,
    max_bytes: usize,
    /// This connection's share of `frames-sent` and `socket-writes`: counted
    /// here, on a cache line only its task writes, and summed for `/stats`,
    /// so the write path touches no counter shared by all connections.
    pub(crate) frames_sent: AtomicU64,
    pub(crate) socket_writes: AtomicU64,
}

struct Queue {
    frames: VecDeque<Frame>,
    bytes: usize,
    overflowed: bool,
    stop: bool,
    beat: bool,
}

impl Queue {
    /// A drained queue gives back a large buffer a burst left behind.
    fn shrink_if_drained(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > KEEP_SLOTS {
            self.frames.shrink_to(KEEP_SLOTS);
        }
    }
}

/// The queue overflowed: the connection is a slow consumer.
struct Overflowed;

/// What the transport tells every connection at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Heartbeat: ping the client, or close it if it has been silent.
    Beat,
    /// Shutdown: drain and close with 1001.
    Stop,
}

/// What the task finds when it looks at its queue, most urgent first.
enum Next {
    Overflowed,
    Stop,
    Frame(Frame),
    Beat,
}

/// A drained queue keeps at most this many slots of its buffer.
const KEEP_SLOTS: usize = 16;

impl ConnSink {
    fn new(max_frames: usize, max_bytes: usize) -> ConnSink {
        ConnSink {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                overflowed: false,
                stop: false,
                beat: false,
            }),
            waker: AtomicWaker::new(),
            max_frames: max_frames.max(1),
            max_bytes,
            frames_sent: AtomicU64::new(0),
            socket_writes: AtomicU64::new(0),
        }
    }

    /// Offers a frame of our own (a reply); the result matters only through
    /// the overflow it may cause.
    pub(crate) fn reply(&self, msg: &ServerMessage) {
        self.offer(&Frame::new(msg.to_json()));
    }

    /// Raises a signal and wakes the task.
    pub(crate) fn signal(&self, signal: Signal) {
        {
            let mut q = self.queue.lock();
            match signal {
                Signal::Beat => q.beat = true,
                Signal::Stop => q.stop = true,
            }
        }
        self.waker.wake();
    }

    /// The most urgent thing waiting: an overflow, a stop, the next frame,
    /// a heartbeat.
    fn try_next(&self) -> Option<Next> {
        let mut q = self.queue.lock();
        if q.overflowed {
            return Some(Next::Overflowed);
        }
        if q.stop {
            return Some(Next::Stop);
        }
        if let Some(frame) = q.frames.pop_front() {
            q.bytes -= frame.len();
            q.shrink_if_drained();
            return Some(Next::Frame(frame));
        }
        if std::mem::take(&mut q.beat) {
            return Some(Next::Beat);
        }
        None
    }

    /// The next frame of a write batch; an overflow ends the batch (a stop
    /// or heartbeat waits for the loop).
    fn batch_next(&self) -> Result<Option<Frame>, Overflowed> {
        let mut q = self.queue.lock();
        if q.overflowed {
            return Err(Overflowed);
        }
        let frame = q.frames.pop_front();
        if let Some(f) = &frame {
            q.bytes -= f.len();
        }
        q.shrink_if_drained();
        Ok(frame)
    }

    /// The next queued frame only (for the shutdown drain).
    fn pop_frame(&self) -> Option<Frame> {
        let mut q = self.queue.lock();
        let frame = q.frames.pop_front()?;
        q.bytes -= frame.len();
        Some(frame)
    }

    /// Waits for [`try_next`](Self::try_next) to have something.
    fn next(&self) -> impl std::future::Future<Output = Next> + '_ {
        std::future::poll_fn(move |cx| {
            // Woken with work waiting (the common case): no registration.
            if let Some(next) = self.try_next() {
                return Poll::Ready(next);
            }
            // Register, then look again: an offer in between wakes us.
            self.waker.register(cx.waker());
            match self.try_next() {
                Some(next) => Poll::Ready(next),
                None => Poll::Pending,
            }
        })
    }
}

impl Sink for ConnSink {
    fn offer(&self, frame: &Frame) -> Offer {
        let mut q = self.queue.lock();
        if q.overflowed {
            return Offer::Closed;
        }
        let len = frame.len();
        if q.frames.len() >= self.max_frames || q.bytes + len > self.max_bytes {
            q.overflowed = true;
            drop(q);
            self.waker.wake();
            return Offer::Full;
        }
        let was_empty = q.frames.is_empty();
        q.frames.push_back(frame.clone());
        q.bytes += len;
        drop(q);
        if was_empty {
            self.waker.wake();
        }
        Offer::Queued
    }
}

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
            End::ClientClosed | End::Gone => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            End::Shutdown => "server-shutdown",
            End::SlowConsumer => "slow-consumer",
            End::HeartbeatTimeout => "heartbeat-timeout",
            End::TooLarge => "message-too-large",
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

/// Runs one connection from upgrade to close.
pub(crate) async fn run<S>(mut ws: WebSocketStream<S>, shared: Arc<Shared>, admission: Admission)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = &shared.config;
    let sink = Arc::new(ConnSink::new(
        cfg.max_outbound_frames,
        cfg.max_outbound_bytes,
    ));
    let welcome = |id: ConnId| {
        Frame::new(
            ServerMessage::Welcome {
                conn_id: id.to_string(),
                server_time: now_ms(),
            }
            .to_json(),
        )
    };
    let conn = match shared
        .engine
        .connect_with_greeting(Arc::clone(&sink) as Arc<dyn Sink>, welcome)
    {
        Ok(id) => id,
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
    Counters::bump(&shared.counters.connections_accepted);
    let tel = &shared.telemetry;
    event!(tel: tel, level: Level::Debug, events::WEBSOCKET_OPENED, serde_json::json!({"conn-id": conn.to_string()}));
    event!(tel: tel, level: Level::Debug, events::CONNECTION_ADDED, serde_json::json!({"conn-id": conn.to_string()}));

    let hb = cfg.heartbeat_interval.max(Duration::from_millis(1));
    let mut last_seen = Instant::now();
    let registration = shared.register(&sink);

    // Not biased: a client that is sent a long stream is still read (its
    // pongs keep it alive), and one that sends a long stream still gets its
    // replies. Stop and overflow come first within the sink's own order.
    let end = loop {
        tokio::select! {
            next = sink.next() => match next {
                Next::Frame(first) => {
                    match write_batch(&mut ws, &shared, &sink, first, conn).await {
                        Ok(()) => {}
                        Err(WriteError::Overflowed | WriteError::Timeout) => break End::SlowConsumer,
                        Err(WriteError::Io) => break End::Gone,
                    }
                }
                Next::Overflowed => break End::SlowConsumer,
                Next::Stop => break End::Shutdown,
                Next::Beat => {
                    if last_seen.elapsed() >= hb * 2 {
                        break End::HeartbeatTimeout;
                    }
                    let deadline = Instant::now() + cfg.message_timeout;
                    let ping = Box::pin(timeout_at(deadline, ws.send(Message::Ping(bytes::Bytes::new()))));
                    match ping.await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break End::Gone,
                        Err(_) => break End::SlowConsumer,
                    }
                }
            },
            msg = ws.next() => {
                last_seen = Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => handle::text(&shared, conn, &sink, text.as_str()),
                    Some(Ok(Message::Binary(_))) => {
                        Counters::bump(&shared.counters.frames_received);
                        Counters::bump(&shared.counters.error_frames_sent);
                        sink.reply(&ServerMessage::error(
                            Reason::BinaryNotSupported,
                            "binary frames are not supported; send JSON as text frames",
                            None,
                        ));
                    }
                    Some(Ok(Message::Close(_))) => break End::ClientClosed,
                    Some(Ok(_)) => {} // ping, pong: liveness only
                    Some(Err(WsError::Capacity(_))) => break End::TooLarge,
                    Some(Err(_)) | None => break End::Gone,
                }
            }
        }
    };

    // From here on the engine offers this connection nothing more.
    shared.engine.disconnect(conn);
    event!(tel: tel, level: Level::Debug, events::CONNECTION_REMOVED,
        serde_json::json!({"conn-id": conn.to_string(), "cause": end.name()}));
    match end {
        End::SlowConsumer => Counters::bump(&shared.counters.closed_slow_consumer),
        End::HeartbeatTimeout => Counters::bump(&shared.counters.closed_heartbeat_timeout),
        End::TooLarge => Counters::bump(&shared.counters.closed_message_too_large),
        _ => {}
    }
    if matches!(
        end,
        End::SlowConsumer | End::HeartbeatTimeout | End::TooLarge
    ) {
        event!(tel: tel, level: Level::Warn, events::WEBSOCKET_ERROR,
            serde_json::json!({"conn-id": conn.to_string(), "reason": end.name()}));
    }
    if end == End::Shutdown {
        // Deliver what was queued before the stop, within the drain deadline.
        let deadline = Instant::now() + cfg.shutdown_drain;
        while let Some(first) = sink.pop_frame() {
            if Instant::now() >= deadline
                || Box::pin(write_batch(&mut ws, &shared, &sink, first, conn))
                    .await
                    .is_err()
            {
                break;
            }
        }
    }
    Box::pin(close(&mut ws, end, cfg.message_timeout)).await;
    Counters::bump(&shared.counters.connections_closed);
    shared.unregister(registration);
    event!(tel: tel, level: Level::Debug, events::WEBSOCKET_CLOSED, serde_json::json!({
        "conn-id": conn.to_string(), "cause": end.name(),
        "code": end.close().map(|c| c.0)}));
    drop(admission);
}

/// Writes `first` and whatever else is queued (up to a batch), then flushes
/// once: several frames per syscall when a client has more than one waiting.
async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    shared: &Shared,
    sink: &ConnSink,
    first: Frame,
    conn: ConnId,
) -> Result<(), WriteError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + shared.config.message_timeout;
    let mut frames = 0usize;
    let mut bytes = 0usize;
    let mut next = Some(first);
    while let Some(frame) = next {
        frames += 1;
        bytes += frame.len();
        if let Ok(text) = Utf8Bytes::try_from(bytes::Bytes::from(frame)) {
            match timeout_at(deadline, ws.feed(Message::Text(text))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(WriteError::Io),
                Err(_) => return Err(WriteError::Timeout),
            }
        }
        if frames >= MAX_BATCH_FRAMES || bytes >= MAX_BATCH_BYTES {
            break;
        }
        next = match sink.batch_next() {
            Ok(f) => f,
            Err(Overflowed) => return Err(WriteError::Overflowed),
        };
    }
    match timeout_at(deadline, ws.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(WriteError::Io),
        Err(_) => return Err(WriteError::Timeout),
    }
    sink.frames_sent.fetch_add(frames as u64, Ordering::Relaxed);
    sink.socket_writes.fetch_add(1, Ordering::Relaxed);
    event!(tel: &shared.telemetry, level: Level::Trace, events::MESSAGE_SENT,
        serde_json::json!({"conn-id": conn.to_string(), "frames": frames, "bytes": bytes}));
    Ok(())
}

/// Sends our close frame (if the end calls for one), then lets the client
/// answer for a moment so the close handshake completes.
async fn close<S>(ws: &mut WebSocketStream<S>, end: End, write_timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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
