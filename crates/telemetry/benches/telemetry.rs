//! telemere-lite benchmarks (criterion; `cargo bench -p telemere-lite`).
//!
//! * `filtered_out`: a signal below the level gate.
//! * `sync_noop`: a signal delivered to a sync no-op handler.
//! * `async_enqueue/{1,2}_threads`: emitting into an async `Dropping`
//!   handler (no-op worker), caller-side cost.
//! * `async_enqueue/1_thread_accepted[_coarse_clock]`: the same with every
//!   signal accepted (chunks of one buffer, drained off the clock), with
//!   the default clock and with `Clock::Coarse`.
//! * `file_e2e/*`: end to end into a JSON-lines file, worker I/O included:
//!   the clock runs from the first emit until the handler has drained and
//!   flushed (telemere `shutdown`, tracing-appender guard drop). The
//!   `blocking` pair loses nothing; the `dropping` pair sends a burst 50x the
//!   buffer so drops happen (printed once per run).
//!
//! Files go to a temporary directory, never into the repository.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::Serialize;
use telemere_lite::{
    debug, info, Clock, FileOptions, HandlerOptions, Lazy, Level, Mode, Signal, Telemetry,
};

#[derive(Serialize)]
struct Hot {
    conn: u64,
    channel: &'static str,
    bytes: u32,
}

#[derive(Serialize)]
struct Published<'a> {
    conn: u64,
    channel: &'a str,
    bytes: u32,
}

const BURST: u64 = 50_000;
const BUFFER: usize = 1024;

fn bench_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("telemere-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

fn fresh(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[inline(always)]
fn emit(tel: &Telemetry, i: u64) {
    info!(tel: tel, "message-published", Published { conn: i, channel: "chat", bytes: 128 });
}

/// The hot-path form: data moved in as is, serialized by the worker.
#[inline(always)]
fn emit_lazy(tel: &Telemetry, i: u64) {
    info!(tel: tel, "message-published", Lazy(Hot { conn: i, channel: "chat", bytes: 128 }));
}

fn filtered_and_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("telemere");
    g.throughput(Throughput::Elements(1));

    let tel = Telemetry::new();
    tel.add_handler("noop", |_: &Signal| {}, HandlerOptions::sync())
        .unwrap_or_default();
    tel.set_min_level(Level::Info);
    g.bench_function("filtered_out", |b| {
        b.iter(|| debug!(tel: &tel, "filtered", black_box(1u64)));
    });

    g.bench_function("sync_noop", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            emit(&tel, i)
        });
    });
    g.finish();
}

/// An async `Dropping` handler of `BUFFER` signals that does nothing.
fn add_noop_async(tel: &Telemetry) {
    tel.add_handler(
        "noop",
        |s: &Signal| {
            black_box(s);
        },
        HandlerOptions::async_()
            .mode(Mode::Dropping)
            .buffer_size(BUFFER),
    )
    .unwrap_or_default();
}

fn async_enqueue(c: &mut Criterion) {
    let mut g = c.benchmark_group("telemere/async_enqueue");
    for (threads, lazy) in [(1u64, true), (2, true), (1, false)] {
        g.throughput(Throughput::Elements(threads));
        let tel = Telemetry::new();
        add_noop_async(&tel);
        let name = format!("{threads}_threads{}", if lazy { "" } else { "_eager_data" });
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let barrier = Arc::new(Barrier::new(threads as usize + 1));
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        let (tel, barrier) = (&tel, barrier.clone());
                        s.spawn(move || {
                            barrier.wait();
                            for i in 0..iters {
                                if lazy {
                                    emit_lazy(tel, i)
                                } else {
                                    emit(tel, i)
                                }
                            }
                        });
                    }
                    barrier.wait();
                    Instant::now()
                })
                .elapsed()
            });
        });
        let st = tel
            .shutdown(Duration::from_secs(10))
            .map(|r| r.stats["noop"])
            .unwrap_or_default();
        eprintln!(
            "  async_enqueue {name}: processed {} dropped {} ({:.0}% dropped)",
            st.processed,
            st.dropped,
            100.0 * st.dropped as f64 / (st.processed + st.dropped).max(1) as f64
        );
    }
    // The same, but emitting in chunks of one buffer and (off the clock)
    // waiting for the worker to drain between chunks, so every signal is
    // really enqueued: the cost of an accepted enqueue; with the default
    // (precise) clock and with `Clock::Coarse`.
    g.throughput(Throughput::Elements(1));
    for (name, clock) in [
        ("1_thread_accepted", Clock::Precise),
        ("1_thread_accepted_coarse_clock", Clock::Coarse),
    ] {
        let tel = Telemetry::new();
        tel.set_clock(clock);
        add_noop_async(&tel);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BUFFER as u64);
                    let start = Instant::now();
                    for i in 0..n {
                        emit_lazy(&tel, i);
                    }
                    total += start.elapsed();
                    left -= n;
                    let _ = tel.flush(Duration::from_secs(10));
                }
                total
            });
        });
        let st = tel
            .shutdown(Duration::from_secs(10))
            .map(|r| r.stats["noop"])
            .unwrap_or_default();
        eprintln!(
            "  async_enqueue {name}: processed {} dropped {}",
            st.processed, st.dropped
        );
    }
    g.finish();
}

/// One telemere burst into a fresh file; returns (elapsed, written, dropped).
fn telemere_file(path: &Path, mode: Mode) -> (Duration, u64, u64) {
    fresh(path);
    let tel = Telemetry::new();
    tel.add_file_handler_with(
        "file",
        path,
        FileOptions::default(),
        HandlerOptions::async_().mode(mode).buffer_size(BUFFER),
    )
    .unwrap_or_default();
    let start = Instant::now();
    for i in 0..BURST {
        emit(&tel, i);
    }
    let report = tel.shutdown(Duration::from_secs(60));
    let elapsed = start.elapsed();
    let st = report.map(|r| r.stats["file"]).unwrap_or_default();
    (elapsed, st.processed, st.dropped)
}

/// The same burst through tracing + tracing-appender's non-blocking writer
/// and the JSON formatter (thread ids/names, file and line on, like ours).
fn tracing_file(path: &Path, lossy: bool) -> Duration {
    use tracing_subscriber::fmt::format::FmtSpan;
    fresh(path);
    let Ok(file) = std::fs::File::create(path) else {
        return Duration::ZERO;
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(lossy)
        .buffered_lines_limit(BUFFER)
        .finish(file);
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_span_events(FmtSpan::NONE)
        .with_thread_ids(true)
        .with_thread_names(true)
        .with_file(true)
        .with_line_number(true)
        .with_writer(writer)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let start = Instant::now();
        for i in 0..BURST {
            tracing::info!(
                conn = i,
                channel = "chat",
                bytes = 128u32,
                "message-published"
            );
        }
        drop(guard);
        start.elapsed()
    })
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

fn file_e2e(c: &mut Criterion) {
    let dir = bench_dir();
    let mut g = c.benchmark_group("file_e2e");
    g.throughput(Throughput::Elements(BURST));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));

    for (name, mode, lossy) in [
        ("blocking", Mode::Blocking, false),
        ("dropping", Mode::Dropping, true),
    ] {
        let path = dir.join(format!("telemere-{name}.log"));
        let mut last = (0, 0);
        g.bench_function(format!("telemere_{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (d, written, dropped) = telemere_file(&path, mode);
                    total += d;
                    last = (written, dropped);
                }
                total
            });
        });
        eprintln!(
            "  telemere_{name}: last burst of {BURST}: written {} dropped {} (file has {} lines)",
            last.0,
            last.1,
            lines(&path)
        );
        let tpath = dir.join(format!("tracing-{name}.log"));
        g.bench_function(format!("tracing_appender_{name}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| tracing_file(&tpath, lossy)).sum());
        });
        eprintln!(
            "  tracing_appender_{name}: last burst of {BURST}: file has {} lines",
            lines(&tpath)
        );
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, filtered_and_sync, async_enqueue, file_e2e);
criterion_main!(benches);
