//! Helpers for the end-to-end tests in `tests/tests/`: start a real server on
//! `127.0.0.1:0`, talk to it with a real WebSocket client
//! (`tokio-tungstenite`), and GET its HTTP endpoints.
//!
//! Every receive has a timeout ([`TIMEOUT`]), so a broken server fails a test
//! instead of hanging it. Nothing here sleeps to synchronise: a test waits
//! for the frame that proves the state it needs.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

pub mod external;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub use sente_lite_server::{Config, Server};

/// The longest any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A quiet test configuration: `127.0.0.1:0`, telemetry counted but not
/// printed.
pub fn config() -> Config {
    let mut c = Config {
        port: 0,
        host: "127.0.0.1".into(),
        ..Config::default()
    };
    c.telemetry.output = sente_lite_server::TelemetryOutput::None;
    c
}

/// Starts a server with `config`.
pub async fn start(config: Config) -> Server {
    Server::start(config).await.expect("server starts")
}

/// Starts a server with [`config()`].
pub async fn start_default() -> Server {
    start(config()).await
}

/// Runs `fut` with [`TIMEOUT`], panicking with `what` when it takes longer.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// Polls `check` until it holds, for at most [`TIMEOUT`]. For server-side
/// state that no frame announces (counters in `/stats` after a close).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that `v` is an object with exactly the keys `keys`.
#[track_caller]
pub fn assert_keys(v: &Value, keys: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
    got.sort_unstable();
    let mut want = keys.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "keys of {v}");
}

/// The current server clock as the server computes it (ms since epoch).
pub fn now_ms() -> i64 {
    sente_lite_protocol::now_ms()
}

/// Asserts `v` is an integer timestamp within 10 s of now.
#[track_caller]
pub fn assert_recent(v: &Value) {
    let t = v
        .as_i64()
        .unwrap_or_else(|| panic!("timestamp is not an integer: {v}"));
    let now = now_ms();
    assert!(
        (now - t).abs() < 10_000,
        "timestamp {t} is not near now {now}"
    );
}

/// What a client saw instead of a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// A close frame (code, reason).
    Closed(Option<(u16, String)>),
    /// The stream ended or failed without a close frame.
    Dropped(String),
}

/// A WebSocket client connected to the server's `/`.
#[derive(Debug)]
pub struct Client {
    pub ws: WebSocketStream<TcpStream>,
    /// The `conn-id` of the `welcome` frame.
    pub conn_id: String,
    /// The whole `welcome` frame.
    pub welcome: Value,
}

/// Opens a WebSocket without reading anything (not even `welcome`).
pub async fn connect_ws(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    try_connect_ws(addr, None)
        .await
        .unwrap_or_else(|e| panic!("WebSocket connect to {addr}: {e}"))
}

/// Opens a WebSocket; `recv_buffer` sets the client socket's SO_RCVBUF
/// (a small one makes a client that does not read back up quickly).
pub async fn try_connect_ws(
    addr: SocketAddr,
    recv_buffer: Option<u32>,
) -> Result<WebSocketStream<TcpStream>, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if let Some(size) = recv_buffer {
        socket
            .set_recv_buffer_size(size)
            .map_err(|e| e.to_string())?;
    }
    let tcp = within("TCP connect", socket.connect(addr))
        .await
        .map_err(|e| e.to_string())?;
    let (ws, _response) = within(
        "WebSocket handshake",
        tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(ws)
}

impl Client {
    /// Connects and reads the `welcome` frame.
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::from_ws(connect_ws(addr).await).await
    }

    /// Connects with a small socket receive buffer, then reads `welcome`.
    pub async fn connect_small_buffer(addr: SocketAddr, recv_buffer: u32) -> Client {
        let ws = try_connect_ws(addr, Some(recv_buffer)).await.unwrap();
        Client::from_ws(ws).await
    }

    /// Wraps an open WebSocket, reading its `welcome` frame.
    pub async fn from_ws(ws: WebSocketStream<TcpStream>) -> Client {
        let mut c = Client {
            ws,
            conn_id: String::new(),
            welcome: Value::Null,
        };
        let welcome = c.recv_type("welcome").await;
        c.conn_id = welcome["conn-id"]
            .as_str()
            .unwrap_or_else(|| panic!("welcome without conn-id: {welcome}"))
            .to_owned();
        c.welcome = welcome;
        c
    }

    /// Sends a JSON value as one text frame.
    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// Sends raw text as one text frame.
    pub async fn send_text(&mut self, text: &str) {
        within("send", self.ws.send(Message::text(text.to_owned())))
            .await
            .expect("send a frame");
    }

    /// The next text frame, parsed; control frames are skipped (reading
    /// answers pings). Panics on a close, an error or after [`TIMEOUT`].
    pub async fn recv(&mut self) -> Value {
        match self.recv_or_end().await {
            Ok(v) => v,
            Err(end) => panic!(
                "connection {} ended while a frame was expected: {end:?}",
                self.conn_id
            ),
        }
    }

    /// The next text frame, or how the connection ended.
    pub async fn recv_or_end(&mut self) -> Result<Value, Ended> {
        within("the next frame", next_frame(&mut self.ws)).await
    }

    /// The next frame, which must have type `ty`.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], ty, "expected a `{ty}` frame, got {v}");
        v
    }

    /// Reads frames until one of type `ty`; returns it and the ones before.
    pub async fn recv_until(&mut self, ty: &str) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == ty {
                return (v, before);
            }
            before.push(v);
        }
    }

    /// Subscribes and returns the `subscription-result`, asserting success.
    /// It must be the next frame.
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(json!({"type": "subscribe", "channel-id": channel}))
            .await;
        let r = self.recv_type("subscription-result").await;
        assert_eq!(r["channel-id"], channel, "{r}");
        assert_eq!(r["success"], true, "subscribe to {channel} failed: {r}");
        r
    }

    /// Publishes and returns the `publish-result`, asserting success. Must
    /// not be subscribed to `channel` (or the own message may come first).
    pub async fn publish(&mut self, channel: &str, data: Value) -> Value {
        self.send(json!({"type": "publish", "channel-id": channel, "data": data}))
            .await;
        let r = self.recv_type("publish-result").await;
        assert_eq!(r["success"], true, "publish to {channel} failed: {r}");
        r
    }

    /// Sends a JSON `ping` and waits for its `pong`, which must be the next
    /// frame: proves the connection still works and nothing was queued
    /// before the pong.
    pub async fn roundtrip(&mut self) {
        let stamp = json!(format!("rt-{}", now_ms()));
        self.send(json!({"type": "ping", "timestamp": stamp.clone()}))
            .await;
        let pong = self.recv_type("pong").await;
        assert_eq!(pong["original-timestamp"], stamp, "{pong}");
    }

    /// Reads until the connection ends; returns the text frames read before
    /// and how it ended.
    pub async fn drain_until_end(&mut self) -> (Vec<Value>, Ended) {
        let mut frames = Vec::new();
        loop {
            match self.recv_or_end().await {
                Ok(v) => frames.push(v),
                Err(end) => {
                    // Keep polling so tungstenite sends the close reply and
                    // the server need not wait for it.
                    let _ = tokio::time::timeout(TIMEOUT, async {
                        while let Some(Ok(_)) = self.ws.next().await {}
                    })
                    .await;
                    return (frames, end);
                }
            }
        }
    }

    /// Closes cleanly: sends a close frame and reads until the server's
    /// echo and the end of the stream.
    pub async fn close(mut self) {
        let _ = within("close", self.ws.close(None)).await;
        let _ = within("the end after close", async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The next text frame of `ws` as the exact text the server sent,
/// skipping control frames. Panics on anything else.
pub async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> String {
    within("the next text frame", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
}

/// Writes `bytes` on a fresh TCP connection and reads until the server
/// closes it: the whole raw answer.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    within("a raw HTTP exchange", async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(bytes).await.expect("write");
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
}

/// The next text frame of `ws`, skipping control frames.
pub async fn next_frame(ws: &mut WebSocketStream<TcpStream>) -> Result<Value, Ended> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return Ok(serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {t}")))
            }
            Some(Ok(Message::Binary(b))) => panic!("server sent a binary frame: {b:?}"),
            Some(Ok(Message::Close(frame))) => {
                return Err(Ended::Closed(frame.map(|CloseFrame { code, reason }| {
                    (u16::from(code), reason.as_str().to_owned())
                })))
            }
            Some(Ok(_)) => {} // ping, pong, raw frame
            Some(Err(e)) => return Err(Ended::Dropped(e.to_string())),
            None => return Err(Ended::Dropped("end of stream".into())),
        }
    }
}

/// An HTTP response: status, lower-cased headers, body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with extra request headers over a fresh HTTP/1.1 connection.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    within(&format!("{method} {path}"), async {
        let mut tcp = TcpStream::connect(addr).await.expect("HTTP connect");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
        {
            req.push_str("Connection: close\r\n");
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.expect("HTTP write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = tcp.read(&mut chunk).await.expect("HTTP read");
            assert!(n > 0, "connection closed inside the HTTP head: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = buf[head_end + 4..].to_vec();
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        match len {
            Some(len) => {
                while body.len() < len {
                    let n = tcp.read(&mut chunk).await.expect("HTTP read body");
                    assert!(n > 0, "connection closed inside the HTTP body");
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
            }
            None if status != 101 => {
                let _ = tcp.read_to_end(&mut body).await;
            }
            None => {}
        }
        HttpResponse {
            status,
            headers,
            body: String::from_utf8(body).expect("UTF-8 body"),
        }
    })
    .await
}

/// `GET path`: status and JSON body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let r = http_request(addr, "GET", path, &[]).await;
    (r.status, r.json())
}

/// A WebSocket upgrade request done by hand, so a refusal's status and body
/// can be read.
pub async fn ws_upgrade_raw(addr: SocketAddr) -> HttpResponse {
    http_request(
        addr,
        "GET",
        "/",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await
}

/// `GET /stats`, parsed.
pub async fn stats(addr: SocketAddr) -> Value {
    let (status, body) = http_get(addr, "/stats").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// An authorizer that names every connection's user after its peer
/// address (`user@127.0.0.1:PORT`), for tests that need user ids without
/// tokens.
#[derive(Debug)]
pub struct ByPeer;

impl sente_lite_server::Authorizer for ByPeer {
    fn connect(
        &self,
        info: &sente_lite_server::ConnectInfo,
    ) -> Result<sente_lite_server::Identity, sente_lite_server::Refusal> {
        Ok(sente_lite_server::Identity {
            user_id: info.peer.map(|p| format!("user@{p}")),
            ..sente_lite_server::Identity::default()
        })
    }
}

/// `config` made node `id` of a cluster on the Redis at `redis_url`, with a
/// short node TTL (1.5 s) so nodes see each other within a heartbeat (a
/// third of it).
pub fn redis_node(mut config: Config, redis_url: &str, id: &str) -> Config {
    config.broker.kind = sente_lite_server::BrokerKind::Redis;
    config.broker.redis_url = redis_url.to_owned();
    config.node.id = id.to_owned();
    config.broker.node_ttl_ms = 1500;
    config
}

/// How many nodes a `/health` body lists.
pub fn node_count(health: &Value) -> usize {
    health["broker"]["nodes"].as_array().map_or(0, Vec::len)
}

/// Polls `/health` of `addr` until `check(status, body)` holds and returns
/// the body; panics naming `what` after `within`. For state that no frame
/// announces (a node joining, Redis lost or back).
pub async fn health_until(
    addr: SocketAddr,
    within: Duration,
    what: &str,
    check: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = http_get(addr, "/health").await;
        if check(status, &body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health of {addr} never showed {what} in {within:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits ([`TIMEOUT`] at most) until `/health` of `addr` is 200 and lists
/// at least `n` nodes.
pub async fn wait_healthy(addr: SocketAddr, n: usize) {
    health_until(
        addr,
        TIMEOUT,
        &format!("200 with {n} nodes"),
        |status, h| status == 200 && node_count(h) >= n,
    )
    .await;
}
