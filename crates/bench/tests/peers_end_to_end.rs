//! End to end against the real peers sente-lite is compared with: a real
//! `nats-server`, and the uWebSockets.js peer (`crates/bench/uws` on Node).
//! The tool starts each, runs tiny versions of every scenario over real
//! WebSocket connections, and the JSON it writes must show every message
//! delivered exactly once.
//!
//! `nats-server` must be installed (`crates/bench/install-nats.sh`), and
//! Node.js 16, 18 or 20 with npm (the tool installs the uWS package with
//! `crates/bench/install-uws.sh` from the npm registry).

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn nats_server() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d: PathBuf| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server is not installed (not on PATH, not in /usr/sbin): \
                 run `crates/bench/install-nats.sh` (apt-get install nats-server) first"
            )
        })
}

fn run_tool(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sente-lite-bench"))
        .args(args)
        .output()
        .expect("run sente-lite-bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn metric(run: &Value, name: &str) -> f64 {
    run["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("metric {name} missing in {run}"))
}

#[test]
fn every_scenario_against_a_real_nats_server_loses_nothing() {
    let nats = nats_server();
    every_scenario_loses_nothing("nats", &["--nats-bin", nats.to_str().expect("utf-8 path")]);
}

#[test]
fn every_scenario_against_the_uwebsockets_js_peer_loses_nothing() {
    every_scenario_loses_nothing("uws", &[]);
}

/// Runs every one-server scenario, tiny, against `server` (started by the
/// tool with `extra` arguments) and checks the results.
fn every_scenario_loses_nothing(server: &str, extra: &[&str]) {
    let json = std::env::temp_dir().join(format!("bench-{server}-e2e-{}.json", std::process::id()));
    let mut args = vec!["run", "--server", server];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--scenarios",
        "fanout,channels,rpc,idle,churn",
        "--duration-secs",
        "1",
        "--fanout-subscribers",
        "20",
        "--fanout-rates",
        "100",
        "--channels",
        "4",
        "--channel-subscribers",
        "3",
        "--channels-rate",
        "80",
        "--rpc-clients",
        "2",
        "--rpc-rate",
        "100",
        "--idle-connections",
        "300",
        "--idle-per-channel",
        "100",
        "--conns-per-process",
        "120",
        "--idle-hold-secs",
        "0.2",
        "--churn-count",
        "40",
        "--churn-rate",
        "80",
        "--drain-secs",
        "5",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    let (ok, stdout, stderr) = run_tool(&args);
    assert!(ok, "tool failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
    let _ = std::fs::remove_file(&json);
    assert_eq!(doc["format"], 1);
    assert_eq!(doc["mode"], "run");
    let results = doc["results"].as_array().expect("results");
    assert_eq!(results.len(), 5, "{doc}");
    for r in results {
        assert_eq!(r["server"], server);
        assert_eq!(r["ok"], true, "{r}");
        // Every scenario measured the server process the tool started.
        assert!(metric(r, "server_cpu_seconds") >= 0.0);
        assert!(metric(r, "server_peak_rss_bytes") > 1e6, "{r}");
    }
    let by = |name: &str| {
        results
            .iter()
            .find(|r| r["scenario"] == name)
            .unwrap_or_else(|| panic!("no {name} result"))
    };

    let fanout = by("fanout");
    assert_eq!(metric(fanout, "subscribers"), 20.0);
    assert_eq!(metric(fanout, "published"), 100.0);
    assert_eq!(metric(fanout, "expected"), 2000.0);
    assert_eq!(metric(fanout, "delivered"), 2000.0);
    assert_eq!(metric(fanout, "lost"), 0.0);
    assert_eq!(metric(fanout, "duplicates"), 0.0);
    assert_eq!(metric(fanout, "latency_count"), 2000.0);
    assert!(metric(fanout, "latency_p50_us") > 0.0);
    assert!(metric(fanout, "latency_max_us") >= metric(fanout, "latency_p99_us"));
    assert!(metric(fanout, "delivered_per_sec") > 500.0, "{fanout}");
    assert!(metric(fanout, "server_cpu_s_per_million_deliveries") >= 0.0);

    let channels = by("channels");
    assert_eq!(metric(channels, "expected"), 240.0);
    assert_eq!(metric(channels, "delivered"), 240.0);
    assert_eq!(metric(channels, "lost"), 0.0);

    let rpc = by("rpc");
    assert_eq!(metric(rpc, "requests"), 100.0);
    assert_eq!(metric(rpc, "replies"), 100.0);
    assert_eq!(metric(rpc, "answered_by_workers"), 100.0);
    assert_eq!(metric(rpc, "lost"), 0.0);
    assert_eq!(metric(rpc, "duplicates"), 0.0);

    // 300 connections over 3 worker processes, all alive at the probe.
    let idle = by("idle");
    assert_eq!(metric(idle, "processes"), 3.0);
    assert_eq!(metric(idle, "connections"), 300.0);
    assert_eq!(metric(idle, "delivered"), 300.0);
    assert_eq!(metric(idle, "lost"), 0.0);
    assert!(metric(idle, "server_rss_bytes_held") > 1e6);

    let churn = by("churn");
    assert_eq!(metric(churn, "cycles"), 40.0);
    assert_eq!(metric(churn, "failures"), 0.0);

    // The human summary names the case and the server.
    assert!(stdout.contains("== fanout-1x20-100ps =="), "{stdout}");
}

#[test]
fn non_loopback_targets_are_refused_before_any_connection() {
    for addr in ["10.1.2.3:80", "192.168.0.1:4222", "example.com:80"] {
        let (ok, _, stderr) = run_tool(&[
            "run",
            "--server",
            "nats",
            "--addr",
            addr,
            "--scenarios",
            "fanout",
        ]);
        assert!(!ok, "{addr} must be refused");
        assert!(stderr.contains("refusing target"), "{addr}: {stderr}");
    }
}
