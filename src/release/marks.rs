//! A release's marks: small files in its folder that say what became of it, read by
//! `releases`, rollbacks and the daemon's start ([`super::WENT_LIVE`], a generation of it
//! went live; [`super::WAS_CURRENT`], `current` moved off it; [`super::ROLLED_BACK`], a
//! rollback went back from it). Each holds the moment it was made, written
//! write-temp-then-rename.

use std::fs;
use std::path::Path;

use anyhow::Context;

use super::{list, Release, ROLLED_BACK, WAS_CURRENT, WENT_LIVE};
use crate::fsops;
use crate::layout::Layout;
use crate::slot::Slot;

/// Takes the [`ROLLED_BACK`] mark off release `id` of `slot`, if it has one.
pub fn unmark_rolled_back(layout: &Layout, slot: Slot, id: &str) -> anyhow::Result<()> {
    fsops::remove_any(&layout.release_dir(slot, id).join(ROLLED_BACK))
        .with_context(|| format!("cannot clear {slot}/{id}'s rolled-back mark"))
}

/// Whether `rollback` went back from release `id` of `slot` (and it was not current
/// again since).
pub fn rolled_back(layout: &Layout, slot: Slot, id: &str) -> bool {
    layout.release_dir(slot, id).join(ROLLED_BACK).is_file()
}

/// Of the releases other than `current` that went live and that no rollback went back
/// from, the one `current` moved off last (its [`WAS_CURRENT`] mark the newest): what a
/// rollback made while no daemon ran went to, not one it skipped (`rollback --to` an
/// older one), nor one a push since replaced.
pub fn last_left_live(layout: &Layout, slot: Slot, current: &str) -> Option<String> {
    list(layout, slot)
        .ok()?
        .into_iter()
        .filter(|r| r.went_live && !r.rolled_back && r.id != current)
        .filter_map(|r| {
            let mark = layout.release_dir(slot, &r.id).join(WAS_CURRENT);
            Some((fs::metadata(mark).ok()?.modified().ok()?, r.id))
        })
        .max()
        .map(|(_, id)| id)
}

/// The release of `slot` a daemon starting now serves when `current` does not start:
/// `last_live` (`state.json`'s), unless a rollback made since went back from it and
/// `current` is not that rollback's refused target (`refused`): then the release that
/// rollback left that served last (see [`last_left_live`]), or `last_live` all the same
/// when it took every other away, rather than nothing.
pub fn comes_back(
    layout: &Layout,
    slot: Slot,
    last_live: Option<String>,
    current: Option<&str>,
    refused: bool,
) -> Option<String> {
    let live = last_live.filter(|live| super::exists(layout, slot, live))?;
    if refused || !rolled_back(layout, slot, &live) {
        return Some(live);
    }
    current
        .and_then(|current| last_left_live(layout, slot, current))
        .or(Some(live))
}

/// Marks release `id` of `slot` as one `rollback` went back from ([`ROLLED_BACK`]).
/// Written before the flip (see `rollout::rollback`): a rollback cut off between the two
/// must not leave the release it went back from for the next one to go to.
pub fn mark_rolled_back(layout: &Layout, slot: Slot, id: &str) -> anyhow::Result<()> {
    stamp(&layout.release_dir(slot, id).join(ROLLED_BACK))
        .with_context(|| format!("cannot mark release {slot}/{id} as rolled back"))
}

/// Writes a mark file holding this moment's time (write-temp-then-rename).
pub(super) fn stamp(file: &Path) -> anyhow::Result<()> {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    fsops::write_atomic(file, format!("{now}\n").as_bytes())
}

/// Whether a generation of release `id` of `slot` ever went live ([`WENT_LIVE`]).
pub fn went_live(layout: &Layout, slot: Slot, id: &str) -> bool {
    layout.release_dir(slot, id).join(WENT_LIVE).is_file()
}

/// Whether any release of the slot carries a mark ([`WAS_CURRENT`], [`WENT_LIVE`]):
/// without one, the marks say nothing about what ran.
pub fn marked(releases: &[Release]) -> bool {
    releases.iter().any(|r| r.was_current || r.went_live)
}

/// Records that a generation of release `id` of `slot` went live (once: a later call
/// keeps the first time).
pub fn mark_live(layout: &Layout, slot: Slot, id: &str) -> anyhow::Result<()> {
    let file = layout.release_dir(slot, id).join(WENT_LIVE);
    if file.is_file() {
        return Ok(());
    }
    stamp(&file).with_context(|| format!("cannot mark release {slot}/{id} as gone live"))
}
