//! The accept loop: each TCP connection's first request head is read and
//! parsed here before hyper serves it, so a request hyper could not parse
//! gets our JSON 400 (hyper would answer with an empty body), and a
//! WebSocket upgrade ends up on the plain `TcpStream` (or the TLS stream
//! over it).
//!
//! Admission happens here first: at most `http.max-pending-handshakes`
//! sockets may be in their TLS handshake or first request head at once; a
//! new one past it closes the oldest. The TLS handshake
//! (with `tls.*`) and that head must both be done within the handshake
//! timeout. A failed accept (out of file descriptors, say) is counted,
//! logged, and followed by a short pause, and the loop goes on.
//!
//! HTTP/1.1 only, unless `http.http2` is on: then a connection that opens
//! with the HTTP/2 preface (or negotiates `h2` by ALPN) is served HTTP/2.

use crate::reply::raw_error;
use crate::shared::Shared;
use crate::tls::Io;
use bytes::{Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::http::StatusCode;

/// Longest request head read before hyper takes over (hyper's own limit is
/// about the same).
const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a request head.
const MAX_HEADERS: usize = 100;
/// Pause after a failed accept (out of file descriptors, say), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Least time between two `accept-failed` warnings.
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(1);
/// What an HTTP/2 client sends first (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The peer's address, put into every request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// A stream that first yields bytes already read from it.
pub(crate) struct Prefixed {
    prefix: Bytes,
    inner: Io,
}

impl Prefixed {
    /// What is left of the prefix, and the stream.
    pub(crate) fn into_parts(self) -> (Bytes, Io) {
        (self.prefix, self.inner)
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `listener` until `stop` turns true, then stops accepting, asks
/// every HTTP connection to finish gracefully and waits for them (not for
/// upgraded WebSockets, which the transport closes itself).
///
/// Connections are served by hyper's own HTTP/1 connection (not
/// hyper-util's auto builder, which wraps every stream in a private
/// `Rewind`): so an upgrade hands back our [`Prefixed`] stream, and the
/// WebSocket runs on the plain `TcpStream` (or the TLS stream).
pub(crate) async fn serve<S>(
    listener: TcpListener,
    shared: Arc<Shared>,
    service: S,
    mut stop: watch::Receiver<bool>,
) where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let open = Arc::new(OpenConnections::default());
    let mut last_warning: Option<std::time::Instant> = None;
    let mut unlogged: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ...: the listener stays, and the
                // connections already open are served meanwhile. The pause
                // keeps a lasting condition from spinning the loop.
                shared
                    .counters
                    .accept_errors
                    .fetch_add(1, Ordering::Relaxed);
                // One warning a second at most while it lasts (every
                // failure is counted); the next one says how many it
                // stands for.
                let now = std::time::Instant::now();
                if last_warning.is_none_or(|t| now.duration_since(t) >= ACCEPT_WARNING_EVERY) {
                    telemere_lite::event!(tel: &shared.telemetry, level: telemere_lite::Level::Warn,
                        crate::events::ACCEPT_FAILED,
                        serde_json::json!({"error": e.to_string(),
                            "errno": e.raw_os_error(),
                            "failures-not-logged": unlogged,
                            "backoff-ms": ACCEPT_BACKOFF.as_millis() as u64}));
                    last_warning = Some(now);
                    unlogged = 0;
                } else {
                    unlogged += 1;
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
                continue;
            }
        };
        // Past max-pending-handshakes the oldest socket still in its
        // handshake is closed for this one: idle sockets cannot hold every
        // descriptor, nor keep a real client (whose handshake takes
        // milliseconds) out for longer than it takes to open more.
        let (pending, mut evicted) = Pending::enter(&shared);
        let service = service.clone();
        let shared = Arc::clone(&shared);
        let mut stop = stop.clone();
        let guard = OpenConnections::enter(&open);
        tokio::spawn(async move {
            let _guard = guard;
            // A connection still in its handshake when the server stops is
            // simply closed.
            let head = tokio::select! {
                head = handshake(tcp, &shared) => head,
                () = async { drop(stop.wait_for(|s| *s).await) } => None,
                Ok(()) = &mut evicted => {
                    shared
                        .counters
                        .handshakes_evicted
                        .fetch_add(1, Ordering::Relaxed);
                    None
                }
            };
            drop(pending);
            let Some((io, h2)) = head else {
                return;
            };
            let service = hyper::service::service_fn(move |mut req| {
                req.extensions_mut().insert(Peer(peer));
                let mut service = service.clone();
                tower_service::Service::call(&mut service, req)
            });
            if h2 {
                // hyper's HTTP/2 has no idle timeout: a dead peer is found
                // by pings (one per handshake timeout, unanswered for as
                // long); a live idle one stays until it closes.
                let timeout = shared.config.handshake_timeout;
                let conn = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Some(timeout))
                    .keep_alive_timeout(timeout)
                    .max_concurrent_streams(64)
                    .serve_connection(TokioIo::new(io), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = async { drop(stop.wait_for(|s| *s).await) } => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(shared.config.shutdown_drain, conn).await;
                    }
                }
                return;
            }
            // Later heads on a keep-alive connection get the same deadline
            // from hyper (which needs a timer for it), and an idle
            // keep-alive connection is closed after it.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(shared.config.handshake_timeout)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            // An error is the peer's (reset, bad later request); the
            // connection is over either way.
            tokio::select! {
                _ = conn.as_mut() => {}
                () = async { drop(stop.wait_for(|s| *s).await) } => {
                    // The exchange in flight may finish, within the drain
                    // deadline; then the connection is dropped.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(shared.config.shutdown_drain, conn).await;
                }
            }
        });
    }
    drop(listener);
    open.wait_idle().await;
}

/// The sockets still in their handshake (TLS, first request head), oldest
/// first, each with the sender that closes it.
#[derive(Debug, Default)]
pub(crate) struct PendingSet {
    next: u64,
    waiting: std::collections::BTreeMap<u64, tokio::sync::oneshot::Sender<()>>,
}

impl PendingSet {
    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

/// A place among `http.max-pending-handshakes`, given back when dropped.
struct Pending {
    shared: Arc<Shared>,
    id: u64,
}

impl Pending {
    /// A place for a new socket, with the receiver that says it was closed
    /// for a newer one. When `max-pending-handshakes` are taken, the oldest
    /// is told to close.
    fn enter(shared: &Arc<Shared>) -> (Pending, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut set = shared.pending.lock();
        while set.waiting.len() >= shared.config.max_pending_handshakes.max(1) {
            match set.waiting.pop_first() {
                Some((_, oldest)) => drop(oldest.send(())),
                None => break,
            }
        }
        let id = set.next;
        set.next += 1;
        set.waiting.insert(id, tx);
        drop(set);
        (
            Pending {
                shared: Arc::clone(shared),
                id,
            },
            rx,
        )
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.shared.pending.lock().waiting.remove(&self.id);
    }
}

/// The TLS handshake (with TLS), then the first request head, both within
/// the handshake timeout. `Some((stream, true))` for a connection to serve
/// HTTP/2 (`http.http2` on, and the preface sent or `h2` negotiated).
async fn handshake(tcp: tokio::net::TcpStream, shared: &Shared) -> Option<(Prefixed, bool)> {
    let deadline = tokio::time::Instant::now() + shared.config.handshake_timeout;
    let io = match &shared.tls {
        None => Io::Plain(tcp),
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Io::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                shared
                    .counters
                    .tls_handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                telemere_lite::event!(tel: &shared.telemetry, level: telemere_lite::Level::Debug,
                        crate::events::TLS_HANDSHAKE_FAILED,
                        serde_json::json!({"error": e.to_string()}));
                return None;
            }
            Err(_) => {
                shared
                    .counters
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        },
    };
    if shared.config.http2 && io.alpn_h2() {
        return Some((
            Prefixed {
                prefix: Bytes::new(),
                inner: io,
            },
            true,
        ));
    }
    read_head(io, shared, deadline).await
}

/// HTTP connections being served, so that a shutdown can wait for them.
#[derive(Default)]
struct OpenConnections {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One open connection; counted until dropped.
struct OpenGuard(Arc<OpenConnections>);

impl OpenConnections {
    fn enter(this: &Arc<OpenConnections>) -> OpenGuard {
        this.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        OpenGuard(Arc::clone(this))
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so an end in between is not missed.
            notified.as_mut().enable();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

/// Reads until the first request head is complete. A head that does not
/// parse, or is too large, is answered with a JSON error and the
/// connection closed (`None`); so is a connection that sends nothing by
/// `deadline`, without an answer. The HTTP/2 preface is `Some((_, true))`
/// when `http.http2` is on, and answered 505 otherwise.
async fn read_head(
    mut tcp: Io,
    shared: &Shared,
    deadline: tokio::time::Instant,
) -> Option<(Prefixed, bool)> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let read = tokio::time::timeout_at(deadline, tcp.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
            Err(_) => {
                shared
                    .counters
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                if !buf.is_empty() {
                    let _ = answer(
                        &mut tcp,
                        StatusCode::REQUEST_TIMEOUT,
                        "request-timeout",
                        "the request head did not arrive in time",
                    )
                    .await;
                }
                return None;
            }
        }
        let preface = H2_PREFACE.len().min(buf.len());
        if buf[..preface] == H2_PREFACE[..preface] {
            if buf.len() < H2_PREFACE.len() {
                continue;
            }
            if shared.config.http2 {
                let prefix = buf.freeze();
                return Some((Prefixed { prefix, inner: tcp }, true));
            }
            shared
                .counters
                .rejected_http2
                .fetch_add(1, Ordering::Relaxed);
            let _ = answer(
                &mut tcp,
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "http2-not-enabled",
                "this server speaks HTTP/1.1 (HTTP/2 is off: http.http2)",
            )
            .await;
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return Some((
                    Prefixed {
                        prefix: buf.freeze(),
                        inner: tcp,
                    },
                    false,
                ))
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                let _ = answer(
                    &mut tcp,
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request-too-large",
                    "the request head is too large",
                )
                .await;
                return None;
            }
            Err(e) => {
                let _ = answer(
                    &mut tcp,
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    &format!("the request could not be parsed as HTTP/1.1: {e}"),
                )
                .await;
                return None;
            }
        }
    }
}

async fn answer(tcp: &mut Io, status: StatusCode, reason: &str, message: &str) -> io::Result<()> {
    let bytes = raw_error(status, reason, message);
    tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(&bytes).await?;
        tcp.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}
