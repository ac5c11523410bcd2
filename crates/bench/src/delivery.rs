//! `delivery`: the delivery guarantees of issue 13, measured end to end on
//! a sente-lite server started for the run, with the in-process broker and
//! with Redis (one node on a redis-server of the run's own):
//!
//! - **recovery**: a subscriber that missed N messages comes back with
//!   `recover`; time from its `subscribe` to the first and to the last
//!   missed message;
//! - **presence**: `presence` and `presence-stats` of a channel with M
//!   subscribed connections; time per call and the answer's size;
//! - **rpc-dispatch**: 4 echo workers, one requester with a window of
//!   requests in flight; requests per second with `rpc-dispatch = one`
//!   and with `all`, and the requests the workers received;
//! - **conflation**: a subscriber that reads 1,000 messages/s while 10,000/s
//!   are published to it (10× overload): on an `on-slow-consumer = latest`
//!   channel it stays connected and ends on the newest message; on a
//!   `close` channel it is closed.
//!
//! Like the rest of the tool it speaks only the wire protocol, targets
//! loopback only, and every wait is bounded.

use crate::servers::{self, Server};
use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// `sente-lite-bench delivery`.
#[derive(Debug, clap::Args)]
pub struct DeliveryArgs {
    /// The sente-lite binary (e.g. target/release/sente-lite).
    #[arg(long)]
    sente_bin: PathBuf,
    /// The redis-server binary (looked up on PATH and in /usr/bin).
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// Small sizes, for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The sizes of a run.
struct Sizes {
    missed: u64,
    recovery_runs: usize,
    members: usize,
    presence_calls: usize,
    requests: usize,
    overload_secs: f64,
}

const FULL: Sizes = Sizes {
    missed: 1_000,
    recovery_runs: 5,
    members: 10_000,
    presence_calls: 20,
    requests: 20_000,
    overload_secs: 3.0,
};

const QUICK: Sizes = Sizes {
    missed: 100,
    recovery_runs: 1,
    members: 200,
    presence_calls: 3,
    requests: 500,
    overload_secs: 0.5,
};

/// The longest any one wait of the run may take.
const WAIT: Duration = Duration::from_secs(30);

/// The server's settings for these runs, as its environment: a history of
/// 1,000 (`hist:`), presence (`pres:`), one-worker and every-worker RPC
/// (`one:`, `all:`), and a conflated feed (`feed:`) next to a plain one;
/// the queues have their defaults (4,096 frames, 1 MiB), which the
/// overload outgrows within the run.
fn server_env() -> Vec<(&'static str, String)> {
    [
        ("SENTE_LITE_CHANNELS_NAMESPACES_HIST_HISTORY_SIZE", "1000"),
        ("SENTE_LITE_CHANNELS_NAMESPACES_PRES_PRESENCE", "true"),
        (
            "SENTE_LITE_CHANNELS_NAMESPACES_PRES_MAX_SUBSCRIBERS",
            "100000",
        ),
        ("SENTE_LITE_CHANNELS_NAMESPACES_ONE_RPC_DISPATCH", "one"),
        ("SENTE_LITE_CHANNELS_NAMESPACES_ALL_RPC_DISPATCH", "all"),
        (
            "SENTE_LITE_CHANNELS_NAMESPACES_FEED_ON_SLOW_CONSUMER",
            "latest",
        ),
        (
            "SENTE_LITE_CHANNELS_MAX_PENDING_RPC_PER_CONNECTION",
            "100000",
        ),
        ("SENTE_LITE_TELEMETRY_OUTPUT", "none"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

pub async fn main(a: DeliveryArgs) -> anyhow::Result<()> {
    let sizes = if a.quick { &QUICK } else { &FULL };
    let mut results = Vec::new();
    for broker in ["local", "redis"] {
        let mut env = server_env();
        let redis = if broker == "redis" {
            let r = servers::start_redis(&a.redis_bin, 90)
                .await
                .context("start redis-server for the Redis broker")?;
            env.push(("SENTE_LITE_BROKER_KIND", "redis".to_owned()));
            env.push(("SENTE_LITE_BROKER_REDIS_URL", r.url()));
            Some(r)
        } else {
            None
        };
        let server =
            servers::start_sente_as(&a.sente_bin, &[], &format!("delivery-{broker}"), &env).await?;
        let r = run_broker(broker, &server, sizes).await;
        server.stop().await;
        if let Some(r) = redis {
            r.stop().await;
        }
        let r = r.with_context(|| format!("the {broker} broker"))?;
        println!("{}", serde_json::to_string_pretty(&r)?);
        results.push(r);
    }
    let out = json!({
        "date-ms": now_ms(),
        "quick": a.quick,
        "results": results,
    });
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

async fn run_broker(broker: &str, server: &Server, sizes: &Sizes) -> anyhow::Result<Value> {
    let addr = server.target.addr;
    let recovery = recovery(addr, sizes).await.context("recovery")?;
    let presence = presence(addr, sizes).await.context("presence")?;
    let mut rpc = Vec::new();
    for dispatch in ["one", "all"] {
        rpc.push(
            rpc_dispatch(addr, dispatch, sizes)
                .await
                .context("rpc-dispatch")?,
        );
    }
    let mut conflation = Vec::new();
    for channel in ["feed:prices", "plain-prices"] {
        conflation.push(overload(addr, channel, sizes).await.context("conflation")?);
    }
    Ok(json!({
        "broker": broker,
        "recovery": recovery,
        "presence": presence,
        "rpc": rpc,
        "conflation": conflation,
    }))
}

// ----- a client ------------------------------------------------------------

struct Client {
    ws: WebSocketStream<TcpStream>,
    conn_id: String,
}

impl Client {
    async fn connect(addr: SocketAddr, recv_buffer: Option<u32>) -> anyhow::Result<Client> {
        if !crate::loopback::is_loopback(addr.ip()) {
            bail!("{addr} is not a loopback address");
        }
        let socket = TcpSocket::new_v4()?;
        if let Some(n) = recv_buffer {
            socket.set_recv_buffer_size(n)?;
        }
        let stream = tokio::time::timeout(WAIT, socket.connect(addr)).await??;
        stream.set_nodelay(true)?;
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async(format!("ws://{addr}/"), stream),
        )
        .await??;
        let mut c = Client {
            ws,
            conn_id: String::new(),
        };
        let welcome = c.recv_type("welcome").await?;
        c.conn_id = welcome["conn-id"].as_str().unwrap_or_default().to_owned();
        Ok(c)
    }

    async fn send(&mut self, v: &Value) -> anyhow::Result<()> {
        self.ws.send(Message::text(v.to_string())).await?;
        Ok(())
    }

    /// The next text frame, parsed; `None` once the connection ended (with
    /// its close reason, if any, in the error).
    async fn recv(&mut self) -> anyhow::Result<Value> {
        // One deadline for the call: pings do not extend it.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => bail!("no frame within {WAIT:?}"),
                Ok(Some(Ok(Message::Text(t)))) => return Ok(serde_json::from_str(t.as_str())?),
                Ok(Some(Ok(Message::Close(c)))) => {
                    bail!(
                        "closed: {}",
                        c.map(|c| c.reason.to_string()).unwrap_or_default()
                    )
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => bail!("connection error: {e}"),
                Ok(None) => bail!("connection ended"),
            }
        }
    }

    async fn recv_type(&mut self, ty: &str) -> anyhow::Result<Value> {
        let v = self.recv().await?;
        if v["type"] != ty {
            bail!("expected `{ty}`, got {}", clip(&v.to_string()));
        }
        Ok(v)
    }

    async fn subscribe(&mut self, channel: &str) -> anyhow::Result<Value> {
        self.send(&json!({"type": "subscribe", "channel-id": channel}))
            .await?;
        let r = self.recv_type("subscription-result").await?;
        if r["success"] != true {
            bail!("subscribe to {channel} failed: {r}");
        }
        Ok(r)
    }

    /// Publishes `count` messages without waiting, then reads their
    /// results.
    async fn publish_n(&mut self, channel: &str, count: u64, pad: &str) -> anyhow::Result<()> {
        for i in 1..=count {
            self.send(&json!({"type": "publish", "channel-id": channel,
                               "data": {"n": i, "pad": pad}}))
                .await?;
        }
        for _ in 0..count {
            let r = self.recv_type("publish-result").await?;
            if r["success"] != true {
                bail!("publish failed: {r}");
            }
        }
        Ok(())
    }
}

fn clip(s: &str) -> &str {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

// ----- the runs ------------------------------------------------------------

/// A subscriber misses `missed` messages of 100 B, then comes back with
/// `recover`: time to its first and last missed message.
async fn recovery(addr: SocketAddr, sizes: &Sizes) -> anyhow::Result<Value> {
    let pad = "r".repeat(80);
    let mut first = Vec::new();
    let mut last = Vec::new();
    let mut publisher = Client::connect(addr, None).await?;
    for run in 0..sizes.recovery_runs {
        let channel = format!("hist:run-{run}");
        let mut sub = Client::connect(addr, None).await?;
        let r = sub.subscribe(&channel).await?;
        let (offset, epoch) = (r["offset"].clone(), r["epoch"].clone());
        sub.ws.close(None).await.ok();
        publisher.publish_n(&channel, sizes.missed, &pad).await?;
        let mut back = Client::connect(addr, None).await?;
        let t0 = Instant::now();
        back.send(&json!({"type": "subscribe", "channel-id": channel,
                          "recover": {"offset": offset, "epoch": epoch}}))
            .await?;
        let r = back.recv_type("subscription-result").await?;
        if r["recovered"] != true || r["recovered-count"] != sizes.missed {
            bail!("not recovered: {r}");
        }
        for i in 1..=sizes.missed {
            let m = back.recv_type("channel-message").await?;
            if m["offset"] != i {
                bail!("expected offset {i}, got {m}");
            }
            if i == 1 {
                first.push(ms(t0.elapsed()));
            }
        }
        last.push(ms(t0.elapsed()));
    }
    Ok(json!({
        "missed": sizes.missed,
        "runs": sizes.recovery_runs,
        "first-ms": median(&mut first),
        "last-ms": median(&mut last),
    }))
}

/// `members` connections subscribed to one presence channel; the time of
/// a `presence` and a `presence-stats` call, and the answer's size.
async fn presence(addr: SocketAddr, sizes: &Sizes) -> anyhow::Result<Value> {
    let channel = "pres:big";
    let mut members = Vec::with_capacity(sizes.members);
    let t0 = Instant::now();
    // Subscribed 100 at a time, each batch concurrently.
    while members.len() < sizes.members {
        let n = (sizes.members - members.len()).min(100);
        let batch = futures::future::join_all((0..n).map(|_| async {
            let mut c = Client::connect(addr, None).await?;
            c.subscribe(channel).await?;
            anyhow::Ok(c)
        }))
        .await;
        for c in batch {
            members.push(c?);
        }
    }
    let subscribe_secs = t0.elapsed().as_secs_f64();
    let mut reader = Client::connect(addr, None).await?;
    let (mut full, mut stats) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..sizes.presence_calls {
        let t = Instant::now();
        reader
            .send(&json!({"type": "presence", "channel-id": channel}))
            .await?;
        let r = reader.recv_type("presence-result").await?;
        full.push(ms(t.elapsed()));
        let clients = r["clients"].as_object().map_or(0, |c| c.len());
        if clients != sizes.members {
            bail!("presence shows {clients} of {} members", sizes.members);
        }
        bytes = r.to_string().len();
        let t = Instant::now();
        reader
            .send(&json!({"type": "presence-stats", "channel-id": channel}))
            .await?;
        let r = reader.recv_type("presence-stats-result").await?;
        stats.push(ms(t.elapsed()));
        if r["clients"] != sizes.members {
            bail!("presence-stats: {r}");
        }
    }
    for mut c in members {
        let _ = c.ws.close(None).await;
    }
    Ok(json!({
        "members": sizes.members,
        "subscribe-secs": subscribe_secs,
        "presence-ms": median(&mut full),
        "presence-stats-ms": median(&mut stats),
        "presence-bytes": bytes,
        "calls": sizes.presence_calls,
    }))
}

/// Four echo workers on `<dispatch>:jobs` and one requester keeping 64
/// requests in flight: requests answered per second, and requests the
/// workers received.
async fn rpc_dispatch(addr: SocketAddr, dispatch: &str, sizes: &Sizes) -> anyhow::Result<Value> {
    const WORKERS: usize = 4;
    const WINDOW: usize = 64;
    let channel = format!("{dispatch}:jobs");
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let mut w = Client::connect(addr, None).await?;
        w.subscribe(&channel).await?;
        let mut stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut received = 0u64;
            let mut stopping = false;
            loop {
                let frame = tokio::select! {
                    f = w.recv() => f?,
                    _ = stop.changed(), if !stopping => {
                        // Count what is still queued for it: everything
                        // before the answer to this ping.
                        stopping = true;
                        w.send(&json!({"type": "ping", "timestamp": "last"})).await?;
                        continue;
                    }
                };
                match frame["type"].as_str() {
                    Some("rpc-request") => {
                        received += 1;
                        w.send(&json!({"type": "rpc-response",
                                       "request-id": frame["request-id"], "data": frame["data"]}))
                            .await?;
                    }
                    Some("pong") if stopping => return anyhow::Ok(received),
                    _ => {}
                }
            }
        }));
    }
    let mut requester = Client::connect(addr, None).await?;
    let t0 = Instant::now();
    let (mut sent, mut answered) = (0usize, 0usize);
    while answered < sizes.requests {
        while sent < sizes.requests && sent - answered < WINDOW {
            requester
                .send(&json!({"type": "rpc-request", "channel-id": channel, "data": {"i": sent}}))
                .await?;
            sent += 1;
        }
        let f = requester.recv().await?;
        match f["type"].as_str() {
            Some("rpc-response") => answered += 1,
            Some("rpc-request-result") if f["delivery"]["success"] != true => {
                bail!("request refused: {f}")
            }
            _ => {}
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let mut received = 0;
    for w in workers {
        received += w.await??;
    }
    Ok(json!({
        "dispatch": dispatch,
        "workers": WORKERS,
        "requests": sizes.requests,
        "requests-per-sec": sizes.requests as f64 / secs,
        "worker-deliveries": received,
    }))
}

/// A subscriber reading 1,000 messages/s (4 KiB socket buffer) while
/// 10,000/s of 1 KiB are published to `channel` for the run's seconds.
async fn overload(addr: SocketAddr, channel: &str, sizes: &Sizes) -> anyhow::Result<Value> {
    const PUBLISH_RATE: f64 = 10_000.0;
    const READ_RATE: f64 = 1_000.0;
    let total = (PUBLISH_RATE * sizes.overload_secs) as u64;
    let mut sub = Client::connect(addr, Some(4096)).await?;
    sub.subscribe(channel).await?;
    let publisher = Client::connect(addr, None).await?;
    // The publisher reads its results as they come, so that its own queue
    // never fills.
    let (mut tx, mut rx) = publisher.ws.split();
    let results = tokio::spawn(async move {
        let mut ok = 0u64;
        while ok < total {
            match tokio::time::timeout(WAIT, rx.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("\"publish-result\"") => {
                    if !t.as_str().contains("\"success\":true") {
                        bail!("publish failed: {}", clip(t.as_str()));
                    }
                    ok += 1;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => bail!("publisher: {e}"),
                Ok(None) => bail!("publisher closed"),
                Err(_) => bail!("no publish-result within {WAIT:?}"),
            }
        }
        anyhow::Ok(())
    });
    let pad = "c".repeat(1024);
    let publishing = {
        let channel = channel.to_owned();
        tokio::spawn(async move {
            let t0 = Instant::now();
            // Paced to the rate (a schedule, not a synchronisation).
            for i in 1..=total {
                let due = Duration::from_secs_f64(i as f64 / PUBLISH_RATE);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                let frame = json!({"type": "publish", "channel-id": channel,
                                   "data": {"n": i, "pad": pad}});
                tx.send(Message::text(frame.to_string())).await?;
            }
            anyhow::Ok(Instant::now())
        })
    };
    let t0 = Instant::now();
    let (mut received, mut last) = (0u64, 0u64);
    let mut newest_at = None;
    let mut closed = None;
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / READ_RATE));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Paced reads (the slow consumer), until the newest message or the end.
    while last < total && t0.elapsed() < WAIT {
        interval.tick().await;
        match sub.recv().await {
            Ok(m) if m["type"] == "channel-message" => {
                received += 1;
                last = m["data"]["n"].as_u64().unwrap_or(last);
                if last == total {
                    newest_at = Some(Instant::now());
                }
            }
            Ok(_) => {}
            Err(e) => {
                closed = Some(format!("{e:#}"));
                break;
            }
        }
    }
    let sent_last = publishing.await??;
    results.await??;
    let lag = newest_at.map(|at| ms(at.saturating_duration_since(sent_last)));
    let (_, body) = servers::http_get(addr, "/stats")
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let stats: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    Ok(json!({
        "channel": channel,
        "policy": if channel.starts_with("feed:") { "latest" } else { "close" },
        "published": total,
        "publish-per-sec": PUBLISH_RATE,
        "read-per-sec": READ_RATE,
        "received": received,
        "newest-received": last == total,
        "closed": closed,
        "conflated-total": stats["transport"]["conflated"],
        "newest-after-last-publish-ms": lag,
    }))
}
