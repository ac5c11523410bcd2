//! Macros, signal contents, filtering, sampling and correlation.
#![allow(clippy::unwrap_used)] // test helpers

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use telemere_lite::{
    current_correlation, debug, error, event, fatal, info, report, trace, warn, with_correlation,
    CaptureHandler, CorrelateExt, CorrelationId, Filter, HandlerOptions, Kind, Level, Telemetry,
};

fn setup() -> (Telemetry, CaptureHandler) {
    let tel = Telemetry::new();
    let c = CaptureHandler::new();
    tel.add_handler("capture", c.clone(), HandlerOptions::sync())
        .unwrap();
    (tel, c)
}

#[derive(Serialize)]
struct Order<'a> {
    item: &'a str,
    qty: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("outer")]
struct Outer(#[source] std::io::Error);

#[test]
fn every_macro_form_carries_what_it_was_given() {
    let (tel, c) = setup();
    let item = String::from("book");
    let e = Outer(std::io::Error::other("inner"));

    event!(tel: &tel, "app/a");
    event!(tel: &tel, "app/b", Order { item: &item, qty: 2 });
    event!(tel: &tel, level: Level::Warn, "app/c", serde_json::json!({"k": [1, 2]}));
    info!(tel: &tel, "plain");
    info!(tel: &tel, format!("{} owned", 1), &item);
    error!(tel: &tel, "failed", serde_json::json!({"f": 1}), err: &e);
    error!(tel: &tel, item.as_str(), err: &"display only");
    trace!(tel: &tel, "t");
    debug!(tel: &tel, "d");
    warn!(tel: &tel, "w");
    fatal!(tel: &tel, "f");
    report!(tel: &tel, "r");

    let s = c.signals();
    assert_eq!(s.len(), 12);
    assert_eq!(
        (s[0].kind, s[0].id.as_deref(), s[0].level),
        (Kind::Event, Some("app/a"), Level::Info)
    );
    assert!(s[0].data.is_none() && s[0].message.is_none());
    assert_eq!(
        s[1].data.as_ref().unwrap().to_value(),
        serde_json::json!({"item": "book", "qty": 2})
    );
    assert_eq!(s[2].level, Level::Warn);
    assert_eq!(
        s[2].data.as_ref().unwrap().get("k"),
        Some(serde_json::json!([1, 2]))
    );
    assert_eq!(
        (s[3].kind, s[3].message.as_deref(), s[3].id.as_deref()),
        (Kind::Log, Some("plain"), None)
    );
    assert_eq!(s[4].message.as_deref(), Some("1 owned"));
    assert_eq!(s[4].data.as_ref().unwrap().to_value(), "book");
    let err = s[5].error.as_ref().unwrap();
    assert_eq!(
        (err.message.as_str(), err.sources.clone()),
        ("outer", vec!["inner".to_owned()])
    );
    assert_eq!(s[5].level, Level::Error);
    assert_eq!(s[6].message.as_deref(), Some("book"));
    assert_eq!(s[6].error.as_ref().unwrap().message, "display only");
    let levels: Vec<Level> = s[7..].iter().map(|s| s.level).collect();
    assert_eq!(
        levels,
        [
            Level::Trace,
            Level::Debug,
            Level::Warn,
            Level::Fatal,
            Level::Report
        ]
    );

    // Where and when.
    let me = &s[0];
    assert_eq!(me.module, module_path!());
    assert!(me.file.as_deref().unwrap().ends_with("signals.rs"));
    assert!(me.line.unwrap() > 0);
    assert!(me.time.elapsed().unwrap() < Duration::from_secs(60));
    assert_eq!(me.thread.name, std::thread::current().name());
    let json: serde_json::Value = serde_json::from_str(&s[1].to_json()).unwrap();
    assert_eq!(json["data"]["qty"], 2);
    assert_eq!(json["id"], "app/b");
}

#[derive(Serialize)]
struct Hot {
    conn: u64,
    channel: &'static str,
}

#[test]
fn lazy_data_is_captured_and_serialized_on_read() {
    let (tel, c) = setup();
    event!(tel: &tel, "hot", telemere_lite::Lazy(Hot { conn: 9, channel: "chat" }));
    let s = c.signals();
    let d = s[0].data.as_ref().unwrap();
    assert!(matches!(d, telemere_lite::Data::Lazy(_)));
    assert_eq!(
        d.to_value(),
        serde_json::json!({"conn": 9, "channel": "chat"})
    );
    let json: serde_json::Value = serde_json::from_str(&s[0].to_json()).unwrap();
    assert_eq!(json["data"]["conn"], 9);
    assert!(s[0]
        .to_text()
        .contains(r#"data={"conn":9,"channel":"chat"}"#));
}

#[test]
fn the_global_instance_is_the_default() {
    // The only test of this binary that touches the global instance.
    let c = CaptureHandler::new();
    telemere_lite::add_handler("capture", c.clone(), HandlerOptions::sync()).unwrap();
    event!("g/event");
    event!("g/data", 5);
    event!(level: Level::Error, "g/level");
    info!("g-log", [1]);
    assert_eq!(c.len(), 4);
    assert!(telemere_lite::remove_handler("capture"));
}

#[test]
fn filtered_out_signals_never_evaluate_their_arguments() {
    let (tel, c) = setup();
    tel.set_min_level(Level::Warn);
    let evaluated = AtomicUsize::new(0);
    let touch = || {
        evaluated.fetch_add(1, Ordering::Relaxed);
        1
    };
    info!(tel: &tel, { touch(); "msg" }, touch());
    event!(tel: &tel, "x", touch());
    assert_eq!(evaluated.load(Ordering::Relaxed), 0);
    assert!(!tel.level_enabled(Level::Info));
    assert!(tel.level_enabled(Level::Warn));
    warn!(tel: &tel, "kept", touch());
    assert_eq!(evaluated.load(Ordering::Relaxed), 1);
    // Filtered by id: arguments still not evaluated.
    tel.set_filter(Filter::new().deny_id("x")).unwrap();
    event!(tel: &tel, "x", touch());
    assert_eq!(evaluated.load(Ordering::Relaxed), 1);
    assert_eq!(c.len(), 1);
    // No handler: gate closed for every level.
    let empty = Telemetry::new();
    event!(tel: &empty, level: Level::Report, "x", touch());
    assert_eq!(evaluated.load(Ordering::Relaxed), 1);
}

#[test]
fn module_levels_and_id_lists() {
    let (tel, c) = setup();
    let me = module_path!();
    tel.set_filter(
        Filter::new()
            .min_level(Level::Error)
            .module_level(me, Level::Debug)
            .allow_id("keep/*")
            .deny_id("keep/not-this"),
    )
    .unwrap();
    debug!(tel: &tel, "module level wins");
    trace!(tel: &tel, "below the module level");
    event!(tel: &tel, "keep/a");
    event!(tel: &tel, "keep/not-this");
    event!(tel: &tel, "other/a");
    assert_eq!(c.signals().len(), 2);
    assert_eq!(c.ids(), vec!["", "keep/a"]);
    assert!(tel.enabled(Level::Error, "keep/x"));
    assert!(!tel.enabled(Level::Error, "other/x"));
    tel.set_module_level(me, Level::Fatal);
    error!(tel: &tel, "now below");
    assert_eq!(c.len(), 2);
}

#[test]
fn handler_filters_only_narrow() {
    let tel = Telemetry::new();
    let all = CaptureHandler::new();
    let warn_only = CaptureHandler::new();
    let wide = CaptureHandler::new();
    tel.set_min_level(Level::Info);
    tel.add_handler("all", all.clone(), HandlerOptions::sync())
        .unwrap();
    tel.add_handler(
        "warn",
        warn_only.clone(),
        HandlerOptions::sync().min_level(Level::Warn),
    )
    .unwrap();
    // Asks for trace, but the instance floor (info) still applies.
    tel.add_handler(
        "wide",
        wide.clone(),
        HandlerOptions::sync().min_level(Level::Trace),
    )
    .unwrap();
    debug!(tel: &tel, "d");
    info!(tel: &tel, "i");
    warn!(tel: &tel, "w");
    assert_eq!((all.len(), warn_only.len(), wide.len()), (2, 1, 2));
}

#[test]
fn sampling_and_rate_limits() {
    let tel = Telemetry::new();
    let sampled = CaptureHandler::new();
    let limited = CaptureHandler::new();
    tel.add_handler(
        "sampled",
        sampled.clone(),
        HandlerOptions::sync().filter(Filter::new().sample_rate(0.5)),
    )
    .unwrap();
    tel.add_handler(
        "limited",
        limited.clone(),
        HandlerOptions::sync().filter(Filter::new().rate_limit(7, Duration::from_secs(3600))),
    )
    .unwrap();
    for i in 0..10_000u32 {
        event!(tel: &tel, "s", i);
    }
    let n = sampled.len();
    assert!((4_500..5_500).contains(&n), "sampled {n} of 10000 at 0.5");
    assert_eq!(limited.len(), 7);
    let stats = tel.handler_stats();
    assert_eq!(stats["limited"].rate_limited, 9_993);
    assert_eq!(stats["limited"].processed, 7);

    // Instance-wide sampling at 0 keeps nothing.
    tel.set_filter(Filter::new().sample_rate(0.0)).unwrap();
    event!(tel: &tel, "s", 1);
    assert_eq!(sampled.len(), n);
}

#[test]
fn sync_correlation_scopes() {
    let (tel, c) = setup();
    let id = CorrelationId::new();
    event!(tel: &tel, "outside");
    with_correlation(id, || {
        event!(tel: &tel, "inside");
        std::thread::scope(|s| {
            // A thread does not inherit the scope implicitly...
            s.spawn(|| event!(tel: &tel, "other-thread"));
        });
    });
    let s = c.signals();
    assert_eq!(s[0].correlation, None);
    assert_eq!(s[1].correlation, Some(id));
    assert_eq!(s[2].correlation, None);
}

#[test]
fn async_correlation_follows_the_task_across_awaits() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tel, c) = setup();
    let a = CorrelationId(0xa);
    let b = CorrelationId(0xb);
    rt.block_on(async {
        let task = |tel: Telemetry, name: &'static str| async move {
            for _ in 0..20 {
                event!(tel: &tel, name);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // ...and into a spawned task, explicitly.
            let inner = tokio::spawn({
                let tel = tel.clone();
                async move { event!(tel: &tel, name) }.in_current_correlation()
            });
            inner.await.unwrap();
            current_correlation()
        };
        let ta = tokio::spawn(task(tel.clone(), "a").with_correlation(a));
        let tb = tokio::spawn(task(tel.clone(), "b").with_correlation(b));
        let tn = tokio::spawn(task(tel.clone(), "none"));
        assert_eq!(ta.await.unwrap(), Some(a));
        assert_eq!(tb.await.unwrap(), Some(b));
        assert_eq!(tn.await.unwrap(), None);
    });
    // Nothing leaks onto the runtime's threads or this one.
    assert_eq!(current_correlation(), None);
    let s = c.signals();
    assert_eq!(s.len(), 63);
    for sig in s {
        let want = match sig.id.as_deref() {
            Some("a") => Some(a),
            Some("b") => Some(b),
            _ => None,
        };
        assert_eq!(sig.correlation, want, "{:?}", sig.id);
    }
}

#[test]
fn the_coarse_clock_stamps_signals_within_a_tick() {
    let (tel, c) = setup();
    assert_eq!(tel.clock(), telemere_lite::Clock::Precise);
    tel.set_clock(telemere_lite::Clock::Coarse);
    assert_eq!(tel.clock(), telemere_lite::Clock::Coarse);
    event!(tel: &tel, "coarse");
    let after = std::time::SystemTime::now();
    let s = c.signals();
    let lag = after.duration_since(s[0].time).unwrap();
    // The coarse clock is the last scheduler tick: at most a few ms behind.
    assert!(lag < Duration::from_millis(50), "{lag:?}");
}
