//! Connection limits with short intervals: heartbeats, slow consumers,
//! max-message-bytes.

#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use sente_lite_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn heartbeat_config(interval_ms: u64) -> Config {
    let mut c = config();
    c.websocket.heartbeat_interval_ms = interval_ms;
    c
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let server = start(heartbeat_config(200)).await;
    let mut a = Client::connect(server.local_addr()).await;
    a.subscribe("room").await;
    // Poll the stream (tungstenite answers each ping with a pong while it
    // is polled) for six intervals, counting the server's pings.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1_200);
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(deadline, a.ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("unexpected while idle: {other:?}"),
        }
    }
    assert!(
        pings >= 4,
        "expected a ping every 200 ms, got {pings} in 1.2 s"
    );
    // Still connected, still subscribed.
    a.roundtrip().await;
    let mut b = Client::connect(server.local_addr()).await;
    b.publish("room", json!("still here")).await;
    assert_eq!(a.recv_type("channel-message").await["data"], "still here");
    let s = stats(server.local_addr()).await;
    assert_eq!(s["transport"]["closed-heartbeat-timeout"], 0, "{s}");
    assert_eq!(s["transport"]["connections-closed"], 0, "{s}");
}

#[tokio::test]
async fn a_client_that_never_answers_is_closed_heartbeat_timeout() {
    let server = start(heartbeat_config(200)).await;
    let addr = server.local_addr();
    let mut silent = Client::connect(addr).await;
    silent.subscribe("room").await;
    let t0 = Instant::now();
    // Not polled from here on: pings go unanswered.
    eventually("the silent client is closed for heartbeat timeout", || {
        server.transport_stats().closed_heartbeat_timeout == 1
    })
    .await;
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(350),
        "closed after {elapsed:?}, before two silent intervals"
    );
    assert!(
        elapsed <= Duration::from_millis(2_000),
        "closed after {elapsed:?}"
    );
    // It is gone from the engine and its channel.
    eventually("the engine forgets the connection", || {
        server.channels().connection_count() == 0
    })
    .await;
    assert!(server
        .channels()
        .channel_info("room")
        .await
        .unwrap()
        .subscribers
        .is_empty());
    // What it can still read: pings, then close 1001 heartbeat-timeout.
    let (frames, end) = silent.drain_until_end().await;
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(end, Ended::Closed(Some((1001, "heartbeat-timeout".into()))));

    let s = stats(addr).await;
    assert_eq!(s["transport"]["closed-heartbeat-timeout"], 1, "{s}");
    assert_eq!(s["active-connections"], 0);
    // The server still serves others.
    let mut b = Client::connect(addr).await;
    b.roundtrip().await;
}

/// A subscriber that never reads, a normal subscriber and a publisher on
/// one channel. The slow one is closed; the normal one receives every
/// message, complete and in order; the publisher is never held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_and_others_get_everything() {
    let mut config = config();
    config.websocket.max_message_bytes = 64 * 1024;
    config.websocket.max_outbound_bytes = 256 * 1024;
    config.websocket.max_outbound_frames = 64;
    config.websocket.message_timeout_ms = 500;
    let server = start(config).await;
    let addr = server.local_addr();

    // A small receive buffer so the slow client backs up quickly.
    let mut slow = Client::connect_small_buffer(addr, 4096).await;
    slow.subscribe("firehose").await;
    let mut normal = Client::connect(addr).await;
    normal.subscribe("firehose").await;
    let reader = tokio::spawn(async move {
        let mut got: Vec<Value> = Vec::new();
        loop {
            let m = normal.recv_type("channel-message").await;
            if m["data"]["end"] == true {
                return (got, normal);
            }
            got.push(m);
        }
    });

    let mut publisher = Client::connect(addr).await;
    let pad = "p".repeat(16 * 1024);
    let mut published = 0u64;
    let mut after_close = None;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while published < 3_000 {
        let t = Instant::now();
        let r = publisher
            .publish("firehose", json!({"seq": published, "pad": pad}))
            .await;
        slowest = slowest.max(t.elapsed());
        published += 1;
        let closed = server.transport_stats().closed_slow_consumer;
        if closed >= 1 && after_close.is_none() {
            after_close = Some(published);
        }
        if let Some(at) = after_close {
            assert!(r["delivered-to"].as_u64().unwrap() <= 2);
            if published >= at + 20 {
                break;
            }
        }
    }
    let at = after_close.expect("the slow consumer was never closed");
    eprintln!("slow consumer closed after {at} messages; slowest publish {slowest:?}");
    publisher.publish("firehose", json!({"end": true})).await;
    let (got, _normal) = within("the normal subscriber's messages", reader)
        .await
        .unwrap();

    // Everything, complete and in order.
    assert_eq!(
        got.len() as u64,
        published,
        "normal subscriber missed messages"
    );
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m["data"]["seq"], i as u64, "out of order at {i}");
        assert_eq!(m["data"]["pad"].as_str().unwrap().len(), pad.len());
        assert_eq!(m["sender-conn-id"], publisher.conn_id.as_str());
    }
    // The publisher was never blocked beyond reason.
    assert!(
        slowest < Duration::from_millis(1_000),
        "a publish took {slowest:?} (closed after {at} messages in {:?})",
        started.elapsed()
    );

    // The slow one: a gap-free prefix of the messages, then the close
    // (1008 slow-consumer if the close frame could still be written, or
    // the end of the stream).
    let (frames, end) = slow.drain_until_end().await;
    eprintln!("slow consumer read {} messages, then {end:?}", frames.len());
    for (i, m) in frames.iter().enumerate() {
        assert_eq!(m["type"], "channel-message", "{i}");
        assert_eq!(m["data"]["seq"], i as u64, "slow consumer saw a gap at {i}");
    }
    assert!((frames.len() as u64) < published);
    match &end {
        Ended::Closed(Some((code, reason))) => {
            assert_eq!((*code, reason.as_str()), (1008, "slow-consumer"));
        }
        Ended::Closed(None) => panic!("close without code"),
        Ended::Dropped(_) => {}
    }
    let s = stats(addr).await;
    assert_eq!(s["transport"]["closed-slow-consumer"], 1, "{s}");
    assert_eq!(
        s["channel-stats"]["channels"]["firehose"]["subscriber-count"], 1,
        "{s}"
    );
}

#[tokio::test]
async fn a_frame_over_max_message_bytes_closes_1009() {
    let mut config = config();
    config.websocket.max_message_bytes = 1024;
    let server = start(config).await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    a.subscribe("room").await;
    let mut big = Client::connect(addr).await;

    // Just under the limit is fine.
    let frame = json!({"type": "publish", "channel-id": "room", "data": "x".repeat(900)});
    assert!(frame.to_string().len() <= 1024);
    big.send(frame).await;
    assert_eq!(big.recv_type("publish-result").await["delivered-to"], 1);
    a.recv_type("channel-message").await;

    // Over it: closed with 1009.
    let frame = json!({"type": "publish", "channel-id": "room", "data": "x".repeat(2000)});
    big.send(frame).await;
    let (frames, end) = big.drain_until_end().await;
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(end, Ended::Closed(Some((1009, "message-too-large".into()))));
    // Nothing was published; the other client keeps being served.
    let mut c = Client::connect(addr).await;
    c.publish("room", json!("after")).await;
    assert_eq!(a.recv_type("channel-message").await["data"], "after");
    a.roundtrip().await;
    let s = stats(addr).await;
    assert_eq!(s["transport"]["closed-message-too-large"], 1, "{s}");
    assert_eq!(s["channel-stats"]["channels"]["room"]["message-count"], 2);
}

/// The limit is inclusive: a frame of exactly max-message-bytes is served,
/// one byte more closes the connection.
#[tokio::test]
async fn max_message_bytes_boundary() {
    let mut config = config();
    config.websocket.max_message_bytes = 1024;
    let server = start(config).await;
    let addr = server.local_addr();
    let frame_of = |len: usize| {
        let base = json!({"type": "ping", "timestamp": ""}).to_string().len();
        let f = json!({"type": "ping", "timestamp": "t".repeat(len - base)}).to_string();
        assert_eq!(f.len(), len);
        f
    };
    let mut a = Client::connect(addr).await;
    a.send_text(&frame_of(1024)).await;
    let pong = a.recv_type("pong").await;
    // `{"timestamp":"","type":"ping"}` is 30 bytes.
    assert_eq!(
        pong["original-timestamp"].as_str().unwrap().len(),
        1024 - 30
    );
    a.send_text(&frame_of(1025)).await;
    let (frames, end) = a.drain_until_end().await;
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(end, Ended::Closed(Some((1009, "message-too-large".into()))));
}

/// The other slow-consumer path: the outbound queue is roomy, but a write
/// to the client cannot finish within message-timeout-ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stuck_past_message_timeout_closes_slow_consumer() {
    let mut config = config();
    config.websocket.max_message_bytes = 64 * 1024;
    config.websocket.max_outbound_bytes = 64 << 20;
    config.websocket.max_outbound_frames = 100_000;
    config.websocket.message_timeout_ms = 300;
    let server = start(config).await;
    let addr = server.local_addr();
    let mut slow = Client::connect_small_buffer(addr, 4096).await;
    slow.subscribe("firehose").await;
    let mut publisher = Client::connect(addr).await;
    let pad = "p".repeat(16 * 1024);
    let started = Instant::now();
    let mut published = 0u64;
    while server.transport_stats().closed_slow_consumer == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not closed after {published} messages in {:?}",
            started.elapsed()
        );
        publisher
            .publish("firehose", json!({"seq": published, "pad": pad}))
            .await;
        published += 1;
    }
    let (frames, end) = slow.drain_until_end().await;
    for (i, m) in frames.iter().enumerate() {
        assert_eq!(m["data"]["seq"], i as u64, "gap at {i}");
    }
    if let Ended::Closed(c) = &end {
        assert_eq!(c, &Some((1008, "slow-consumer".to_owned())));
    }
    assert_eq!(
        server
            .channels()
            .channel_info("firehose")
            .await
            .unwrap()
            .subscribers,
        Vec::<String>::new()
    );
    publisher.roundtrip().await;
}
