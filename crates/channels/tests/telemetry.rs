//! The engine's telemetry events reach a handler, carry their data, and are
//! silent for channels created with telemetry off.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::Inbox;
use sente_lite_channels::{events, Engine, EngineConfig};
use sente_lite_protocol::ChannelConfig;
use serde_json::json;
use telemere_lite::{CaptureHandler, HandlerOptions, Level, Telemetry};

fn observed() -> (Engine, CaptureHandler) {
    let tel = Telemetry::new();
    let capture = CaptureHandler::new();
    tel.add_handler("capture", capture.clone(), HandlerOptions::sync())
        .unwrap();
    tel.set_min_level(Level::Trace);
    let e = Engine::with_telemetry(EngineConfig::default(), tel).unwrap();
    (e, capture)
}

#[tokio::test(start_paused = true)]
async fn every_operation_emits_its_event() {
    let (e, capture) = observed();
    let a = e.connect(Inbox::new()).unwrap();
    let b = e.connect(Inbox::new()).unwrap();
    e.subscribe(a, "c").await.unwrap();
    e.subscribe(b, "c").await.unwrap();
    e.publish(Some(a), "c", json!(1), false).await.unwrap();
    let sent = e
        .send_rpc_request(a, "c", json!(1), Some(10))
        .await
        .unwrap();
    e.send_rpc_response(b, None, &sent.request_id, json!(2), false)
        .await
        .unwrap();
    e.send_rpc_request(a, "c", json!(1), Some(10))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    e.unsubscribe(b, "c").await.unwrap();
    e.create_channel(
        "small",
        Some(ChannelConfig {
            max_subscribers: 0,
            ..ChannelConfig::default()
        }),
    )
    .await
    .unwrap();
    assert!(e.subscribe(a, "small").await.is_err());
    assert!(e
        .broadcast_to_channel("missing", serde_json::Map::new())
        .await
        .is_err());
    e.delete_channel("c").await.unwrap();

    let ids = capture.ids();
    for id in [
        events::CHANNEL_CREATED,
        events::SUBSCRIPTION_ADDED,
        events::CHANNEL_BROADCAST_START,
        events::CHANNEL_BROADCAST_COMPLETE,
        events::MESSAGE_PUBLISHED,
        events::RPC_REQUEST_SENT,
        events::RPC_RESPONSE_SENT,
        events::RPC_REQUEST_EXPIRED,
        events::RPC_CLEANUP_COMPLETED,
        events::SUBSCRIPTION_REMOVED,
        events::SUBSCRIPTION_REJECTED,
        events::BROADCAST_FAILED,
        events::CHANNEL_DELETED,
    ] {
        assert!(ids.iter().any(|i| i == id), "{id} missing from {ids:?}");
    }
    let published = capture
        .signals()
        .into_iter()
        .find(|s| s.id.as_deref() == Some(events::MESSAGE_PUBLISHED))
        .unwrap();
    let data: serde_json::Value = serde_json::to_value(published.data.as_ref().unwrap()).unwrap();
    assert_eq!(data["channel-id"], "c");
    assert_eq!(data["delivered-to"], 2);
    assert_eq!(
        capture
            .ids()
            .iter()
            .filter(|i| *i == events::SUBSCRIPTION_ADDED)
            .count(),
        2
    );
}

#[tokio::test]
async fn channels_with_telemetry_off_are_silent() {
    let (e, capture) = observed();
    e.create_channel(
        "quiet",
        Some(ChannelConfig {
            telemetry_enabled: false,
            max_subscribers: 2,
            ..ChannelConfig::default()
        }),
    )
    .await
    .unwrap();
    let a = e.connect(Inbox::new()).unwrap();
    let b = e.connect(Inbox::new()).unwrap();
    let c = e.connect(Inbox::new()).unwrap();
    e.subscribe(a, "quiet").await.unwrap();
    e.subscribe(b, "quiet").await.unwrap();
    // Refused: the channel has its two subscribers.
    assert!(e.subscribe(c, "quiet").await.is_err());
    e.publish(Some(a), "quiet", json!(1), false).await.unwrap();
    // A round trip: a asks, b answers.
    let sent = e
        .send_rpc_request(a, "quiet", json!(2), None)
        .await
        .unwrap();
    e.send_rpc_response(b, None, &sent.request_id, json!(3), false)
        .await
        .unwrap();
    e.unsubscribe(b, "quiet").await.unwrap();
    e.delete_channel("quiet").await.unwrap();
    let ids = capture.ids();
    for id in [
        events::CHANNEL_CREATED,
        events::SUBSCRIPTION_ADDED,
        events::SUBSCRIPTION_REJECTED,
        events::SUBSCRIPTION_REMOVED,
        events::MESSAGE_PUBLISHED,
        events::RPC_REQUEST_SENT,
        events::RPC_RESPONSE_SENT,
        events::CHANNEL_DELETED,
    ] {
        assert!(
            !ids.iter().any(|i| i == id),
            "{id} emitted for a quiet channel"
        );
    }
}

#[test]
fn event_ids_are_namespaced_and_unique() {
    let set: std::collections::HashSet<_> = events::ALL.iter().collect();
    assert_eq!(set.len(), events::ALL.len());
    assert!(events::ALL
        .iter()
        .all(|i| i.starts_with("sente-lite.channels/")));
}
