//! The cluster scenarios: several sente-lite nodes on one Redis.
//!
//! [`Cluster::start`] starts a `redis-server` of its own (a free port of
//! 127.0.0.1, no persistence), then the nodes, each the release sente-lite
//! binary on its own free port with `broker.kind = redis`, its own node id
//! (`bench-<n>-node<i>`) and a key prefix of the case, and waits until every
//! node's `/health` is 200 and lists every node. Every process is stopped by
//! [`Cluster::stop`] and, on any early return or timeout, killed when the
//! cluster drops.
//!
//! - [`cluster_case`]: a fan-out over the cluster: subscribers spread
//!   round-robin over the nodes, one publisher on the first node, measured
//!   like the one-node fan-out plus the CPU and memory of each node and of
//!   redis-server.
//! - [`max_rate`]: the most publishes per second one channel sustains
//!   through Redis: one cluster, a few subscribers per node, the publish
//!   rate stepped up (doubled until a step fails, then the gap halved) within
//!   a time budget. A step passes when every publish went out on schedule
//!   (at most `max_lag_ms` late) and was acknowledged, every subscriber
//!   received every message within `drain_secs` of the step's end, and at
//!   least 99 % of the deliveries took at most `max_p99_ms` (a backlog that
//!   grows through the step shows as latency growing with it).

use crate::conn::{Conn, Kind, Target};
use crate::loopback::pick;
use crate::plan::{ClusterSpec, MaxRateSpec};
use crate::scenarios::{
    collect_ready, publisher, pubsub_on, put, put_latency, put_usage, subscriber, Layout, Metrics,
    PerPublisher, Proc, Role, RunOpts, Samplers, SendPlan, SubscriberLinks, SubscriberPlan,
};
use crate::servers::{self, Redis, Server};
use crate::stats::Latency;
use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{timeout_at, Instant};

/// How the cluster's processes are started.
#[derive(Debug, Clone)]
pub struct ClusterCfg {
    pub sente_bin: PathBuf,
    /// Extra arguments of every node (as for the single server).
    pub sente_args: Vec<String>,
    pub redis_bin: PathBuf,
    /// `broker.node-ttl-ms` of the nodes: they refresh their liveness every
    /// third of it, so the wait for every node to see the others is short.
    pub node_ttl_ms: u64,
}

/// How long every node may take to be healthy and see every other node.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);

/// A redis-server and sente-lite nodes on it.
#[derive(Debug, Default)]
pub struct Cluster {
    redis: Option<Redis>,
    nodes: Vec<Server>,
}

impl Cluster {
    /// Starts redis-server and `nodes` nodes (see the module doc); `n`
    /// numbers the case (log names, node ids, key prefix).
    pub async fn start(cfg: &ClusterCfg, nodes: usize, n: usize) -> anyhow::Result<Cluster> {
        let mut cluster = Cluster::default();
        match cluster.start_all(cfg, nodes, n).await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.stop().await;
                Err(e)
            }
        }
    }

    async fn start_all(&mut self, cfg: &ClusterCfg, nodes: usize, n: usize) -> anyhow::Result<()> {
        let redis = servers::start_redis(&cfg.redis_bin, n).await?;
        let url = redis.url();
        eprintln!(
            "   redis-server pid {} on 127.0.0.1:{} (log {})",
            redis.pid,
            redis.port,
            redis.log.display()
        );
        self.redis = Some(redis);
        let ids: Vec<String> = (1..=nodes).map(|i| format!("bench-{n}-node{i}")).collect();
        for id in &ids {
            let envs = [
                ("SENTE_LITE_BROKER_KIND", "redis".to_owned()),
                ("SENTE_LITE_BROKER_REDIS_URL", url.clone()),
                ("SENTE_LITE_BROKER_KEY_PREFIX", format!("bench-{n}")),
                ("SENTE_LITE_BROKER_NODE_TTL_MS", cfg.node_ttl_ms.to_string()),
                ("SENTE_LITE_NODE_ID", id.clone()),
            ];
            let node = servers::start_sente_as(&cfg.sente_bin, &cfg.sente_args, id, &envs)
                .await
                .with_context(|| format!("start node {id}"))?;
            eprintln!(
                "   node {id} pid {} on {} (log {})",
                node.pid,
                node.target.addr,
                node.log.display()
            );
            self.nodes.push(node);
        }
        for node in &self.nodes {
            wait_sees(node, &ids).await?;
        }
        Ok(())
    }

    /// The nodes' WebSocket targets, first node first.
    pub fn targets(&self) -> Vec<Target> {
        self.nodes.iter().map(|n| n.target).collect()
    }

    /// The processes to measure: `node1`, `node2`, ..., then `redis`.
    pub fn procs(&self) -> Vec<Proc> {
        let mut v: Vec<Proc> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Proc {
                label: format!("node{}", i + 1),
                role: Role::Node,
                pid: n.pid,
            })
            .collect();
        v.extend(self.redis.as_ref().map(|r| Proc {
            label: "redis".into(),
            role: Role::Redis,
            pid: r.pid,
        }));
        v
    }

    /// Subscribers round-robin over the nodes, publishers on the first.
    pub fn layout(&self) -> anyhow::Result<Layout> {
        let targets = self.targets();
        let first = *targets.first().context("a cluster of no node")?;
        Ok(Layout {
            sub_targets: targets,
            pub_target: first,
            procs: self.procs(),
        })
    }

    /// Stops the nodes, then redis-server.
    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
        if let Some(r) = self.redis {
            r.stop().await;
        }
    }
}

/// Waits until `node`'s `/health` is 200 with a connected Redis broker that
/// lists exactly the nodes `ids`.
async fn wait_sees(node: &Server, ids: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        let last = match servers::http_get(node.target.addr, "/health").await {
            Ok((status, body)) => {
                let mut want = ids.to_vec();
                want.sort_unstable();
                if status == 200 && health_nodes(&body) == Some(want) {
                    return Ok(());
                }
                format!("status {status}, body {body}")
            }
            Err(e) => e,
        };
        if Instant::now() > deadline {
            bail!(
                "node on {} did not report /health 200 with the nodes {ids:?} within {} s \
                 (last: {last}); log {}",
                node.target.addr,
                HEALTH_TIMEOUT.as_secs(),
                node.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `broker.nodes` of a `/health` body, sorted, when its broker is Redis.
fn health_nodes(body: &str) -> Option<Vec<String>> {
    let v: Value = serde_json::from_str(body).ok()?;
    let b = &v["broker"];
    if b["kind"] != "redis" {
        return None;
    }
    let mut nodes: Vec<String> = b["nodes"]
        .as_array()?
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    nodes.sort_unstable();
    Some(nodes)
}

/// A cluster fan-out case (see the module doc).
pub async fn cluster_case(
    spec: &ClusterSpec,
    cfg: &ClusterCfg,
    opts: &RunOpts,
    n: usize,
) -> anyhow::Result<Metrics> {
    let cluster = Cluster::start(cfg, spec.nodes, n).await?;
    let r = async {
        let layout = cluster.layout()?;
        let mut m = pubsub_on(&layout, &spec.pubsub(), opts).await?;
        put(&mut m, "nodes", spec.nodes as f64);
        Ok(m)
    }
    .await;
    cluster.stop().await;
    r
}

/// What one step of the max-rate search measured.
#[derive(Debug, Default, Clone)]
struct Step {
    rate: f64,
    /// Messages to send, over all publishers.
    count: u64,
    sent: u64,
    rejected: u64,
    unacked: u64,
    max_lag_us: u64,
    publish_rate: f64,
    expected: u64,
    delivered: u64,
    /// Deliveries slower than `max_p99_ms`.
    late: u64,
    /// Why it failed, as judged when it ended (`None`: passed).
    verdict: Option<String>,
    error: Option<String>,
    secs: f64,
    usage: Vec<(Proc, crate::procfs::ProcUsage)>,
}

impl Step {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    /// Why the step failed, or `None` when it passed.
    fn failure(&self, spec: &MaxRateSpec, broken: u64) -> Option<String> {
        if broken > 0 {
            return Some(format!("{broken} subscribers lost their connection"));
        }
        if let Some(e) = &self.error {
            return Some(format!("publisher error: {e}"));
        }
        if self.sent < self.count {
            return Some(format!(
                "the publisher sent {} of {} in time",
                self.sent, self.count
            ));
        }
        if self.max_lag_us as f64 > spec.max_lag_ms * 1e3 {
            return Some(format!(
                "the publisher fell {:.0} ms behind schedule",
                self.max_lag_us as f64 / 1e3
            ));
        }
        if self.rejected > 0 || self.unacked > 0 {
            return Some(format!(
                "{} publishes refused, {} unacknowledged",
                self.rejected, self.unacked
            ));
        }
        if self.lost() > 0 {
            return Some(format!(
                "{} of {} deliveries missing",
                self.lost(),
                self.expected
            ));
        }
        if self.late * 100 > self.expected {
            return Some(format!(
                "p99 publish→deliver over {:.0} ms ({} of {} deliveries slower)",
                spec.max_p99_ms, self.late, self.expected
            ));
        }
        None
    }
}

/// The rate of the next step: doubling from the start while every step
/// passed, then halfway between the highest passed and the lowest failed
/// rate (rounded to 10/s), `None` when the search is over.
fn next_rate(
    spec: &MaxRateSpec,
    passed: Option<f64>,
    failed: Option<f64>,
    refined: usize,
) -> Option<f64> {
    match (passed, failed) {
        (None, None) => Some(spec.start_rate),
        (Some(p), None) if p >= spec.limit_rate => None,
        (Some(p), None) => Some((p * 2.0).min(spec.limit_rate)),
        (p, Some(f)) if refined < spec.refine_steps => {
            let lo = p.unwrap_or(0.0);
            let mid = ((lo + f) / 2.0 / 10.0).round() * 10.0;
            (mid > lo && mid < f && mid >= 10.0).then_some(mid)
        }
        _ => None,
    }
}

/// The max-rate search (see the module doc).
pub async fn max_rate(
    spec: &MaxRateSpec,
    cfg: &ClusterCfg,
    opts: &RunOpts,
    n: usize,
) -> anyhow::Result<Metrics> {
    let t0 = Instant::now();
    let cluster = Cluster::start(cfg, spec.nodes, n).await?;
    let r = async {
        let layout = cluster.layout()?;
        search(spec, &layout, opts, t0).await
    }
    .await;
    cluster.stop().await;
    r
}

/// Most steps a search can take (doublings from 1/s to the limit and the
/// refinements are far fewer).
const MAX_STEPS: usize = 40;

async fn search(
    spec: &MaxRateSpec,
    layout: &Layout,
    opts: &RunOpts,
    t0: Instant,
) -> anyhow::Result<Metrics> {
    let budget_end = t0 + Duration::from_secs_f64(spec.budget_secs);
    let n_subs = spec.nodes * spec.subscribers_per_node;
    let pubs = spec.publishers.max(1);
    let capacity = (spec.limit_rate * spec.step_secs / pubs as f64).ceil() as u64 + 1;
    let chan = "bench-max".to_owned();
    let setup_deadline = Instant::now() + opts.setup_timeout;
    let received = Arc::new(AtomicU64::new(0));
    let late_us = (spec.max_p99_ms * 1e3) as u64;
    let by_publisher = Arc::new(PerPublisher::new(MAX_STEPS * pubs, late_us));
    let broken = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(n_subs.max(1));
    let links = SubscriberLinks {
        sem: Arc::new(Semaphore::new(opts.connect_concurrency.max(1))),
        ready: ready_tx,
        received: received.clone(),
        by_publisher: Some(by_publisher.clone()),
        broken: broken.clone(),
        stop: stop_rx,
    };
    let mut subs = Vec::with_capacity(n_subs);
    for i in 0..n_subs {
        let plan = SubscriberPlan {
            target: layout.sub_targets[i % layout.sub_targets.len().max(1)],
            index: i,
            src: pick(&opts.srcs, i),
            channel: 0,
            chan_name: chan.clone(),
            capacity,
            setup_deadline,
        };
        subs.push(tokio::spawn(subscriber(plan, links.clone())));
    }
    drop(links);
    let (ready, failed, first_err) = collect_ready(&mut ready_rx, n_subs, setup_deadline).await;
    if failed > 0 {
        let _ = stop_tx.send(true);
        bail!(
            "{failed} of {n_subs} subscribers could not connect and subscribe: {}",
            first_err.unwrap_or_default()
        );
    }
    let ready = ready.len() as u64;

    let ctx = StepCtx {
        spec,
        layout,
        opts,
        chan: &chan,
        ready,
        by_publisher: &by_publisher,
    };
    let drain = Duration::from_secs_f64(spec.drain_secs);
    let mut steps: Vec<Step> = Vec::new();
    let (mut passed, mut failed_at, mut refined) = (None::<f64>, None::<f64>, 0usize);
    let mut stopped_by = "search complete";
    while let Some(rate) = next_rate(spec, passed, failed_at, refined) {
        if steps.len() >= MAX_STEPS {
            stopped_by = "step limit";
            break;
        }
        // A failing step may take 1.25× its time, then its drain.
        let worst = Duration::from_secs_f64(spec.step_secs * 1.25 + 1.0) + drain;
        if Instant::now() + worst > budget_end {
            stopped_by = "time budget";
            break;
        }
        if failed_at.is_some() {
            refined += 1;
        }
        let id = steps.len();
        let mut step = run_step(ctx, id, rate).await?;
        let fail = step.failure(spec, broken.load(Ordering::Relaxed));
        step.verdict.clone_from(&fail);
        eprintln!(
            "   step {id}: {rate:.0}/s: sent {}, lost {}, publisher lag {:.1} ms: {}",
            step.sent,
            step.lost(),
            step.max_lag_us as f64 / 1e3,
            fail.as_deref().unwrap_or("passed")
        );
        match fail {
            None => passed = Some(passed.map_or(rate, |p: f64| p.max(rate))),
            Some(_) => failed_at = Some(failed_at.map_or(rate, |f: f64| f.min(rate))),
        }
        steps.push(step);
        if broken.load(Ordering::Relaxed) > 0 {
            stopped_by = "a subscriber connection failed";
            break;
        }
        if fail.is_some() {
            // Let a failed step's backlog clear before the next one (its
            // late deliveries count for it, not for the next).
            settle(&received, Duration::from_secs(3)).await;
        }
    }
    let _ = stop_tx.send(true);
    let mut latency: Vec<Latency> = (0..steps.len()).map(|_| Latency::new()).collect();
    let mut sub_errors = 0u64;
    for s in subs {
        let o = s.await?;
        sub_errors += u64::from(o.error.is_some());
        for (p, l) in &o.latency_by_pub {
            // Publisher ids of step i are i * pubs .. (i + 1) * pubs.
            let step = usize::try_from(*p).ok().map(|p| p / pubs);
            if let Some(mine) = step.and_then(|i| latency.get_mut(i)) {
                mine.merge(l);
            }
        }
    }

    let mut m = Metrics::new();
    put(&mut m, "nodes", spec.nodes as f64);
    put(&mut m, "subscribers", ready as f64);
    put(&mut m, "publishers", pubs as f64);
    put(&mut m, "subscriber_errors", sub_errors as f64);
    put(&mut m, "steps", steps.len() as f64);
    put(&mut m, "search_s", t0.elapsed().as_secs_f64());
    put(
        &mut m,
        "stopped_by_budget",
        f64::from(u8::from(stopped_by == "time budget")),
    );
    let mut best = None::<&Step>;
    for (i, (st, lat)) in steps.iter().zip(&latency).enumerate() {
        let k = |name: &str| format!("step{i}_{name}");
        let ok = st.verdict.is_none();
        put(&mut m, &k("rate"), st.rate);
        put(&mut m, &k("ok"), f64::from(u8::from(ok)));
        put(&mut m, &k("published"), st.sent as f64);
        put(&mut m, &k("expected"), st.expected as f64);
        put(&mut m, &k("delivered"), st.delivered as f64);
        put(&mut m, &k("lost"), st.lost() as f64);
        put(&mut m, &k("late"), st.late as f64);
        put(&mut m, &k("publish_rate"), st.publish_rate);
        put(&mut m, &k("publisher_max_lag_us"), st.max_lag_us as f64);
        put(&mut m, &k("unacked"), st.unacked as f64);
        put_latency(&mut m, &k("latency"), lat);
        let mut usage = Metrics::new();
        put_usage(&mut usage, &st.usage, st.delivered, "deliveries");
        for (key, v) in usage {
            put(&mut m, &k(&key), v);
        }
        // Share of one core each process used during the step.
        for (p, u) in &st.usage {
            if st.secs > 0.0 {
                put(
                    &mut m,
                    &k(&format!("{}_cpu_util", p.label)),
                    u.cpu_seconds / st.secs,
                );
            }
        }
        if ok && best.is_none_or(|b| st.rate > b.rate) {
            best = Some(st);
        }
    }
    if let Some(b) = best {
        put(&mut m, "max_sustained_rate", b.rate);
        put(
            &mut m,
            "max_sustained_deliveries_per_sec",
            b.rate * ready as f64,
        );
    }
    if let Some(f) = steps
        .iter()
        .filter(|s| s.verdict.is_some())
        .map(|s| s.rate)
        .reduce(f64::min)
    {
        put(&mut m, "first_failed_rate", f);
    }
    eprintln!(
        "   max sustained: {} ({stopped_by})",
        best.map_or("none".to_owned(), |b| format!("{:.0}/s", b.rate))
    );
    Ok(m)
}

/// Waits until `received` has not moved for 200 ms, at most `limit`.
async fn settle(received: &AtomicU64, limit: Duration) {
    let end = Instant::now() + limit;
    let mut last = received.load(Ordering::Relaxed);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = received.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

/// What every step of a search shares.
#[derive(Debug, Clone, Copy)]
struct StepCtx<'a> {
    spec: &'a MaxRateSpec,
    layout: &'a Layout,
    opts: &'a RunOpts,
    chan: &'a str,
    /// Subscribers ready on the channel.
    ready: u64,
    /// Counts per publisher id (`step * publishers + j`).
    by_publisher: &'a PerPublisher,
}

/// Step `step`: fresh publishers (round-robin over the nodes from the
/// first) send `rate × step_secs` messages at `rate` together; then waits
/// until each of the ready subscribers has them all, at most `drain_secs`.
async fn run_step(ctx: StepCtx<'_>, step: usize, rate: f64) -> anyhow::Result<Step> {
    let StepCtx {
        spec,
        layout,
        opts,
        chan,
        ready,
        by_publisher,
    } = ctx;
    let pubs = spec.publishers.max(1);
    let per_pub = ((rate * spec.step_secs / pubs as f64).round() as u64).max(1);
    let start = Instant::now() + Duration::from_millis(50);
    let end_deadline = start + Duration::from_secs_f64(spec.step_secs * 1.25 + 1.0);
    let (start_tx, start_rx) = watch::channel(None);
    let mut tasks = Vec::with_capacity(pubs);
    for j in 0..pubs {
        let id = step * pubs + j;
        let target = layout.sub_targets[j % layout.sub_targets.len().max(1)];
        let conn = timeout_at(
            Instant::now() + Duration::from_secs(5),
            Conn::connect(target, pick(&opts.srcs, id), &format!("pub-{id}")),
        )
        .await
        .map_err(|_| anyhow!("step publisher {id}: connect timed out"))?
        .with_context(|| format!("step publisher {id}: connect"))?;
        debug_assert_eq!(conn.kind(), Kind::Sente);
        let plan = SendPlan {
            id: u32::try_from(id)?,
            rate: rate / pubs as f64,
            count: per_pub,
            size: spec.payload_bytes,
            end_deadline,
        };
        tasks.push(tokio::spawn(publisher(
            conn,
            plan,
            0,
            chan.to_owned(),
            start_rx.clone(),
        )));
    }
    let samplers = Samplers::start(&layout.procs)?;
    let _ = start_tx.send(Some(start));
    let mut outs = Vec::with_capacity(pubs);
    for t in tasks {
        outs.push(t.await?);
    }
    let sent: u64 = outs.iter().map(|o| o.sent).sum();
    let expected = sent * ready;
    let ids = step * pubs..(step + 1) * pubs;
    let sum = |v: &[AtomicU64]| -> u64 {
        v.get(ids.clone())
            .map_or(0, |v| v.iter().map(|n| n.load(Ordering::Relaxed)).sum())
    };
    let drain_end = Instant::now() + Duration::from_secs_f64(spec.drain_secs);
    while sum(&by_publisher.received) < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered = sum(&by_publisher.received);
    let late = sum(&by_publisher.late);
    let secs = start.elapsed().as_secs_f64();
    let usage = samplers.finish().await?;
    let first = outs.iter().map(|o| o.first_us).filter(|t| *t > 0).min();
    let last = outs.iter().map(|o| o.last_us).max();
    let publish_rate = match (first, last) {
        (Some(f), Some(l)) if l > f && sent > 1 => (sent - 1) as f64 / ((l - f) as f64 / 1e6),
        _ => 0.0,
    };
    Ok(Step {
        rate,
        count: per_pub * pubs as u64,
        sent,
        rejected: outs.iter().map(|o| o.rejected).sum(),
        unacked: outs.iter().map(|o| o.unacked).sum(),
        max_lag_us: outs.iter().map(|o| o.max_lag_us).max().unwrap_or(0),
        publish_rate,
        expected,
        delivered,
        late,
        verdict: None,
        error: outs.iter().find_map(|o| o.error.clone()),
        secs,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MaxRateSpec {
        MaxRateSpec {
            nodes: 3,
            subscribers_per_node: 10,
            publishers: 1,
            start_rate: 500.0,
            limit_rate: 64_000.0,
            step_secs: 3.0,
            refine_steps: 2,
            budget_secs: 60.0,
            drain_secs: 1.5,
            max_lag_ms: 200.0,
            max_p99_ms: 100.0,
            payload_bytes: 100,
        }
    }

    #[test]
    fn rates_double_then_halve_the_gap() {
        let s = spec();
        assert_eq!(next_rate(&s, None, None, 0), Some(500.0));
        assert_eq!(next_rate(&s, Some(500.0), None, 0), Some(1000.0));
        assert_eq!(next_rate(&s, Some(4000.0), Some(8000.0), 0), Some(6000.0));
        assert_eq!(next_rate(&s, Some(6000.0), Some(8000.0), 1), Some(7000.0));
        assert_eq!(next_rate(&s, Some(6000.0), Some(8000.0), 2), None);
        // The first step failed: halfway down to 0.
        assert_eq!(next_rate(&s, None, Some(500.0), 0), Some(250.0));
        // The limit passed: done.
        assert_eq!(next_rate(&s, Some(64_000.0), None, 0), None);
        assert_eq!(next_rate(&s, Some(40_000.0), None, 0), Some(64_000.0));
    }

    #[test]
    fn a_step_passes_only_on_time_acknowledged_and_complete() {
        let s = spec();
        let good = Step {
            rate: 1000.0,
            count: 3000,
            sent: 3000,
            max_lag_us: 5_000,
            expected: 90_000,
            delivered: 90_000,
            ..Step::default()
        };
        assert_eq!(good.failure(&s, 0), None);
        assert!(good.failure(&s, 1).is_some());
        let late = Step {
            max_lag_us: 250_000,
            ..good.clone()
        };
        assert!(late.failure(&s, 0).unwrap_or_default().contains("behind"));
        let short = Step {
            sent: 2000,
            ..good.clone()
        };
        assert!(short.failure(&s, 0).is_some());
        let lossy = Step {
            delivered: 89_999,
            ..good.clone()
        };
        assert_eq!(lossy.lost(), 1);
        assert!(lossy.failure(&s, 0).unwrap_or_default().contains("missing"));
        let unacked = Step {
            unacked: 3,
            ..good.clone()
        };
        assert!(unacked.failure(&s, 0).is_some());
        // 1 % slower than the p99 bound still passes, more does not.
        let slow = Step {
            late: 900,
            ..good.clone()
        };
        assert_eq!(slow.failure(&s, 0), None);
        let slower = Step {
            late: 901,
            ..good.clone()
        };
        assert!(slower.failure(&s, 0).unwrap_or_default().contains("p99"));
    }

    #[test]
    fn health_lists_the_redis_nodes() {
        let body = r#"{"status":"healthy","broker":{"kind":"redis","healthy":true,
            "state":"connected","node-id":"b","nodes":["b","a","c"]}}"#;
        assert_eq!(
            health_nodes(body),
            Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
        );
        let local = r#"{"status":"healthy","broker":{"kind":"local","nodes":[]}}"#;
        assert_eq!(health_nodes(local), None);
        assert_eq!(health_nodes("not json"), None);
    }
}
