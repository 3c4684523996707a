//! `bluegreen demo`.
pub fn run(_args: crate::cli::DemoArgs) -> anyhow::Result<bool> {
    anyhow::bail!("not yet")
}
