//! The daemon (`bluegreen serve`).
use crate::layout::Layout;
pub fn serve(_layout: Layout) -> anyhow::Result<bool> {
    anyhow::bail!("not yet")
}
