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
    // The telemetry benches again, in the telemetry document, from the same
    // results (a quick run has no criterion estimates: docs stay as they are).
    if !quick {
        write_telemetry_doc(
            &root.join("docs").join("TELEMETRY.md"),
            &criterion,
            &run_date(&e2e),
        )?;
    }
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

/// The markers around the generated part of docs/TELEMETRY.md.
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
            let (rate, per) = rate_and_per_element(e);
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
