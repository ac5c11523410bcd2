//! `cargo xtask fuzz [--runs N] [--time SECS] [TARGET...]`: runs the
//! coverage-guided fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer) where a
//! nightly toolchain and cargo-fuzz are installed, and otherwise says so and
//! succeeds: stable CI replays the committed inputs instead
//! (crates/session/tests/fuzz_corpus.rs).
//!
//! `cargo xtask fuzz seed` writes the seed corpus from docs/PROTOCOL.md's
//! ```json examples into `fuzz/corpus/<target>/` (commit the result).
//!
//! Each target reads its committed corpus and writes what it finds new into
//! a working corpus under the target directory, so a run never dirties the
//! tree; a crash is written to `fuzz/artifacts/<target>/` and fails the
//! command. Minimize it (`cargo +nightly fuzz tmin <target> <file>`), fix the
//! bug and commit the minimized input to `fuzz/regressions/<target>/`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The fuzz targets (binaries of fuzz/Cargo.toml).
const TARGETS: [&str; 2] = ["decode_client", "session"];

/// Executions per target when neither `--runs` nor `--time` is given.
const DEFAULT_RUNS: u64 = 1_000_000;

/// libFuzzer's `-max_len`: longer than any frame the seeds hold, short
/// enough that a session input runs a few dozen frames.
const MAX_LEN: usize = 4096;

pub(crate) fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("seed") {
        return seed();
    }
    let opts = Options::parse(args)?;
    if let Some(missing) = missing_tools() {
        eprintln!(
            "cargo xtask fuzz: skipped, {missing}. The fuzz targets need a nightly \
             toolchain (`rustup toolchain install nightly`) and cargo-fuzz \
             (`cargo install cargo-fuzz`); on stable, `cargo test -p sente-lite-session \
             --features fuzzing --test fuzz_corpus` replays the committed corpus and \
             regressions."
        );
        return Ok(());
    }
    for target in &opts.targets {
        fuzz(target, &opts)?;
    }
    Ok(())
}

struct Options {
    runs: Option<u64>,
    time: Option<u64>,
    targets: Vec<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut opts = Options {
            runs: None,
            time: None,
            targets: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut number = |flag: &str| -> Result<u64> {
                let v = it
                    .next()
                    .with_context(|| format!("{flag} needs a number"))?;
                v.parse()
                    .with_context(|| format!("{flag} needs a number, got `{v}`"))
            };
            match arg.as_str() {
                "--runs" => opts.runs = Some(number("--runs")?),
                "--time" => opts.time = Some(number("--time")?),
                t if TARGETS.contains(&t) => opts.targets.push(t.to_owned()),
                other => bail!(
                    "unknown argument `{other}`; usage: cargo xtask fuzz [seed] [--runs N] \
                     [--time SECS] [{}]",
                    TARGETS.join("|")
                ),
            }
        }
        if opts.targets.is_empty() {
            opts.targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
        }
        if opts.runs.is_none() && opts.time.is_none() {
            opts.runs = Some(DEFAULT_RUNS);
        }
        Ok(opts)
    }
}

/// What is missing to fuzz here, if anything.
fn missing_tools() -> Option<&'static str> {
    let works = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(&["+nightly", "--version"]) {
        return Some("no nightly toolchain is installed");
    }
    if !works(&["+nightly", "fuzz", "--version"]) {
        return Some("cargo-fuzz is not installed");
    }
    None
}

fn fuzz(target: &str, opts: &Options) -> Result<()> {
    let root = crate::root();
    let seeds = root.join("fuzz/corpus").join(target);
    let regressions = root.join("fuzz/regressions").join(target);
    let target_dir = target_dir(&root).join("fuzz");
    let work = target_dir.join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // No sanitizer: every crate of ours forbids unsafe code, and an
    // AddressSanitizer build runs several times slower (fewer inputs tried
    // in the same time); debug assertions and overflow checks stay on.
    let mut args: Vec<String> = [
        "+nightly",
        "fuzz",
        "run",
        "--sanitizer",
        "none",
        "--debug-assertions",
        target,
    ]
    .map(str::to_owned)
    .to_vec();
    // New inputs go to the first directory; the others are only read.
    args.push(work.display().to_string());
    args.push(seeds.display().to_string());
    if regressions.is_dir() {
        args.push(regressions.display().to_string());
    }
    args.push("--".to_owned());
    args.push(format!("-max_len={MAX_LEN}"));
    if let Some(runs) = opts.runs {
        args.push(format!("-runs={runs}"));
    }
    if let Some(secs) = opts.time {
        args.push(format!("-max_total_time={secs}"));
    }
    eprintln!(
        "$ CARGO_TARGET_DIR={} cargo {}",
        target_dir.display(),
        args.join(" ")
    );
    let status = Command::new("cargo")
        .args(&args)
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(&root)
        .status()
        .context("could not start `cargo +nightly fuzz`")?;
    if !status.success() {
        bail!(
            "fuzz target `{target}` failed ({status}); its input is under \
             fuzz/artifacts/{target}/. Minimize it with `cargo +nightly fuzz tmin {target} \
             <file>` and commit it to fuzz/regressions/{target}/ with the fix"
        );
    }
    Ok(())
}

/// Where builds go: `CARGO_TARGET_DIR`, else the workspace's `target/`;
/// the fuzz builds go to its `fuzz/`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Client frame types, whose examples also make the multi-frame seeds.
const CLIENT_TYPES: [&str; 8] = [
    "subscribe",
    "unsubscribe",
    "publish",
    "rpc-request",
    "rpc-response",
    "ping",
    "list-channels",
    "get-subscriptions",
];

// The bytes of a session input that separate frames and start control
// chunks (`sente_lite_session::fuzzing`'s constants of the same names).
const SEPARATOR: u8 = 0x00;
const NEXT_CONNECTION: u8 = 0x01;
const RECONNECT: u8 = 0x03;
const EXPIRE_RPC: u8 = 0x04;

/// Writes the seed corpus: every ```json block of docs/PROTOCOL.md as one
/// input of each target (`protocol-NN`), and for the session target also
/// sequences of the client examples (`sequence-*`). Files of those names
/// are replaced; others (a kept fuzzing corpus) are left alone.
fn seed() -> Result<()> {
    let root = crate::root();
    let doc = std::fs::read_to_string(root.join("docs/PROTOCOL.md"))
        .context("reading docs/PROTOCOL.md")?;
    let blocks = json_blocks(&doc);
    if blocks.is_empty() {
        bail!("docs/PROTOCOL.md has no ```json blocks");
    }
    let client: Vec<&String> = blocks
        .iter()
        .filter(|b| {
            serde_json::from_str::<serde_json::Value>(b).is_ok_and(|v| {
                v["type"]
                    .as_str()
                    .is_some_and(|t| CLIENT_TYPES.contains(&t))
            })
        })
        .collect();
    let client: Vec<&[u8]> = client.iter().map(|b| b.as_bytes()).collect();
    // Two connections: one subscribes to the RPC example's channel, the
    // other calls it, the first answers the request it was sent, then
    // publishes, expires what is due and reconnects.
    let rpc: [&[u8]; 10] = [
        br#"{"type":"subscribe","channel-id":"api-service"}"#,
        &[NEXT_CONNECTION],
        br#"{"type":"rpc-request","channel-id":"api-service","data":{"q":1},"timeout-ms":0}"#,
        &[NEXT_CONNECTION],
        &[NEXT_CONNECTION],
        br#"{"type":"rpc-response","request-id":"$REQ","data":{"a":2}}"#,
        br#"{"type":"publish","channel-id":"api-service","data":null}"#,
        &[EXPIRE_RPC],
        &[RECONNECT],
        br#"{"type":"get-subscriptions"}"#,
    ];
    let sequences = [
        // Every client example in turn from one connection.
        ("sequence-all-client-frames", join(&client)),
        ("sequence-rpc-two-connections", join(&rpc)),
    ];
    for target in TARGETS {
        let dir = root.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.starts_with("protocol-") || n.starts_with("sequence-")) {
                std::fs::remove_file(&path)?;
            }
        }
        for (i, block) in blocks.iter().enumerate() {
            std::fs::write(dir.join(format!("protocol-{i:02}.json")), block)?;
        }
        if target == "session" {
            for (name, bytes) in &sequences {
                std::fs::write(dir.join(name), bytes)?;
            }
        }
        eprintln!(
            "fuzz/corpus/{target}/: {} seeds from docs/PROTOCOL.md",
            blocks.len()
                + if target == "session" {
                    sequences.len()
                } else {
                    0
                }
        );
    }
    Ok(())
}

/// The contents of every ```json fenced block, in document order.
fn json_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```json") => current = Some(String::new()),
            Some(block) if fence.starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// `frames` separated as a session input.
fn join(frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        out.extend_from_slice(f);
    }
    out
}
