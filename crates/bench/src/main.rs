//! `sente-lite-bench`: the end-to-end load tool.
//!
//! It drives a running server over real WebSocket connections on loopback
//! and reports delivered messages per second, publish-to-deliver latency
//! (p50/p90/p99/max from an HDR histogram, timestamps carried in the
//! payload), messages lost or duplicated (per-publisher sequence numbers in
//! the payload), and the server's CPU seconds and peak RSS from
//! `/proc/<pid>`. The same scenarios run against sente-lite (its JSON
//! protocol, typed by `sente-lite-protocol`) and against NATS's WebSocket
//! listener (NATS's own text protocol), so the two can be compared in one
//! run.
//!
//! Scenarios (see [`plan`]): `fanout` (N subscribers on one channel),
//! `channels` (C channels x M subscribers), `rpc` (echo workers and
//! requesting clients), `idle` (K idle subscribed connections, spread over
//! worker processes that are this binary re-executed as `idle-part`),
//! `churn` (connect-subscribe-disconnect at a rate), and, sente-lite only,
//! `cluster` (three nodes on a redis-server of the run's own, next to one
//! node at the same rates) and `cluster-max` (the most publishes per second
//! one channel sustains through Redis); see [`cluster`].
//!
//! Subcommands:
//! - `run --server sente|nats [--addr HOST:PORT [--server-pid PID]]`: one
//!   server; without `--addr` the tool starts it itself.
//! - `compare --sente-bin PATH`: starts sente-lite and `nats-server` (fresh
//!   for each case), runs every case against both, reports ratios.
//! - `delivery --sente-bin PATH`: recovery, presence, `rpc-dispatch` and
//!   conflation, with both brokers ([`delivery`]).
//!
//! Every run is bounded in messages and time and stops by itself; every
//! address is checked to be loopback ([`loopback`]). Module map: [`conn`]
//! (one client connection, both protocols), [`nats`] (NATS parser),
//! [`stats`] (latency and loss accounting), [`procfs`] (server usage),
//! [`servers`] (starting servers), [`scenarios`], [`idle`] and [`cluster`]
//! (the runs), [`report`] (JSON and summary).

mod cluster;
mod conn;
mod delivery;
mod idle;
mod loopback;
mod nats;
mod plan;
mod procfs;
mod report;
mod scenarios;
mod servers;
mod stats;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use conn::{Kind, Target};
use plan::{Case, CaseSpec, Scenario, Size, Sizes};
use report::{Report, RunResult};
use scenarios::RunOpts;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "sente-lite-bench",
    version,
    about = "End-to-end load tool for sente-lite, with NATS as the peer"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the scenarios against one server (started by the tool unless
    /// --addr is given).
    Run(RunArgs),
    /// Start sente-lite and nats-server on free loopback ports, run the
    /// scenarios against both, and report both result sets and their ratios.
    Compare(CompareArgs),
    /// Measure the delivery guarantees (recovery, presence, rpc-dispatch,
    /// conflation) on a sente-lite server it starts, with the in-process
    /// broker and with Redis.
    Delivery(delivery::DeliveryArgs),
    /// Internal: one worker process of the `idle` scenario.
    #[command(hide = true)]
    IdlePart(idle::PartArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Which protocol the server speaks.
    #[arg(long, value_enum)]
    server: Kind,
    /// A running server's WebSocket address (loopback only). Without it the
    /// tool starts the server itself.
    #[arg(long)]
    addr: Option<String>,
    /// PID of the running server, to report its CPU and memory.
    #[arg(long, requires = "addr")]
    server_pid: Option<u32>,
    /// The sente-lite binary, when the tool starts it.
    #[arg(long, default_value = "target/release/sente-lite")]
    sente_bin: PathBuf,
    #[command(flatten)]
    servers: ServerArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// The sente-lite binary (e.g. target/release/sente-lite).
    #[arg(long)]
    sente_bin: PathBuf,
    #[command(flatten)]
    servers: ServerArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// The NATS server binary (looked up on PATH and in /usr/sbin).
    #[arg(long, default_value = "nats-server")]
    nats_bin: PathBuf,
    /// Extra argument for the sente-lite binary (repeatable), after
    /// `--port N`; also given to every cluster node.
    #[arg(long = "sente-arg", allow_hyphen_values = true)]
    sente_args: Vec<String>,
    /// The Node.js binary that runs the uWebSockets.js peer.
    #[arg(long, default_value = "node")]
    node_bin: PathBuf,
    /// Where the uWebSockets.js peer is installed (by
    /// `crates/bench/install-uws.sh`, run by the tool when the peer is
    /// started; default: `target/bench-uws`).
    #[arg(long)]
    uws_dir: Option<PathBuf>,
    /// The redis-server binary of the cluster scenarios (looked up on PATH
    /// and in /usr/bin, /usr/sbin).
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// `broker.node-ttl-ms` of the cluster nodes (they refresh their
    /// liveness every third of it; the default 15 s would make the wait for
    /// every node to see the others up to 5 s).
    #[arg(long, default_value_t = 3000)]
    cluster_node_ttl_ms: u64,
}

#[derive(Debug, Args)]
struct Common {
    /// Size preset; the flags below override single sizes.
    #[arg(long, value_enum, default_value_t = Size::Quick)]
    size: Size,
    /// Scenarios to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Write machine-readable results here.
    #[arg(long)]
    json: Option<PathBuf>,

    /// Publishing time of each rate-driven case, seconds.
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Payload size in bytes (JSON, padded).
    #[arg(long)]
    payload_bytes: Option<usize>,
    /// Fan-out: subscribers on the channel.
    #[arg(long)]
    fanout_subscribers: Option<usize>,
    /// Fan-out: publishers on the channel.
    #[arg(long)]
    fanout_publishers: Option<usize>,
    /// Fan-out: total publish rates per second, comma-separated; one case
    /// each; 0 = flat out.
    #[arg(long, value_delimiter = ',')]
    fanout_rates: Option<Vec<f64>>,
    /// Messages per publisher in a flat-out case.
    #[arg(long)]
    flat_out_messages: Option<u64>,
    /// Many channels: number of channels.
    #[arg(long)]
    channels: Option<usize>,
    /// Many channels: subscribers per channel.
    #[arg(long)]
    channel_subscribers: Option<usize>,
    /// Many channels: total publish rate per second (one publisher per
    /// channel).
    #[arg(long)]
    channels_rate: Option<f64>,
    /// RPC: worker connections.
    #[arg(long)]
    rpc_workers: Option<usize>,
    /// RPC: requesting connections.
    #[arg(long)]
    rpc_clients: Option<usize>,
    /// RPC: total requests per second.
    #[arg(long)]
    rpc_rate: Option<f64>,
    /// Idle: connections held open.
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Idle: connections per channel.
    #[arg(long)]
    idle_per_channel: Option<usize>,
    /// Idle: connections per worker process (the fd limit is per process).
    #[arg(long)]
    conns_per_process: Option<usize>,
    /// Idle: seconds to hold all connections before the probe.
    #[arg(long)]
    idle_hold_secs: Option<f64>,
    /// Churn: cycles started per second.
    #[arg(long)]
    churn_rate: Option<f64>,
    /// Churn: number of cycles.
    #[arg(long)]
    churn_count: Option<u64>,
    /// Churn: cycles in flight at most.
    #[arg(long)]
    churn_concurrency: Option<usize>,
    /// Cluster: sente-lite nodes on the one Redis.
    #[arg(long)]
    cluster_nodes: Option<usize>,
    /// Cluster: subscribers on each node.
    #[arg(long)]
    cluster_subscribers_per_node: Option<usize>,
    /// Cluster: publish rates per second, comma-separated; one case each.
    #[arg(long, value_delimiter = ',')]
    cluster_rates: Option<Vec<f64>>,
    /// Cluster: subscribers of the one-node case it is judged against.
    #[arg(long)]
    cluster_baseline_subscribers: Option<usize>,
    /// Max-rate search: subscribers on each node.
    #[arg(long)]
    max_rate_subscribers_per_node: Option<usize>,
    /// Max-rate search: publishers on the channel (round-robin over the
    /// nodes from the first), sharing each step's rate; comma-separated,
    /// one search each.
    #[arg(long, value_delimiter = ',')]
    max_rate_publishers: Option<Vec<usize>>,
    /// Max-rate search: the first step's publishes per second.
    #[arg(long)]
    max_rate_start: Option<f64>,
    /// Max-rate search: the highest rate tried.
    #[arg(long)]
    max_rate_limit: Option<f64>,
    /// Max-rate search: seconds of publishing per step.
    #[arg(long)]
    max_rate_step_secs: Option<f64>,
    /// Max-rate search: halvings of the gap after the first failed step.
    #[arg(long)]
    max_rate_refine_steps: Option<usize>,
    /// Max-rate search: seconds for each search, cluster start included.
    #[arg(long)]
    max_rate_budget_secs: Option<f64>,

    /// Loopback source addresses for clients (127.0.0.2 and up); 0 = let
    /// the kernel choose.
    #[arg(long, default_value_t = 8)]
    src_addrs: usize,
    /// Handshakes in flight at once during setup.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Seconds to wait for the last deliveries.
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
    /// Seconds allowed for connecting and subscribing everyone.
    #[arg(long, default_value_t = 90.0)]
    setup_timeout_secs: f64,
}

impl Common {
    fn sizes(&self) -> Sizes {
        let mut s = Sizes::preset(self.size);
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { s.$f = v; } )* };
        }
        set!(
            duration_secs,
            payload_bytes,
            fanout_subscribers,
            fanout_publishers,
            fanout_rates,
            flat_out_messages,
            channels,
            channel_subscribers,
            channels_rate,
            rpc_workers,
            rpc_clients,
            rpc_rate,
            idle_connections,
            idle_per_channel,
            conns_per_process,
            idle_hold_secs,
            churn_rate,
            churn_count,
            churn_concurrency,
            cluster_nodes,
            cluster_subscribers_per_node,
            cluster_rates,
            cluster_baseline_subscribers,
            max_rate_subscribers_per_node,
            max_rate_publishers,
            max_rate_start,
            max_rate_limit,
            max_rate_step_secs,
            max_rate_refine_steps,
            max_rate_budget_secs
        );
        s
    }

    fn cases(&self) -> Vec<Case> {
        let scenarios = if self.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            self.scenarios.clone()
        };
        self.sizes().cases(&scenarios)
    }

    fn opts(&self) -> anyhow::Result<RunOpts> {
        Ok(RunOpts {
            srcs: loopback::source_addrs(self.src_addrs)?,
            connect_concurrency: self.connect_concurrency.max(1),
            drain: Duration::from_secs_f64(self.drain_secs.max(0.1)),
            setup_timeout: Duration::from_secs_f64(self.setup_timeout_secs.max(1.0)),
            server_pid: None,
        })
    }
}

/// How to reach the server of one run.
enum ServerSource<'a> {
    Running { target: Target, pid: Option<u32> },
    Start { kind: Kind, sente_bin: &'a PathBuf },
}

impl ServerSource<'_> {
    fn kind(&self) -> Kind {
        match self {
            ServerSource::Running { target, .. } => target.kind,
            ServerSource::Start { kind, .. } => *kind,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let nofile = raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::IdlePart(a) => idle::part_main(a).await,
            Cmd::Delivery(a) => delivery::main(a).await,
            Cmd::Run(a) => {
                let source = match &a.addr {
                    Some(addr) => ServerSource::Running {
                        target: Target {
                            kind: a.server,
                            addr: loopback::parse_target(addr)?,
                        },
                        pid: a.server_pid,
                    },
                    None => ServerSource::Start {
                        kind: a.server,
                        sente_bin: &a.sente_bin,
                    },
                };
                run_all(
                    "run",
                    &[source],
                    &a.sente_bin,
                    &a.servers,
                    &a.common,
                    nofile,
                )
                .await
            }
            Cmd::Compare(a) => {
                if !a.sente_bin.is_file() {
                    bail!(
                        "sente-lite binary not found at {} (build it with `cargo build --release -p sente-lite-server`)",
                        a.sente_bin.display()
                    );
                }
                let sources = [
                    ServerSource::Start {
                        kind: Kind::Sente,
                        sente_bin: &a.sente_bin,
                    },
                    ServerSource::Start {
                        kind: Kind::Nats,
                        sente_bin: &a.sente_bin,
                    },
                    ServerSource::Start {
                        kind: Kind::Uws,
                        sente_bin: &a.sente_bin,
                    },
                ];
                run_all(
                    "compare",
                    &sources,
                    &a.sente_bin,
                    &a.servers,
                    &a.common,
                    nofile,
                )
                .await
            }
        }
    })
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (the idle scenario holds
/// thousands of sockets per process); returns the limit now in force.
fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: cannot raise the open-file limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// Rough upper bound of one case's duration, for its outer timeout.
fn case_bound(case: &Case, c: &Common) -> Duration {
    let body = match &case.spec {
        CaseSpec::PubSub(p) => {
            let per = p.rate / (p.channels * p.publishers_per_channel).max(1) as f64;
            if per > 0.0 {
                p.messages_per_publisher as f64 / per
            } else {
                p.messages_per_publisher as f64 / 1000.0
            }
        }
        CaseSpec::Rpc(r) => {
            let per = r.rate / r.clients.max(1) as f64;
            if per > 0.0 {
                r.requests_per_client as f64 / per
            } else {
                r.requests_per_client as f64 / 1000.0
            }
        }
        CaseSpec::Idle(i) => i.hold_secs + c.setup_timeout_secs,
        CaseSpec::Churn(ch) => ch.count as f64 / ch.rate,
        // Starting redis-server and each node may take 15 s, the nodes' view
        // of each other 20 s.
        CaseSpec::Cluster(k) => k.messages as f64 / k.rate + 15.0 * (k.nodes + 1) as f64 + 20.0,
        CaseSpec::MaxRate(x) => x.budget_secs + 15.0 * (x.nodes + 1) as f64 + 20.0,
    };
    Duration::from_secs_f64(body * 2.0 + c.setup_timeout_secs + c.drain_secs * 3.0 + 60.0)
}

async fn run_case(
    case: &Case,
    target: Target,
    opts: &RunOpts,
    common: &Common,
) -> anyhow::Result<scenarios::Metrics> {
    let fut = async {
        match &case.spec {
            CaseSpec::PubSub(p) => scenarios::pubsub(target, p, opts).await,
            CaseSpec::Rpc(r) => scenarios::rpc(target, r, opts).await,
            CaseSpec::Churn(ch) => scenarios::churn(target, ch, opts).await,
            CaseSpec::Idle(i) => idle::idle(target, i, opts, common.src_addrs).await,
            CaseSpec::Cluster(_) | CaseSpec::MaxRate(_) => {
                bail!("a cluster case starts its own servers")
            }
        }
    };
    bounded(case, common, fut).await
}

/// `fut` within the case's time bound. A cluster's processes are owned by
/// the future, so a timeout drops (and kills) them.
async fn bounded(
    case: &Case,
    common: &Common,
    fut: impl std::future::Future<Output = anyhow::Result<scenarios::Metrics>>,
) -> anyhow::Result<scenarios::Metrics> {
    let bound = case_bound(case, common);
    match tokio::time::timeout(bound, fut).await {
        Ok(r) => r,
        Err(_) => bail!("case did not finish within {:.0} s", bound.as_secs_f64()),
    }
}

/// A cluster case: starts redis-server and the nodes itself.
async fn run_cluster_case(
    case: &Case,
    cfg: &cluster::ClusterCfg,
    opts: &RunOpts,
    common: &Common,
    n: usize,
) -> anyhow::Result<scenarios::Metrics> {
    let fut = async {
        match &case.spec {
            CaseSpec::Cluster(k) => cluster::cluster_case(k, cfg, opts, n).await,
            CaseSpec::MaxRate(x) => cluster::max_rate(x, cfg, opts, n).await,
            _ => bail!("not a cluster case"),
        }
    };
    bounded(case, common, fut).await
}

/// The result of one case against one server.
fn result(
    case: &Case,
    kind: Kind,
    wall_s: f64,
    outcome: anyhow::Result<scenarios::Metrics>,
) -> RunResult {
    match outcome {
        Ok(metrics) => RunResult {
            case: case.name.clone(),
            scenario: case.scenario,
            server: RunResult::kind_label(kind),
            ok: true,
            error: None,
            wall_s,
            metrics,
        },
        Err(e) => {
            eprintln!("   {} failed: {e:#}", kind.label());
            RunResult {
                case: case.name.clone(),
                scenario: case.scenario,
                server: RunResult::kind_label(kind),
                ok: false,
                error: Some(format!("{e:#}")),
                wall_s,
                metrics: Default::default(),
            }
        }
    }
}

/// One case against one server source (started here when it is to be).
async fn run_on(
    case: &Case,
    source: &ServerSource<'_>,
    servers: &ServerArgs,
    common: &Common,
    base_opts: &RunOpts,
    n: usize,
) -> RunResult {
    let t0 = std::time::Instant::now();
    let (kind, outcome) = match source {
        ServerSource::Running { target, pid } => {
            let opts = RunOpts {
                server_pid: *pid,
                ..base_opts.clone()
            };
            eprintln!(
                "-- {} against {} at {}",
                case.name,
                target.kind.label(),
                target.addr
            );
            (target.kind, run_case(case, *target, &opts, common).await)
        }
        ServerSource::Start { kind, sente_bin } => {
            let server = match kind {
                Kind::Nats => servers::start_nats(&servers.nats_bin, n).await,
                Kind::Uws => {
                    servers::start_uws(&servers.node_bin, servers.uws_dir.as_deref(), n).await
                }
                Kind::Sente => servers::start_sente(sente_bin, &servers.sente_args, n).await,
            };
            match server {
                Err(e) => (*kind, Err(e)),
                Ok(server) => {
                    eprintln!(
                        "-- {} against {} (pid {}, {}; log {})",
                        case.name,
                        kind.label(),
                        server.pid,
                        server.target.addr,
                        server.log.display()
                    );
                    let opts = RunOpts {
                        server_pid: Some(server.pid),
                        ..base_opts.clone()
                    };
                    let r = run_case(case, server.target, &opts, common).await;
                    server.stop().await;
                    (*kind, r)
                }
            }
        }
    };
    result(case, kind, t0.elapsed().as_secs_f64(), outcome)
}

async fn run_all(
    mode: &'static str,
    sources: &[ServerSource<'_>],
    sente_bin: &Path,
    servers: &ServerArgs,
    common: &Common,
    nofile: u64,
) -> anyhow::Result<()> {
    let cases = common.cases();
    let base_opts = common.opts()?;
    let cluster_cfg = cluster::ClusterCfg {
        sente_bin: sente_bin.to_path_buf(),
        sente_args: servers.sente_args.clone(),
        redis_bin: servers.redis_bin.clone(),
        node_ttl_ms: servers.cluster_node_ttl_ms,
    };
    let has_sente = sources.iter().any(|s| s.kind() == Kind::Sente);
    let started_at_ms = sente_lite_protocol::now_ms();
    let mut results = Vec::new();
    let mut n = 0;
    for case in &cases {
        let cluster_case = matches!(case.spec, CaseSpec::Cluster(_) | CaseSpec::MaxRate(_));
        // The cluster scenarios (and their one-node baselines) are
        // sente-lite's own: no NATS run.
        if case.scenario.sente_only() && !has_sente {
            eprintln!("-- {} skipped: a sente-lite-only case", case.name);
            continue;
        }
        if cluster_case {
            n += 1;
            eprintln!(
                "-- {} on a cluster of its own ({})",
                case.name,
                sente_bin.display()
            );
            let t0 = std::time::Instant::now();
            let r = run_cluster_case(case, &cluster_cfg, &base_opts, common, n).await;
            results.push(result(case, Kind::Sente, t0.elapsed().as_secs_f64(), r));
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        for source in sources {
            if case.scenario.sente_only() && source.kind() != Kind::Sente {
                continue;
            }
            n += 1;
            results.push(run_on(case, source, servers, common, &base_opts, n).await);
            // Let closed sockets drain before the next case.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let comparisons = if mode == "compare" {
        report::compare(&cases, &results)
    } else {
        Vec::new()
    };
    print!("{}", report::summary(&cases, &results));
    let failed = results.iter().filter(|r| !r.ok).count();
    let report = Report {
        format: report::FORMAT,
        tool: "sente-lite-bench",
        version: env!("CARGO_PKG_VERSION"),
        mode,
        size: common.size,
        started_at_ms,
        finished_at_ms: sente_lite_protocol::now_ms(),
        host: report::Host {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            nofile_limit: nofile,
        },
        cases,
        results,
        comparisons,
    };
    if let Some(path) = &common.json {
        let text = serde_json::to_string_pretty(&report)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    if failed > 0 {
        bail!("{failed} of {} runs failed", report.results.len());
    }
    Ok(())
}
