//! What to run: the scenario cases of a size preset (`quick`, `full`),
//! adjusted by command-line overrides.

use serde::Serialize;

/// A size preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Size {
    /// About a minute for a `compare` of every scenario on 2 cores.
    Quick,
    /// The sizes docs/BENCHMARKS.md judges its targets at (fan-out to 1,000
    /// subscribers, 15,000 idle connections, ...); under 10 minutes for a
    /// `compare`.
    Full,
}

/// A scenario family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// N subscribers on one channel, P publishers.
    Fanout,
    /// C channels x M subscribers each, one publisher per channel.
    Channels,
    /// Workers on a channel, clients issuing RPC requests.
    Rpc,
    /// K idle subscribed connections held open (spread over processes).
    Idle,
    /// Connect, subscribe, disconnect at a rate.
    Churn,
    /// Several sente-lite nodes on one Redis (a redis-server of the run's
    /// own), subscribers spread over them, one publisher on the first
    /// node; next to the one-node fan-out at the same rates.
    Cluster,
    /// The most publishes per second one channel sustains through Redis
    /// with nothing lost: the rate stepped up on one cluster.
    ClusterMax,
}

impl Scenario {
    /// Run against sente-lite only (NATS has no counterpart here).
    pub fn sente_only(self) -> bool {
        matches!(self, Scenario::Cluster | Scenario::ClusterMax)
    }

    pub const ALL: [Scenario; 7] = [
        Scenario::Fanout,
        Scenario::Channels,
        Scenario::Rpc,
        Scenario::Idle,
        Scenario::Churn,
        Scenario::Cluster,
        Scenario::ClusterMax,
    ];
}

/// Publish/subscribe: `channels` x `subscribers_per_channel` subscribers,
/// `publishers_per_channel` publishers on each channel sharing `rate` (total
/// publishes per second over all publishers; 0 = flat out), each sending
/// `messages_per_publisher` payloads of `payload_bytes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PubSubSpec {
    pub channels: usize,
    pub subscribers_per_channel: usize,
    pub publishers_per_channel: usize,
    pub rate: f64,
    pub messages_per_publisher: u64,
    pub payload_bytes: usize,
}

/// RPC: `workers` echo workers on one channel, `clients` requesters sharing
/// `rate` requests per second, `requests_per_client` each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcSpec {
    pub workers: usize,
    pub clients: usize,
    pub rate: f64,
    pub requests_per_client: u64,
    pub payload_bytes: usize,
}

/// Idle connections: `connections` subscribed connections,
/// `per_channel` to a channel, split over processes of at most
/// `per_process` connections, held `hold_secs` before one probe message per
/// channel checks they are all alive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdleSpec {
    pub connections: usize,
    pub per_channel: usize,
    pub per_process: usize,
    pub hold_secs: f64,
}

/// Churn: `count` connect-subscribe-disconnect cycles started at `rate` per
/// second, at most `concurrency` in flight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChurnSpec {
    pub rate: f64,
    pub count: u64,
    pub concurrency: usize,
}

/// A cluster fan-out: `nodes` sente-lite nodes on one Redis, each with
/// `subscribers_per_node` subscribers of one channel, and one publisher on
/// the first node sending `messages` payloads of `payload_bytes` at `rate`
/// per second. `baseline` names the one-node case of the same run it is
/// judged against.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub subscribers_per_node: usize,
    pub rate: f64,
    pub messages: u64,
    pub payload_bytes: usize,
    pub baseline: String,
}

impl ClusterSpec {
    /// The same traffic as a pub/sub run: one channel, one publisher.
    pub fn pubsub(&self) -> PubSubSpec {
        PubSubSpec {
            channels: 1,
            subscribers_per_channel: self.nodes * self.subscribers_per_node,
            publishers_per_channel: 1,
            rate: self.rate,
            messages_per_publisher: self.messages,
            payload_bytes: self.payload_bytes,
        }
    }
}

/// The max-rate search: one cluster of `nodes` nodes with
/// `subscribers_per_node` subscribers of one channel each; one publisher on
/// the first node, `step_secs` per step, from `start_rate` doubling until a
/// step fails (or `limit_rate`), then `refine_steps` halvings of the gap
/// between the last passed and the first failed rate, all within
/// `budget_secs` from the start of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaxRateSpec {
    pub nodes: usize,
    pub subscribers_per_node: usize,
    /// Publishers on the channel, round-robin over the nodes from the
    /// first, sharing each step's rate.
    pub publishers: usize,
    pub start_rate: f64,
    pub limit_rate: f64,
    pub step_secs: f64,
    pub refine_steps: usize,
    pub budget_secs: f64,
    /// How long after a step's last acknowledged publish its deliveries
    /// may still arrive.
    pub drain_secs: f64,
    /// The most a publish may go out after its scheduled time for the step
    /// to count as the publisher keeping up.
    pub max_lag_ms: f64,
    /// The highest p99 publish→deliver latency of a passed step: a backlog
    /// that grows through a step shows as latency growing with it.
    pub max_p99_ms: f64,
    pub payload_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CaseSpec {
    PubSub(PubSubSpec),
    Rpc(RpcSpec),
    Idle(IdleSpec),
    Churn(ChurnSpec),
    Cluster(ClusterSpec),
    MaxRate(MaxRateSpec),
}

/// One case: a scenario at given sizes, run once per server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    /// Stable name, e.g. `fanout-1x1000-100ps`: the key that pairs the
    /// sente-lite and NATS results.
    pub name: String,
    pub scenario: Scenario,
    pub spec: CaseSpec,
}

/// Sizes after the preset and the overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Sizes {
    pub duration_secs: f64,
    pub payload_bytes: usize,
    pub fanout_subscribers: usize,
    pub fanout_publishers: usize,
    pub fanout_rates: Vec<f64>,
    pub flat_out_messages: u64,
    pub channels: usize,
    pub channel_subscribers: usize,
    pub channels_rate: f64,
    pub rpc_workers: usize,
    pub rpc_clients: usize,
    pub rpc_rate: f64,
    pub idle_connections: usize,
    pub idle_per_channel: usize,
    pub conns_per_process: usize,
    pub idle_hold_secs: f64,
    pub churn_rate: f64,
    pub churn_count: u64,
    pub churn_concurrency: usize,
    pub cluster_nodes: usize,
    pub cluster_subscribers_per_node: usize,
    pub cluster_rates: Vec<f64>,
    /// Subscribers of the one-node case the cluster is judged against.
    pub cluster_baseline_subscribers: usize,
    pub max_rate_subscribers_per_node: usize,
    /// One search per entry: that many publishers share the rate.
    pub max_rate_publishers: Vec<usize>,
    pub max_rate_start: f64,
    pub max_rate_limit: f64,
    pub max_rate_step_secs: f64,
    pub max_rate_refine_steps: usize,
    pub max_rate_budget_secs: f64,
}

impl Sizes {
    pub fn preset(size: Size) -> Sizes {
        match size {
            Size::Quick => Sizes {
                duration_secs: 4.0,
                payload_bytes: 100,
                fanout_subscribers: 200,
                fanout_publishers: 1,
                fanout_rates: vec![100.0],
                flat_out_messages: 2_000,
                channels: 20,
                channel_subscribers: 10,
                channels_rate: 200.0,
                rpc_workers: 1,
                rpc_clients: 4,
                rpc_rate: 200.0,
                idle_connections: 2_000,
                idle_per_channel: 500,
                conns_per_process: 8_000,
                idle_hold_secs: 1.0,
                churn_rate: 100.0,
                churn_count: 300,
                churn_concurrency: 64,
                cluster_nodes: 3,
                cluster_subscribers_per_node: 67,
                cluster_rates: vec![100.0],
                cluster_baseline_subscribers: 200,
                max_rate_subscribers_per_node: 5,
                max_rate_publishers: vec![1],
                max_rate_start: 1_000.0,
                max_rate_limit: 64_000.0,
                max_rate_step_secs: 1.0,
                max_rate_refine_steps: 0,
                max_rate_budget_secs: 10.0,
            },
            Size::Full => Sizes {
                duration_secs: 10.0,
                payload_bytes: 100,
                fanout_subscribers: 1_000,
                fanout_publishers: 1,
                fanout_rates: vec![20.0, 100.0, 300.0],
                flat_out_messages: 10_000,
                channels: 100,
                channel_subscribers: 10,
                channels_rate: 500.0,
                rpc_workers: 1,
                rpc_clients: 10,
                rpc_rate: 1_000.0,
                idle_connections: 15_000,
                idle_per_channel: 500,
                conns_per_process: 8_000,
                idle_hold_secs: 3.0,
                churn_rate: 200.0,
                churn_count: 2_000,
                churn_concurrency: 128,
                cluster_nodes: 3,
                cluster_subscribers_per_node: 333,
                cluster_rates: vec![100.0, 1_000.0],
                cluster_baseline_subscribers: 1_000,
                max_rate_subscribers_per_node: 10,
                max_rate_publishers: vec![1, 3],
                max_rate_start: 500.0,
                max_rate_limit: 64_000.0,
                max_rate_step_secs: 3.0,
                max_rate_refine_steps: 2,
                max_rate_budget_secs: 30.0,
            },
        }
    }

    fn count(rate: f64, secs: f64, parts: usize) -> u64 {
        let per = rate / parts.max(1) as f64 * secs;
        (per.round() as u64).max(1)
    }

    /// The fan-out cases (one channel, `fanout_subscribers` subscribers).
    fn fanout_cases(&self) -> Vec<Case> {
        self.fanout_rates
            .iter()
            .map(|&rate| {
                let (label, per_pub) = if rate > 0.0 {
                    (
                        format!("{}ps", rate),
                        Self::count(rate, self.duration_secs, self.fanout_publishers),
                    )
                } else {
                    ("flat".to_owned(), self.flat_out_messages.max(1))
                };
                Case {
                    name: format!("fanout-1x{}-{label}", self.fanout_subscribers),
                    scenario: Scenario::Fanout,
                    spec: CaseSpec::PubSub(PubSubSpec {
                        channels: 1,
                        subscribers_per_channel: self.fanout_subscribers,
                        publishers_per_channel: self.fanout_publishers.max(1),
                        rate: rate.max(0.0),
                        messages_per_publisher: per_pub,
                        payload_bytes: self.payload_bytes,
                    }),
                }
            })
            .collect()
    }

    /// The cluster cases, each preceded by the one-node case it is judged
    /// against unless the run's fan-out cases already have one with the
    /// same traffic (then that one is named as its baseline).
    fn cluster_cases(&self, with_fanout: bool) -> Vec<Case> {
        let fanout = if with_fanout {
            self.fanout_cases()
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        let nodes = self.cluster_nodes.max(1);
        let per_node = self.cluster_subscribers_per_node.max(1);
        for &rate in self.cluster_rates.iter().filter(|r| **r > 0.0) {
            let messages = Self::count(rate, self.duration_secs, 1);
            let single = PubSubSpec {
                channels: 1,
                subscribers_per_channel: self.cluster_baseline_subscribers.max(1),
                publishers_per_channel: 1,
                rate,
                messages_per_publisher: messages,
                payload_bytes: self.payload_bytes,
            };
            let baseline = match fanout
                .iter()
                .find(|c| c.spec == CaseSpec::PubSub(single.clone()))
            {
                Some(c) => c.name.clone(),
                None => {
                    let name = format!("single-1x{}-{rate}ps", single.subscribers_per_channel);
                    out.push(Case {
                        name: name.clone(),
                        scenario: Scenario::Cluster,
                        spec: CaseSpec::PubSub(single),
                    });
                    name
                }
            };
            out.push(Case {
                name: format!("cluster-{nodes}x{per_node}-{rate}ps"),
                scenario: Scenario::Cluster,
                spec: CaseSpec::Cluster(ClusterSpec {
                    nodes,
                    subscribers_per_node: per_node,
                    rate,
                    messages,
                    payload_bytes: self.payload_bytes,
                    baseline,
                }),
            });
        }
        out
    }

    /// The cases of the chosen scenarios, in the order given.
    pub fn cases(&self, scenarios: &[Scenario]) -> Vec<Case> {
        let mut out = Vec::new();
        for s in scenarios {
            match s {
                Scenario::Fanout => out.extend(self.fanout_cases()),
                Scenario::Cluster => {
                    out.extend(self.cluster_cases(scenarios.contains(&Scenario::Fanout)))
                }
                Scenario::ClusterMax => {
                    let nodes = self.cluster_nodes.max(1);
                    let per_node = self.max_rate_subscribers_per_node.max(1);
                    for &pubs in &self.max_rate_publishers {
                        let pubs = pubs.max(1);
                        out.push(Case {
                            name: format!("cluster-max-{nodes}x{per_node}-{pubs}pub"),
                            scenario: *s,
                            spec: CaseSpec::MaxRate(MaxRateSpec {
                                nodes,
                                subscribers_per_node: per_node,
                                publishers: pubs,
                                start_rate: self.max_rate_start.max(1.0),
                                limit_rate: self.max_rate_limit.max(self.max_rate_start.max(1.0)),
                                step_secs: self.max_rate_step_secs.max(0.2),
                                refine_steps: self.max_rate_refine_steps,
                                budget_secs: self.max_rate_budget_secs.max(1.0),
                                drain_secs: (self.max_rate_step_secs * 0.5).clamp(1.0, 2.0),
                                max_lag_ms: 200.0,
                                max_p99_ms: 100.0,
                                payload_bytes: self.payload_bytes,
                            }),
                        });
                    }
                }
                Scenario::Channels => out.push(Case {
                    name: format!(
                        "channels-{}x{}-{}ps",
                        self.channels, self.channel_subscribers, self.channels_rate
                    ),
                    scenario: *s,
                    spec: CaseSpec::PubSub(PubSubSpec {
                        channels: self.channels.max(1),
                        subscribers_per_channel: self.channel_subscribers,
                        publishers_per_channel: 1,
                        rate: self.channels_rate.max(0.0),
                        messages_per_publisher: if self.channels_rate > 0.0 {
                            Self::count(self.channels_rate, self.duration_secs, self.channels)
                        } else {
                            self.flat_out_messages.max(1)
                        },
                        payload_bytes: self.payload_bytes,
                    }),
                }),
                Scenario::Rpc => out.push(Case {
                    name: format!(
                        "rpc-{}w-{}c-{}ps",
                        self.rpc_workers, self.rpc_clients, self.rpc_rate
                    ),
                    scenario: *s,
                    spec: CaseSpec::Rpc(RpcSpec {
                        workers: self.rpc_workers.max(1),
                        clients: self.rpc_clients.max(1),
                        rate: self.rpc_rate.max(0.0),
                        requests_per_client: if self.rpc_rate > 0.0 {
                            Self::count(self.rpc_rate, self.duration_secs, self.rpc_clients)
                        } else {
                            self.flat_out_messages.max(1)
                        },
                        payload_bytes: self.payload_bytes,
                    }),
                }),
                Scenario::Idle => out.push(Case {
                    name: format!("idle-{}", self.idle_connections),
                    scenario: *s,
                    spec: CaseSpec::Idle(IdleSpec {
                        connections: self.idle_connections.max(1),
                        per_channel: self.idle_per_channel.max(1),
                        per_process: self.conns_per_process.max(1),
                        hold_secs: self.idle_hold_secs.max(0.0),
                    }),
                }),
                Scenario::Churn => out.push(Case {
                    name: format!("churn-{}-{}ps", self.churn_count, self.churn_rate),
                    scenario: *s,
                    spec: CaseSpec::Churn(ChurnSpec {
                        rate: self.churn_rate.max(0.1),
                        count: self.churn_count.max(1),
                        concurrency: self.churn_concurrency.max(1),
                    }),
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_preset_has_the_target_sizes() {
        let s = Sizes::preset(Size::Full);
        let cases = s.cases(&Scenario::ALL);
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fanout-1x1000-20ps",
                "fanout-1x1000-100ps",
                "fanout-1x1000-300ps",
                "channels-100x10-500ps",
                "rpc-1w-10c-1000ps",
                "idle-15000",
                "churn-2000-200ps",
                "cluster-3x333-100ps",
                "single-1x1000-1000ps",
                "cluster-3x333-1000ps",
                "cluster-max-3x10-1pub",
                "cluster-max-3x10-3pub",
            ]
        );
        let CaseSpec::PubSub(p) = &cases[2].spec else {
            panic!("fanout is pub/sub")
        };
        assert_eq!(p.messages_per_publisher, 3000);
        assert_eq!(p.payload_bytes, 100);
        let CaseSpec::Rpc(r) = &cases[4].spec else {
            panic!("rpc")
        };
        assert_eq!(r.requests_per_client * r.clients as u64, 10_000);
    }

    #[test]
    fn cluster_cases_reuse_a_matching_fanout_case_or_add_their_own() {
        let s = Sizes::preset(Size::Full);
        let baselines = |cases: &[Case]| -> Vec<(String, String)> {
            cases
                .iter()
                .filter_map(|c| match &c.spec {
                    CaseSpec::Cluster(k) => Some((c.name.clone(), k.baseline.clone())),
                    _ => None,
                })
                .collect()
        };
        let all = s.cases(&Scenario::ALL);
        assert_eq!(
            baselines(&all),
            [
                ("cluster-3x333-100ps".into(), "fanout-1x1000-100ps".into()),
                ("cluster-3x333-1000ps".into(), "single-1x1000-1000ps".into()),
            ]
        );
        let Some(Case {
            spec: CaseSpec::Cluster(k),
            ..
        }) = all.iter().find(|c| c.name == "cluster-3x333-1000ps")
        else {
            panic!("cluster case")
        };
        assert_eq!(
            (k.nodes, k.subscribers_per_node, k.messages),
            (3, 333, 10_000)
        );
        assert_eq!(k.pubsub().subscribers_per_channel, 999);
        // Without the fan-out scenario, both baselines are the cluster's own.
        let alone = s.cases(&[Scenario::Cluster]);
        let names: Vec<&str> = alone.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "single-1x1000-100ps",
                "cluster-3x333-100ps",
                "single-1x1000-1000ps",
                "cluster-3x333-1000ps"
            ]
        );
        let CaseSpec::PubSub(single) = &alone[0].spec else {
            panic!("pub/sub")
        };
        assert_eq!(
            (
                single.subscribers_per_channel,
                single.messages_per_publisher
            ),
            (1000, 1000)
        );
        // A fan-out case with other traffic is not a baseline.
        let mut other = s.clone();
        other.fanout_subscribers = 500;
        assert!(baselines(&other.cases(&Scenario::ALL))
            .iter()
            .all(|(_, b)| b.starts_with("single-")));
    }

    #[test]
    fn flat_out_uses_the_message_count() {
        let mut s = Sizes::preset(Size::Quick);
        s.fanout_rates = vec![0.0];
        let c = s.cases(&[Scenario::Fanout]);
        assert_eq!(c[0].name, "fanout-1x200-flat");
        let CaseSpec::PubSub(p) = &c[0].spec else {
            panic!("pub/sub")
        };
        assert_eq!(p.messages_per_publisher, 2000);
        assert_eq!(p.rate, 0.0);
    }
}
