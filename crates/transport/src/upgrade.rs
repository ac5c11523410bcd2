//! The WebSocket handshake on `/`, done here rather than by warp's `ws()` so
//! that the connection gets our own tungstenite settings (small read buffer,
//! bounded write buffer, frame size limit) and zero-copy text frames.

use crate::accept::{Peer, Prefixed};
use crate::admission::{Admission, Refused};
use crate::admit;
use crate::events;
use crate::reply::error;
use crate::shared::Shared;
use crate::tls::Io;
use crate::wire::Stream;
use hyper_util::rt::TokioIo;
use sente_lite_session::{ConnectInfo, Session};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::hyper::upgrade::OnUpgrade;
use warp::reply::Response;
use warp::Reply;

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Answers `GET /`: 101 and a connection task for a valid WebSocket
/// upgrade; a JSON error otherwise.
pub(crate) fn handle(
    target: warp::path::FullPath,
    query: String,
    headers: HeaderMap,
    peer: Option<Peer>,
    on_upgrade: Option<OnUpgrade>,
    shared: Arc<Shared>,
) -> Response {
    if !has_token(&headers, header::UPGRADE, "websocket")
        || !has_token(&headers, header::CONNECTION, "upgrade")
    {
        return error(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade-required",
            "connect with a WebSocket client (ws://host:port/); HTTP endpoints are /health, /stats and /channels",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut r = error(
            StatusCode::BAD_REQUEST,
            "unsupported-websocket-version",
            "only WebSocket version 13 is supported",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid-handshake",
            "missing Sec-WebSocket-Key",
        );
    };
    let Some(on_upgrade) = on_upgrade else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid-handshake",
            "this connection cannot be upgraded",
        );
    };
    if shared.shutting_down.load(Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server-shutting-down",
            "the server is shutting down",
        );
    }
    if let Err(origin) = admit::origin_allowed(&shared.config.allowed_origins, &headers) {
        shared
            .counters
            .rejected_origin
            .fetch_add(1, Ordering::Relaxed);
        telemere_lite::event!(tel: &shared.telemetry, level: telemere_lite::Level::Debug,
            events::WEBSOCKET_ERROR,
            serde_json::json!({"reason": "forbidden-origin",
                "origin": truncated(&origin, 256), "origin-bytes": origin.len()}));
        return error(
            StatusCode::FORBIDDEN,
            sente_lite_protocol::Reason::ForbiddenOrigin.as_str(),
            "this Origin may not open a WebSocket here (websocket.allowed-origins)",
        );
    }
    // The client's address: the TCP peer's, or what a trusted proxy says.
    // Its port is the peer's when it is the peer, else unknown (0).
    let client = peer.map(|p| {
        let ip = admit::client_ip(p.0.ip(), &headers, &shared.config.trusted_proxies);
        if ip == p.0.ip() {
            p.0
        } else {
            std::net::SocketAddr::new(ip, 0)
        }
    });
    let info = ConnectInfo {
        peer: client,
        target: if query.is_empty() {
            target.as_str().to_owned()
        } else {
            format!("{}?{query}", target.as_str())
        },
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let identity = match Session::authorize(&*shared.authorizer, &info) {
        Ok(identity) => identity,
        Err(refusal) => {
            shared
                .counters
                .rejected_unauthorized
                .fetch_add(1, Ordering::Relaxed);
            let status = if refusal.reason == sente_lite_protocol::Reason::Forbidden {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            return error(status, refusal.reason.as_str(), refusal.message);
        }
    };
    let admission = match Admission::try_new(&shared, client.map(|c| c.ip())) {
        Ok(admission) => admission,
        Err(Refused::MaxConnections) => {
            shared
                .counters
                .rejected_max_connections
                .fetch_add(1, Ordering::Relaxed);
            telemere_lite::event!(tel: &shared.telemetry, level: telemere_lite::Level::Warn,
                events::WEBSOCKET_ERROR,
                serde_json::json!({"reason": "max-connections-reached",
                    "max-connections": shared.config.max_connections}));
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                sente_lite_protocol::Reason::MaxConnectionsReached.as_str(),
                format!(
                    "the server has its {} connections already",
                    shared.config.max_connections
                ),
            );
        }
        Err(Refused::MaxConnectionsPerIp) => {
            shared
                .counters
                .rejected_max_connections_per_ip
                .fetch_add(1, Ordering::Relaxed);
            // Debug, not Warn: one client can cause it at will.
            telemere_lite::event!(tel: &shared.telemetry, level: telemere_lite::Level::Debug,
                events::WEBSOCKET_ERROR,
                serde_json::json!({"reason": "max-connections-per-ip-reached",
                    "client": client.map(|c| c.ip().to_string()),
                    "max-connections-per-ip": shared.config.max_connections_per_ip}));
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                sente_lite_protocol::Reason::MaxConnectionsPerIpReached.as_str(),
                format!(
                    "this address has its {} connections already",
                    shared.config.max_connections_per_ip
                ),
            );
        }
    };
    let accept = derive_accept_key(key.as_bytes());
    let config = ws_config(&shared.config);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        // Our accept loop serves `Prefixed` TCP streams, so the upgraded IO
        // is the TcpStream itself: use it directly, without hyper's boxing.
        let (stream, read) = match upgraded.downcast::<TokioIo<Prefixed>>() {
            Ok(parts) => {
                // Only the bytes read past the request head are kept: hyper's
                // read buffer and the accept loop's head buffer are freed
                // here, not held for the connection's life.
                // On the wire, what hyper read past the head comes first,
                // then what it had not read of our prefix yet.
                let read_buf = parts.read_buf;
                let mut read = read_buf.to_vec();
                let (prefix, io) = parts.io.into_inner().into_parts();
                read.extend_from_slice(&prefix);
                let stream = match io {
                    Io::Plain(tcp) => Stream::Tcp(tcp),
                    tls @ Io::Tls(_) => Stream::Other(Box::new(tls)),
                };
                (stream, read)
            }
            Err(upgraded) => {
                // Not our accept loop's stream (never, as the transport is
                // built); served all the same, through hyper's box.
                telemere_lite::event!(tel: &shared.telemetry, level: telemere_lite::Level::Warn,
                    events::WEBSOCKET_ERROR,
                    serde_json::json!({"reason": "upgraded-stream-not-a-tcp-stream"}));
                (Stream::Other(Box::new(TokioIo::new(upgraded))), Vec::new())
            }
        };
        crate::conn::run(stream, read, config, shared, admission, identity).await;
    });
    let mut r = warp::reply().into_response();
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// tungstenite settings. The read buffer is 512 bytes because tungstenite
/// zero-fills it before every read, so its whole size is resident for every
/// connection: at 512 bytes an idle connection costs about 3.6 KiB of server
/// memory (4.2 KiB at 1 KiB, 7.6 KiB at 4 KiB; `sente-lite-bench run
/// --scenarios idle --size full`). The price: a frame larger than that is read
/// in 512-byte steps (a 1 MiB frame takes about 2,000 reads). tungstenite
/// writes only control frames (pongs, pings, the close frame), and each
/// goes at once into the connection's queue (`wire::Inbound`), which the
/// sink writes to the socket; frames over `max-message-bytes` are refused
/// from their header.
fn ws_config(c: &crate::config::TransportConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(c.max_message_bytes))
        .max_frame_size(Some(c.max_message_bytes))
}
