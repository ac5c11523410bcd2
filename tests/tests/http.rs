//! The HTTP endpoints: /health, /stats, /channels, JSON errors, and the 503
//! refusal of an upgrade at max-connections.

#![allow(clippy::unwrap_used)]

use sente_lite_tests::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn health_has_the_seed_fields_and_counts() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (status, h) = http_get(addr, "/health").await;
    assert_eq!(status, 200, "{h}");
    assert_keys(
        &h,
        &[
            "status",
            "connections",
            "channels",
            "system-health",
            "uptime-ms",
            "broker",
        ],
    );
    assert_eq!(h["status"], "healthy");
    assert_eq!(
        h["broker"],
        json!({"kind": "local", "healthy": true, "state": "in-process",
               "node-id": null, "nodes": []})
    );
    assert_eq!(h["connections"], 0);
    assert_eq!(h["channels"], 0);
    assert_eq!(
        h["system-health"],
        json!({"healthy": true, "total-channels": 0, "total-subscriptions": 0,
               "pending-rpc-requests": 0, "old-rpc-requests": 0})
    );
    assert!(h["uptime-ms"].is_u64());

    let mut a = Client::connect(addr).await;
    let mut w = Client::connect(addr).await;
    a.subscribe("one").await;
    a.subscribe("two").await;
    w.subscribe("two").await;
    a.send(json!({"type": "rpc-request", "channel-id": "two", "data": 1, "timeout-ms": 60000}))
        .await;
    a.recv_type("rpc-request-result").await;

    let (status, h) = http_get(addr, "/health").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["connections"], 2);
    assert_eq!(h["channels"], 2);
    assert_eq!(
        h["system-health"],
        json!({"healthy": true, "total-channels": 2, "total-subscriptions": 3,
               "pending-rpc-requests": 1, "old-rpc-requests": 0})
    );
    let r = http_request(addr, "GET", "/health", &[]).await;
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{:?}",
        r.headers
    );
}

#[tokio::test]
async fn stats_fields() {
    let server = start_default().await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    a.subscribe("chat-room").await; // 1 frame
    b.publish("chat-room", json!("hi")).await; // 1 frame
    a.recv_type("channel-message").await;
    b.send_text("{oops").await; // 1 frame, an error
    b.recv_type("error").await;

    let s = stats(addr).await;
    assert_keys(
        &s,
        &[
            "active-connections",
            "total-messages",
            "server-config",
            "channel-stats",
            "telemetry-stats",
            "transport",
            "broker",
        ],
    );
    assert_eq!(s["active-connections"], 2);
    assert_eq!(s["total-messages"], 3, "client frames received: {s}");
    assert_eq!(s["server-config"]["port"], addr.port(), "the bound port");
    assert_eq!(s["server-config"]["host"], "127.0.0.1");
    let cs = &s["channel-stats"];
    assert_eq!(cs["total-channels"], 1);
    assert_eq!(cs["total-subscriptions"], 1);
    assert_eq!(cs["pending-rpc-requests"], 0);
    let room = &cs["channels"]["chat-room"];
    assert_keys(
        room,
        &[
            "subscriber-count",
            "message-count",
            "created-at",
            "retention-count",
        ],
    );
    assert_eq!(room["subscriber-count"], 1);
    assert_eq!(room["message-count"], 1);
    assert_eq!(room["retention-count"], 0);
    assert_recent(&room["created-at"]);
    // One entry per telemetry handler id: the config's handler id.
    let tel = s["telemetry-stats"].as_object().unwrap();
    assert_eq!(tel.keys().collect::<Vec<_>>(), ["sente-lite"], "{s}");
    // The seed's four, plus `queued-bytes` and `throttled` while they are
    // not 0 (left out at 0, so the seed's example keeps its shape).
    let h = tel["sente-lite"].as_object().unwrap();
    for key in ["processed", "queued", "dropped", "errors"] {
        assert!(h.contains_key(key), "{key} missing: {s}");
    }
    for key in h.keys() {
        assert!(
            [
                "processed",
                "queued",
                "dropped",
                "errors",
                "queued-bytes",
                "throttled"
            ]
            .contains(&key.as_str()),
            "unexpected key {key}: {s}"
        );
    }
    let t = &s["transport"];
    for key in [
        "connections-accepted",
        "connections-closed",
        "rejected-max-connections",
        "closed-slow-consumer",
        "closed-heartbeat-timeout",
        "closed-message-too-large",
        "frames-received",
        "frames-sent",
        "socket-writes",
        "error-frames-sent",
    ] {
        assert!(t[key].is_u64(), "transport.{key} missing in {s}");
    }
    assert_eq!(t["connections-accepted"], 2);
    assert_eq!(t["connections-closed"], 0);
    assert_eq!(t["frames-received"], 3);
    assert_eq!(t["error-frames-sent"], 1);
    let (sent, writes) = (t["frames-sent"].as_u64(), t["socket-writes"].as_u64());
    assert!(
        writes >= Some(1) && writes <= sent,
        "1 <= socket-writes <= frames-sent in {t}"
    );
    // Stats from the Rust API agree.
    assert_eq!(server.stats().await.unwrap().active_connections, 2);
}

#[tokio::test]
async fn channels_endpoint_and_json_404() {
    let server = start_default().await;
    let addr = server.local_addr();
    let (status, body) = http_get(addr, "/channels").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"channels": {}}));
    server
        .channels()
        .create_channel("news", None)
        .await
        .unwrap();
    let (_, body) = http_get(addr, "/channels").await;
    assert_eq!(body["channels"]["news"]["subscriber-count"], 0);
    assert_eq!(body["channels"]["news"]["message-count"], 0);
    assert_eq!(
        body["channels"]["news"]["config"],
        json!({"max-subscribers": 1000, "message-retention": 0, "rpc-timeout-ms": 30000,
               "telemetry-enabled": true, "history-size": 0, "history-ttl-ms": 0,
               "presence": false, "join-leave": false, "rpc-dispatch": "all",
               "on-slow-consumer": "close"})
    );

    for path in ["/nope", "/health/extra", "/channels/news"] {
        let r = http_request(addr, "GET", path, &[]).await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        let body = r.json();
        assert_keys(&body, &["error", "reason", "message"]);
        assert_eq!(body["error"], "not-found");
        assert_eq!(body["reason"], "not-found");
        assert!(
            r.header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"),
            "{path}"
        );
    }
    // Plain GET / without an upgrade is a JSON error too.
    let r = http_request(addr, "GET", "/", &[]).await;
    assert!(r.status >= 400, "{}", r.status);
    assert_keys(&r.json(), &["error", "reason", "message"]);
}

/// PROTOCOL.md, HTTP errors: "404, any other path or method".
#[tokio::test]
async fn other_methods_get_json_404() {
    let server = start_default().await;
    let addr = server.local_addr();
    for (method, path) in [
        ("PUT", "/nope"),
        ("POST", "/health"),
        ("DELETE", "/channels"),
    ] {
        let r = http_request(addr, method, path, &[("Content-Length", "0")]).await;
        let body = r.json();
        assert_keys(&body, &["error", "reason", "message"]);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
        assert_eq!(body["error"], "not-found", "{method} {path}");
        assert_eq!(body["reason"], "not-found", "{method} {path}");
    }
}

#[tokio::test]
async fn upgrade_refused_with_503_at_max_connections_and_recovers() {
    let mut config = config();
    config.websocket.max_connections = 2;
    let server = start(config).await;
    let addr = server.local_addr();
    let a = Client::connect(addr).await;
    let _b = Client::connect(addr).await;

    let r = ws_upgrade_raw(addr).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let body = r.json();
    assert_keys(&body, &["error", "reason", "message"]);
    assert_eq!(body["error"], "service-unavailable");
    assert_eq!(body["reason"], "max-connections-reached");
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/json"));
    // A real client is refused too.
    assert!(try_connect_ws(addr, None).await.is_err());
    let s = stats(addr).await;
    assert_eq!(s["transport"]["rejected-max-connections"], 2, "{s}");
    assert_eq!(s["active-connections"], 2);
    // HTTP endpoints still answer at the limit.
    assert_eq!(http_get(addr, "/health").await.0, 200);

    // One leaves; a new client gets in (the place is given back once the
    // server has finished closing the connection).
    a.close().await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let c = loop {
        match try_connect_ws(addr, None).await {
            Ok(ws) => break Client::from_ws(ws).await,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no place freed after a client left: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(!c.conn_id.is_empty());
    let s = stats(addr).await;
    assert_eq!(s["active-connections"], 2, "{s}");
    assert_eq!(s["transport"]["connections-closed"], 1, "{s}");
}

/// A closed connection's writes stay in `frames-sent` and `socket-writes`
/// (open connections count in their own sink; closing hands the counts over).
#[tokio::test]
async fn write_counts_survive_the_connection() {
    let server = start_default().await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    a.roundtrip().await; // welcome + pong written
    a.roundtrip().await;
    let before = server.transport_stats();
    assert!(before.frames_sent >= 3, "{before:?}");
    assert!(before.socket_writes >= 1 && before.socket_writes <= before.frames_sent);
    a.close().await;
    eventually("the close is counted", || {
        server.transport_stats().connections_closed == 1
    })
    .await;
    let after = server.transport_stats();
    assert_eq!(after.frames_sent, before.frames_sent, "{after:?}");
    assert_eq!(after.socket_writes, before.socket_writes, "{after:?}");
}

/// A request hyper could not parse still gets a JSON body, as every HTTP
/// error does (it used to be a bare 400). (The HTTP/2 preface gets a 505
/// `http2-not-enabled`: tests/admission.rs.)
#[tokio::test]
async fn unparsable_requests_get_a_json_400() {
    let server = start_default().await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let answer = raw_exchange(server.local_addr(), garbage).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{garbage:?}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{garbage:?}: the 400 has no JSON body ({e}): {answer}"));
        assert_eq!(v["error"], "bad-request", "{v}");
        assert_eq!(v["reason"], "bad-request", "{v}");
    }
    // The server goes on serving.
    assert_eq!(http_get(server.local_addr(), "/health").await.0, 200);
    server.stop().await;
}

/// Health checkers use HEAD: it answers like GET, without a body.
#[tokio::test]
async fn head_health_is_200_without_a_body() {
    let server = start_default().await;
    let answer = raw_exchange(
        server.local_addr(),
        b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(body, "", "HEAD has no body");
    server.stop().await;
}

struct Hello;

impl sente_lite_server::Routes for Hello {
    fn route(
        &self,
        request: &http::Request<bytes::Bytes>,
    ) -> Option<sente_lite_server::RouteFuture> {
        let path = request.uri().path().to_owned();
        let body = request.body().clone();
        match path.as_str() {
            "/hello" => Some(Box::pin(async {
                http::Response::new(bytes::Bytes::from_static(b"{\"hello\":true}"))
            })),
            "/echo" => Some(Box::pin(async move { http::Response::new(body) })),
            _ => None,
        }
    }
}

/// Routes added by an embedder are served next to the built-in ones, which
/// they cannot shadow; anything no route takes is still the JSON 404.
#[tokio::test]
async fn added_routes_are_served_beside_the_built_in_ones() {
    let hooks = sente_lite_server::Hooks {
        routes: vec![std::sync::Arc::new(Hello)],
        ..Default::default()
    };
    let server = sente_lite_server::Server::start_with(config(), hooks)
        .await
        .unwrap();
    let addr = server.local_addr();
    let r = http_request(addr, "GET", "/hello", &[]).await;
    assert_eq!((r.status, r.json()), (200, json!({"hello": true})));
    let echo = raw_exchange(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{\"a\":1}",
    )
    .await;
    assert!(
        echo.starts_with("HTTP/1.1 200 ") && echo.ends_with("{\"a\":1}"),
        "{echo}"
    );
    assert_eq!(http_get(addr, "/health").await.0, 200);
    let (status, body) = http_get(addr, "/nothing-here").await;
    assert_eq!((status, body["reason"].clone()), (404, json!("not-found")));
    server.stop().await;
}

/// A connection that does not finish its request head within
/// `http.handshake-timeout-ms` is closed and counted, and others are served
/// meanwhile.
#[tokio::test]
async fn silent_connections_are_closed_after_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = config();
    cfg.http.handshake_timeout_ms = 200;
    let server = start(cfg).await;
    let addr = server.local_addr();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHo")
        .await
        .unwrap();
    // Served while those two hang.
    assert_eq!(http_get(addr, "/health").await.0, 200);
    let mut buf = Vec::new();
    let n = within("the silent socket to close", silent.read_to_end(&mut buf))
        .await
        .unwrap();
    assert_eq!(n, 0, "closed without an answer");
    let mut buf = Vec::new();
    within("the partial socket to close", partial.read_to_end(&mut buf))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains(r#""reason":"request-timeout""#), "{answer}");
    assert_eq!(server.transport_stats().handshake_timeouts, 2);
    server.stop().await;
}

/// The head deadline holds for every request of a keep-alive connection,
/// not just its first; and a stop does not wait for a connection that has
/// not sent a whole head.
#[tokio::test]
async fn later_heads_have_the_deadline_too_and_stop_does_not_wait_for_idle_sockets() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = config();
    cfg.http.handshake_timeout_ms = 300;
    let server = start(cfg).await;
    let addr = server.local_addr();
    let mut keep = tokio::net::TcpStream::connect(addr).await.unwrap();
    keep.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within("the first answer", keep.read(&mut buf))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    keep.write_all(b"GET /health HTTP/1.1\r\nHo").await.unwrap();
    let mut rest = Vec::new();
    within(
        "the keep-alive socket to close",
        keep.read_to_end(&mut rest),
    )
    .await
    .unwrap();

    let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut cfg2 = config();
    cfg2.http.handshake_timeout_ms = 60_000;
    let server2 = start(cfg2).await;
    let _idle2 = tokio::net::TcpStream::connect(server2.local_addr())
        .await
        .unwrap();
    // Let the accept loop take the socket before the stop.
    assert_eq!(http_get(server2.local_addr(), "/health").await.0, 200);
    within("a stop with an idle socket open", server2.stop()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stop waited for a socket that sent nothing: {:?}",
        started.elapsed()
    );
    server.stop().await;
}
