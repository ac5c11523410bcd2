//! Connection scale: K idle, subscribed connections held open at once.
//!
//! The fd limit here is 20,000 per process, so the connections are spread
//! over worker processes: the tool re-executes itself as `idle-part` with a
//! range of connection numbers. Each part connects and subscribes its range
//! (from several loopback source addresses), prints `READY {json}` on
//! stdout, holds the connections, prints `GOT {json}` once each of its
//! connections has received the probe message, and on `STOP` (a line on its
//! stdin, or stdin closing, or its own deadline) prints `DONE {json}` and
//! exits. The parent measures the server while all K are held, then
//! publishes one probe message per channel to check every connection is
//! still alive, and counts what arrived.

use crate::conn::{Conn, Event, Kind, Target};
use crate::loopback::{pick, source_addrs};
use crate::plan::IdleSpec;
use crate::procfs;
use crate::scenarios::{collect_ready, Metrics, RunOpts};
use crate::stats::{now_us, payload, Latency, Stamp};
use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{timeout_at, Instant};

/// Arguments of the hidden `idle-part` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct PartArgs {
    #[arg(long, value_enum)]
    pub server: Kind,
    #[arg(long)]
    pub addr: String,
    /// First connection number (inclusive).
    #[arg(long)]
    pub from: usize,
    /// Last connection number (exclusive).
    #[arg(long)]
    pub to: usize,
    #[arg(long)]
    pub per_channel: usize,
    #[arg(long, default_value_t = 8)]
    pub src_addrs: usize,
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// The part exits by itself after this many seconds.
    #[arg(long)]
    pub timeout_secs: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    open: u64,
    failed: u64,
    error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Got {
    received: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Done {
    received: u64,
    duplicates: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u64>,
}

fn channel_of(i: usize, per_channel: usize) -> String {
    format!("bench-idle{}", i / per_channel.max(1))
}

/// The worker process: holds connections `from..to`.
pub async fn part_main(args: PartArgs) -> anyhow::Result<()> {
    let addr = crate::loopback::parse_target(&args.addr)?;
    let target = Target {
        kind: args.server,
        addr,
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout_secs);
    let srcs = source_addrs(args.src_addrs)?;
    let n = args.to.saturating_sub(args.from);
    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(n.max(1));
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::with_capacity(n)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(n);
    for i in args.from..args.to {
        let (sem, ready, received, latencies, mut stop) = (
            sem.clone(),
            ready_tx.clone(),
            received.clone(),
            latencies.clone(),
            stop_rx.clone(),
        );
        let chan = channel_of(i, args.per_channel);
        let src = pick(&srcs, i);
        tasks.push(tokio::spawn(async move {
            let setup = async {
                let _permit = sem.acquire().await.map_err(|e| e.to_string())?;
                let mut c = Conn::connect(target, src, &format!("idle-{i}"))
                    .await
                    .map_err(|e| e.to_string())?;
                c.subscribe(&chan).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(c)
            };
            let mut conn = match timeout_at(deadline, setup).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    let _ = ready.send(Err(e)).await;
                    return (0u64, None);
                }
                Err(_) => {
                    let _ = ready.send(Err("connect timed out".into())).await;
                    return (0, None);
                }
            };
            let _ = ready.send(Ok(())).await;
            drop(ready);
            let mut got = 0u64;
            loop {
                tokio::select! {
                    biased;
                    _ = crate::scenarios::stopped(&mut stop) => break,
                    ev = conn.recv() => match ev {
                        Ok(Event::Delivery(Some(stamp))) => {
                            got += 1;
                            if got == 1 {
                                let lat = now_us().saturating_sub(stamp.t);
                                if let Ok(mut l) = latencies.lock() {
                                    l.push(lat);
                                }
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Event::ServerError(e)) => return (got, Some(e)),
                        Ok(_) => {}
                        Err(e) => return (got, Some(e.to_string())),
                    }
                }
            }
            (got, None)
        }));
    }
    drop(ready_tx);
    let (oks, failed, error) = collect_ready(&mut ready_rx, n, deadline).await;
    let open = oks.len() as u64;
    say(
        "READY",
        &Ready {
            open,
            failed: failed as u64,
            error,
        },
    );

    // STOP on stdin (or EOF) ends the hold.
    let stdin_stop = stop_tx.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(l)) if l.trim() != "STOP" => continue,
                _ => break,
            }
        }
        let _ = stdin_stop.send(true);
    });
    let mut stop_seen = stop_rx.clone();
    let mut said_got = false;
    loop {
        tokio::select! {
            _ = crate::scenarios::stopped(&mut stop_seen) => break,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if Instant::now() > deadline {
            break;
        }
        let r = received.load(Ordering::Relaxed);
        if !said_got && open > 0 && r >= open {
            say("GOT", &Got { received: r });
            said_got = true;
        }
    }
    let _ = stop_tx.send(true);
    let (mut duplicates, mut errors, mut first_error) = (0u64, 0u64, None);
    for t in tasks {
        let (got, err) = t.await?;
        duplicates += got.saturating_sub(1);
        if let Some(e) = err {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    let latencies_us = latencies
        .lock()
        .map(|l| l.clone())
        .map_err(|_| anyhow!("latency list poisoned"))?;
    say(
        "DONE",
        &Done {
            received: received.load(Ordering::Relaxed),
            duplicates,
            errors,
            first_error,
            latencies_us,
        },
    );
    Ok(())
}

fn say<T: Serialize>(tag: &str, v: &T) {
    match serde_json::to_string(v) {
        Ok(j) => println!("{tag} {j}"),
        Err(e) => println!("{tag} {{\"error\":\"{e}\"}}"),
    }
}

/// A line from a part; `Exited(part)` when a part ended without `DONE`.
#[derive(Debug)]
enum PartLine {
    Ready(Ready),
    Got,
    Done(Done),
    Exited(usize),
}

fn parse_line(line: &str) -> Option<PartLine> {
    let (tag, json) = line.split_once(' ')?;
    match tag {
        "READY" => serde_json::from_str(json).ok().map(PartLine::Ready),
        "GOT" => serde_json::from_str::<Got>(json)
            .ok()
            .map(|_| PartLine::Got),
        "DONE" => serde_json::from_str(json).ok().map(PartLine::Done),
        _ => None,
    }
}

/// The parent: starts the parts, measures, probes, collects.
pub async fn idle(
    target: Target,
    spec: &IdleSpec,
    opts: &RunOpts,
    src_addrs: usize,
) -> anyhow::Result<Metrics> {
    let k = spec.connections;
    let parts = k.div_ceil(spec.per_process.max(1)).max(1);
    let per = k.div_ceil(parts);
    let setup_secs = opts.setup_timeout.as_secs_f64();
    let part_timeout = setup_secs + spec.hold_secs + opts.drain.as_secs_f64() + 30.0;
    let exe = std::env::current_exe().context("locate this executable")?;
    let before = opts.server_pid.map(procfs::sample).transpose()?;
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel::<PartLine>(parts * 4);
    let mut children = Vec::with_capacity(parts);
    let mut stdins = Vec::with_capacity(parts);
    for p in 0..parts {
        let (from, to) = (p * per, ((p + 1) * per).min(k));
        let mut child = tokio::process::Command::new(&exe)
            .arg("idle-part")
            .args(["--server", kind_arg(target.kind)])
            .args(["--addr", &target.addr.to_string()])
            .args(["--from", &from.to_string(), "--to", &to.to_string()])
            .args(["--per-channel", &spec.per_channel.to_string()])
            .args(["--src-addrs", &src_addrs.to_string()])
            .args([
                "--connect-concurrency",
                &opts.connect_concurrency.to_string(),
            ])
            .args(["--timeout-secs", &format!("{part_timeout:.1}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start an idle-part process")?;
        stdins.push(child.stdin.take());
        let stdout = child.stdout.take().context("part stdout")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut done = false;
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(pl) = parse_line(&l) {
                    done |= matches!(pl, PartLine::Done(_));
                    if tx.send(pl).await.is_err() {
                        return;
                    }
                }
            }
            // `Exited` means: gone without its DONE line.
            if done {
                return;
            }
            let _ = tx.send(PartLine::Exited(p)).await;
        });
        children.push(child);
    }
    drop(tx);

    let hard = started + Duration::from_secs_f64(part_timeout + 5.0);

    // Everyone connected (or failed).
    let (mut open, mut failed, mut first_error) = (0u64, 0u64, None);
    let mut ready = 0;
    while ready < parts {
        match next_line(&mut rx, hard).await? {
            PartLine::Ready(r) => {
                ready += 1;
                open += r.open;
                failed += r.failed;
                if first_error.is_none() {
                    first_error = r.error;
                }
            }
            PartLine::Exited(p) => bail!("idle part {p} exited before it was ready"),
            _ => {}
        }
    }
    let setup = started.elapsed().as_secs_f64();
    let at_ready = opts.server_pid.map(procfs::sample).transpose()?;

    // Hold.
    tokio::time::sleep(Duration::from_secs_f64(spec.hold_secs)).await;
    let held = opts.server_pid.map(procfs::sample).transpose()?;

    // Probe: one message per channel.
    let channels = k.div_ceil(spec.per_channel.max(1));
    let mut probe = Conn::connect(target, None, "idle-probe").await?;
    for c in 0..channels {
        let body = payload(
            Stamp {
                p: c as u32,
                s: 0,
                t: now_us(),
            },
            100,
        );
        probe
            .publish(&channel_of(c * spec.per_channel, spec.per_channel), &body)
            .await?;
    }
    probe.send_flush().await?;
    let probe_deadline = Instant::now() + opts.drain;
    let mut got_parts = 0;
    let mut exited = 0;
    while got_parts < parts && Instant::now() < probe_deadline {
        match timeout_at(probe_deadline, rx.recv()).await {
            Ok(Some(PartLine::Got)) => got_parts += 1,
            Ok(Some(PartLine::Exited(_))) => exited += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    drop(probe);
    let after_probe = opts.server_pid.map(procfs::sample).transpose()?;

    for s in stdins.iter_mut().flatten() {
        let _ = s.write_all(b"STOP\n").await;
        let _ = s.flush().await;
    }
    let mut latency = Latency::new();
    let (mut received, mut duplicates, mut conn_errors) = (0u64, 0u64, 0u64);
    let mut done = 0;
    while done + exited < parts {
        match next_line(&mut rx, hard).await {
            Ok(PartLine::Done(d)) => {
                done += 1;
                received += d.received;
                duplicates += d.duplicates;
                conn_errors += d.errors;
                if first_error.is_none() {
                    first_error = d.first_error;
                }
                for l in d.latencies_us {
                    latency.record(l);
                }
            }
            Ok(PartLine::Exited(_)) => exited += 1,
            Ok(_) => {}
            Err(e) => {
                eprintln!("  note: {e}");
                break;
            }
        }
    }
    for mut c in children {
        if tokio::time::timeout(Duration::from_secs(5), c.wait())
            .await
            .is_err()
        {
            let _ = c.start_kill();
        }
    }

    let mut m = Metrics::new();
    m.insert("connections".into(), open as f64);
    m.insert("connect_failures".into(), failed as f64);
    m.insert("processes".into(), parts as f64);
    m.insert("setup_s".into(), setup);
    m.insert("connects_per_sec".into(), open as f64 / setup.max(1e-9));
    m.insert("probe_expected".into(), open as f64);
    m.insert("delivered".into(), received as f64);
    m.insert("lost".into(), open.saturating_sub(received) as f64);
    m.insert("duplicates".into(), duplicates as f64);
    m.insert("connection_errors".into(), conn_errors as f64);
    let s = latency.summary();
    m.insert("latency_count".into(), s.count as f64);
    m.insert("latency_p50_us".into(), s.p50_us as f64);
    m.insert("latency_p90_us".into(), s.p90_us as f64);
    m.insert("latency_p99_us".into(), s.p99_us as f64);
    m.insert("latency_max_us".into(), s.max_us as f64);
    if let (Some(b), Some(r), Some(h), Some(a)) = (before, at_ready, held, after_probe) {
        m.insert(
            "server_cpu_seconds_connect".into(),
            r.cpu_seconds - b.cpu_seconds,
        );
        m.insert(
            "server_cpu_seconds_hold".into(),
            h.cpu_seconds - r.cpu_seconds,
        );
        m.insert("server_cpu_seconds".into(), a.cpu_seconds - b.cpu_seconds);
        m.insert("server_rss_bytes_held".into(), h.rss_bytes as f64);
        m.insert("server_peak_rss_bytes".into(), a.hwm_bytes as f64);
        m.insert("server_lifetime_hwm_bytes".into(), a.hwm_bytes as f64);
        if open > 0 {
            m.insert(
                "server_rss_bytes_per_connection".into(),
                h.rss_bytes.saturating_sub(b.rss_bytes) as f64 / open as f64,
            );
            m.insert(
                "server_cpu_s_per_million_connections".into(),
                (r.cpu_seconds - b.cpu_seconds) / (open as f64 / 1e6),
            );
        }
    }
    if let Some(e) = first_error {
        eprintln!("  note: idle connections: {failed} failed to set up, {conn_errors} saw errors; first error: {e}");
    }
    if open == 0 {
        bail!("no idle connection could be opened");
    }
    Ok(m)
}

async fn next_line(rx: &mut mpsc::Receiver<PartLine>, hard: Instant) -> anyhow::Result<PartLine> {
    match timeout_at(hard, rx.recv()).await {
        Ok(Some(l)) => Ok(l),
        Ok(None) => Err(anyhow!("idle parts went away")),
        Err(_) => Err(anyhow!("idle parts did not answer in time")),
    }
}

fn kind_arg(k: Kind) -> &'static str {
    match k {
        Kind::Sente => "sente",
        Kind::Nats => "nats",
        Kind::Uws => "uws",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_lines_round_trip() {
        let l = format!(
            "READY {}",
            serde_json::to_string(&Ready {
                open: 5,
                failed: 1,
                error: Some("x".into())
            })
            .expect("json")
        );
        assert!(matches!(
            parse_line(&l),
            Some(PartLine::Ready(Ready {
                open: 5,
                failed: 1,
                ..
            }))
        ));
        assert!(parse_line("noise").is_none());
        assert!(parse_line("READY {bad").is_none());
        assert_eq!(channel_of(999, 500), "bench-idle1");
        assert_eq!(channel_of(1000, 500), "bench-idle2");
    }
}
