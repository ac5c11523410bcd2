//! `cargo xtask test`: everything a change must pass.

use anyhow::Result;

pub(crate) fn run(_args: &[String]) -> Result<()> {
    crate::run("cargo", &["fmt", "--all", "--", "--check"])?;
    crate::run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    crate::run("cargo", &["test", "--workspace", "--all-features"])?;
    Ok(())
}
