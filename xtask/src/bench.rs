//! `cargo xtask bench [--quick]`: every crate's criterion benches, then the
//! end-to-end scenarios against sente-lite and NATS in one run, then
//! `docs/BENCHMARKS.md` from both, and the benchmark section of
//! `docs/TELEMETRY.md` (between its `bench:telemetry` markers) from the same
//! criterion results, so the two documents show the same figures.
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
    let delivery_json = out.join(if quick {
        "delivery-quick.json"
    } else {
        "delivery.json"
    });
    // Only the delivery guarantees' section, spliced into the report.
    if args.iter().any(|a| a == "--delivery-only") {
        find_redis_server()?;
        build_release()?;
        run_delivery(&release, &delivery_json, quick)?;
        let path = if quick {
            out.join("BENCHMARKS-quick.md")
        } else {
            root.join("docs").join("BENCHMARKS.md")
        };
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        let body = delivery_section(&delivery_json)?;
        let doc = replace_section(&doc, &body);
        std::fs::write(&path, doc)?;
        eprintln!("wrote {}", path.display());
        return Ok(());
    }
    // The cluster scenarios start a redis-server of their own: say so now,
    // not after the criterion benches.
    if !report_only {
        find_redis_server()?;
    }

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
        build_release()?;
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
    // 3. The delivery guarantees (both brokers).
    let delivery_ok = if report_only {
        Ok(())
    } else {
        run_delivery(&release, &delivery_json, quick)
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
    let mut report = render(&criterion, &e2e, quick, idle_rss.as_ref().ok().copied());
    match delivery_section(&delivery_json) {
        Ok(section) => {
            report.push('\n');
            report.push_str(&section);
        }
        Err(e) => eprintln!("no delivery section: {e:#}"),
    }
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
    // The telemetry benches again, in the telemetry document, from the same
    // results (a quick run has no criterion estimates: docs stay as they are).
    if !quick {
        write_telemetry_doc(
            &root.join("docs").join("TELEMETRY.md"),
            &criterion,
            &run_date(&e2e),
        )?;
    }
    e2e_ok.and(delivery_ok)
}

/// `doc` with its delivery section (markers included) replaced by
/// `section`, or with `section` appended when it has none.
fn replace_section(doc: &str, section: &str) -> String {
    use crate::delivery_report::{END, START};
    match (doc.find(START), doc.find(END)) {
        (Some(a), Some(b)) if a < b => {
            format!(
                "{}{}{}",
                &doc[..a],
                section.trim_end(),
                &doc[b + END.len()..]
            )
        }
        _ => format!("{}\n\n{section}", doc.trim_end()),
    }
}

/// The release builds the load tool runs.
fn build_release() -> Result<()> {
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
    )
}

/// `sente-lite-bench delivery`, its results to `json`.
fn run_delivery(release: &Path, json: &Path, quick: bool) -> Result<()> {
    let bench = release
        .join("sente-lite-bench")
        .to_string_lossy()
        .into_owned();
    let sente = release.join("sente-lite").to_string_lossy().into_owned();
    let json = json.to_string_lossy().into_owned();
    let mut args = vec!["delivery", "--sente-bin", &sente, "--json", &json];
    if quick {
        args.push("--quick");
    }
    crate::run(&bench, &args)
}

/// The report's delivery section from the tool's JSON at `json`.
fn delivery_section(json: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let d: Value = serde_json::from_str(&text).context("parsing the delivery results")?;
    let date = d["date-ms"]
        .as_u64()
        .map_or_else(|| "unknown".to_owned(), utc);
    Ok(crate::delivery_report::section(&d, &date, &machine()))
}

/// The `redis-server` binary (the Debian package's `/usr/bin/redis-server`,
/// or on `PATH`), or an error saying how to get it.
fn find_redis_server() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .with_context(|| {
            "redis-server not found (on PATH, /usr/bin, /usr/sbin): the cluster benchmarks start \
             a redis-server of their own; install the Debian package \
             (`apt-get install redis-server`; `.ci/run` installs it)"
        })
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

/// Mean nanoseconds per element (signal, delivery, ...), when criterion
/// knows the elements per iteration.
fn ns_per_element(e: &Estimate) -> Option<f64> {
    e.elements.filter(|n| *n > 0.0).map(|n| e.mean_ns / n)
}

/// `(elements per second, ns per element)` as both reports print them.
fn rate_and_per_element(e: &Estimate) -> (String, String) {
    match ns_per_element(e) {
        Some(per) => (fmt_num(1e9 / per), format!("{per:.2}")),
        None => ("–".to_owned(), "–".to_owned()),
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

/// One row of the targets table.
struct TargetRow {
    /// A telemetry target (also shown in docs/TELEMETRY.md).
    telemetry: bool,
    line: String,
}

/// The targets judged from criterion's figures, in table order.
fn criterion_targets(criterion: &BTreeMap<String, Estimate>) -> Vec<TargetRow> {
    let mut rows = Vec::new();
    let mut row = |telemetry: bool, line: String| rows.push(TargetRow { telemetry, line });
    let per_elem = |id: &str| criterion.get(id).and_then(ns_per_element);
    if let Some(ns) = per_elem("publish_fan_out/subscribers/1000") {
        let v = verdict(ns <= 50.0, &format!("{:.1}× under the limit", 50.0 / ns));
        row(
            false,
            format!("| engine: ≤ 50 ns per delivery at 1,000 subscribers | {ns:.1} ns | {v} |"),
        );
    }
    if let Some(ns) = per_elem("telemere/filtered_out") {
        let v = verdict(ns <= 2.0, "limit 2 ns");
        row(
            true,
            format!("| telemetry: filtered-out signal ≤ 2 ns | {ns:.2} ns | {v} |"),
        );
    }
    if let Some(ns) = per_elem("telemere/async_enqueue/1_thread_accepted") {
        let rate = 1e3 / ns;
        let v = verdict(rate >= 10.0, &format!("{:.0} % of the target", rate * 10.0));
        row(
            true,
            format!(
                "| telemetry: async enqueue ≥ 10 M signals/s from one thread, all accepted | {rate:.2} M/s | {v} |"
            ),
        );
    }
    let file = per_elem("file_e2e/telemere_blocking");
    if let Some(ns) = file {
        let rate = 1e3 / ns;
        let v = verdict(rate >= 1.0, &format!("{:.0} % of the target", rate * 100.0));
        row(
            true,
            format!(
                "| telemetry: JSON-lines file ≥ 1 M signals/s end to end | {rate:.2} M/s | {v} |"
            ),
        );
    }
    if let (Some(ours), Some(theirs)) = (file, per_elem("file_e2e/tracing_appender_blocking")) {
        let x = theirs / ours;
        let v = verdict(x >= 2.0, "same run");
        row(
            true,
            format!(
                "| telemetry: ≥ 2× tracing + tracing-appender on the same file workload | {x:.1}× | {v} |"
            ),
        );
    }
    rows
}

/// The performance targets, each judged from this run's figures.
fn targets(
    s: &mut String,
    criterion: &BTreeMap<String, Estimate>,
    cases: &[Value],
    results: &[Value],
    idle_rss: Option<u64>,
) {
    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(s, "| target | measured | verdict |");
    let _ = writeln!(s, "| --- | --- | --- |");
    for r in criterion_targets(criterion) {
        let _ = writeln!(s, "{}", r.line);
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
        // uWebSockets.js: CPU per delivery and p99 no worse than its.
        let split = |server: &str| {
            let u = m(&case, server, "server_cpu_user_s_per_million_deliveries");
            let y = m(&case, server, "server_cpu_sys_s_per_million_deliveries");
            match (u, y) {
                (Some(u), Some(y)) => format!("{u:.2} + {y:.2} µs"),
                _ => "–".to_owned(),
            }
        };
        if let Some(uws) = m(&case, "uws", key) {
            let v = verdict(
                ours <= uws && lost == 0.0,
                &format!("{:.2}× uWebSockets.js", ours / uws),
            );
            let _ = writeln!(
                s,
                "| fan-out 1×1,000 at {rate}/s: server CPU per delivery (user + sys) ≤ uWebSockets.js's, nothing lost | {} vs {} | {v} |",
                split("sente-lite"),
                split("uws")
            );
        }
        let up99 = m(&case, "uws", "latency_p99_us");
        if let (Some(p99), Some(up99)) = (p99, up99) {
            let v = verdict(p99 <= up99, &format!("{:.2}× uWebSockets.js", p99 / up99));
            let _ = writeln!(
                s,
                "| fan-out 1×1,000 at {rate}/s: p99 publish→deliver no worse than uWebSockets.js | {:.1} ms vs {:.1} ms | {v} |",
                p99 / 1e3,
                up99 / 1e3
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
        if np99.is_finite() {
            let v = verdict(p99 <= np99, &format!("{:.2}× NATS", p99 / np99));
            let _ = writeln!(
                s,
                "| RPC round trip p99 at 1,000 requests/s no worse than NATS | {:.2} ms vs {:.2} ms | {v} |",
                p99 / 1e3,
                np99 / 1e3
            );
        }
    }
    for row in cluster_goals(cases, results) {
        let _ = writeln!(s, "{row}");
    }
    let _ = writeln!(s);
}

/// The markers around the generated part of docs/TELEMETRY.md.
/// The servers of the end-to-end tables, in row order (the bench tool's
/// labels).
const SERVERS: [&str; 3] = ["sente-lite", "nats", "uws"];

const TELEMETRY_START: &str = "<!-- bench:telemetry:start -->";
const TELEMETRY_END: &str = "<!-- bench:telemetry:end -->";

/// The telemetry benches in the order docs/TELEMETRY.md lists them, with
/// what each measures. Any other `telemere/*` or `file_e2e/*` result is
/// listed after them.
const TELEMETRY_BENCHES: &[(&str, &str)] = &[
    ("telemere/filtered_out", "`debug!` below the level gate"),
    (
        "telemere/sync_noop",
        "`info!` + data (serialized on the caller) to a sync no-op handler",
    ),
    (
        "telemere/async_enqueue/1_threads",
        "`info!` + `Lazy` data into an async `Dropping` queue (1024) with a no-op worker; \
         calls that meet a full queue drop the signal (the bench prints how many)",
    ),
    (
        "telemere/async_enqueue/2_threads",
        "the same from two emitting threads (time per signal over both)",
    ),
    (
        "telemere/async_enqueue/1_threads_eager_data",
        "the same with the data serialized on the caller",
    ),
    (
        "telemere/async_enqueue/1_thread_accepted",
        "every signal really enqueued (chunks of one buffer, drained off the clock)",
    ),
    (
        "telemere/async_enqueue/1_thread_accepted_coarse_clock",
        "the same with `Clock::Coarse` (the kernel's coarse clock)",
    ),
    (
        "file_e2e/telemere_blocking",
        "50,000 `info!` + data into an async `Blocking` (1024) JSON-lines file handler, \
         until drained and flushed; nothing dropped",
    ),
    (
        "file_e2e/tracing_appender_blocking",
        "the same events through `tracing`, its JSON formatter and `tracing-appender`'s \
         non-blocking writer (lossy = false, 1024 lines)",
    ),
    (
        "file_e2e/telemere_dropping",
        "50,000 in a burst into `Dropping` (1024): most are dropped and counted; \
         the rate is of signals emitted",
    ),
    (
        "file_e2e/tracing_appender_dropping",
        "the same burst into tracing-appender, lossy (1024 lines)",
    ),
];

/// The seed design's telemetry figures, in signals per second.
const SEED_SYNC_PER_SEC: f64 = 2_720.0;
const SEED_ASYNC_PER_SEC: f64 = 66_667.0;

/// The generated part of docs/TELEMETRY.md (without the markers): the
/// telemetry benches and targets of this run, with the same figures as
/// docs/BENCHMARKS.md.
fn telemetry_section(criterion: &BTreeMap<String, Estimate>, date: &str, machine: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<!-- Generated by `cargo xtask bench` from the run docs/BENCHMARKS.md reports; \
         do not edit by hand. -->\n"
    );
    let _ = writeln!(
        s,
        "Run started {date} on {machine} (the run of [BENCHMARKS.md](BENCHMARKS.md)). \
         Command: `cargo bench -p telemere-lite`, within `cargo xtask bench`. Each figure is \
         criterion's mean; files are written to a temporary directory.\n"
    );
    let _ = writeln!(s, "| bench | what | time / signal | signals/s |");
    let _ = writeln!(s, "| --- | --- | ---: | ---: |");
    let known = TELEMETRY_BENCHES.iter().map(|(id, what)| (*id, *what));
    let others = criterion
        .keys()
        .filter(|id| id.starts_with("telemere/") || id.starts_with("file_e2e/"))
        .filter(|id| TELEMETRY_BENCHES.iter().all(|(k, _)| k != id))
        .map(|id| (id.as_str(), ""));
    for (id, what) in known.chain(others) {
        let Some(e) = criterion.get(id) else {
            continue;
        };
        let (rate, per) = rate_and_per_element(e);
        let _ = writeln!(s, "| `{id}` | {what} | {per} ns | {rate} |");
    }
    let rows: Vec<TargetRow> = criterion_targets(criterion)
        .into_iter()
        .filter(|r| r.telemetry)
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(s, "\n| target | measured | verdict |");
        let _ = writeln!(s, "| --- | --- | --- |");
        for r in rows {
            let _ = writeln!(s, "{}", r.line);
        }
    }
    let rate = |id: &str| {
        criterion
            .get(id)
            .and_then(ns_per_element)
            .map(|ns| 1e9 / ns)
    };
    let vs_seed = [
        (
            "sync delivery",
            rate("telemere/sync_noop"),
            SEED_SYNC_PER_SEC,
        ),
        (
            "accepted async enqueue",
            rate("telemere/async_enqueue/1_thread_accepted"),
            SEED_ASYNC_PER_SEC,
        ),
        (
            "async end to end into a file (the seed's figure did not include the I/O)",
            rate("file_e2e/telemere_blocking"),
            SEED_ASYNC_PER_SEC,
        ),
    ];
    let parts: Vec<String> = vs_seed
        .iter()
        .filter_map(|(what, ours, seed)| ours.map(|r| format!("{:.0}× for {what}", r / seed)))
        .collect();
    if !parts.is_empty() {
        let _ = writeln!(
            s,
            "\nAgainst the seed design's figures (sync 2,720 signals/s, async 66,667 signals/s): \
             {}.",
            parts.join("; ")
        );
    }
    s
}

/// Replaces what lies between the `start` and `end` marker lines of `doc`
/// with `body`, keeping the markers and everything outside them.
fn splice(doc: &str, start: &str, end: &str, body: &str) -> Result<String> {
    let Some(a) = doc.find(start) else {
        bail!("marker {start} not found");
    };
    let from = a + start.len();
    let Some(b) = doc[from..].find(end).map(|i| from + i) else {
        bail!("marker {end} not found after {start}");
    };
    let mut out = String::with_capacity(doc.len() + body.len());
    out.push_str(&doc[..from]);
    out.push('\n');
    out.push_str(body);
    if !body.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&doc[b..]);
    Ok(out)
}

/// Renders the generated part of docs/TELEMETRY.md into it.
fn write_telemetry_doc(
    path: &Path,
    criterion: &BTreeMap<String, Estimate>,
    date: &str,
) -> Result<()> {
    let doc =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let body = telemetry_section(criterion, date, &machine());
    let doc = splice(&doc, TELEMETRY_START, TELEMETRY_END, &body)
        .with_context(|| format!("updating {}", path.display()))?;
    std::fs::write(path, doc)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// When the run started, from the load tool's results.
fn run_date(e2e: &Value) -> String {
    e2e["started_at_ms"]
        .as_u64()
        .map_or_else(|| "unknown".to_owned(), utc)
}

fn render(
    criterion: &BTreeMap<String, Estimate>,
    e2e: &Value,
    quick: bool,
    idle_rss: Option<u64>,
) -> String {
    let mut s = String::new();
    let date = run_date(e2e);
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by `cargo xtask bench{}`; do not edit by hand. Every figure below comes \
         from that one run (the delivery section names its own run: it can be rerun alone \
         with `--delivery-only`).\n",
        if quick { " --quick" } else { "" }
    );
    let _ = writeln!(s, "- Machine: {}", machine());
    let _ = writeln!(s, "- Run started: {date}");
    let _ = writeln!(
        s,
        "- Reproduce: `cargo xtask bench` (criterion: `cargo bench --workspace`; end to end, \
         with `nats-server`, `redis-server` and Node.js installed: \
         `cargo build --release -p sente-lite-server -p sente-lite-bench && \
         target/release/sente-lite-bench compare --sente-bin target/release/sente-lite --size {}`)\n",
        if quick { "quick" } else { "full" }
    );

    let empty = Vec::new();
    let results = e2e["results"].as_array().unwrap_or(&empty);
    let cases = e2e["cases"].as_array().unwrap_or(&empty);
    targets(&mut s, criterion, cases, results, idle_rss);

    if !criterion.is_empty() {
        let _ = writeln!(s, "## In process (criterion)\n");
        let _ = writeln!(
            s,
            "| benchmark | time per iteration | elements/s | ns per element |"
        );
        let _ = writeln!(s, "| --- | ---: | ---: | ---: |");
        for (id, e) in criterion {
            let (rate, per) = rate_and_per_element(e);
            let _ = writeln!(s, "| `{id}` | {} ns | {rate} | {per} |", fmt_num(e.mean_ns));
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(
        s,
        "## End to end over loopback: sente-lite, NATS and uWebSockets.js in one run\n"
    );
    let _ = writeln!(
        s,
        "Each case runs against a fresh sente-lite (release build), a fresh `nats-server` \
         (its WebSocket listener, Debian package) and a fresh uWebSockets.js peer (`uws`: \
         our protocol on uWS topics, crates/bench/uws, on Node), all on 127.0.0.1, driven \
         by `sente-lite-bench` on the same 2 cores. CPU and RSS are the server process's, \
         read from /proc; CPU is split into user and system (kernel) time. Latency is \
         publish→deliver (timestamps in the payload).\n"
    );
    let _ = writeln!(
        s,
        "| case | server | delivered/s | lost | dup | p50 µs | p90 µs | p99 µs | max µs | \
         server CPU s / M deliveries | user | sys | peak RSS MiB |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in cases.iter().filter(|c| !is_cluster_scenario(c)) {
        let Some(case) = c["name"].as_str() else {
            continue;
        };
        for server in SERVERS {
            let Some(r) = results
                .iter()
                .find(|r| r["case"] == case && r["server"] == server)
            else {
                continue;
            };
            if r["ok"] != Value::Bool(true) {
                let _ = writeln!(
                    s,
                    "| {case} | {server} | failed: {} |  |  |  |  |  |  |  |  |  |  |",
                    r["error"].as_str().unwrap_or("?").replace('|', "/")
                );
                continue;
            }
            let m = |n: &str| metric(results, case, server, n);
            let per_million = |part: &str| {
                ["deliveries", "round_trips", "cycles", "connections"]
                    .iter()
                    .find_map(|per| m(&format!("server_cpu{part}_s_per_million_{per}")))
            };
            let (cpu, user, sys) = (per_million(""), per_million("_user"), per_million("_sys"));
            let rate = m("delivered_per_sec")
                .or_else(|| m("round_trips_per_sec"))
                .or_else(|| m("cycles_per_sec"))
                .or_else(|| m("connects_per_sec"));
            let f = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), fmt_num);
            let _ = writeln!(
                s,
                "| {case} | {server} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                f(rate),
                f(m("lost")),
                f(m("duplicates")),
                f(m("latency_p50_us")),
                f(m("latency_p90_us")),
                f(m("latency_p99_us")),
                f(m("latency_max_us")),
                f(cpu),
                f(user),
                f(sys),
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
            for server in SERVERS {
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

    // Ratios as the tool computed them (sente-lite / each peer).
    if let Some(cmp) = e2e["comparisons"].as_array() {
        let _ = writeln!(s, "### Ratios (sente-lite ÷ peer; below 1 is better for time, CPU and memory, above 1 for rates)\n");
        let _ = writeln!(
            s,
            "| case | peer | delivered/s | p50 | p99 | server CPU per delivery | RSS |"
        );
        let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
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
                "| {} | {} | {} | {} | {} | {} | {} |",
                c["case"].as_str().unwrap_or("?"),
                // Reports from before the uWebSockets.js peer compared with NATS only.
                c["peer"].as_str().unwrap_or("nats"),
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

    cluster_section(&mut s, cases, results);
    s
}

// ------------------------------------------------------------- cluster --

/// A cluster case of the run (`spec.kind == "cluster"`) and the one-node
/// case it is judged against.
struct ClusterCase<'a> {
    name: &'a str,
    nodes: u64,
    per_node: u64,
    rate: f64,
    baseline: &'a str,
}

fn cluster_cases(cases: &[Value]) -> Vec<ClusterCase<'_>> {
    cases
        .iter()
        .filter(|c| c["spec"]["kind"] == "cluster")
        .filter_map(|c| {
            let k = &c["spec"];
            Some(ClusterCase {
                name: c["name"].as_str()?,
                nodes: k["nodes"].as_u64()?,
                per_node: k["subscribers_per_node"].as_u64()?,
                rate: k["rate"].as_f64()?,
                baseline: k["baseline"].as_str()?,
            })
        })
        .collect()
}

/// Whether a case is one of the cluster scenarios' (shown in their own
/// section, not in the sente-lite / NATS table).
fn is_cluster_scenario(c: &Value) -> bool {
    c["scenario"] == "cluster" || c["scenario"] == "cluster-max"
}

/// `1234567` as `1,234,567`.
fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Microseconds as `105.5 ms`, or `25.7 s` from 10 s up.
fn duration_us(us: f64) -> String {
    if us >= 1e7 {
        format!("{:.1} s", us / 1e6)
    } else {
        format!("{:.1} ms", us / 1e3)
    }
}

/// Microseconds as milliseconds in a table cell (`–` when absent).
fn ms_cell(us: Option<f64>) -> String {
    us.map_or_else(|| "–".to_owned(), |us| format!("{:.1}", us / 1e3))
}

/// "met (84 % of the limit)" or "missed (1.29× the limit)" for a ratio that
/// must stay at or under `limit`.
fn under_limit(ratio: f64, limit: f64) -> String {
    if ratio <= limit {
        verdict(
            true,
            &format!("{:.0} % of the limit", ratio / limit * 100.0),
        )
    } else {
        verdict(false, &format!("{:.2}× the limit", ratio / limit))
    }
}

/// The goals of the cluster cases, as rows of a `| goal | measured |
/// verdict |` table: nothing lost; cluster CPU per delivery (nodes +
/// Redis) at most 1.5× one node's; p99 at most 2× one node's.
fn cluster_goals(cases: &[Value], results: &[Value]) -> Vec<String> {
    let mut rows = Vec::new();
    let m = |case: &str, name: &str| metric(results, case, "sente-lite", name);
    for c in cluster_cases(cases) {
        let label = format!(
            "cluster {}×{} at {}/s",
            c.nodes,
            thousands(c.per_node as f64),
            thousands(c.rate)
        );
        let (Some(lost), Some(expected)) = (m(c.name, "lost"), m(c.name, "expected")) else {
            rows.push(format!(
                "| {label}: nothing lost; CPU and p99 against one node | the case did not run to the end | **missed** (no figures) |"
            ));
            continue;
        };
        let unacked = m(c.name, "publish_unacked").unwrap_or(0.0);
        let measured = if lost == 0.0 {
            format!("0 of {} deliveries lost", thousands(expected))
        } else {
            let mut t = format!(
                "{} of {} deliveries not received ({:.1} %)",
                thousands(lost),
                thousands(expected),
                lost / expected.max(1.0) * 100.0
            );
            if unacked > 0.0 {
                let _ = write!(
                    t,
                    "; {} publishes still unacknowledged at the end",
                    thousands(unacked)
                );
            }
            t
        };
        let by = if lost == 0.0 {
            "0 lost".to_owned()
        } else {
            format!("{:.1} % not received", lost / expected.max(1.0) * 100.0)
        };
        let v = verdict(lost == 0.0, &by);
        rows.push(format!("| {label}: nothing lost | {measured} | {v} |"));
        let key = "server_cpu_s_per_million_deliveries";
        if let (Some(ours), Some(single)) = (m(c.name, key), m(c.baseline, key)) {
            let x = ours / single;
            rows.push(format!(
                "| {label}: CPU per delivery (nodes + Redis) ≤ 1.5× one node's | {ours:.2} vs {single:.2} s per M deliveries: {x:.2}× | {} |",
                under_limit(x, 1.5)
            ));
        }
        let key = "latency_p99_us";
        if let (Some(ours), Some(single)) = (m(c.name, key), m(c.baseline, key)) {
            let x = ours / single;
            rows.push(format!(
                "| {label}: p99 publish→deliver ≤ 2× one node's | {} vs {}: {x:.2}× | {} |",
                duration_us(ours),
                duration_us(single),
                under_limit(x, 2.0)
            ));
        }
    }
    rows
}

/// Why a max-rate step failed, from its figures and the search's rules.
fn step_failure(m: &Value, spec: &Value, i: usize) -> Option<String> {
    let g = |k: &str| m[format!("step{i}_{k}")].as_f64();
    if g("ok") == Some(1.0) {
        return None;
    }
    let (lost, expected) = (g("lost").unwrap_or(0.0), g("expected").unwrap_or(0.0));
    let lag_ms = g("publisher_max_lag_us").unwrap_or(0.0) / 1e3;
    let max_lag = spec["max_lag_ms"].as_f64().unwrap_or(f64::INFINITY);
    let max_p99 = spec["max_p99_ms"].as_f64().unwrap_or(f64::INFINITY);
    let late = g("late").unwrap_or(0.0);
    let why = if g("unacked").unwrap_or(0.0) > 0.0 {
        format!(
            "{} publishes not acknowledged in time",
            thousands(g("unacked").unwrap_or(0.0))
        )
    } else if lag_ms > max_lag {
        format!("the publisher fell {lag_ms:.0} ms behind")
    } else if lost > 0.0 {
        format!(
            "{} of {} deliveries missing",
            thousands(lost),
            thousands(expected)
        )
    } else if late * 100.0 > expected {
        format!(
            "p99 {:.0} ms, over {max_p99:.0} ms",
            g("latency_p99_us").unwrap_or(f64::NAN) / 1e3
        )
    } else {
        "the publisher did not send every message in time".to_owned()
    };
    Some(why)
}

/// The section of the cluster scenarios: the cluster cases next to their
/// one-node baselines, the goals, and the max-rate searches.
fn cluster_section(s: &mut String, cases: &[Value], results: &[Value]) {
    let clusters = cluster_cases(cases);
    let searches: Vec<&Value> = cases
        .iter()
        .filter(|c| c["spec"]["kind"] == "max-rate")
        .collect();
    if clusters.is_empty() && searches.is_empty() {
        return;
    }
    let m = |case: &str, name: &str| metric(results, case, "sente-lite", name);
    let failed = |case: &str| {
        results
            .iter()
            .find(|r| r["case"] == case && r["server"] == "sente-lite")
            .filter(|r| r["ok"] != Value::Bool(true))
            .map(|r| r["error"].as_str().unwrap_or("?").replace('|', "/"))
    };
    let _ = writeln!(s, "## Cluster: three sente-lite nodes on one Redis\n");
    let _ = writeln!(
        s,
        "Each cluster case starts a `redis-server` of its own (Debian package, a free port of \
         127.0.0.1, `--save \"\" --appendonly no`), then three release sente-lite nodes on it \
         (`SENTE_LITE_BROKER_KIND=redis`, distinct `SENTE_LITE_NODE_ID`s, \
         `SENTE_LITE_BROKER_NODE_TTL_MS=3000` so that they see each other within a second, \
         otherwise the same flags as the single node), and waits until every node's `/health` \
         is 200 and lists the three nodes. The subscribers of the one channel are spread \
         round-robin over the nodes; the one publisher is on node 1 and sends 100 B messages at \
         the case's rate for as long as the fan-out cases publish. The one-node case is the \
         same binary with its default in-process broker, in the same run (a fan-out case above \
         is reused when its traffic is the same). Everything runs on the same 2 cores as the load \
         tool. CPU is read from /proc for each process over the publishing and the drain: *nodes* \
         is the three nodes' sum, *total* adds redis-server. Lost = published × subscribers − \
         distinct messages received by the end of the drain: 5 s after the publisher's last \
         acknowledgement, or, while acknowledgements are missing (*unacked publishes*: still \
         queued on node 1), 5 s after the publisher stops waiting for them (twice the publishing \
         time + 10 s after the start).\n"
    );
    if !clusters.is_empty() {
        let _ = writeln!(
            s,
            "| case | nodes × subscribers | publishes/s | delivered/s | lost | unacked publishes | \
             p50 ms | p99 ms | max ms | CPU s / M deliveries: nodes | redis-server | total | \
             total ÷ one node |"
        );
        let _ = writeln!(
            s,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let f = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), fmt_num);
        let mut shown_baselines: Vec<&str> = Vec::new();
        for c in &clusters {
            let single_cpu = m(c.baseline, "server_cpu_s_per_million_deliveries");
            let mut rows = Vec::new();
            if !shown_baselines.contains(&c.baseline) {
                shown_baselines.push(c.baseline);
                rows.push((
                    c.baseline,
                    format!(
                        "1 × {}",
                        thousands(m(c.baseline, "subscribers").unwrap_or(f64::NAN))
                    ),
                    true,
                ));
            }
            rows.push((c.name, format!("{} × {}", c.nodes, c.per_node), false));
            for (case, shape, single) in rows {
                if let Some(e) = failed(case) {
                    let _ = writeln!(
                        s,
                        "| {case} | {shape} | {} | failed: {e} |  |  |  |  |  |  |  |  |  |",
                        thousands(c.rate)
                    );
                    continue;
                }
                let total = m(case, "server_cpu_s_per_million_deliveries");
                let (nodes, redis) = if single {
                    (total, None)
                } else {
                    (
                        m(case, "nodes_cpu_s_per_million_deliveries"),
                        m(case, "redis_cpu_s_per_million_deliveries"),
                    )
                };
                let ratio = match (total, single_cpu) {
                    (Some(t), Some(b)) if b > 0.0 => format!("{:.2}", t / b),
                    _ => "–".to_owned(),
                };
                let _ = writeln!(
                    s,
                    "| {case} | {shape} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {ratio} |",
                    thousands(c.rate),
                    f(m(case, "delivered_per_sec")),
                    m(case, "lost").map_or_else(|| "–".to_owned(), thousands),
                    m(case, "publish_unacked").map_or_else(|| "–".to_owned(), thousands),
                    ms_cell(m(case, "latency_p50_us")),
                    ms_cell(m(case, "latency_p99_us")),
                    ms_cell(m(case, "latency_max_us")),
                    f(nodes),
                    f(redis),
                    f(total),
                );
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "CPU seconds of each process over the publishing and the drain, and peak RSS \
             (the load tool's own CPU is on the same cores):\n"
        );
        let _ = writeln!(
            s,
            "| case | node1 | node2 | node3 | redis-server | all servers | load tool | peak RSS MiB: nodes | redis-server |"
        );
        let _ = writeln!(
            s,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let secs = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"));
        let mib =
            |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |b| format!("{:.1}", b / 1048576.0));
        let mut shown: Vec<&str> = Vec::new();
        for c in &clusters {
            if !shown.contains(&c.baseline) && failed(c.baseline).is_none() {
                shown.push(c.baseline);
                if let Some(b) = m(c.baseline, "server_cpu_seconds") {
                    let _ = writeln!(
                        s,
                        "| {} (one node) | {b:.2} | – | – | – | {b:.2} | {} | {} | – |",
                        c.baseline,
                        secs(m(c.baseline, "tool_cpu_seconds")),
                        mib(m(c.baseline, "server_peak_rss_bytes")),
                    );
                }
            }
            let case = c.name;
            if failed(case).is_some() {
                continue;
            }
            let node_rss: Option<f64> = (1..=c.nodes)
                .map(|i| m(case, &format!("node{i}_peak_rss_bytes")))
                .sum();
            let _ = writeln!(
                s,
                "| {case} | {} | {} | {} | {} | {} | {} | {} | {} |",
                secs(m(case, "node1_cpu_seconds")),
                secs(m(case, "node2_cpu_seconds")),
                secs(m(case, "node3_cpu_seconds")),
                secs(m(case, "redis_cpu_seconds")),
                secs(m(case, "server_cpu_seconds")),
                secs(m(case, "tool_cpu_seconds")),
                mib(node_rss),
                mib(m(case, "redis_peak_rss_bytes")),
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "### Goals\n");
        let _ = writeln!(s, "| goal | measured | verdict |");
        let _ = writeln!(s, "| --- | --- | --- |");
        for row in cluster_goals(cases, results) {
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);
    }

    if searches.is_empty() {
        return;
    }
    let spec0 = &searches[0]["spec"];
    let g = |k: &str| spec0[k].as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        s,
        "### Most publishes per second on one channel through Redis\n"
    );
    let _ = writeln!(
        s,
        "Method: one cluster as above, {} subscribers per node on one channel, and the publishers \
         (round-robin over the nodes from node 1) sharing a publish rate that is stepped: \
         {:.0}/s first, doubled while every step passes, then {} halvings of the gap between the \
         highest passed and the lowest failed rate (rounded to 10/s); each step publishes for \
         {:.0} s from fresh publisher connections, and the search stops when its next step \
         might not end within {:.0} s of the cluster's start. A step passes when every publish \
         went out at most {:.0} ms after its scheduled time and was acknowledged, every \
         subscriber received every message within {:.1} s of the step's end, and p99 \
         publish→deliver stayed at most {:.0} ms (a backlog that grows through the step shows \
         as latency that grows with it). CPU is each process's share of one core during the \
         step.\n",
        spec0["subscribers_per_node"].as_u64().unwrap_or(0),
        g("start_rate"),
        spec0["refine_steps"].as_u64().unwrap_or(0),
        g("step_secs"),
        g("budget_secs"),
        g("max_lag_ms"),
        g("drain_secs"),
        g("max_p99_ms"),
    );
    let mut summary = Vec::new();
    for c in &searches {
        let case = c["name"].as_str().unwrap_or("?");
        let pubs = c["spec"]["publishers"].as_u64().unwrap_or(1);
        let who = if pubs == 1 {
            "1 publisher (on node 1)".to_owned()
        } else {
            format!("{pubs} publishers (one per node)")
        };
        if let Some(e) = failed(case) {
            summary.push(format!("- {case}, {who}: failed: {e}"));
            continue;
        }
        let Some(r) = results
            .iter()
            .find(|r| r["case"] == case && r["server"] == "sente-lite")
        else {
            continue;
        };
        let mm = &r["metrics"];
        let steps = mm["steps"].as_f64().unwrap_or(0.0) as usize;
        let _ = writeln!(
            s,
            "{case}: {who}, {} subscribers in all.\n",
            thousands(mm["subscribers"].as_f64().unwrap_or(f64::NAN))
        );
        let _ = writeln!(
            s,
            "| step | publishes/s | achieved | published | lost | p50 ms | p99 ms | publisher max lag ms | CPU node1 / node2 / node3 / redis-server | CPU s / M deliveries | result |"
        );
        let _ = writeln!(
            s,
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"
        );
        for i in 0..steps {
            let st = |k: &str| mm[format!("step{i}_{k}")].as_f64();
            let util = ["node1", "node2", "node3", "redis"]
                .iter()
                .map(|p| {
                    st(&format!("{p}_cpu_util"))
                        .map_or_else(|| "–".to_owned(), |u| format!("{:.0} %", u * 100.0))
                })
                .collect::<Vec<_>>()
                .join(" / ");
            let result = step_failure(mm, &c["spec"], i)
                .map_or_else(|| "passed".to_owned(), |w| format!("failed: {w}"));
            let _ = writeln!(
                s,
                "| {i} | {} | {} | {} | {} | {} | {} | {} | {util} | {} | {result} |",
                thousands(st("rate").unwrap_or(f64::NAN)),
                thousands(st("publish_rate").unwrap_or(f64::NAN)),
                thousands(st("published").unwrap_or(f64::NAN)),
                thousands(st("lost").unwrap_or(f64::NAN)),
                ms_cell(st("latency_p50_us")),
                ms_cell(st("latency_p99_us")),
                ms_cell(st("publisher_max_lag_us")),
                fmt_num(st("server_cpu_s_per_million_deliveries").unwrap_or(f64::NAN)),
            );
        }
        let _ = writeln!(s);
        let best = mm["max_sustained_rate"].as_f64();
        let first_failed = (0..steps)
            .filter(|i| mm[format!("step{i}_ok")].as_f64() == Some(0.0))
            .min_by(|a, b| {
                let r = |i: &usize| {
                    mm[format!("step{i}_rate")]
                        .as_f64()
                        .unwrap_or(f64::INFINITY)
                };
                r(a).total_cmp(&r(b))
            });
        let mut line = match best {
            Some(b) => format!(
                "- {case}, {who}: **{} publishes/s** sustained ({} deliveries/s)",
                thousands(b),
                thousands(
                    mm["max_sustained_deliveries_per_sec"]
                        .as_f64()
                        .unwrap_or(f64::NAN)
                )
            ),
            None => format!("- {case}, {who}: no step passed"),
        };
        if let Some(i) = first_failed {
            let _ = write!(
                line,
                "; {}/s failed ({})",
                thousands(mm[format!("step{i}_rate")].as_f64().unwrap_or(f64::NAN)),
                step_failure(mm, &c["spec"], i).unwrap_or_default()
            );
        } else if mm["stopped_by_budget"].as_f64() == Some(1.0) {
            line.push_str("; the time budget ended the search before a step failed");
        }
        let _ = write!(
            line,
            "; search {:.0} s.",
            mm["search_s"].as_f64().unwrap_or(f64::NAN)
        );
        summary.push(line);
    }
    let _ = writeln!(s, "Result:\n");
    for l in summary {
        let _ = writeln!(s, "{l}");
    }
    let _ = writeln!(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(mean_ns: f64, elements: f64) -> Estimate {
        Estimate {
            mean_ns,
            elements: Some(elements),
        }
    }

    /// A small run: an engine bench and the telemetry benches the targets use.
    fn fixture() -> BTreeMap<String, Estimate> {
        [
            ("publish_fan_out/subscribers/1000", est(22_310.0, 1000.0)),
            ("telemere/filtered_out", est(1.132, 1.0)),
            ("telemere/sync_noop", est(270.87, 1.0)),
            ("telemere/async_enqueue/2_threads", est(166.92, 2.0)),
            ("telemere/async_enqueue/1_thread_accepted", est(212.14, 1.0)),
            ("telemere/brand_new", est(10.0, 1.0)),
            ("file_e2e/telemere_blocking", est(25_878_500.0, 50_000.0)),
            (
                "file_e2e/tracing_appender_blocking",
                est(174_819_500.0, 50_000.0),
            ),
        ]
        .into_iter()
        .map(|(id, e)| (id.to_owned(), e))
        .collect()
    }

    /// The rows of the generated section's tables, cells trimmed.
    fn table_rows(section: &str) -> Vec<Vec<String>> {
        section
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| ---"))
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().to_owned())
                    .collect()
            })
            .collect()
    }

    /// Checks that `section` (docs/TELEMETRY.md's generated part) shows the
    /// same figures as `report` (docs/BENCHMARKS.md).
    fn assert_same_figures(section: &str, report: &str) {
        let mut benches = 0;
        for row in table_rows(section) {
            if row[0].starts_with("telemetry:") {
                let line = format!("| {} |", row.join(" | "));
                assert!(
                    report.contains(&line),
                    "target row {line:?} not in the report"
                );
            } else if row[0].starts_with('`') {
                // | `id` | what | per ns | rate |  vs  | `id` | time | rate | per |
                let (id, per, rate) = (&row[0], row[2].trim_end_matches(" ns"), &row[3]);
                let theirs = table_rows(report)
                    .into_iter()
                    .find(|r| &r[0] == id)
                    .unwrap_or_else(|| panic!("{id} not in the report"));
                assert_eq!((&theirs[2], theirs[3].as_str()), (rate, per), "{id}");
                benches += 1;
            }
        }
        assert!(benches > 0, "no bench rows in {section:?}");
    }

    #[test]
    fn telemetry_section_shows_the_report_figures() {
        let criterion = fixture();
        let e2e = serde_json::json!({"started_at_ms": 1_700_000_000_000u64});
        let report = render(&criterion, &e2e, false, None);
        let section = telemetry_section(&criterion, &run_date(&e2e), "a machine");
        assert_same_figures(&section, &report);
        // Known benches in the documented order, then the others; engine
        // benches and their target stay out.
        let ids: Vec<String> = table_rows(&section)
            .into_iter()
            .map(|r| r[0].clone())
            .filter(|c| c.starts_with('`'))
            .collect();
        assert_eq!(
            ids,
            [
                "`telemere/filtered_out`",
                "`telemere/sync_noop`",
                "`telemere/async_enqueue/2_threads`",
                "`telemere/async_enqueue/1_thread_accepted`",
                "`file_e2e/telemere_blocking`",
                "`file_e2e/tracing_appender_blocking`",
                "`telemere/brand_new`",
            ]
        );
        assert!(!section.contains("engine:"));
        assert!(section.contains("| telemetry: filtered-out signal ≤ 2 ns | 1.13 ns |"));
        assert!(section.contains("| `file_e2e/telemere_blocking` | "));
        assert!(section.contains("| 517.57 ns | 1.93 M |"));
        assert!(section.contains("6.8× | **met** (same run) |"));
        assert!(section.contains("Run started 2023-11-14 22:13 UTC on a machine"));
        // 1e9 / 270.87 / 2720 = 1357
        assert!(section.contains("1357× for sync delivery;"));
    }

    /// A run with one cluster case, its one-node baseline and a max-rate
    /// search, as the load tool writes them.
    fn cluster_run(cluster_lost: f64) -> Value {
        serde_json::json!({
            "started_at_ms": 1_700_000_000_000u64,
            "cases": [
                {"name": "fanout-1x1000-100ps", "scenario": "fanout",
                 "spec": {"kind": "pub-sub", "channels": 1}},
                {"name": "cluster-3x333-100ps", "scenario": "cluster",
                 "spec": {"kind": "cluster", "nodes": 3, "subscribers_per_node": 333,
                          "rate": 100.0, "messages": 1000, "payload_bytes": 100,
                          "baseline": "fanout-1x1000-100ps"}},
                {"name": "cluster-max-3x10-1pub", "scenario": "cluster-max",
                 "spec": {"kind": "max-rate", "nodes": 3, "subscribers_per_node": 10,
                          "publishers": 1, "start_rate": 500.0, "limit_rate": 64000.0,
                          "step_secs": 3.0, "refine_steps": 2, "budget_secs": 30.0,
                          "drain_secs": 1.5, "max_lag_ms": 200.0, "max_p99_ms": 100.0,
                          "payload_bytes": 100}},
            ],
            "results": [
                {"case": "fanout-1x1000-100ps", "server": "sente-lite", "ok": true,
                 "metrics": {"subscribers": 1000.0, "lost": 0.0, "expected": 1e6,
                             "latency_p99_us": 40_000.0,
                             "server_cpu_s_per_million_deliveries": 10.0,
                             "server_cpu_seconds": 10.0}},
                {"case": "fanout-1x1000-100ps", "server": "nats", "ok": true,
                 "metrics": {"lost": 0.0}},
                {"case": "cluster-3x333-100ps", "server": "sente-lite", "ok": true,
                 "metrics": {"subscribers": 999.0, "lost": cluster_lost, "expected": 999_000.0,
                             "publish_unacked": 0.0, "latency_p99_us": 100_000.0,
                             "server_cpu_s_per_million_deliveries": 12.0,
                             "nodes_cpu_s_per_million_deliveries": 11.5,
                             "redis_cpu_s_per_million_deliveries": 0.5,
                             "node1_cpu_seconds": 4.0, "server_cpu_seconds": 12.0}},
                {"case": "cluster-max-3x10-1pub", "server": "sente-lite", "ok": true,
                 "metrics": {"subscribers": 30.0, "steps": 2.0, "search_s": 12.0,
                             "max_sustained_rate": 500.0,
                             "max_sustained_deliveries_per_sec": 15_000.0,
                             "step0_rate": 500.0, "step0_ok": 1.0, "step0_lost": 0.0,
                             "step0_expected": 45_000.0, "step0_late": 0.0,
                             "step1_rate": 1000.0, "step1_ok": 0.0, "step1_lost": 0.0,
                             "step1_expected": 90_000.0, "step1_late": 5000.0,
                             "step1_latency_p99_us": 250_000.0}},
            ],
        })
    }

    #[test]
    fn uws_is_a_third_server_with_goals_of_its_own() {
        let fanout = |server: &str, cpu: f64, user: f64, p99: f64| {
            serde_json::json!({"case": "fanout-1x1000-100ps", "server": server, "ok": true,
             "metrics": {"lost": 0.0, "delivered_per_sec": 100_000.0,
                         "latency_p99_us": p99,
                         "server_cpu_s_per_million_deliveries": cpu,
                         "server_cpu_user_s_per_million_deliveries": user,
                         "server_cpu_sys_s_per_million_deliveries": cpu - user}})
        };
        let run = serde_json::json!({
            "started_at_ms": 1_700_000_000_000u64,
            "cases": [{"name": "fanout-1x1000-100ps", "scenario": "fanout",
                       "spec": {"kind": "pub-sub", "channels": 1}}],
            "results": [
                fanout("sente-lite", 6.0, 2.0, 3_000.0),
                fanout("nats", 12.0, 4.0, 2_000.0),
                fanout("uws", 6.5, 1.0, 4_000.0),
            ],
            "comparisons": [
                {"case": "fanout-1x1000-100ps", "peer": "nats", "ratios": {"latency_p99_us": 1.5}},
                {"case": "fanout-1x1000-100ps", "peer": "uws", "ratios": {"latency_p99_us": 0.75}},
                {"case": "fanout-1x1000-100ps", "ratios": {"latency_p50_us": 2.0}},
            ],
        });
        let report = render(&BTreeMap::new(), &run, false, None);
        for row in [
            "| fan-out 1×1,000 at 100/s: server CPU per delivery (user + sys) ≤ uWebSockets.js's, nothing lost | 2.00 + 4.00 µs vs 1.00 + 5.50 µs | **met** (0.92× uWebSockets.js) |",
            "| fan-out 1×1,000 at 100/s: p99 publish→deliver no worse than uWebSockets.js | 3.0 ms vs 4.0 ms | **met** (0.75× uWebSockets.js) |",
            "| fan-out 1×1,000 at 100/s: ≥ 1.5× NATS's deliveries per server CPU-second, nothing lost | 2.00× NATS, 0 lost | **met** (133 % of the target ratio) |",
            "| fanout-1x1000-100ps | uws | 100.0 k | 0.00 | – | – | – | 4000 | – | 6.50 | 1.00 | 5.50 | – |",
            "| fanout-1x1000-100ps | uws | – | – | 0.75 | – | – |",
            // A comparison without `peer` (older reports) was with NATS.
            "| fanout-1x1000-100ps | nats | – | 2.00 | – | – | – |",
        ] {
            assert!(report.contains(row), "{row} in\n{report}");
        }
    }

    #[test]
    fn cluster_goals_are_judged_against_the_one_node_case() {
        let run = cluster_run(0.0);
        let report = render(&BTreeMap::new(), &run, false, None);
        for row in [
            "| cluster 3×333 at 100/s: nothing lost | 0 of 999,000 deliveries lost | **met** (0 lost) |",
            "| cluster 3×333 at 100/s: CPU per delivery (nodes + Redis) ≤ 1.5× one node's | 12.00 vs 10.00 s per M deliveries: 1.20× | **met** (80 % of the limit) |",
            "| cluster 3×333 at 100/s: p99 publish→deliver ≤ 2× one node's | 100.0 ms vs 40.0 ms: 2.50× | **missed** (1.25× the limit) |",
        ] {
            // In the targets table and in the cluster section's goals.
            assert_eq!(report.matches(row).count(), 2, "{row} in\n{report}");
        }
        // The cluster cases are not rows of the sente-lite / NATS table.
        assert!(!report.contains("| cluster-3x333-100ps | sente-lite |"));
        assert!(report.contains("| fanout-1x1000-100ps | 1 × 1,000 | 100 | "));
        assert!(report.contains("| cluster-3x333-100ps | 3 × 333 | 100 | "));
        assert!(report.contains("| 11.50 | 0.50 | 12.00 | 1.20 |"));
        assert!(report.contains(
            "| 1 | 1,000 | – | – | 0 | – | 250.0 | – | – / – / – / – | – | failed: p99 250 ms, over 100 ms |"
        ));
        assert!(report.contains(
            "- cluster-max-3x10-1pub, 1 publisher (on node 1): **500 publishes/s** sustained \
             (15,000 deliveries/s); 1,000/s failed (p99 250 ms, over 100 ms); search 12 s."
        ));
        let lossy = render(&BTreeMap::new(), &cluster_run(999.0), false, None);
        assert!(lossy.contains(
            "| cluster 3×333 at 100/s: nothing lost | 999 of 999,000 deliveries not received (0.1 %) | **missed** (0.1 % not received) |"
        ));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(9_990_000.0), "9,990,000");
        assert_eq!(thousands(-1234.0), "-1,234");
        assert_eq!(thousands(f64::NAN), "–");
    }

    #[test]
    fn splice_replaces_only_what_is_between_the_markers() -> Result<()> {
        let doc = format!("# T\n\nbefore\n{TELEMETRY_START}\nold\nlines\n{TELEMETRY_END}\nafter\n");
        let once = splice(&doc, TELEMETRY_START, TELEMETRY_END, "new")?;
        assert_eq!(
            once,
            format!("# T\n\nbefore\n{TELEMETRY_START}\nnew\n{TELEMETRY_END}\nafter\n")
        );
        assert_eq!(
            splice(&once, TELEMETRY_START, TELEMETRY_END, "new\n")?,
            once
        );
        assert!(splice("no markers", TELEMETRY_START, TELEMETRY_END, "x").is_err());
        let reversed = format!("{TELEMETRY_END}\n{TELEMETRY_START}\n");
        assert!(splice(&reversed, TELEMETRY_START, TELEMETRY_END, "x").is_err());
        Ok(())
    }

    #[test]
    fn criterion_results_are_read_from_their_new_directories() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-criterion-{}", std::process::id()));
        let new = dir.join("telemere").join("filtered_out").join("new");
        std::fs::create_dir_all(&new)?;
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"full_id":"telemere/filtered_out","throughput":{"Elements":1}}"#,
        )?;
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":1.132}}"#,
        )?;
        // A stale `base` estimate is not read.
        let base = dir.join("telemere").join("filtered_out").join("base");
        std::fs::create_dir_all(&base)?;
        std::fs::write(
            base.join("estimates.json"),
            r#"{"mean":{"point_estimate":9}}"#,
        )?;
        let read = read_criterion(&dir);
        std::fs::remove_dir_all(&dir)?;
        let read = read?;
        assert_eq!(read.len(), 1);
        let e = &read["telemere/filtered_out"];
        assert_eq!((e.mean_ns, e.elements), (1.132, Some(1.0)));
        Ok(())
    }

    /// The committed documents come from one run: what docs/TELEMETRY.md
    /// shows between its markers is what docs/BENCHMARKS.md reports.
    #[test]
    fn committed_telemetry_figures_are_those_of_the_benchmark_report() -> Result<()> {
        let docs = crate::root().join("docs");
        let telemetry = std::fs::read_to_string(docs.join("TELEMETRY.md"))?;
        let report = std::fs::read_to_string(docs.join("BENCHMARKS.md"))?;
        let (Some(a), Some(b)) = (
            telemetry.find(TELEMETRY_START),
            telemetry.find(TELEMETRY_END),
        ) else {
            bail!("docs/TELEMETRY.md lacks its bench:telemetry markers");
        };
        let section = &telemetry[a..b];
        assert_same_figures(section, &report);
        let date = report
            .lines()
            .find_map(|l| l.strip_prefix("- Run started: "))
            .unwrap_or("?");
        assert!(
            section.contains(&format!("Run started {date} ")),
            "docs/TELEMETRY.md is not from the run of {date}"
        );
        Ok(())
    }
}

#[cfg(test)]
mod delivery_section_tests {
    use super::replace_section;
    use crate::delivery_report::{END, START};

    #[test]
    fn the_delivery_section_is_replaced_in_place_or_appended() {
        let section = format!("{START}\nnew\n{END}\n");
        let doc = format!("# B\n\nbefore\n{START}\nold\n{END}\nafter\n");
        assert_eq!(
            replace_section(&doc, &section),
            format!("# B\n\nbefore\n{START}\nnew\n{END}\nafter\n")
        );
        assert_eq!(
            replace_section("# B\n", &section),
            format!("# B\n\n{section}")
        );
    }
}
