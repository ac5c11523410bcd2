//! The scenarios, run against one server [`Target`]. Each returns a flat map
//! of numeric metrics (see `report` for their names) and is bounded: a fixed
//! number of messages per publisher, a setup deadline, a drain deadline, and
//! an outer timeout in `run_case`.

use crate::conn::{Conn, Event, Kind, Target};
use crate::loopback::pick;
use crate::plan::{ChurnSpec, PubSubSpec, RpcSpec};
use crate::procfs::{ProcUsage, Sampler};
use crate::stats::{now_us, payload, Latency, SeqCounts, SeqTracker, Stamp};
use anyhow::{anyhow, bail, Context};
use futures::FutureExt as _;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, timeout_at, Instant};

/// Settings shared by every scenario.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Client source addresses (127.0.0.2, ...); empty = kernel's choice.
    pub srcs: Vec<IpAddr>,
    /// Handshakes in flight at once while setting up.
    pub connect_concurrency: usize,
    /// How long to wait for the last deliveries after the last publish.
    pub drain: Duration,
    /// Bound on connecting and subscribing everyone.
    pub setup_timeout: Duration,
    /// The server process to measure, if known.
    pub server_pid: Option<u32>,
}

/// A scenario's numbers, by metric name.
pub type Metrics = BTreeMap<String, f64>;

/// What a measured process is to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The one server of a single-server run.
    Server,
    /// A sente-lite node of a cluster.
    Node,
    /// The cluster's redis-server.
    Redis,
}

/// A process whose CPU and memory a run reports, under `label`.
#[derive(Debug, Clone)]
pub struct Proc {
    pub label: String,
    pub role: Role,
    pub pid: u32,
}

/// Where a pub/sub run's clients go and which processes it measures:
/// subscriber `i` connects to `sub_targets[i % len]`, every publisher to
/// `pub_target`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub sub_targets: Vec<Target>,
    pub pub_target: Target,
    pub procs: Vec<Proc>,
}

impl Layout {
    /// One server: every client on `target`, `pid` measured as `server`.
    pub fn single(target: Target, pid: Option<u32>) -> Layout {
        Layout {
            sub_targets: vec![target],
            pub_target: target,
            procs: pid
                .map(|pid| Proc {
                    label: "server".into(),
                    role: Role::Server,
                    pid,
                })
                .into_iter()
                .collect(),
        }
    }

    fn sub_target(&self, i: usize) -> Target {
        self.sub_targets
            .get(i % self.sub_targets.len().max(1))
            .copied()
            .unwrap_or(self.pub_target)
    }
}

pub(crate) fn put(m: &mut Metrics, k: &str, v: impl Into<f64>) {
    m.insert(k.to_owned(), v.into());
}

pub(crate) fn put_latency(m: &mut Metrics, prefix: &str, l: &Latency) {
    let s = l.summary();
    put(m, &format!("{prefix}_count"), s.count as f64);
    put(m, &format!("{prefix}_p50_us"), s.p50_us as f64);
    put(m, &format!("{prefix}_p90_us"), s.p90_us as f64);
    put(m, &format!("{prefix}_p99_us"), s.p99_us as f64);
    put(m, &format!("{prefix}_max_us"), s.max_us as f64);
    put(m, &format!("{prefix}_mean_us"), s.mean_us);
}

fn put_counts(m: &mut Metrics, c: &SeqCounts) {
    put(m, "duplicates", c.duplicates as f64);
    put(m, "out_of_order", c.out_of_order as f64);
    put(m, "unexpected", c.unexpected as f64);
}

/// Server usage, and CPU seconds per million of `ops`.
fn put_server(m: &mut Metrics, u: Option<ProcUsage>, ops: u64, per: &str) {
    let Some(u) = u else { return };
    put(m, "server_cpu_seconds", u.cpu_seconds);
    put(m, "server_cpu_user_seconds", u.user_seconds);
    put(m, "server_cpu_sys_seconds", u.sys_seconds);
    put(m, "server_peak_rss_bytes", u.peak_rss_bytes as f64);
    put(m, "server_end_rss_bytes", u.end_rss_bytes as f64);
    put(m, "server_lifetime_hwm_bytes", u.lifetime_hwm_bytes as f64);
    if ops > 0 {
        let millions = ops as f64 / 1e6;
        put(
            m,
            &format!("server_cpu_s_per_million_{per}"),
            u.cpu_seconds / millions,
        );
        put(
            m,
            &format!("server_cpu_user_s_per_million_{per}"),
            u.user_seconds / millions,
        );
        put(
            m,
            &format!("server_cpu_sys_s_per_million_{per}"),
            u.sys_seconds / millions,
        );
    }
}

/// The usage of a layout's processes: for a single server the `server_*`
/// metrics of [`put_server`]; for a cluster each process's own
/// (`node1_cpu_seconds`, `redis_peak_rss_bytes`, ...), the sums per role
/// (`nodes_*`, `redis_*`), and as `server_*` the total of all of them (the
/// peak RSS total is the sum of each process's peak).
pub(crate) fn put_usage(m: &mut Metrics, usage: &[(Proc, ProcUsage)], ops: u64, per: &str) {
    if let [(p, u)] = usage {
        if p.role == Role::Server {
            put_server(m, Some(*u), ops, per);
            return;
        }
    }
    let per_million = |cpu: f64| (ops > 0).then(|| cpu / (ops as f64 / 1e6));
    let (mut total_cpu, mut total_peak) = (0.0, 0u64);
    let mut by_role: BTreeMap<&str, f64> = BTreeMap::new();
    for (p, u) in usage {
        put(m, &format!("{}_cpu_seconds", p.label), u.cpu_seconds);
        put(
            m,
            &format!("{}_peak_rss_bytes", p.label),
            u.peak_rss_bytes as f64,
        );
        if let Some(v) = per_million(u.cpu_seconds) {
            put(m, &format!("{}_cpu_s_per_million_{per}", p.label), v);
        }
        let role = match p.role {
            Role::Node => "nodes",
            Role::Redis => "redis",
            Role::Server => "servers",
        };
        *by_role.entry(role).or_default() += u.cpu_seconds;
        total_cpu += u.cpu_seconds;
        total_peak += u.peak_rss_bytes;
    }
    for (role, cpu) in by_role {
        if role != "redis" {
            put(m, &format!("{role}_cpu_seconds"), cpu);
        }
        if let Some(v) = per_million(cpu) {
            put(m, &format!("{role}_cpu_s_per_million_{per}"), v);
        }
    }
    put(m, "server_cpu_seconds", total_cpu);
    put(m, "server_peak_rss_bytes", total_peak as f64);
    if let Some(v) = per_million(total_cpu) {
        put(m, &format!("server_cpu_s_per_million_{per}"), v);
    }
}

/// One [`Sampler`] per process of a layout.
#[derive(Debug)]
pub(crate) struct Samplers(Vec<(Proc, Sampler)>);

impl Samplers {
    pub(crate) fn start(procs: &[Proc]) -> anyhow::Result<Samplers> {
        let mut v = Vec::with_capacity(procs.len());
        for p in procs {
            let s = Sampler::start(p.pid, Duration::from_millis(100))
                .with_context(|| format!("read the /proc entry of {} (pid {})", p.label, p.pid))?;
            v.push((p.clone(), s));
        }
        Ok(Samplers(v))
    }

    pub(crate) async fn finish(self) -> anyhow::Result<Vec<(Proc, ProcUsage)>> {
        let mut out = Vec::with_capacity(self.0.len());
        for (p, s) in self.0 {
            out.push((p, s.finish().await?));
        }
        Ok(out)
    }
}

fn start_sampler(opts: &RunOpts) -> anyhow::Result<Option<Sampler>> {
    opts.server_pid
        .map(|pid| Sampler::start(pid, Duration::from_millis(100)))
        .transpose()
        .context("read the server's /proc entry")
}

async fn finish_sampler(s: Option<Sampler>) -> anyhow::Result<Option<ProcUsage>> {
    match s {
        Some(s) => Ok(Some(s.finish().await?)),
        None => Ok(None),
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The start instant, once the starter sets it.
async fn start_time(start: &mut watch::Receiver<Option<Instant>>) -> Option<Instant> {
    start.wait_for(|s| s.is_some()).await.ok().and_then(|s| *s)
}

/// Connects and subscribes under the connection-concurrency limit.
async fn connect_sub(
    target: Target,
    src: Option<IpAddr>,
    name: String,
    channel: &str,
    worker: bool,
    sem: &Semaphore,
    deadline: Instant,
) -> anyhow::Result<Conn> {
    let _permit = sem.acquire().await?;
    let fut = async {
        let mut c = Conn::connect(target, src, &name).await?;
        if worker {
            c.subscribe_worker(channel).await?;
        } else {
            c.subscribe(channel).await?;
        }
        Ok::<_, crate::conn::ConnError>(c)
    };
    match timeout_at(deadline, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => bail!("connect + subscribe timed out"),
    }
}

/// Collects `n` setup results; returns (successes, failures, first error).
pub(crate) async fn collect_ready<T>(
    rx: &mut mpsc::Receiver<Result<T, String>>,
    n: usize,
    deadline: Instant,
) -> (Vec<T>, usize, Option<String>) {
    let (mut ok, mut failed, mut first) = (Vec::with_capacity(n), 0, None);
    while ok.len() + failed < n {
        match timeout_at(deadline + Duration::from_secs(1), rx.recv()).await {
            Ok(Some(Ok(v))) => ok.push(v),
            Ok(Some(Err(e))) => {
                failed += 1;
                first.get_or_insert(e);
            }
            Ok(None) | Err(_) => {
                failed = n - ok.len();
                first.get_or_insert_with(|| "setup did not finish in time".into());
            }
        }
    }
    (ok, failed, first)
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub(crate) struct SubOutcome {
    channel: usize,
    pub(crate) ready: bool,
    tracker: SeqTracker,
    latency: Latency,
    /// Latency per publisher, when the links count per publisher.
    pub(crate) latency_by_pub: BTreeMap<u32, Latency>,
    last_us: u64,
    undecodable: u64,
    pub(crate) error: Option<String>,
}

/// What one publisher (or RPC client) did.
#[derive(Debug, Default)]
pub(crate) struct PubOutcome {
    id: u32,
    channel: usize,
    pub(crate) sent: u64,
    pub(crate) rejected: u64,
    pub(crate) first_us: u64,
    pub(crate) last_us: u64,
    /// Rate-driven: the most a publish went out after its scheduled time.
    pub(crate) max_lag_us: u64,
    /// Publishes still awaiting their acknowledgement when it gave up.
    pub(crate) unacked: u64,
    pub(crate) error: Option<String>,
    // RPC clients only.
    tracker: SeqTracker,
    latency: Latency,
    server_errors: u64,
}

/// One subscriber of a pub/sub run: who it is and what it subscribes to.
#[derive(Debug)]
pub(crate) struct SubscriberPlan {
    pub(crate) target: Target,
    pub(crate) index: usize,
    pub(crate) src: Option<IpAddr>,
    pub(crate) channel: usize,
    pub(crate) chan_name: String,
    /// Messages per publisher (sizes its sequence tracker).
    pub(crate) capacity: u64,
    pub(crate) setup_deadline: Instant,
}

/// What every subscriber of a run shares: the connection limiter, the
/// setup report channel, the delivery counter and the stop flag.
#[derive(Debug, Clone)]
pub(crate) struct SubscriberLinks {
    pub(crate) sem: Arc<Semaphore>,
    pub(crate) ready: mpsc::Sender<Result<usize, String>>,
    pub(crate) received: Arc<AtomicU64>,
    /// Counts per publisher id, and latency kept per publisher; `None`:
    /// neither.
    pub(crate) by_publisher: Option<Arc<PerPublisher>>,
    /// Subscribers whose connection failed after they were ready.
    pub(crate) broken: Arc<AtomicU64>,
    pub(crate) stop: watch::Receiver<bool>,
}

/// New deliveries per publisher id, counted as they arrive (ids beyond
/// the arrays are not counted), and how many of them took longer than
/// `late_us` from publish to delivery.
#[derive(Debug)]
pub(crate) struct PerPublisher {
    pub(crate) received: Box<[AtomicU64]>,
    pub(crate) late: Box<[AtomicU64]>,
    pub(crate) late_us: u64,
}

impl PerPublisher {
    pub(crate) fn new(publishers: usize, late_us: u64) -> PerPublisher {
        let zeros = || (0..publishers).map(|_| AtomicU64::new(0)).collect();
        PerPublisher {
            received: zeros(),
            late: zeros(),
            late_us,
        }
    }

    fn count(&self, stamp: &Stamp, now_us: u64) {
        let Ok(p) = usize::try_from(stamp.p) else {
            return;
        };
        if let Some(n) = self.received.get(p) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if now_us.saturating_sub(stamp.t) > self.late_us {
            if let Some(n) = self.late.get(p) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pub(crate) async fn subscriber(plan: SubscriberPlan, links: SubscriberLinks) -> SubOutcome {
    let SubscriberPlan {
        target,
        index,
        src,
        channel,
        chan_name,
        capacity,
        setup_deadline,
    } = plan;
    let SubscriberLinks {
        sem,
        ready,
        received,
        by_publisher,
        broken,
        mut stop,
    } = links;
    let mut out = SubOutcome {
        channel,
        tracker: SeqTracker::new(capacity),
        ..SubOutcome::default()
    };
    let name = format!("sub-{index}");
    let mut conn =
        match connect_sub(target, src, name, &chan_name, false, &sem, setup_deadline).await {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(format!("{e:#}"))).await;
                out.error = Some(format!("{e:#}"));
                return out;
            }
        };
    out.ready = true;
    let _ = ready.send(Ok(channel)).await;
    drop(ready);
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            ev = conn.recv() => match ev {
                Ok(Event::Delivery(Some(stamp))) => {
                    let now = now_us();
                    out.latency.record_stamp(&stamp, now);
                    out.last_us = now;
                    if out.tracker.mark(&stamp) == crate::stats::Mark::New {
                        received.fetch_add(1, Ordering::Relaxed);
                        if let Some(by) = &by_publisher {
                            by.count(&stamp, now);
                            out.latency_by_pub.entry(stamp.p).or_default().record_stamp(&stamp, now);
                        }
                    }
                }
                Ok(Event::Delivery(None)) => out.undecodable += 1,
                Ok(Event::ServerError(e)) => {
                    out.error.get_or_insert(e);
                }
                Ok(_) => {}
                Err(e) => {
                    out.error = Some(e.to_string());
                    broken.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    out
}

/// Flat-out windows: publishes awaiting `publish-result` (sente-lite), or
/// PINGs awaiting PONG with one PING per `NATS_BATCH` publishes (NATS).
const SENTE_WINDOW: u64 = 256;
const NATS_BATCH: u64 = 64;
const NATS_WINDOW: u64 = 4;

/// Handles an event on a publisher connection; returns the change in
/// outstanding acknowledgements.
fn publisher_event(out: &mut PubOutcome, ev: Event) -> u64 {
    match ev {
        Event::PublishAck { ok } => {
            if !ok {
                out.rejected += 1;
            }
            1
        }
        Event::Pong => 1,
        Event::ServerError(e) => {
            out.server_errors += 1;
            out.error.get_or_insert(e);
            0
        }
        _ => 0,
    }
}

/// What one publisher or RPC client sends: `count` payloads of `size`
/// bytes at `rate` per second (0 = flat out), starting when the starter
/// says and giving up at `end_deadline`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendPlan {
    pub(crate) id: u32,
    pub(crate) rate: f64,
    pub(crate) count: u64,
    pub(crate) size: usize,
    pub(crate) end_deadline: Instant,
}

pub(crate) async fn publisher(
    mut conn: Conn,
    plan: SendPlan,
    channel: usize,
    chan_name: String,
    mut start: watch::Receiver<Option<Instant>>,
) -> PubOutcome {
    let SendPlan {
        id,
        rate,
        count,
        size,
        end_deadline,
    } = plan;
    let mut out = PubOutcome {
        id,
        channel,
        ..PubOutcome::default()
    };
    let Some(start_at) = start_time(&mut start).await else {
        out.error = Some("never started".into());
        return out;
    };
    let nats = conn.kind() == Kind::Nats;
    let mut outstanding = 0u64;
    let result: Result<(), crate::conn::ConnError> = async {
        for seq in 0..count {
            if rate > 0.0 {
                let due = start_at + Duration::from_secs_f64(seq as f64 / rate);
                loop {
                    tokio::select! {
                        biased;
                        _ = sleep_until(due) => break,
                        ev = conn.recv() => outstanding -= publisher_event(&mut out, ev?).min(outstanding),
                    }
                }
                // Behind schedule the wait above ends at once: still take
                // the acknowledgements already here, so they never pile up
                // in the server's queue for this connection.
                while !nats && outstanding > 0 {
                    match conn.recv().now_or_never() {
                        Some(ev) => outstanding -= publisher_event(&mut out, ev?).min(outstanding),
                        None => break,
                    }
                }
                let lag = Instant::now().saturating_duration_since(due);
                out.max_lag_us = out
                    .max_lag_us
                    .max(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX));
            } else {
                let window = if nats { NATS_WINDOW } else { SENTE_WINDOW };
                while outstanding >= window {
                    let ev = conn.recv().await?;
                    outstanding -= publisher_event(&mut out, ev).min(outstanding);
                }
            }
            if Instant::now() > end_deadline {
                break;
            }
            let t = now_us();
            if seq == 0 {
                out.first_us = t;
            }
            let body = payload(Stamp { p: id, s: seq, t }, size);
            conn.publish(&chan_name, &body).await?;
            out.sent += 1;
            out.last_us = t;
            if !nats {
                outstanding += 1;
            } else if rate == 0.0 && seq % NATS_BATCH == NATS_BATCH - 1 {
                conn.send_flush().await?;
                outstanding += 1;
            }
        }
        // Wait until the server has taken everything.
        if nats {
            conn.send_flush().await?;
            outstanding += 1;
        }
        while outstanding > 0 {
            match timeout_at(end_deadline, conn.recv()).await {
                Ok(ev) => outstanding -= publisher_event(&mut out, ev?).min(outstanding),
                Err(_) => break,
            }
        }
        Ok(())
    }
    .await;
    out.unacked = outstanding;
    if let Err(e) = result {
        out.error = Some(e.to_string());
    }
    out
}

/// Publish/subscribe (fan-out and many-channels).
pub async fn pubsub(target: Target, spec: &PubSubSpec, opts: &RunOpts) -> anyhow::Result<Metrics> {
    pubsub_on(&Layout::single(target, opts.server_pid), spec, opts).await
}

/// Publish/subscribe over a [`Layout`]: subscribers spread over its
/// subscriber targets, publishers on its publisher target, usage of each of
/// its processes (see [`put_usage`]).
pub async fn pubsub_on(
    layout: &Layout,
    spec: &PubSubSpec,
    opts: &RunOpts,
) -> anyhow::Result<Metrics> {
    let n_subs = spec.channels * spec.subscribers_per_channel;
    let n_pubs = spec.channels * spec.publishers_per_channel;
    let chan = |c: usize| format!("bench-ch{c}");
    let sem = Arc::new(Semaphore::new(opts.connect_concurrency.max(1)));
    let setup_deadline = Instant::now() + opts.setup_timeout;
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(n_subs.max(1));

    let links = SubscriberLinks {
        sem,
        ready: ready_tx,
        received: received.clone(),
        by_publisher: None,
        broken: Arc::new(AtomicU64::new(0)),
        stop: stop_rx,
    };
    let mut subs = Vec::with_capacity(n_subs);
    for i in 0..n_subs {
        let c = i / spec.subscribers_per_channel.max(1);
        let plan = SubscriberPlan {
            target: layout.sub_target(i),
            index: i,
            src: pick(&opts.srcs, i),
            channel: c,
            chan_name: chan(c),
            capacity: spec.messages_per_publisher,
            setup_deadline,
        };
        subs.push(tokio::spawn(subscriber(plan, links.clone())));
    }
    // Only the subscribers' clones of the ready sender are left: the
    // receiver sees the end once each has reported.
    drop(links);
    let (ready_channels, subs_failed, first_err) =
        collect_ready(&mut ready_rx, n_subs, setup_deadline).await;
    let subs_ok = ready_channels.len();
    let mut ready_per_channel = vec![0u64; spec.channels];
    for c in ready_channels {
        ready_per_channel[c] += 1;
    }

    // Publishers: connected before the clock starts.
    let mut pub_conns = Vec::with_capacity(n_pubs);
    for j in 0..n_pubs {
        let src = pick(&opts.srcs, n_subs + j);
        let c = timeout_at(
            setup_deadline + Duration::from_secs(5),
            Conn::connect(layout.pub_target, src, &format!("pub-{j}")),
        )
        .await
        .map_err(|_| anyhow!("publisher {j}: connect timed out"))?
        .with_context(|| format!("publisher {j}: connect"))?;
        pub_conns.push(c);
    }
    let per_pub_rate = spec.rate / n_pubs.max(1) as f64;
    let publish_secs = if per_pub_rate > 0.0 {
        spec.messages_per_publisher as f64 / per_pub_rate
    } else {
        // Flat out: allow 1 ms per message per publisher at worst.
        spec.messages_per_publisher as f64 / 1000.0
    };
    let publish_deadline = Instant::now() + Duration::from_secs_f64(publish_secs * 2.0 + 5.0);
    let (start_tx, start_rx) = watch::channel(None);
    let mut pubs = Vec::with_capacity(n_pubs);
    for (j, conn) in pub_conns.into_iter().enumerate() {
        let c = j / spec.publishers_per_channel.max(1);
        let plan = SendPlan {
            id: j as u32,
            rate: per_pub_rate,
            count: spec.messages_per_publisher,
            size: spec.payload_bytes,
            end_deadline: publish_deadline + opts.drain,
        };
        pubs.push(tokio::spawn(publisher(
            conn,
            plan,
            c,
            chan(c),
            start_rx.clone(),
        )));
    }

    let samplers = Samplers::start(&layout.procs)?;
    // The tool's own CPU, on the same cores as the servers.
    let tool = Sampler::start(std::process::id(), Duration::from_secs(1)).ok();
    let _ = start_tx.send(Some(Instant::now() + Duration::from_millis(10)));
    let mut outcomes = Vec::with_capacity(n_pubs);
    for p in pubs {
        outcomes.push(p.await?);
    }
    // Expected deliveries: every sent message to every ready subscriber of
    // its channel.
    let mut sent_per_channel = vec![0u64; spec.channels];
    for o in &outcomes {
        sent_per_channel[o.channel] += o.sent;
    }
    let expected: u64 = (0..spec.channels)
        .map(|c| sent_per_channel[c] * ready_per_channel[c])
        .sum();
    let drain_deadline = Instant::now() + opts.drain;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let usage = samplers.finish().await?;
    let tool = finish_sampler(tool).await.ok().flatten();
    let _ = stop_tx.send(true);

    let mut latency = Latency::new();
    let mut counts = SeqCounts::default();
    let (mut lost, mut last_us, mut undecodable, mut sub_errors) = (0u64, 0u64, 0u64, 0u64);
    let mut first_sub_err = None;
    for s in subs {
        let o = s.await?;
        if !o.ready {
            continue;
        }
        latency.merge(&o.latency);
        counts.add(&o.tracker.counts());
        last_us = last_us.max(o.last_us);
        undecodable += o.undecodable;
        if let Some(e) = o.error {
            sub_errors += 1;
            first_sub_err.get_or_insert(e);
        }
        for p in outcomes.iter().filter(|p| p.channel == o.channel) {
            lost += o.tracker.missing(p.id, p.sent);
        }
    }
    let sent: u64 = outcomes.iter().map(|o| o.sent).sum();
    let rejected: u64 = outcomes.iter().map(|o| o.rejected).sum();
    let first_us = outcomes
        .iter()
        .map(|o| o.first_us)
        .filter(|t| *t > 0)
        .min()
        .unwrap_or(0);
    let last_pub_us = outcomes.iter().map(|o| o.last_us).max().unwrap_or(0);
    let pub_errors: Vec<&String> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();

    let mut m = Metrics::new();
    put(&mut m, "subscribers", subs_ok as f64);
    put(&mut m, "connect_failures", subs_failed as f64);
    put(&mut m, "publishers", n_pubs as f64);
    put(&mut m, "channels", spec.channels as f64);
    put(&mut m, "published", sent as f64);
    put(&mut m, "publish_rejected", rejected as f64);
    put(&mut m, "publisher_errors", pub_errors.len() as f64);
    put(
        &mut m,
        "publish_unacked",
        outcomes.iter().map(|o| o.unacked).sum::<u64>() as f64,
    );
    if spec.rate > 0.0 {
        put(
            &mut m,
            "publisher_max_lag_us",
            outcomes.iter().map(|o| o.max_lag_us).max().unwrap_or(0) as f64,
        );
    }
    put(&mut m, "subscriber_errors", sub_errors as f64);
    put(&mut m, "expected", expected as f64);
    put(&mut m, "delivered", counts.unique as f64);
    put(&mut m, "lost", lost as f64);
    put(&mut m, "undecodable", undecodable as f64);
    put_counts(&mut m, &counts);
    if last_pub_us > first_us && sent > 1 {
        put(
            &mut m,
            "publish_rate",
            (sent - 1) as f64 / ((last_pub_us - first_us) as f64 / 1e6),
        );
    }
    if last_us > first_us {
        let secs = (last_us - first_us) as f64 / 1e6;
        put(&mut m, "duration_s", secs);
        put(&mut m, "delivered_per_sec", counts.unique as f64 / secs);
    }
    put_latency(&mut m, "latency", &latency);
    put_usage(&mut m, &usage, counts.unique, "deliveries");
    if let Some(t) = tool {
        put(&mut m, "tool_cpu_seconds", t.cpu_seconds);
    }
    if subs_ok == 0 {
        bail!(
            "no subscriber could connect and subscribe ({subs_failed} failed; first error: {})",
            first_err.unwrap_or_default()
        );
    }
    if let Some(e) = first_err {
        eprintln!("  note: {subs_failed} subscribers failed to set up; first error: {e}");
    }
    if let Some(e) = pub_errors.first() {
        eprintln!("  note: publisher error: {e}");
    }
    if let Some(e) = first_sub_err {
        eprintln!("  note: {sub_errors} subscribers saw an error; first: {e}");
    }
    Ok(m)
}

async fn rpc_worker(mut conn: Conn, mut stop: watch::Receiver<bool>) -> (u64, Option<String>) {
    let mut answered = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            ev = conn.recv() => match ev {
                Ok(Event::Call(call)) => {
                    if let Err(e) = conn.answer(call).await {
                        return (answered, Some(e.to_string()));
                    }
                    answered += 1;
                }
                Ok(_) => {}
                Err(e) => return (answered, Some(e.to_string())),
            }
        }
    }
    (answered, None)
}

async fn rpc_client(
    mut conn: Conn,
    plan: SendPlan,
    timeout_ms: u64,
    mut start: watch::Receiver<Option<Instant>>,
) -> PubOutcome {
    let SendPlan {
        id,
        rate,
        count,
        size,
        end_deadline,
    } = plan;
    let mut out = PubOutcome {
        id,
        tracker: SeqTracker::new(count),
        ..PubOutcome::default()
    };
    let Some(start_at) = start_time(&mut start).await else {
        out.error = Some("never started".into());
        return out;
    };
    let on_event = |out: &mut PubOutcome, ev: Event| match ev {
        Event::Reply { stamp, error } => {
            if error {
                out.server_errors += 1;
            }
            if let Some(st) = stamp {
                let now = now_us();
                if out.tracker.mark(&st) == crate::stats::Mark::New {
                    out.latency.record_stamp(&st, now);
                }
                out.last_us = now;
            }
        }
        Event::RequestAck { ok: false } => out.rejected += 1,
        Event::ServerError(e) => {
            out.server_errors += 1;
            out.error.get_or_insert(e);
        }
        _ => {}
    };
    let result: Result<(), crate::conn::ConnError> = async {
        for seq in 0..count {
            let due = if rate > 0.0 {
                start_at + Duration::from_secs_f64(seq as f64 / rate)
            } else {
                Instant::now()
            };
            loop {
                tokio::select! {
                    biased;
                    _ = sleep_until(due) => break,
                    ev = conn.recv() => on_event(&mut out, ev?),
                }
            }
            // Flat out: at most SENTE_WINDOW requests awaiting replies.
            while rate == 0.0 && out.sent - out.tracker.counts().unique >= SENTE_WINDOW {
                let ev = conn.recv().await?;
                on_event(&mut out, ev);
            }
            if Instant::now() > end_deadline {
                break;
            }
            let t = now_us();
            if seq == 0 {
                out.first_us = t;
            }
            let body = payload(Stamp { p: id, s: seq, t }, size);
            conn.request("bench-rpc", &body, seq, timeout_ms).await?;
            out.sent += 1;
        }
        while out.tracker.counts().unique + out.rejected < out.sent {
            match timeout_at(end_deadline, conn.recv()).await {
                Ok(ev) => on_event(&mut out, ev?),
                Err(_) => break,
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        out.error = Some(e.to_string());
    }
    out
}

/// RPC round trips: echo workers on `bench-rpc`, clients at a rate.
pub async fn rpc(target: Target, spec: &RpcSpec, opts: &RunOpts) -> anyhow::Result<Metrics> {
    let sem = Semaphore::new(opts.connect_concurrency.max(1));
    let setup_deadline = Instant::now() + opts.setup_timeout;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    for w in 0..spec.workers {
        let c = connect_sub(
            target,
            pick(&opts.srcs, w),
            format!("worker-{w}"),
            "bench-rpc",
            true,
            &sem,
            setup_deadline,
        )
        .await
        .with_context(|| format!("worker {w}"))?;
        workers.push(tokio::spawn(rpc_worker(c, stop_rx.clone())));
    }
    let mut clients = Vec::new();
    for i in 0..spec.clients {
        let mut c = timeout_at(
            setup_deadline,
            Conn::connect(
                target,
                pick(&opts.srcs, spec.workers + i),
                &format!("client-{i}"),
            ),
        )
        .await
        .map_err(|_| anyhow!("client {i}: connect timed out"))??;
        timeout_at(setup_deadline, c.prepare_requester())
            .await
            .map_err(|_| anyhow!("client {i}: inbox subscribe timed out"))??;
        clients.push(c);
    }
    let per_client = spec.rate / spec.clients.max(1) as f64;
    let secs = if per_client > 0.0 {
        spec.requests_per_client as f64 / per_client
    } else {
        spec.requests_per_client as f64 / 1000.0
    };
    let end = Instant::now() + Duration::from_secs_f64(secs * 2.0 + 5.0) + opts.drain;
    let timeout_ms = u64::try_from(opts.drain.as_millis())
        .unwrap_or(u64::MAX)
        .max(1000);
    let (start_tx, start_rx) = watch::channel(None);
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let plan = SendPlan {
            id: i as u32,
            rate: per_client,
            count: spec.requests_per_client,
            size: spec.payload_bytes,
            end_deadline: end,
        };
        tasks.push(tokio::spawn(rpc_client(
            c,
            plan,
            timeout_ms,
            start_rx.clone(),
        )));
    }
    let sampler = start_sampler(opts)?;
    let _ = start_tx.send(Some(Instant::now() + Duration::from_millis(10)));
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await?);
    }
    let usage = finish_sampler(sampler).await?;
    let _ = stop_tx.send(true);
    let mut answered = 0u64;
    let mut worker_errors = Vec::new();
    for w in workers {
        let (n, e) = w.await?;
        answered += n;
        worker_errors.extend(e);
    }

    let mut latency = Latency::new();
    let mut counts = SeqCounts::default();
    let (mut sent, mut lost, mut rejected, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let first_us = outs
        .iter()
        .map(|o| o.first_us)
        .filter(|t| *t > 0)
        .min()
        .unwrap_or(0);
    let last_us = outs.iter().map(|o| o.last_us).max().unwrap_or(0);
    let mut client_errors = Vec::new();
    for o in &outs {
        latency.merge(&o.latency);
        counts.add(&o.tracker.counts());
        sent += o.sent;
        lost += o.tracker.missing(o.id, o.sent);
        rejected += o.rejected;
        errors += o.server_errors;
        client_errors.extend(o.error.clone());
    }
    let mut m = Metrics::new();
    put(&mut m, "workers", spec.workers as f64);
    put(&mut m, "clients", spec.clients as f64);
    put(&mut m, "requests", sent as f64);
    put(&mut m, "answered_by_workers", answered as f64);
    put(&mut m, "replies", counts.unique as f64);
    put(&mut m, "lost", lost as f64);
    put(&mut m, "rejected", rejected as f64);
    put(&mut m, "server_errors", errors as f64);
    put_counts(&mut m, &counts);
    if last_us > first_us {
        let secs = (last_us - first_us) as f64 / 1e6;
        put(&mut m, "duration_s", secs);
        put(&mut m, "round_trips_per_sec", counts.unique as f64 / secs);
    }
    put_latency(&mut m, "latency", &latency);
    put_server(&mut m, usage, counts.unique, "round_trips");
    if let Some(e) = client_errors.first().or(worker_errors.first()) {
        eprintln!("  note: RPC error: {e}");
    }
    Ok(m)
}

/// Churn: connect, subscribe, disconnect, `count` times at `rate` per second.
pub async fn churn(target: Target, spec: &ChurnSpec, opts: &RunOpts) -> anyhow::Result<Metrics> {
    let sem = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let (tx, mut rx) = mpsc::channel::<Result<u64, String>>(spec.concurrency.max(1) * 2);
    let sampler = start_sampler(opts)?;
    let start = Instant::now();
    let bound = start
        + Duration::from_secs_f64(spec.count as f64 / spec.rate * 2.0 + 10.0)
        + opts.setup_timeout;
    let mut late = 0u64;
    let srcs = opts.srcs.clone();
    let count = spec.count;
    let rate = spec.rate;
    let spawner = tokio::spawn({
        let sem = sem.clone();
        async move {
            for i in 0..count {
                sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
                let permit = match sem.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        late += 1;
                        match timeout_at(bound, sem.clone().acquire_owned()).await {
                            Ok(Ok(p)) => p,
                            _ => break,
                        }
                    }
                };
                let tx = tx.clone();
                let src = pick(&srcs, i as usize);
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let r = timeout_at(bound, async {
                        let mut c = Conn::connect(target, src, &format!("churn-{i}")).await?;
                        c.subscribe("bench-churn").await?;
                        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let _ = tokio::time::timeout(Duration::from_secs(2), c.close()).await;
                        Ok::<_, crate::conn::ConnError>(us)
                    })
                    .await;
                    let r = match r {
                        Ok(Ok(us)) => Ok(us),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("timed out".into()),
                    };
                    let _ = tx.send(r).await;
                    drop(permit);
                });
            }
            late
        }
    });
    let mut latency = Latency::new();
    let (mut ok, mut failed, mut first_err) = (0u64, 0u64, None);
    while ok + failed < count {
        match timeout_at(bound + Duration::from_secs(1), rx.recv()).await {
            Ok(Some(Ok(us))) => {
                ok += 1;
                latency.record(us);
            }
            Ok(Some(Err(e))) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
            Ok(None) | Err(_) => {
                failed += count - ok - failed;
                first_err.get_or_insert_with(|| "cycles did not finish in time".into());
            }
        }
    }
    let late = spawner.await.unwrap_or(0);
    let secs = start.elapsed().as_secs_f64();
    let usage = finish_sampler(sampler).await?;
    let mut m = Metrics::new();
    put(&mut m, "cycles", ok as f64);
    put(&mut m, "failures", failed as f64);
    put(&mut m, "started_late", late as f64);
    put(&mut m, "duration_s", secs);
    put(&mut m, "cycles_per_sec", ok as f64 / secs);
    put_latency(&mut m, "connect_subscribe", &latency);
    put_server(&mut m, usage, ok, "cycles");
    if let Some(e) = first_err {
        eprintln!("  note: {failed} churn cycles failed; first error: {e}");
    }
    Ok(m)
}
