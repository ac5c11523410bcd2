//! Async queue semantics, stats, isolation and lifecycle.
#![allow(clippy::unwrap_used)] // test helpers

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use telemere_lite::{
    event, CaptureHandler, Handler, HandlerError, HandlerOptions, Mode, Signal, Telemetry,
    TelemetryError,
};

const LONG: Duration = Duration::from_secs(20);

/// A handler that records data values, reports each arrival, and blocks in
/// `handle` while its gate is closed.
#[derive(Clone)]
struct Gated {
    gate: Arc<(Mutex<bool>, Condvar)>,
    seen: Arc<Mutex<Vec<u64>>>,
    arrived: mpsc::SyncSender<u64>,
}

impl Gated {
    fn new() -> (Self, mpsc::Receiver<u64>) {
        let (tx, rx) = mpsc::sync_channel(100_000);
        (
            Gated {
                gate: Arc::new((Mutex::new(false), Condvar::new())),
                seen: Arc::default(),
                arrived: tx,
            },
            rx,
        )
    }

    fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }

    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().clone()
    }
}

impl Handler for Gated {
    fn handle(&self, s: &Signal) -> Result<(), HandlerError> {
        let n = s
            .data
            .as_ref()
            .and_then(|d| d.to_value().as_u64())
            .unwrap_or(u64::MAX);
        let _ = self.arrived.send(n);
        let mut open = self.gate.0.lock().unwrap();
        while !*open {
            open = self.gate.1.wait(open).unwrap();
        }
        self.seen.lock().unwrap().push(n);
        Ok(())
    }
}

/// Emits 0, waits until the worker holds it (blocked on the gate), then
/// emits 1..=10 into a queue of 4, opens the gate and drains.
fn overflow(mode: Mode) -> (Vec<u64>, telemere_lite::HandlerStats) {
    let tel = Telemetry::new();
    let (h, arrived) = Gated::new();
    tel.add_handler(
        "gated",
        h.clone(),
        HandlerOptions::async_().mode(mode).buffer_size(4),
    )
    .unwrap();
    event!(tel: &tel, "t/n", 0u64);
    assert_eq!(arrived.recv_timeout(LONG).unwrap(), 0);
    for i in 1..=10u64 {
        event!(tel: &tel, "t/n", i);
    }
    let mid = tel.handler_stats()["gated"];
    assert_eq!(mid.queued, 5, "4 in the queue + 1 being handled");
    assert_eq!(mid.dropped, 6);
    h.open();
    tel.flush(LONG).unwrap();
    let stats = tel.handler_stats()["gated"];
    (h.seen(), stats)
}

#[test]
fn dropping_drops_the_newest() {
    let (seen, stats) = overflow(Mode::Dropping);
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    assert_eq!((stats.processed, stats.dropped, stats.queued), (5, 6, 0));
}

#[test]
fn sliding_drops_the_oldest() {
    let (seen, stats) = overflow(Mode::Sliding);
    assert_eq!(seen, vec![0, 7, 8, 9, 10]);
    assert_eq!((stats.processed, stats.dropped, stats.queued), (5, 6, 0));
}

#[test]
fn blocking_loses_nothing_and_keeps_order() {
    let tel = Telemetry::new();
    let (h, arrived) = Gated::new();
    tel.add_handler(
        "gated",
        h.clone(),
        HandlerOptions::async_().mode(Mode::Blocking).buffer_size(2),
    )
    .unwrap();
    event!(tel: &tel, "t/n", 0u64);
    assert_eq!(arrived.recv_timeout(LONG).unwrap(), 0);
    // The producer fills the queue and then has to wait for the gate.
    let t2 = tel.clone();
    let producer = std::thread::spawn(move || {
        for i in 1..=1000u64 {
            event!(tel: &t2, "t/n", i);
        }
    });
    h.open();
    producer.join().unwrap();
    tel.flush(LONG).unwrap();
    assert_eq!(h.seen(), (0..=1000).collect::<Vec<_>>());
    let s = tel.handler_stats()["gated"];
    assert_eq!((s.processed, s.dropped, s.queued), (1001, 0, 0));
}

#[test]
fn stats_add_up_under_concurrency() {
    for mode in [Mode::Dropping, Mode::Sliding, Mode::Blocking] {
        for n_threads in [1, 3] {
            let tel = Telemetry::new();
            let count = Arc::new(AtomicU64::new(0));
            let c2 = count.clone();
            tel.add_handler(
                "count",
                move |_: &Signal| {
                    c2.fetch_add(1, Ordering::Relaxed);
                },
                HandlerOptions::async_()
                    .mode(mode)
                    .buffer_size(64)
                    .n_threads(n_threads),
            )
            .unwrap();
            let producers: Vec<_> = (0..4)
                .map(|t| {
                    let tel = tel.clone();
                    std::thread::spawn(move || {
                        for i in 0..5_000u64 {
                            event!(tel: &tel, "t/n", t * 10_000 + i);
                        }
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            tel.flush(LONG).unwrap();
            let s = tel.handler_stats()["count"];
            assert_eq!(
                s.processed + s.dropped,
                20_000,
                "{mode:?} x{n_threads}: {s:?}"
            );
            assert_eq!(s.processed, count.load(Ordering::Relaxed));
            assert_eq!(s.queued, 0);
            if mode == Mode::Blocking {
                assert_eq!(s.dropped, 0);
            }
        }
    }
}

struct Faulty;

impl Handler for Faulty {
    fn handle(&self, s: &Signal) -> Result<(), HandlerError> {
        match s.data.as_ref().and_then(|d| d.to_value().as_u64()) {
            Some(n) if n % 3 == 0 => panic!("handler bug on {n}"),
            Some(n) if n % 3 == 1 => Err(format!("cannot handle {n}").into()),
            _ => Ok(()),
        }
    }
}

#[test]
fn panicking_or_failing_handlers_are_isolated_and_counted() {
    let tel = Telemetry::new();
    let capture = CaptureHandler::new();
    tel.add_handler("sync-faulty", Faulty, HandlerOptions::sync())
        .unwrap();
    tel.add_handler(
        "async-faulty",
        Faulty,
        HandlerOptions::async_().mode(Mode::Blocking),
    )
    .unwrap();
    tel.add_handler("capture", capture.clone(), HandlerOptions::sync())
        .unwrap();
    for i in 0..30u64 {
        event!(tel: &tel, "t/n", i);
    }
    tel.flush(LONG).unwrap();
    let stats = tel.handler_stats();
    for id in ["sync-faulty", "async-faulty"] {
        assert_eq!(stats[id].processed, 30, "{id}");
        assert_eq!(stats[id].errors, 20, "{id}");
    }
    // The other handler got everything; the worker survived.
    assert_eq!(capture.len(), 30);
    event!(tel: &tel, "t/n", 2u64);
    tel.flush(LONG).unwrap();
    assert_eq!(tel.handler_stats()["async-faulty"].processed, 31);
}

#[test]
fn shutdown_drains_every_queue() {
    let tel = Telemetry::new();
    let count = Arc::new(AtomicU64::new(0));
    let c2 = count.clone();
    tel.add_handler(
        "slow",
        move |_: &Signal| {
            std::hint::black_box((0..200).sum::<u64>());
            c2.fetch_add(1, Ordering::Relaxed);
        },
        HandlerOptions::async_()
            .mode(Mode::Blocking)
            .buffer_size(10_000),
    )
    .unwrap();
    for i in 0..5_000u64 {
        event!(tel: &tel, "t/n", i);
    }
    let report = tel.shutdown(LONG).unwrap();
    assert_eq!(count.load(Ordering::Relaxed), 5_000);
    assert_eq!(report.stats["slow"].processed, 5_000);
    assert_eq!(report.stats["slow"].queued, 0);
    assert!(tel.handler_stats().is_empty());
    // Nothing reaches a removed handler; the instance is reusable.
    event!(tel: &tel, "t/n", 1u64);
    assert_eq!(count.load(Ordering::Relaxed), 5_000);
    let capture = CaptureHandler::new();
    tel.add_handler("again", capture.clone(), HandlerOptions::sync())
        .unwrap();
    event!(tel: &tel, "t/n", 1u64);
    assert_eq!(capture.len(), 1);
}

#[test]
fn shutdown_reports_what_missed_the_deadline() {
    let tel = Telemetry::new();
    let (h, arrived) = Gated::new();
    tel.add_handler("gated", h.clone(), HandlerOptions::async_().buffer_size(16))
        .unwrap();
    event!(tel: &tel, "t/n", 0u64);
    assert_eq!(arrived.recv_timeout(LONG).unwrap(), 0);
    for i in 1..=5u64 {
        event!(tel: &tel, "t/n", i);
    }
    match tel.shutdown(Duration::from_millis(50)) {
        Err(TelemetryError::Deadline { pending, handlers }) => {
            assert_eq!(pending, 6, "5 queued + 1 in the handler");
            assert_eq!(handlers, vec!["gated".to_owned()]);
        }
        other => panic!("expected a deadline error, got {other:?}"),
    }
    h.open();
}

#[test]
fn guard_shuts_down_on_drop() {
    let tel = Telemetry::new();
    let capture = CaptureHandler::new();
    tel.add_handler(
        "c",
        capture.clone(),
        HandlerOptions::async_().mode(Mode::Blocking),
    )
    .unwrap();
    {
        let _guard = tel.startup();
        for i in 0..100u64 {
            event!(tel: &tel, "t/n", i);
        }
    }
    assert_eq!(capture.len(), 100);
    assert!(tel.handler_ids().is_empty());
}

#[test]
fn remove_and_replace_handlers() {
    let tel = Telemetry::new();
    let a = CaptureHandler::new();
    let b = CaptureHandler::new();
    tel.add_handler(
        "h",
        a.clone(),
        HandlerOptions::async_().mode(Mode::Blocking),
    )
    .unwrap();
    event!(tel: &tel, "t/one");
    // Replacing drains the old handler first.
    tel.add_handler("h", b.clone(), HandlerOptions::sync())
        .unwrap();
    assert_eq!(a.ids(), vec!["t/one"]);
    event!(tel: &tel, "t/two");
    assert_eq!(b.ids(), vec!["t/two"]);
    assert!(tel.remove_handler("h"));
    assert!(!tel.remove_handler("h"));
    event!(tel: &tel, "t/three");
    assert_eq!(b.len(), 1);
    assert!(!tel.level_enabled(telemere_lite::Level::Report));
}

#[test]
fn instances_are_independent() {
    let t1 = Telemetry::new();
    let t2 = Telemetry::new();
    let c1 = CaptureHandler::new();
    let c2 = CaptureHandler::new();
    t1.add_handler("c", c1.clone(), HandlerOptions::sync())
        .unwrap();
    t2.add_handler("c", c2.clone(), HandlerOptions::sync())
        .unwrap();
    // Interleave to exercise the per-thread configuration cache.
    for _ in 0..3 {
        event!(tel: &t1, "one");
        event!(tel: &t2, "two");
    }
    assert_eq!(c1.ids(), vec!["one"; 3]);
    assert_eq!(c2.ids(), vec!["two"; 3]);
    assert!(telemere_lite::global().handler_stats().is_empty());
}

#[test]
fn bad_options_are_typed_errors() {
    let tel = Telemetry::new();
    let e = tel
        .add_handler(
            "x",
            CaptureHandler::new(),
            HandlerOptions::async_().buffer_size(0),
        )
        .unwrap_err();
    assert!(matches!(e, TelemetryError::InvalidOptions(_)));
    let e = tel
        .add_handler(
            "x",
            CaptureHandler::new(),
            HandlerOptions::sync().filter(telemere_lite::Filter::new().sample_rate(2.0)),
        )
        .unwrap_err();
    assert!(matches!(e, TelemetryError::InvalidFilter(_)));
    assert!(tel.handler_ids().is_empty());
    for i in 0..64 {
        tel.add_handler(
            format!("h{i}"),
            CaptureHandler::new(),
            HandlerOptions::sync(),
        )
        .unwrap();
    }
    let e = tel
        .add_handler("h64", CaptureHandler::new(), HandlerOptions::sync())
        .unwrap_err();
    assert!(matches!(e, TelemetryError::TooManyHandlers { max: 64 }));
}
