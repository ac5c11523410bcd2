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
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Fanout,
        Scenario::Channels,
        Scenario::Rpc,
        Scenario::Idle,
        Scenario::Churn,
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

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CaseSpec {
    PubSub(PubSubSpec),
    Rpc(RpcSpec),
    Idle(IdleSpec),
    Churn(ChurnSpec),
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
            },
        }
    }

    fn count(rate: f64, secs: f64, parts: usize) -> u64 {
        let per = rate / parts.max(1) as f64 * secs;
        (per.round() as u64).max(1)
    }

    /// The cases of the chosen scenarios, in the order given.
    pub fn cases(&self, scenarios: &[Scenario]) -> Vec<Case> {
        let mut out = Vec::new();
        for s in scenarios {
            match s {
                Scenario::Fanout => {
                    for &rate in &self.fanout_rates {
                        let (label, per_pub) = if rate > 0.0 {
                            (
                                format!("{}ps", rate),
                                Self::count(rate, self.duration_secs, self.fanout_publishers),
                            )
                        } else {
                            ("flat".to_owned(), self.flat_out_messages.max(1))
                        };
                        out.push(Case {
                            name: format!("fanout-1x{}-{label}", self.fanout_subscribers),
                            scenario: *s,
                            spec: CaseSpec::PubSub(PubSubSpec {
                                channels: 1,
                                subscribers_per_channel: self.fanout_subscribers,
                                publishers_per_channel: self.fanout_publishers.max(1),
                                rate: rate.max(0.0),
                                messages_per_publisher: per_pub,
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
                "churn-2000-200ps"
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
