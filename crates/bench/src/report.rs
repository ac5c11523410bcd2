//! Results: the JSON document written by `--json`, the human summary, and
//! the sente-lite / NATS ratios of a `compare` run.

use crate::conn::Kind;
use crate::plan::{Case, Scenario, Size};
use crate::scenarios::Metrics;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Format version of the JSON document; bumped on incompatible changes.
pub const FORMAT: u32 = 1;

/// The whole JSON document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub format: u32,
    pub tool: &'static str,
    pub version: &'static str,
    /// `run` or `compare`.
    pub mode: &'static str,
    /// The preset the sizes started from (overrides are visible in `cases`).
    pub size: Size,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub host: Host,
    pub cases: Vec<Case>,
    pub results: Vec<RunResult>,
    /// `compare` only: one entry per case run against both servers.
    pub comparisons: Vec<Comparison>,
}

#[derive(Debug, Serialize)]
pub struct Host {
    pub cores: usize,
    pub nofile_limit: u64,
}

/// One case against one server.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub case: String,
    pub scenario: Scenario,
    /// `sente-lite`, `nats` or `uws`.
    pub server: &'static str,
    pub ok: bool,
    pub error: Option<String>,
    /// Wall time of the whole case, setup included.
    pub wall_s: f64,
    pub metrics: Metrics,
}

/// sente-lite's metrics divided by a peer's (NATS or uWebSockets.js), for
/// one case.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub case: String,
    pub scenario: Scenario,
    /// The peer's label (`nats`, `uws`).
    pub peer: &'static str,
    /// Every metric both runs have, with the peer's value non-zero:
    /// sente-lite / peer. For throughputs > 1 means sente-lite is faster;
    /// for latencies, CPU and memory > 1 means sente-lite uses more.
    pub ratios: BTreeMap<String, f64>,
}

/// The servers sente-lite is compared with, in column order.
pub const PEERS: [Kind; 2] = [Kind::Nats, Kind::Uws];

impl RunResult {
    pub fn kind_label(k: Kind) -> &'static str {
        k.label()
    }
}

/// Ratios of two metric sets (a / b), where both have the metric and b's is
/// non-zero.
pub fn ratios(a: &Metrics, b: &Metrics) -> BTreeMap<String, f64> {
    a.iter()
        .filter_map(|(k, va)| {
            let vb = b.get(k)?;
            (*vb != 0.0 && va.is_finite() && vb.is_finite()).then(|| (k.clone(), va / vb))
        })
        .collect()
}

/// Pairs the sente-lite result of each case with each peer's.
pub fn compare(cases: &[Case], results: &[RunResult]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for c in cases {
        let find = |server: &str| {
            results
                .iter()
                .find(|r| r.case == c.name && r.server == server && r.ok)
        };
        let Some(s) = find(Kind::Sente.label()) else {
            continue;
        };
        for peer in PEERS {
            if let Some(p) = find(peer.label()) {
                out.push(Comparison {
                    case: c.name.clone(),
                    scenario: c.scenario,
                    peer: peer.label(),
                    ratios: ratios(&s.metrics, &p.metrics),
                });
            }
        }
    }
    out
}

/// The metrics shown in the human summary, in order, with their units.
const SHOWN: &[(&str, Unit)] = &[
    ("subscribers", Unit::Count),
    ("connections", Unit::Count),
    ("published", Unit::Count),
    ("requests", Unit::Count),
    ("expected", Unit::Count),
    ("delivered", Unit::Count),
    ("replies", Unit::Count),
    ("cycles", Unit::Count),
    ("lost", Unit::Count),
    ("duplicates", Unit::Count),
    ("connect_failures", Unit::Count),
    ("failures", Unit::Count),
    ("publish_rejected", Unit::Count),
    ("delivered_per_sec", Unit::Rate),
    ("round_trips_per_sec", Unit::Rate),
    ("cycles_per_sec", Unit::Rate),
    ("connects_per_sec", Unit::Rate),
    ("latency_p50_us", Unit::Micros),
    ("latency_p90_us", Unit::Micros),
    ("latency_p99_us", Unit::Micros),
    ("latency_max_us", Unit::Micros),
    ("connect_subscribe_p50_us", Unit::Micros),
    ("connect_subscribe_p99_us", Unit::Micros),
    ("server_cpu_seconds", Unit::Seconds),
    ("server_cpu_user_seconds", Unit::Seconds),
    ("server_cpu_sys_seconds", Unit::Seconds),
    ("server_cpu_s_per_million_deliveries", Unit::Seconds),
    ("server_cpu_user_s_per_million_deliveries", Unit::Seconds),
    ("server_cpu_sys_s_per_million_deliveries", Unit::Seconds),
    ("server_cpu_s_per_million_round_trips", Unit::Seconds),
    ("server_cpu_s_per_million_cycles", Unit::Seconds),
    ("server_cpu_s_per_million_connections", Unit::Seconds),
    ("nodes_cpu_s_per_million_deliveries", Unit::Seconds),
    ("redis_cpu_s_per_million_deliveries", Unit::Seconds),
    ("publisher_max_lag_us", Unit::Micros),
    ("max_sustained_rate", Unit::Rate),
    ("first_failed_rate", Unit::Rate),
    ("server_peak_rss_bytes", Unit::Bytes),
    ("server_rss_bytes_held", Unit::Bytes),
    ("server_rss_bytes_per_connection", Unit::Bytes),
];

#[derive(Debug, Clone, Copy)]
enum Unit {
    Count,
    Rate,
    Micros,
    Seconds,
    Bytes,
}

fn fmt_value(v: f64, u: Unit) -> String {
    match u {
        Unit::Count => format!("{v:.0}"),
        Unit::Rate => format!("{v:.0}/s"),
        Unit::Micros => {
            if v >= 10_000.0 {
                format!("{:.1} ms", v / 1000.0)
            } else {
                format!("{v:.0} µs")
            }
        }
        Unit::Seconds => format!("{v:.3} s"),
        Unit::Bytes => {
            if v >= 1024.0 * 1024.0 {
                format!("{:.1} MiB", v / (1024.0 * 1024.0))
            } else {
                format!("{v:.0} B")
            }
        }
    }
}

/// The human summary: one table per case, one column per server, and the
/// ratio column when both ran.
pub fn summary(cases: &[Case], results: &[RunResult]) -> String {
    let mut out = String::new();
    for c in cases {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.case == c.name).collect();
        if runs.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n== {} ==", c.name);
        for r in runs.iter().filter(|r| !r.ok) {
            let _ = writeln!(
                out,
                "  {}: FAILED: {}",
                r.server,
                r.error.as_deref().unwrap_or("?")
            );
        }
        let ok: Vec<&&RunResult> = runs.iter().filter(|r| r.ok).collect();
        if ok.is_empty() {
            continue;
        }
        let _ = write!(out, "  {:<40}", "metric");
        for r in &ok {
            let _ = write!(out, "{:>16}", r.server);
        }
        let sente = ok.iter().find(|r| r.server == Kind::Sente.label());
        let peers: Vec<&&RunResult> = PEERS
            .iter()
            .filter_map(|p| ok.iter().find(|r| r.server == p.label()).copied())
            .collect();
        if sente.is_some() {
            for p in &peers {
                let _ = write!(out, "{:>14}", format!("sente/{}", p.server));
            }
        }
        let _ = writeln!(out);
        for (name, unit) in SHOWN {
            if !ok.iter().any(|r| r.metrics.contains_key(*name)) {
                continue;
            }
            let _ = write!(out, "  {name:<40}");
            for r in &ok {
                let v = r
                    .metrics
                    .get(*name)
                    .map(|v| fmt_value(*v, *unit))
                    .unwrap_or_else(|| "-".into());
                let _ = write!(out, "{v:>16}");
            }
            if let Some(s) = sente {
                for p in &peers {
                    let ratio = match (s.metrics.get(*name), p.metrics.get(*name)) {
                        (Some(a), Some(b)) if *b != 0.0 => format!("{:.2}x", a / b),
                        _ => "-".into(),
                    };
                    let _ = write!(out, "{ratio:>14}");
                }
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(
            out,
            "  {:<40}{}",
            "wall time",
            ok.iter()
                .map(|r| format!("{:>16}", format!("{:.1} s", r.wall_s)))
                .collect::<String>()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Sizes;

    fn m(pairs: &[(&str, f64)]) -> Metrics {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn ratios_skip_zero_denominators_and_missing_metrics() {
        let a = m(&[("x", 10.0), ("lost", 0.0), ("only_a", 1.0), ("y", 3.0)]);
        let b = m(&[("x", 5.0), ("lost", 0.0), ("y", 4.0)]);
        let r = ratios(&a, &b);
        assert_eq!(r.len(), 2);
        assert_eq!(r["x"], 2.0);
        assert_eq!(r["y"], 0.75);
    }

    #[test]
    fn compare_pairs_results_by_case_and_summary_shows_both() {
        let cases = Sizes::preset(Size::Quick).cases(&[Scenario::Rpc]);
        let mk = |server, v| RunResult {
            case: cases[0].name.clone(),
            scenario: Scenario::Rpc,
            server,
            ok: true,
            error: None,
            wall_s: 1.0,
            metrics: m(&[("round_trips_per_sec", v), ("lost", 0.0)]),
        };
        let results = vec![mk("sente-lite", 300.0), mk("nats", 200.0), mk("uws", 600.0)];
        let c = compare(&cases, &results);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].peer, c[0].ratios["round_trips_per_sec"]),
            ("nats", 1.5)
        );
        assert_eq!(
            (c[1].peer, c[1].ratios["round_trips_per_sec"]),
            ("uws", 0.5)
        );
        let s = summary(&cases, &results);
        assert!(s.contains("sente/nats"), "{s}");
        assert!(s.contains("sente/uws"), "{s}");
        assert!(s.contains("1.50x") && s.contains("0.50x"), "{s}");
        // A failed side gives no comparison with it.
        let mut failed = results.clone();
        failed[1].ok = false;
        let c = compare(&cases, &failed);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].peer, "uws");
        failed[0].ok = false;
        assert!(compare(&cases, &failed).is_empty());
    }
}
