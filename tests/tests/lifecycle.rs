//! Connection and server lifecycle: cleanup after a disconnect, graceful
//! shutdown.

#![allow(clippy::unwrap_used)]

use sente_lite_tests::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_clean_disconnect_leaves_no_trace() {
    let server = start_default().await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    let mut w = Client::connect(addr).await;
    a.subscribe("one").await;
    a.subscribe("two").await;
    w.subscribe("svc").await;
    w.subscribe("two").await;
    a.send(json!({"type": "rpc-request", "channel-id": "svc", "data": 1, "timeout-ms": 60000}))
        .await;
    a.recv_type("rpc-request-result").await;
    let req = w.recv_type("rpc-request").await;
    assert_eq!(server.channels().pending_rpc_requests(), 1);
    let a_id = a.conn_id.clone();

    a.close().await;
    eventually("the server forgets the client", || {
        server.channels().connection_count() == 1
    })
    .await;

    let engine = server.channels();
    assert!(engine
        .channel_info("one")
        .await
        .unwrap()
        .subscribers
        .is_empty());
    assert_eq!(
        engine.channel_info("two").await.unwrap().subscribers,
        vec![w.conn_id.clone()]
    );
    assert_eq!(engine.pending_rpc_requests(), 0, "its RPC was dropped");
    assert!(engine.resolve(&a_id).is_err());
    assert!(server
        .send_to_connection(&a_id, &json!({"type": "x"}))
        .await
        .is_err());

    let s = stats(addr).await;
    assert_eq!(s["active-connections"], 1, "{s}");
    assert_eq!(s["channel-stats"]["total-subscriptions"], 2, "{s}");
    assert_eq!(s["channel-stats"]["pending-rpc-requests"], 0, "{s}");
    assert_eq!(s["channel-stats"]["channels"]["one"]["subscriber-count"], 0);
    assert_eq!(s["channel-stats"]["channels"]["two"]["subscriber-count"], 1);
    let (_, h) = http_get(addr, "/health").await;
    assert_eq!(h["system-health"]["pending-rpc-requests"], 0, "{h}");
    assert_eq!(h["connections"], 1);

    // The worker's answer finds no request; no rpc-timeout is sent to
    // anyone later either.
    w.send(json!({"type": "rpc-response", "request-id": req["request-id"], "data": 2}))
        .await;
    let r = w.recv_type("rpc-response-result").await;
    assert_eq!(r["reason"], "request-not-found", "{r}");
}

#[tokio::test]
async fn an_abrupt_disconnect_is_cleaned_up_too() {
    let server = start_default().await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    let mut w = Client::connect(addr).await;
    w.subscribe("svc").await;
    a.subscribe("room").await;
    a.send(json!({"type": "rpc-request", "channel-id": "svc", "data": 1, "timeout-ms": 60000}))
        .await;
    a.recv_type("rpc-request-result").await;
    w.recv_type("rpc-request").await;
    drop(a); // TCP closed without a close frame
    eventually("the server forgets the dropped client", || {
        server.channels().connection_count() == 1
    })
    .await;
    assert!(server
        .channels()
        .channel_info("room")
        .await
        .unwrap()
        .subscribers
        .is_empty());
    assert_eq!(server.channels().pending_rpc_requests(), 0);
    let s = stats(addr).await;
    assert_eq!(s["channel-stats"]["total-subscriptions"], 1, "{s}");
    eventually("the close is counted", || {
        server.transport_stats().connections_closed == 1
    })
    .await;
}

/// Frames queued before the stop reach every client before its close 1001;
/// then the listener is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_then_closes_1001() {
    const MESSAGES: usize = 300;
    let server = start_default().await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(addr).await;
        c.subscribe("news").await;
        clients.push(c);
    }
    let idle = Client::connect(addr).await;
    // Queued, not yet read by anyone.
    for i in 0..MESSAGES {
        let p = server
            .channels()
            .publish(None, "news", json!({"seq": i}), false)
            .await
            .unwrap();
        assert_eq!(p.delivered_to, 3);
    }
    assert_eq!(
        server
            .broadcast(json!({"type": "bye"}).as_object().cloned().unwrap())
            .await,
        4
    );
    let stopping = tokio::spawn(server.stop());

    for mut c in clients {
        let (frames, end) = c.drain_until_end().await;
        assert_eq!(frames.len(), MESSAGES + 1, "{:?}", frames.last());
        for (i, m) in frames[..MESSAGES].iter().enumerate() {
            assert_eq!(m["type"], "channel-message");
            assert_eq!(m["data"]["seq"], i);
            assert_eq!(m["sender-conn-id"], serde_json::Value::Null);
        }
        assert_eq!(frames[MESSAGES], json!({"type": "bye", "broadcast": true}));
        assert_eq!(end, Ended::Closed(Some((1001, "server-shutdown".into()))));
    }
    let mut idle = idle;
    let (frames, end) = idle.drain_until_end().await;
    assert_eq!(frames, vec![json!({"type": "bye", "broadcast": true})]);
    assert_eq!(end, Ended::Closed(Some((1001, "server-shutdown".into()))));

    within("stop()", stopping).await.unwrap();
    // The listener no longer accepts.
    let refused =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "connecting after stop should be refused: {refused:?}"
    );
}

#[tokio::test]
async fn stop_with_no_clients_returns_promptly() {
    let server = start_default().await;
    let addr = server.local_addr();
    assert_eq!(http_get(addr, "/health").await.0, 200);
    let t = std::time::Instant::now();
    within("stop()", server.stop()).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// The WebSocket runs on the accepted TCP stream itself: the transport's
/// fallback through hyper's boxed `Upgraded` (which it reports with a
/// warning) is never taken.
#[tokio::test]
async fn websockets_run_on_the_plain_tcp_stream() {
    let server = start_default().await;
    let capture = telemere_lite::CaptureHandler::new();
    server
        .telemetry()
        .add_handler(
            "capture",
            capture.clone(),
            telemere_lite::HandlerOptions::sync(),
        )
        .unwrap();
    server
        .telemetry()
        .set_min_level(telemere_lite::Level::Debug);
    let mut c = Client::connect(server.local_addr()).await;
    c.subscribe("x").await;
    c.close().await;
    server.stop().await;
    let ids = capture.ids();
    assert!(
        ids.iter()
            .any(|i| i == "sente-lite.transport/websocket-opened"),
        "the handler sees the transport's signals: {ids:?}"
    );
    assert!(
        !ids.iter()
            .any(|i| i == "sente-lite.transport/websocket-error"),
        "{ids:?}"
    );
}
