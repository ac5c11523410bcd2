//! Criterion benchmarks of the channel engine, in process (no sockets).
//!
//! The sinks here do what the transport's sink does on its fast path: take a
//! reference to the shared frame and count it. So the figures are the
//! engine's own cost per delivery: lookup, lock, fan-out loop, dynamic
//! dispatch, reference counting.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use parking_lot::Mutex;
use sente_lite_channels::{ConnId, Engine, EngineConfig, Frame, Offer, Sink};
use serde_json::json;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

/// Holds the last frame (as a queue would) and counts deliveries.
#[derive(Default)]
struct CountingSink {
    count: AtomicU64,
    last: Mutex<Option<Frame>>,
}

impl Sink for CountingSink {
    fn offer(&self, frame: &Frame) -> Offer {
        self.count.fetch_add(1, Ordering::Relaxed);
        *self.last.lock() = Some(frame.clone());
        Offer::Queued
    }
}

/// Polls an engine future once: with the in-process broker every engine
/// future is ready at its first poll, so this measures the engine and no
/// executor.
trait Now: std::future::Future + Sized {
    fn now(self) -> Self::Output {
        let mut f = std::pin::pin!(self);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the local broker never waits"),
        }
    }
}

impl<F: std::future::Future> Now for F {}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("runtime")
}

fn engine(max_conns: usize) -> Engine {
    let mut c = EngineConfig {
        max_connections: max_conns + 16,
        ..EngineConfig::default()
    };
    c.default_channel.max_subscribers = max_conns + 16;
    Engine::new(c).expect("engine")
}

fn fan_out(c: &mut Criterion) {
    let rt = runtime();
    let _g = rt.enter();
    let mut group = c.benchmark_group("publish_fan_out");
    for n in [1usize, 100, 1_000, 10_000] {
        let e = engine(n);
        for _ in 0..n {
            let id = e
                .connect(Arc::new(CountingSink::default()))
                .expect("connect");
            e.subscribe(id, "fan").now().expect("subscribe");
        }
        let payload: sente_lite_protocol::Data = json!({"text": "x".repeat(100)}).into();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("subscribers", n), &n, |b, _| {
            b.iter(|| {
                let out = e
                    .publish(None, "fan", payload.clone(), false)
                    .now()
                    .expect("publish");
                black_box(out.delivered_to)
            })
        });
    }
    group.finish();
}

fn churn(c: &mut Criterion) {
    let rt = runtime();
    let _g = rt.enter();
    let e = engine(1_000);
    let ids: Vec<ConnId> = (0..1_000)
        .map(|_| {
            e.connect(Arc::new(CountingSink::default()))
                .expect("connect")
        })
        .collect();
    for id in &ids[1..] {
        e.subscribe(*id, "busy").now().expect("subscribe");
    }
    let mut group = c.benchmark_group("subscription_churn");
    group.throughput(Throughput::Elements(1));
    group.bench_function("subscribe_unsubscribe_1000_subscribers", |b| {
        b.iter(|| {
            e.subscribe(ids[0], "busy").now().expect("subscribe");
            e.unsubscribe(ids[0], "busy").now().expect("unsubscribe");
        })
    });
    group.finish();
}

fn two_threads(c: &mut Criterion) {
    let rt = runtime();
    let _g = rt.enter();
    let e = engine(200);
    for ch in ["left", "right"] {
        for _ in 0..100 {
            let id = e
                .connect(Arc::new(CountingSink::default()))
                .expect("connect");
            e.subscribe(id, ch).now().expect("subscribe");
        }
    }
    let mut group = c.benchmark_group("parallel_publish");
    const PER_THREAD: u64 = 1_000;
    group.throughput(Throughput::Elements(2 * PER_THREAD * 100));
    group.bench_function("two_threads_two_channels_100_subscribers", |b| {
        b.iter(|| {
            let barrier = Arc::new(Barrier::new(2));
            std::thread::scope(|s| {
                for ch in ["left", "right"] {
                    let e = &e;
                    let barrier = Arc::clone(&barrier);
                    s.spawn(move || {
                        barrier.wait();
                        for i in 0..PER_THREAD {
                            e.publish(None, ch, json!(i), false).now().expect("publish");
                        }
                    });
                }
            });
        })
    });
    group.finish();
}

/// A worker sink that answers every rpc-request at once, in process.
struct Worker {
    engine: Mutex<Option<Engine>>,
    /// Its own connection, set once connected.
    conn: Mutex<Option<sente_lite_channels::ConnId>>,
}

impl Sink for Worker {
    fn offer(&self, frame: &Frame) -> Offer {
        let v: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap_or_default();
        let me = *self.conn.lock();
        if let (Some(e), Some(id), Some(me)) =
            (self.engine.lock().as_ref(), v["request-id"].as_str(), me)
        {
            // Responding from inside offer() takes only leaf locks (the
            // RPC state and the worker's subscription numbers): safe.
            let _ = e
                .send_rpc_response(me, None, id, json!({"ok": true}), false)
                .now();
        }
        Offer::Queued
    }
}

fn rpc_round_trip(c: &mut Criterion) {
    let rt = runtime();
    let _g = rt.enter();
    let e = engine(4);
    let worker = Arc::new(Worker {
        engine: Mutex::new(Some(e.clone())),
        conn: Mutex::new(None),
    });
    let w = e.connect(worker.clone()).expect("connect");
    *worker.conn.lock() = Some(w);
    e.subscribe(w, "api").now().expect("subscribe");
    let requester = Arc::new(CountingSink::default());
    let r = e.connect(requester.clone()).expect("connect");
    let mut group = c.benchmark_group("rpc");
    group.throughput(Throughput::Elements(1));
    group.bench_function("in_process_round_trip", |b| {
        b.iter(|| {
            let sent = e
                .send_rpc_request(r, "api", json!({"action": "get"}), Some(5_000))
                .now()
                .expect("request");
            black_box(sent.request_id)
        })
    });
    group.finish();
    assert_eq!(e.pending_rpc_requests(), 0, "every request was answered");
    // Break the engine <-> worker cycle.
    worker.engine.lock().take();
}

criterion_group!(benches, fan_out, churn, two_threads, rpc_round_trip);
criterion_main!(benches);
