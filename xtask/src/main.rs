//! `cargo xtask`: the project's automation, one module per command.
//!
//! - `cargo xtask test`: format check, clippy with `-D warnings`, every test.
//! - `cargo xtask bench [--quick]`: criterion benches and end-to-end runs.
//! - `cargo xtask ci [--allow-dirty]`: what `.ci/run` runs: `test`, a
//!   publish dry run of the library crates, then `bench --quick`.
//! - `cargo xtask fuzz [--runs N] [--time SECS] [TARGET...]`: the fuzz
//!   targets, where nightly and cargo-fuzz are installed (otherwise it says
//!   so and succeeds); `cargo xtask fuzz seed` writes their seed corpus.

mod bench;
mod boundaries;
mod ci;
mod delivery_report;
mod fuzz;
mod test;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    match cmd {
        "test" => test::run(rest),
        "bench" => bench::run(rest),
        "ci" => ci::run(rest),
        "fuzz" => fuzz::run(rest),
        "help" | "--help" | "-h" => {
            eprintln!("usage: cargo xtask <test|bench [--quick]|ci [--allow-dirty]|fuzz [seed] [--runs N] [--time SECS] [TARGET...]>");
            Ok(())
        }
        other => bail!("unknown xtask command `{other}`; try `cargo xtask help`"),
    }
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Runs `program args…` in the workspace root, failing on a non-zero exit.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("could not start `{program}`"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}
