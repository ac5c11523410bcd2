//! Telemetry cannot be turned against the server (issue 11): a client's
//! huge strings are cut before they reach the log, its repeated warnings
//! are throttled (counted, not written), and SIGTERM still stops the server
//! within its deadline while the log sink is blocked.

#![allow(clippy::unwrap_used)]

use sente_lite_tests::external::{Node, TempDir};
use sente_lite_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Sends `n` subscribes to `channel`, each refused, and reads every answer
/// (the warning of each is emitted before its answer is sent).
async fn refused_subscribes(c: &mut Client, channel: &str, n: usize) {
    let frame = json!({"type": "subscribe", "channel-id": channel}).to_string();
    for _ in 0..n {
        c.send_text(&frame).await;
        let r = c.recv_type("subscription-result").await;
        assert_eq!(r["success"], false, "{r}");
        assert_eq!(r["reason"], "invalid-channel-id", "{r}");
    }
}

fn handler_stats(s: &Value) -> &Value {
    &s["telemetry-stats"]["sente-lite"]
}

/// The log file's size once the server has stopped (and flushed).
async fn log_after(config: Config, flood: impl AsyncFnOnce(&Server)) -> (u64, String) {
    let server = start(config.clone()).await;
    flood(&server).await;
    server.stop().await;
    let text = std::fs::read_to_string(&config.telemetry.file).unwrap();
    (text.len() as u64, text)
}

fn file_config(dir: &TempDir) -> Config {
    let mut c = config();
    c.telemetry.output = sente_lite_server::TelemetryOutput::File;
    c.telemetry.file = dir.join("server.log").display().to_string();
    // Room for a 1 MiB channel id in one frame.
    c.websocket.max_message_bytes = 2 << 20;
    c.websocket.max_outbound_bytes = 4 << 20;
    c
}

const MIB: usize = 1 << 20;

#[tokio::test]
async fn three_hundred_1_mib_channel_ids_write_little_to_the_log() {
    let dir = TempDir::new("telemetry-abuse");
    let huge = "x".repeat(MIB);

    // Every signal the server emits (trace and up), the throttle off: what
    // bounds the log is that every string is cut. (100 frames: 1 MiB
    // frames are slow in a debug build.)
    let mut all = file_config(&dir);
    all.telemetry.min_level = telemere_lite::Level::Trace;
    all.telemetry.max_warnings_per_connection_per_minute = 0;
    all.telemetry.buffer_size = 100_000; // nothing dropped: every line is written
    let (bytes, text) = log_after(all, async |server: &Server| {
        let mut c = Client::connect(server.local_addr()).await;
        refused_subscribes(&mut c, &huge, 100).await;
        let s = stats(server.local_addr()).await;
        assert_eq!(handler_stats(&s)["dropped"], 0, "{s}");
        c.close().await;
    })
    .await;
    let lines = text.lines().count();
    let rejected = |text: &str| {
        text.lines()
            .filter(|l| l.contains("subscription-rejected"))
            .count() as u64
    };
    assert_eq!(rejected(&text), 100, "one warning per frame");
    let longest = text.lines().map(str::len).max().unwrap();
    assert!(longest < 2048, "longest line {longest} bytes");
    // At most a couple of KB per signal, whatever the client sends.
    assert!(
        bytes < lines as u64 * 2048,
        "{bytes} bytes in {lines} lines"
    );
    eprintln!("trace level, 100 x 1 MiB ids: {bytes} bytes in {lines} lines (longest {longest})");
    std::fs::remove_file(dir.join("server.log")).unwrap();

    // The defaults (info and up, 60 warnings per connection per minute, a
    // burst of 60): the 300 frames of 1 MiB (314 MB of log before).
    // The rest of the connection's warnings are counted, not written.
    let mut throttled = 0;
    let mut took = Duration::ZERO;
    let (bytes, text) = log_after(file_config(&dir), async |server: &Server| {
        let mut c = Client::connect(server.local_addr()).await;
        let start = Instant::now();
        refused_subscribes(&mut c, &huge, 300).await;
        let s = stats(server.local_addr()).await;
        took = start.elapsed();
        throttled = handler_stats(&s)["throttled"].as_u64().unwrap();
        assert_eq!(handler_stats(&s)["dropped"], 0, "{s}");
        c.close().await;
    })
    .await;
    let written = rejected(&text);
    assert_eq!(written + throttled, 300);
    // The bucket refills at one a second: a slow (debug) run earns more.
    assert!(
        (60..=60 + took.as_secs() + 1).contains(&written),
        "{written} written in {took:?}"
    );
    assert!(bytes < 16 * 1024 + written * 1024, "{bytes} bytes");
    eprintln!(
        "defaults, 300 x 1 MiB ids in {took:?}: {bytes} bytes, {written} warnings written, \
         {throttled} throttled"
    );
}

#[tokio::test]
async fn warnings_are_throttled_per_connection_not_per_server() {
    let dir = TempDir::new("telemetry-abuse");
    let mut cfg = file_config(&dir);
    cfg.telemetry.max_warnings_per_connection_per_minute = 5;
    cfg.telemetry.max_field_bytes = 32;
    let long = "y".repeat(300); // over channels.max-channel-id-bytes
    let (_, text) = log_after(cfg, async |server: &Server| {
        let mut a = Client::connect(server.local_addr()).await;
        let mut b = Client::connect(server.local_addr()).await;
        refused_subscribes(&mut a, &long, 50).await;
        // The noisy connection used its bucket up; another still gets its own.
        refused_subscribes(&mut b, &long, 3).await;
        let s = stats(server.local_addr()).await;
        assert_eq!(handler_stats(&s)["throttled"], 45, "{s}");
        a.close().await;
        b.close().await;
    })
    .await;
    let conns: Vec<String> = text
        .lines()
        .filter(|l| l.contains("subscription-rejected"))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            // telemetry.max-field-bytes: the id (already cut to 128 by the
            // engine) is cut to 32, its length noted.
            let id = v["data"]["channel-id"].as_str().unwrap();
            assert_eq!(id, format!("{}…[128 bytes]", "y".repeat(32)));
            v["data"]["conn-id"].as_str().unwrap().to_owned()
        })
        .collect();
    let first = conns.first().unwrap().clone();
    assert_eq!(conns.iter().filter(|c| **c == first).count(), 5, "{text}");
    assert_eq!(conns.len(), 5 + 3, "{text}");
}

/// A FIFO that the test holds open for reading (so the server can open it
/// for writing) and never reads: once the pipe is full, every write of the
/// server's log handler blocks for good.
struct Fifo {
    path: std::path::PathBuf,
    _held: std::fs::File,
}

impl Fifo {
    fn new(dir: &TempDir) -> Fifo {
        let path = dir.join("log.fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkfifo {}", path.display());
        // Read-write: opening a FIFO so never waits for the other end.
        let held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        Fifo { path, _held: held }
    }
}

/// `websocket.shutdown-drain-ms` + `telemetry.shutdown-timeout-ms` of
/// [`spawn_logging_to`]'s node.
const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(200 + 1_000);

/// A node whose log is `fifo`, with the warning throttle off (one client
/// fills the pipe quickly), 200 ms of shutdown drain, 1 s of telemetry
/// shutdown timeout, and `extra`.
fn spawn_logging_to(fifo: &Fifo, extra: (&str, &str)) -> Node {
    let fifo_path = fifo.path.display().to_string();
    let envs = [
        ("SENTE_LITE_TELEMETRY_OUTPUT", "file"),
        ("SENTE_LITE_TELEMETRY_FILE", fifo_path.as_str()),
        (
            "SENTE_LITE_TELEMETRY_MAX_WARNINGS_PER_CONNECTION_PER_MINUTE",
            "0",
        ),
        ("SENTE_LITE_TELEMETRY_SHUTDOWN_TIMEOUT_MS", "1000"),
        ("SENTE_LITE_WEBSOCKET_SHUTDOWN_DRAIN_MS", "200"),
        extra,
    ];
    Node::spawn(sente_lite_tests::node_bin!(), &envs)
}

/// Sends `node` SIGTERM and checks that it exits cleanly by `deadline`
/// (the sum of its shutdown timeouts) plus 3 s of slack for a loaded
/// machine.
fn stops_on_sigterm_within(node: &mut Node, deadline: Duration) {
    let start = Instant::now();
    let status = node.stop().expect("the node was running");
    let took = start.elapsed();
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(
        status.success(),
        "SIGTERM did not stop it cleanly ({status}) in {took:?}; its output:\n{}",
        node.log()
    );
    assert!(
        took < deadline + Duration::from_secs(3),
        "stopped in {took:?}, deadline {deadline:?}"
    );
}

#[tokio::test]
async fn sigterm_stops_the_server_within_its_deadline_while_the_log_sink_is_blocked() {
    let dir = TempDir::new("telemetry-fifo");
    let fifo = Fifo::new(&dir);
    // Bounded by bytes long before its 1,024 signals.
    let mut node = spawn_logging_to(&fifo, ("SENTE_LITE_TELEMETRY_BUFFER_BYTES", "16384"));
    let addr = node.addr();
    let mut c = Client::connect(addr).await;
    let long = "z".repeat(300);
    // About 400 bytes a line: 2,000 lines are far more than the pipe (64 KiB)
    // and the handler's write buffer (64 KiB) together take.
    refused_subscribes(&mut c, &long, 2_000).await;
    let before = stats(addr).await;
    refused_subscribes(&mut c, &long, 200).await;
    let after = stats(addr).await;
    let (b, a) = (handler_stats(&before), handler_stats(&after));
    // The sink is blocked: the worker handled nothing more, its queue is
    // full, and every new warning was dropped (counted).
    assert_eq!(a["processed"], b["processed"], "{b} -> {a}");
    let queued = a["queued"].as_u64().unwrap();
    assert!((8..1024).contains(&queued), "{a}");
    assert!(a["queued-bytes"].as_u64().unwrap() <= 16384, "{a}");
    assert_eq!(
        a["dropped"].as_u64().unwrap(),
        b["dropped"].as_u64().unwrap() + 200,
        "{b} -> {a}"
    );

    stops_on_sigterm_within(&mut node, SHUTDOWN_DEADLINE);
    drop(fifo);
}

/// Where the `telemere-*` worker thread of process `pid` sleeps (Linux
/// `/proc/<pid>/task/*/wchan`): `"0"` while it runs, a kernel function such
/// as `futex_wait_queue` while it waits for work, `anon_pipe_write` (or
/// `pipe_write`) while a write to a full pipe holds it.
fn telemetry_worker_wchan(pid: u32) -> Option<String> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("telemere-") {
            return std::fs::read_to_string(task.path().join("wchan")).ok();
        }
    }
    None
}

/// The case that hung for good: warnings trickle in (each written out when
/// the queue runs empty), the pipe fills during such an idle flush, and the
/// queue is empty when SIGTERM comes (min-level warn: the stop's own info
/// events are not queued). The final flush of the old shutdown then waited
/// on the handler that the stuck worker holds, forever.
#[tokio::test]
async fn sigterm_stops_the_server_while_its_log_handler_is_stuck_flushing() {
    let dir = TempDir::new("telemetry-fifo");
    let fifo = Fifo::new(&dir);
    let mut node = spawn_logging_to(&fifo, ("SENTE_LITE_TELEMETRY_MIN_LEVEL", "warn"));
    let addr = node.addr();
    let pid = node.pid().unwrap();
    let asleep = |w: &Option<String>| w.as_deref().is_some_and(|w| !w.is_empty() && w != "0");
    let blocked = |w: &Option<String>| w.as_deref().is_some_and(|w| w.contains("pipe_write"));
    // Idle (nothing is logged at warn yet): it must show where it sleeps.
    let start = Instant::now();
    while !asleep(&telemetry_worker_wchan(pid)) {
        if start.elapsed() > TIMEOUT {
            eprintln!("SKIPPED: this kernel does not show where a thread sleeps (wchan)");
            return;
        }
        tokio::task::yield_now().await;
    }
    let mut c = Client::connect(addr).await;
    let long = "z".repeat(300);
    let mut sent = 0u64;
    // One at a time, each handled and written out (the worker asleep again)
    // before the next: at about 400 bytes a line the 64 KiB pipe is full
    // within ~170.
    'trickle: loop {
        refused_subscribes(&mut c, &long, 1).await;
        sent += 1;
        assert!(sent < 2_000, "the pipe never filled");
        let start = Instant::now();
        loop {
            let s = stats(addr).await;
            let h = handler_stats(&s);
            let wchan = telemetry_worker_wchan(pid);
            if h["processed"].as_u64().unwrap() == sent && h["queued"] == 0 && asleep(&wchan) {
                if blocked(&wchan) {
                    // Stuck in the flush after the last one, nothing queued.
                    break 'trickle;
                }
                break;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "warning {sent} never handled: {h} {wchan:?}"
            );
            tokio::task::yield_now().await;
        }
    }
    let s = stats(addr).await;
    assert_eq!(handler_stats(&s)["queued"], 0, "{s}");
    assert_eq!(
        handler_stats(&s)["processed"].as_u64().unwrap(),
        sent,
        "{s}"
    );

    stops_on_sigterm_within(&mut node, SHUTDOWN_DEADLINE);
    drop(fifo);
}
