//! `cargo xtask ci [--allow-dirty]`: what `.ci/run` runs on a fresh clone:
//! `test`, then a publish dry run of every library crate, then
//! `bench --quick`.

use anyhow::Result;

pub(crate) fn run(args: &[String]) -> Result<()> {
    crate::test::run(&[])?;
    publish_dry_run(args.iter().any(|a| a == "--allow-dirty"))?;
    crate::bench::run(&["--quick".to_owned()])
}

/// Packages every publishable crate of the workspace (those without
/// `publish = false`) and builds each package as crates.io would, against
/// the others' packages: a missing `version` on a path dependency, a file
/// left out of a package or a manifest field crates.io refuses fails here
/// rather than at release time. Needs the crates.io index (network).
///
/// On a clean checkout nothing is dirty; `--allow-dirty` is for running it
/// with uncommitted changes.
fn publish_dry_run(allow_dirty: bool) -> Result<()> {
    let mut args = vec!["publish", "--workspace", "--dry-run"];
    if allow_dirty {
        args.push("--allow-dirty");
    }
    crate::run("cargo", &args)
}
