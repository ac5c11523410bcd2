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
    forget_unpacked_overlay_packages()?;
    let mut args = vec!["publish", "--workspace", "--dry-run"];
    if allow_dirty {
        args.push("--allow-dirty");
    }
    crate::run("cargo", &args)
}

/// The dry run unpacks our packages into cargo's source cache, in a
/// directory named after the local overlay registry (`registry/src/-<hash>`),
/// and cargo reuses an unpacked package of the same name and version without
/// checking its contents. A stale one from an earlier run in the same folder
/// would be verified instead of this tree's, so those directories (which hold
/// only our own packages) are removed first.
fn forget_unpacked_overlay_packages() -> Result<()> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry").join("src")) else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(&src) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('-') {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}
