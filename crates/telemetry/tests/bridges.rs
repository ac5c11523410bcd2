//! The `log` and `tracing` bridges.
#![cfg(all(feature = "log", feature = "tracing"))]
#![allow(clippy::unwrap_used)] // test helpers

use telemere_lite::{CaptureHandler, HandlerOptions, Kind, Level, Telemetry};

#[test]
fn log_records_reach_handlers() {
    let tel = Telemetry::new();
    let c = CaptureHandler::new();
    tel.add_handler("c", c.clone(), HandlerOptions::sync())
        .unwrap();
    tel.set_min_level(Level::Info);
    telemere_lite::install_log_bridge(tel.clone(), log::LevelFilter::Trace).unwrap();
    log::info!("hello {}", 42);
    log::debug!("filtered");
    log::warn!(target: "custom", "targeted");
    let s = c.signals();
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].kind, s[0].level), (Kind::Log, Level::Info));
    assert_eq!(s[0].message.as_deref(), Some("hello 42"));
    assert_eq!(s[0].module, module_path!());
    assert!(s[0].line.is_some());
    assert_eq!(
        s[1].data.as_ref().unwrap().get("target"),
        Some("custom".into())
    );
}

#[test]
fn tracing_events_reach_handlers() {
    use tracing_subscriber::layer::SubscriberExt;
    let tel = Telemetry::new();
    let c = CaptureHandler::new();
    tel.add_handler(
        "c",
        c.clone(),
        HandlerOptions::sync().min_level(Level::Debug),
    )
    .unwrap();
    let subscriber = tracing_subscriber::registry().with(telemere_lite::TelemereLayer::new(tel));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(user = 7, ok = true, name = "x", "user {} logged in", 7);
        tracing::warn!(id = "app/slow", ms = 1500u64, "slow");
        tracing::trace!("filtered");
    });
    let s = c.signals();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].message.as_deref(), Some("user 7 logged in"));
    let d = s[0].data.as_ref().unwrap().to_value();
    assert_eq!(d, serde_json::json!({"user": 7, "ok": true, "name": "x"}));
    assert_eq!(
        (s[1].level, s[1].id.as_deref()),
        (Level::Warn, Some("app/slow"))
    );
    assert_eq!(s[1].module, module_path!());
}
