//! `cargo xtask ci`: what `.ci/run` runs on a fresh clone.

use anyhow::Result;

pub(crate) fn run(_args: &[String]) -> Result<()> {
    crate::test::run(&[])?;
    crate::bench::run(&["--quick".to_owned()])
}
