//! Telemetry cannot be turned against its program: strings are cut, async
//! queues are bounded in bytes, sources are throttled, and shutdown keeps
//! its deadline while a sink is blocked.
#![allow(clippy::unwrap_used)] // test helpers

use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use telemere_lite::{
    event, info, warn, CaptureHandler, Handler, HandlerError, HandlerOptions, Lazy, Level, Mode,
    Signal, Telemetry, TelemetryError, Throttle, DEFAULT_MAX_FIELD_BYTES,
};

const LONG: Duration = Duration::from_secs(20);

/// A gate a handler waits on until the test opens it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn wait(&self) {
        let mut open = self.0 .0.lock().unwrap();
        while !*open {
            open = self.0 .1.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
}

#[test]
fn every_string_of_a_signal_is_cut_with_its_length_noted() {
    let tel = Telemetry::new();
    let cap = CaptureHandler::new();
    tel.add_handler("c", cap.clone(), HandlerOptions::sync())
        .unwrap();
    assert_eq!(tel.max_field_bytes(), DEFAULT_MAX_FIELD_BYTES);
    let mib = "é".repeat(512 * 1024); // 1 MiB, two bytes a char
    let e = std::io::Error::other(mib.clone());
    warn!(tel: &tel, format!("bad id {mib}"), json!({"channel-id": &mib, "n": 1}), err: &e);
    #[derive(serde::Serialize)]
    struct Rejected {
        channel: String,
    }
    event!(tel: &tel, level: Level::Warn, "t/lazy", Lazy(Rejected { channel: mib.clone() }));
    event!(tel: &tel, level: Level::Warn, "t/ser", vec![mib.clone()]);

    let s = cap.signals();
    assert_eq!(s.len(), 3);
    let msg = s[0].message.as_deref().unwrap();
    assert!(msg.starts_with("bad id é"), "{msg}");
    assert!(msg.ends_with("…[1048583 bytes]"), "{msg}");
    assert!(msg.len() <= 256 + 20, "{}", msg.len());
    let data = s[0].data.as_ref().unwrap().to_value();
    assert_eq!(
        data["channel-id"].as_str().unwrap(),
        format!("{}…[1048576 bytes]", "é".repeat(128))
    );
    assert_eq!(data["n"], 1);
    assert!(s[0]
        .error
        .as_ref()
        .unwrap()
        .message
        .ends_with("…[1048576 bytes]"));
    for sig in &s {
        let line = sig.to_json();
        assert!(
            line.len() < 1500,
            "a whole line stays small: {}",
            line.len()
        );
    }
    assert!(s[1].to_json().contains("…[1048576 bytes]"));
    assert!(s[2].to_json().contains("…[1048576 bytes]"));

    // Configurable, and off with usize::MAX.
    tel.set_max_field_bytes(4);
    info!(tel: &tel, "abcdefgh");
    assert_eq!(cap.signals()[3].message.as_deref(), Some("abcd…[8 bytes]"));
    tel.set_max_field_bytes(usize::MAX);
    info!(tel: &tel, "abcdefgh");
    assert_eq!(cap.signals()[4].message.as_deref(), Some("abcdefgh"));
}

#[test]
fn ready_made_signals_are_cut_too() {
    let tel = Telemetry::new();
    let cap = CaptureHandler::new();
    tel.add_handler("c", cap.clone(), HandlerOptions::sync())
        .unwrap();
    tel.set_max_field_bytes(8);
    let mut s = Signal::new(
        telemere_lite::Kind::Log,
        Level::Warn,
        Some("x".repeat(100).into()),
        "m".repeat(100).into(),
    );
    s.message = Some("y".repeat(100).into());
    tel.emit_signal(s);
    let got = &cap.signals()[0];
    assert_eq!(got.id.as_deref(), Some("xxxxxxxx…[100 bytes]"));
    assert_eq!(got.module, "mmmmmmmm…[100 bytes]");
    assert_eq!(got.message.as_deref(), Some("yyyyyyyy…[100 bytes]"));
}

/// A handler that blocks in `handle` until its gate opens, saying when it
/// entered.
struct Stuck {
    gate: Gate,
    entered: mpsc::SyncSender<()>,
}

impl Handler for Stuck {
    fn handle(&self, _: &Signal) -> Result<(), HandlerError> {
        let _ = self.entered.try_send(());
        self.gate.wait();
        Ok(())
    }
}

/// With the worker stuck on its first signal, 10 KiB signals fill a
/// 64 KiB queue long before its 1,024 slots: the rest are dropped, counted,
/// and the bytes held stay under the bound.
fn fill_by_bytes(mode: Mode) -> (telemere_lite::HandlerStats, telemere_lite::HandlerStats) {
    let tel = Telemetry::new();
    tel.set_max_field_bytes(usize::MAX);
    let gate = Gate::default();
    let (tx, entered) = mpsc::sync_channel(1);
    let cap = 64 * 1024;
    tel.add_handler(
        "stuck",
        Stuck {
            gate: gate.clone(),
            entered: tx,
        },
        HandlerOptions::async_()
            .mode(mode)
            .buffer_size(1024)
            .buffer_bytes(cap),
    )
    .unwrap();
    let big = "z".repeat(10 * 1024);
    info!(tel: &tel, big.clone());
    entered.recv_timeout(LONG).unwrap();
    for _ in 0..99 {
        info!(tel: &tel, big.clone());
    }
    let mid = tel.handler_stats()["stuck"];
    gate.open();
    tel.flush(LONG).unwrap();
    let end = tel.handler_stats()["stuck"];
    (mid, end)
}

#[test]
fn a_queue_is_bounded_in_bytes_dropping() {
    let (mid, end) = fill_by_bytes(Mode::Dropping);
    assert!(mid.queued_bytes <= 64 * 1024, "{mid:?}");
    assert!(mid.queued_bytes > 40 * 1024, "{mid:?}");
    assert!(mid.queued >= 4 && mid.queued <= 7, "{mid:?}");
    assert_eq!(mid.dropped + mid.queued, 100, "{mid:?}");
    assert_eq!(end.processed + end.dropped, 100, "{end:?}");
    assert_eq!(end.queued_bytes, 0, "{end:?}");
}

#[test]
fn a_queue_is_bounded_in_bytes_sliding() {
    let (mid, end) = fill_by_bytes(Mode::Sliding);
    assert!(mid.queued_bytes <= 64 * 1024, "{mid:?}");
    assert_eq!(mid.dropped + mid.queued, 100, "{mid:?}");
    assert_eq!(end.processed + end.dropped, 100, "{end:?}");
    assert_eq!(end.queued_bytes, 0, "{end:?}");
}

#[test]
fn a_blocking_queue_waits_for_bytes_and_loses_nothing() {
    let tel = Telemetry::new();
    tel.set_max_field_bytes(usize::MAX);
    let gate = Gate::default();
    let (tx, entered) = mpsc::sync_channel(1);
    tel.add_handler(
        "stuck",
        Stuck {
            gate: gate.clone(),
            entered: tx,
        },
        HandlerOptions::async_()
            .mode(Mode::Blocking)
            .buffer_size(1024)
            .buffer_bytes(64 * 1024),
    )
    .unwrap();
    let big = "z".repeat(10 * 1024);
    info!(tel: &tel, big.clone());
    entered.recv_timeout(LONG).unwrap();
    let producer = {
        let tel = tel.clone();
        std::thread::spawn(move || {
            for _ in 0..49 {
                info!(tel: &tel, big.clone());
            }
        })
    };
    // The producer fills the bytes and waits; nothing is dropped.
    let start = Instant::now();
    loop {
        let s = tel.handler_stats()["stuck"];
        assert!(s.queued_bytes <= 64 * 1024, "{s:?}");
        assert_eq!(s.dropped, 0);
        if s.queued >= 4 {
            break;
        }
        assert!(start.elapsed() < LONG, "the queue never filled: {s:?}");
        std::thread::yield_now();
    }
    assert!(!producer.is_finished());
    gate.open();
    producer.join().unwrap();
    tel.flush(LONG).unwrap();
    let s = tel.handler_stats()["stuck"];
    assert_eq!(
        (s.processed, s.dropped, s.queued_bytes),
        (50, 0, 0),
        "{s:?}"
    );
}

/// Blocks in `flush` (a sink that takes no more bytes) until its gate opens.
struct BlockedSink {
    gate: Gate,
    flushing: mpsc::SyncSender<()>,
}

impl Handler for BlockedSink {
    fn handle(&self, _: &Signal) -> Result<(), HandlerError> {
        Ok(())
    }

    fn flush(&self) -> Result<(), HandlerError> {
        let _ = self.flushing.try_send(());
        self.gate.wait();
        Ok(())
    }
}

#[test]
fn shutdown_keeps_its_deadline_while_a_sink_is_blocked() {
    for stuck_in_flush in [true, false] {
        let tel = Telemetry::new();
        let gate = Gate::default();
        let (tx, stuck) = mpsc::sync_channel(1);
        if stuck_in_flush {
            let h = BlockedSink {
                gate: gate.clone(),
                flushing: tx,
            };
            tel.add_handler("sink", h, HandlerOptions::async_())
                .unwrap();
        } else {
            let h = Stuck {
                gate: gate.clone(),
                entered: tx,
            };
            tel.add_handler("sink", h, HandlerOptions::async_())
                .unwrap();
        }
        info!(tel: &tel, "one");
        // The worker handled it and is now stuck flushing at idle (or in
        // `handle`).
        stuck.recv_timeout(LONG).unwrap();
        let (done_tx, done) = mpsc::channel();
        let t = tel.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let r = t.shutdown(Duration::from_millis(200));
            let _ = done_tx.send((r, start.elapsed()));
        });
        let (r, took) = done
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("shutdown blocked (stuck in flush: {stuck_in_flush})"));
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(
            matches!(r, Err(TelemetryError::Deadline { .. })),
            "a shutdown that left a worker behind says so: {r:?}"
        );
        assert!(tel.handler_ids().is_empty());
        gate.open();
    }
}

#[test]
fn a_throttle_counts_what_it_holds_back_per_source() {
    let tel = Telemetry::new();
    let cap = CaptureHandler::new();
    let t = Throttle::by_field("conn-id", 10, Duration::from_secs(3600)).or_field("sender-conn-id");
    tel.add_handler("t", cap.clone(), HandlerOptions::async_().throttle(t))
        .unwrap();
    for i in 0..300 {
        event!(tel: &tel, level: Level::Warn, "t/bad", json!({"conn-id": "c-1", "i": i}));
        event!(tel: &tel, level: Level::Warn, "t/bad", json!({"sender-conn-id": "c-2"}));
        // Below Warn, or with no source: never throttled.
        event!(tel: &tel, level: Level::Info, "t/ok", json!({"conn-id": "c-1"}));
    }
    event!(tel: &tel, level: Level::Error, "t/bad", json!({"conn-id": "c-3"}));
    warn!(tel: &tel, "no source");
    tel.flush(LONG).unwrap();
    let s = tel.handler_stats()["t"];
    assert_eq!(s.throttled, 290 * 2, "{s:?}");
    assert_eq!(cap.len(), 10 + 10 + 300 + 1 + 1);
    assert_eq!(s.processed, cap.len() as u64);
    // Bad options are typed errors.
    let zero = Throttle::by_field("conn-id", 0, Duration::from_secs(1));
    assert!(matches!(
        tel.add_handler("z", |_: &Signal| {}, HandlerOptions::sync().throttle(zero)),
        Err(TelemetryError::InvalidOptions(_))
    ));
}
