//! sente-lite-bench: the end-to-end load tool (being built).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("sente-lite-bench is not built yet")
}
