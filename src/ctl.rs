//! Commands that talk to the daemon.
use crate::config::Config;
use crate::slot::Slot;
use std::io::Write;
pub fn status(_c: &Config, _json: bool, _out: &mut dyn Write) -> anyhow::Result<bool> { anyhow::bail!("not yet") }
pub fn switch(_c: &Config, _s: Option<Slot>, _f: bool, _out: &mut dyn Write) -> anyhow::Result<bool> { anyhow::bail!("not yet") }
pub fn mirroring(_c: &Config, _s: Option<&str>, _out: &mut dyn Write) -> anyhow::Result<bool> { anyhow::bail!("not yet") }
