//! `cargo xtask bench [--quick]`: every crate's criterion benches, then the
//! end-to-end scenarios against sente-lite and NATS in one run, then
//! `docs/BENCHMARKS.md` from both.
//!
//! `--quick` is CI's smoke run: each criterion bench runs once (`--test`) and
//! the end-to-end comparison runs at its quick size; the report goes to
//! `bench-out/BENCHMARKS-quick.md` and docs/ is left alone (timings on a
//! shared machine are noise, so nothing is judged).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub(crate) fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    // Re-render the report from the last run's results without running.
    let report_only = args.iter().any(|a| a == "--report-only");
    let root = crate::root();
    let target = target_dir(&root);
    let release = target.join("release");
    let out = root.join("bench-out");
    std::fs::create_dir_all(&out)?;

    // 1. In-process benches (criterion).
    let criterion_dir = target.join("criterion");
    if report_only {
        // Nothing to run.
    } else if quick {
        crate::run("cargo", &["bench", "--workspace", "--", "--test"])?;
    } else {
        // Fresh results only: a stale estimate must not reach the report.
        let _ = std::fs::remove_dir_all(&criterion_dir);
        crate::run("cargo", &["bench", "--workspace"])?;
    }

    // 2. End to end, over real sockets, against NATS in the same run.
    let size = if quick { "quick" } else { "full" };
    let json = out.join(format!("e2e-{size}.json"));
    let json_s = json.to_string_lossy().into_owned();
    let bench_bin = release
        .join("sente-lite-bench")
        .to_string_lossy()
        .into_owned();
    let sente_bin = release.join("sente-lite").to_string_lossy().into_owned();
    let e2e_ok = if report_only {
        Ok(())
    } else {
        crate::run("bash", &["crates/bench/install-nats.sh"])?;
        crate::run(
            "cargo",
            &[
                "build",
                "--release",
                "-p",
                "sente-lite-server",
                "-p",
                "sente-lite-bench",
            ],
        )?;
        crate::run(
            &bench_bin,
            &[
                "compare",
                "--sente-bin",
                &sente_bin,
                "--size",
                size,
                "--json",
                &json_s,
            ],
        )
    };
    let idle_rss = idle_server_rss(&release.join("sente-lite"));

    // 3. The report, even when a case failed (the failure is in it).
    let criterion = if quick {
        BTreeMap::new()
    } else {
        read_criterion(&criterion_dir)?
    };
    let e2e: Value = match std::fs::read_to_string(&json) {
        Ok(s) => serde_json::from_str(&s).context("parsing the load tool's JSON")?,
        Err(e) => bail!("the load tool wrote no results to {}: {e}", json.display()),
    };
    let report = render(&criterion, &e2e, quick, idle_rss.as_ref().ok().copied());
    if let Err(e) = &idle_rss {
        eprintln!("idle RSS not measured: {e}");
    }
    let report_path = if quick {
        out.join("BENCHMARKS-quick.md")
    } else {
        root.join("docs").join("BENCHMARKS.md")
    };
    std::fs::write(&report_path, report)?;
    eprintln!("wrote {}", report_path.display());
    e2e_ok
}

/// Where cargo puts build output (criterion writes its results there too):
/// `CARGO_TARGET_DIR` if set (relative to the workspace root), else
/// `target/`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// One criterion result: mean time per iteration and elements per iteration.
struct Estimate {
    mean_ns: f64,
    elements: Option<f64>,
}

fn read_criterion(dir: &Path) -> Result<BTreeMap<String, Estimate>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "new") {
                    if let Some((id, e)) = read_estimate(&p)? {
                        out.insert(id, e);
                    }
                } else {
                    stack.push(p);
                }
            }
        }
    }
    Ok(out)
}

fn read_estimate(new_dir: &Path) -> Result<Option<(String, Estimate)>> {
    let bench: PathBuf = new_dir.join("benchmark.json");
    let est: PathBuf = new_dir.join("estimates.json");
    let (Ok(b), Ok(e)) = (
        std::fs::read_to_string(&bench),
        std::fs::read_to_string(&est),
    ) else {
        return Ok(None);
    };
    let b: Value = serde_json::from_str(&b)?;
    let e: Value = serde_json::from_str(&e)?;
    let Some(id) = b["full_id"].as_str() else {
        return Ok(None);
    };
    let Some(mean_ns) = e["mean"]["point_estimate"].as_f64() else {
        return Ok(None);
    };
    let elements = b["throughput"]["Elements"].as_f64();
    Ok(Some((id.to_owned(), Estimate { mean_ns, elements })))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or_else(String::new, |kb| {
            format!(", {:.0} GiB RAM", kb / 1024.0 / 1024.0)
        });
    format!("{cpu}, {cores} cores{mem}, Linux")
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn metric(results: &[Value], case: &str, server: &str, name: &str) -> Option<f64> {
    results
        .iter()
        .find(|r| r["case"] == case && r["server"] == server)
        .and_then(|r| r["metrics"][name].as_f64())
}

/// Starts the release server on its defaults (port 0), reads its resident
/// memory once it is listening, and stops it: the idle server's RSS in
/// bytes.
fn idle_server_rss(bin: &Path) -> Result<u64> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(bin)
        .args(["--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    if !line.contains("listening") {
        bail!("the server did not report listening: {line:?}");
    }
    let kb = status?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kb * 1024)
}

/// `YYYY-MM-DD HH:MM UTC` from milliseconds since the Unix epoch.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (hh, mm) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
}

/// A target's verdict: met, or missed, with the figure that says by how much.
fn verdict(met: bool, by: &str) -> String {
    if met {
        format!("**met** ({by})")
    } else {
        format!("**missed** ({by})")
    }
}

/// The performance targets, each judged from this run's figures.
fn targets(
    s: &mut String,
    criterion: &BTreeMap<String, Estimate>,
    results: &[Value],
    idle_rss: Option<u64>,
) {
    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(s, "| target | measured | verdict |");
    let _ = writeln!(s, "| --- | --- | --- |");
    let per_elem = |id: &str| {
        criterion
            .get(id)
            .and_then(|e| e.elements.map(|n| e.mean_ns / n))
    };
    if let Some(ns) = per_elem("publish_fan_out/subscribers/1000") {
        let v = verdict(ns <= 50.0, &format!("{:.1}× under the limit", 50.0 / ns));
        let _ = writeln!(
            s,
            "| engine: ≤ 50 ns per delivery at 1,000 subscribers | {ns:.1} ns | {v} |"
        );
    }
    if let Some(ns) = per_elem("telemere/filtered_out") {
        let v = verdict(ns <= 2.0, "limit 2 ns");
        let _ = writeln!(
            s,
            "| telemetry: filtered-out signal ≤ 2 ns | {ns:.2} ns | {v} |"
        );
    }
    if let Some(ns) = per_elem("telemere/async_enqueue/1_thread_accepted") {
        let rate = 1e3 / ns;
        let v = verdict(rate >= 10.0, &format!("{:.0} % of the target", rate * 10.0));
        let _ = writeln!(
            s,
            "| telemetry: async enqueue ≥ 10 M signals/s from one thread, all accepted | {rate:.2} M/s | {v} |"
        );
    }
    let file = per_elem("file_e2e/telemere_blocking");
    if let Some(ns) = file {
        let rate = 1e3 / ns;
        let v = verdict(rate >= 1.0, &format!("{:.0} % of the target", rate * 100.0));
        let _ = writeln!(
            s,
            "| telemetry: JSON-lines file ≥ 1 M signals/s end to end | {rate:.2} M/s | {v} |"
        );
    }
    if let (Some(ours), Some(theirs)) = (file, per_elem("file_e2e/tracing_appender_blocking")) {
        let x = theirs / ours;
        let v = verdict(x >= 2.0, "same run");
        let _ = writeln!(
            s,
            "| telemetry: ≥ 2× tracing + tracing-appender on the same file workload | {x:.1}× | {v} |"
        );
    }
    let m = |case: &str, server: &str, name: &str| metric(results, case, server, name);
    for rate in [20, 100, 300] {
        let case = format!("fanout-1x1000-{rate}ps");
        let key = "server_cpu_s_per_million_deliveries";
        let (Some(ours), Some(theirs)) = (m(&case, "sente-lite", key), m(&case, "nats", key))
        else {
            continue;
        };
        let x = theirs / ours;
        let lost = m(&case, "sente-lite", "lost").unwrap_or(f64::NAN);
        let v = verdict(
            x >= 1.5 && lost == 0.0,
            &format!("{:.0} % of the target ratio", x / 1.5 * 100.0),
        );
        let _ = writeln!(
            s,
            "| fan-out 1×1,000 at {rate}/s: ≥ 1.5× NATS's deliveries per server CPU-second, nothing lost | {x:.2}× NATS, {lost} lost | {v} |"
        );
        let p99 = m(&case, "sente-lite", "latency_p99_us");
        let np99 = m(&case, "nats", "latency_p99_us");
        if let (Some(p99), Some(np99)) = (p99, np99) {
            let v = verdict(p99 <= np99, &format!("{:.2}× NATS", p99 / np99));
            let _ = writeln!(
                s,
                "| fan-out 1×1,000 at {rate}/s: p99 publish→deliver no worse than NATS | {:.1} ms vs {:.1} ms | {v} |",
                p99 / 1e3,
                np99 / 1e3
            );
        }
    }
    if let Some(b) = m(
        "idle-15000",
        "sente-lite",
        "server_rss_bytes_per_connection",
    ) {
        let v = verdict(b <= 4096.0, "limit 4,096 B");
        let _ = writeln!(
            s,
            "| 15,000 idle subscribed connections at ≤ 4 KiB of server RSS each | {b:.0} B | {v} |"
        );
    }
    if let Some(rss) = idle_rss {
        let mb = rss as f64 / 1e6;
        let v = verdict(mb <= 10.0, "limit 10 MB");
        let _ = writeln!(
            s,
            "| idle server RSS ≤ 10 MB (release binary, default config) | {mb:.1} MB | {v} |"
        );
    }
    if let Some(p99) = m("rpc-1w-10c-1000ps", "sente-lite", "latency_p99_us") {
        let np99 = m("rpc-1w-10c-1000ps", "nats", "latency_p99_us").unwrap_or(f64::NAN);
        let v = verdict(p99 <= 1000.0, &format!("{:.2}× the limit", p99 / 1000.0));
        let _ = writeln!(
            s,
            "| RPC round trip p99 ≤ 1 ms at 1,000 requests/s | {:.2} ms (NATS {:.2} ms) | {v} |",
            p99 / 1e3,
            np99 / 1e3
        );
    }
    let _ = writeln!(s);
}

fn render(
    criterion: &BTreeMap<String, Estimate>,
    e2e: &Value,
    quick: bool,
    idle_rss: Option<u64>,
) -> String {
    let mut s = String::new();
    let date = e2e["started_at_ms"]
        .as_u64()
        .map_or_else(|| "unknown".to_owned(), utc);
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by `cargo xtask bench{}`; do not edit by hand. Every figure below comes \
         from that one run.\n",
        if quick { " --quick" } else { "" }
    );
    let _ = writeln!(s, "- Machine: {}", machine());
    let _ = writeln!(s, "- Run started: {date}");
    let _ = writeln!(
        s,
        "- Reproduce: `cargo xtask bench` (criterion: `cargo bench --workspace`; end to end: \
         `cargo build --release -p sente-lite-server -p sente-lite-bench && \
         target/release/sente-lite-bench compare --sente-bin target/release/sente-lite --size {}`)\n",
        if quick { "quick" } else { "full" }
    );

    let empty = Vec::new();
    let results = e2e["results"].as_array().unwrap_or(&empty);
    targets(&mut s, criterion, results, idle_rss);

    if !criterion.is_empty() {
        let _ = writeln!(s, "## In process (criterion)\n");
        let _ = writeln!(
            s,
            "| benchmark | time per iteration | elements/s | ns per element |"
        );
        let _ = writeln!(s, "| --- | ---: | ---: | ---: |");
        for (id, e) in criterion {
            let (rate, per) = match e.elements {
                Some(n) if n > 0.0 => (
                    fmt_num(n / (e.mean_ns * 1e-9)),
                    format!("{:.2}", e.mean_ns / n),
                ),
                _ => ("–".to_owned(), "–".to_owned()),
            };
            let _ = writeln!(s, "| `{id}` | {} ns | {rate} | {per} |", fmt_num(e.mean_ns));
        }
        let _ = writeln!(s);
    }

    let cases = e2e["cases"].as_array().unwrap_or(&empty);
    let _ = writeln!(
        s,
        "## End to end over loopback: sente-lite and NATS in one run\n"
    );
    let _ = writeln!(
        s,
        "Each case runs against a fresh sente-lite (release build) and a fresh `nats-server` \
         (its WebSocket listener, Debian package), both on 127.0.0.1, driven by \
         `sente-lite-bench` on the same 2 cores. CPU and RSS are the server process's, read \
         from /proc. Latency is publish→deliver (timestamps in the payload).\n"
    );
    let _ = writeln!(
        s,
        "| case | server | delivered/s | lost | dup | p50 µs | p90 µs | p99 µs | max µs | \
         server CPU s / M deliveries | peak RSS MiB |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in cases {
        let Some(case) = c["name"].as_str() else {
            continue;
        };
        for server in ["sente-lite", "nats"] {
            let Some(r) = results
                .iter()
                .find(|r| r["case"] == case && r["server"] == server)
            else {
                continue;
            };
            if r["ok"] != Value::Bool(true) {
                let _ = writeln!(
                    s,
                    "| {case} | {server} | failed: {} |  |  |  |  |  |  |  |  |",
                    r["error"].as_str().unwrap_or("?").replace('|', "/")
                );
                continue;
            }
            let m = |n: &str| metric(results, case, server, n);
            let cpu = m("server_cpu_s_per_million_deliveries")
                .or_else(|| m("server_cpu_s_per_million_round_trips"))
                .or_else(|| m("server_cpu_s_per_million_cycles"))
                .or_else(|| m("server_cpu_s_per_million_connections"));
            let rate = m("delivered_per_sec")
                .or_else(|| m("round_trips_per_sec"))
                .or_else(|| m("cycles_per_sec"))
                .or_else(|| m("connects_per_sec"));
            let f = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), fmt_num);
            let _ = writeln!(
                s,
                "| {case} | {server} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                f(rate),
                f(m("lost")),
                f(m("duplicates")),
                f(m("latency_p50_us")),
                f(m("latency_p90_us")),
                f(m("latency_p99_us")),
                f(m("latency_max_us")),
                f(cpu),
                f(m("server_peak_rss_bytes").map(|b| b / 1048576.0)),
            );
        }
    }
    let _ = writeln!(s);

    // Idle connections: memory per connection.
    let idle: Vec<&Value> = cases.iter().filter(|c| c["scenario"] == "idle").collect();
    if !idle.is_empty() {
        let _ = writeln!(s, "### Idle connections\n");
        let _ = writeln!(
            s,
            "| case | server | connections | server RSS held | bytes per connection |"
        );
        let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: |");
        for c in idle {
            let case = c["name"].as_str().unwrap_or("?");
            for server in ["sente-lite", "nats"] {
                let m = |n: &str| metric(results, case, server, n);
                let _ = writeln!(
                    s,
                    "| {case} | {server} | {} | {} MiB | {} |",
                    m("connections").map_or("–".to_owned(), fmt_num),
                    m("server_rss_bytes_held")
                        .map_or("–".to_owned(), |b| format!("{:.1}", b / 1048576.0)),
                    m("server_rss_bytes_per_connection").map_or("–".to_owned(), fmt_num),
                );
            }
        }
        let _ = writeln!(s);
    }

    // Ratios as the tool computed them (sente-lite / NATS).
    if let Some(cmp) = e2e["comparisons"].as_array() {
        let _ = writeln!(s, "### Ratios (sente-lite ÷ NATS; below 1 is better for time, CPU and memory, above 1 for rates)\n");
        let _ = writeln!(
            s,
            "| case | delivered/s | p50 | p99 | server CPU per delivery | RSS |"
        );
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
        for c in cmp {
            let r = &c["ratios"];
            let g = |names: &[&str]| {
                names
                    .iter()
                    .find_map(|n| r[*n].as_f64())
                    .map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                c["case"].as_str().unwrap_or("?"),
                g(&["delivered_per_sec", "round_trips_per_sec", "cycles_per_sec"]),
                g(&["latency_p50_us"]),
                g(&["latency_p99_us"]),
                g(&[
                    "server_cpu_s_per_million_deliveries",
                    "server_cpu_s_per_million_round_trips",
                    "server_cpu_s_per_million_cycles",
                    "server_cpu_s_per_million_connections",
                ]),
                g(&["server_rss_bytes_per_connection", "server_peak_rss_bytes"]),
            );
        }
        let _ = writeln!(s);
    }
    s
}
