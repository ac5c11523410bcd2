//! `cargo xtask bench [--quick]`: criterion benches of every crate.

use anyhow::Result;

pub(crate) fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    if quick {
        // A smoke run: each bench once, as a test, no timings kept.
        crate::run("cargo", &["bench", "--workspace", "--", "--test"])
    } else {
        crate::run("cargo", &["bench", "--workspace"])
    }
}
