//! The `sente-lite` binary.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("sente-lite: the server is not built yet (see the open issues)")
}
