//! A slot's releases, oldest first, with what each went through (current once, live
//! once, rolled back from), and the one before a release that `rollback` goes back to.

use std::fs;

use anyhow::Context;

use super::{marked, read_meta, ReleaseMeta, META, ROLLED_BACK, WAS_CURRENT, WENT_LIVE};
use crate::layout::Layout;
use crate::slot::Slot;

/// A complete release folder of a slot.
#[derive(Clone, Debug)]
pub struct Release {
    pub id: String,
    pub meta: Option<ReleaseMeta>,
    /// `current` named it once (see [`WAS_CURRENT`]), or it is [`Release::before_marks`].
    pub was_current: bool,
    /// A generation of it went live (see [`WENT_LIVE`]).
    pub went_live: bool,
    /// `rollback` moved `current` back off it (see [`ROLLED_BACK`]).
    pub rolled_back: bool,
    /// Made by a bluegreen from before the marks (an upgraded root): what it went
    /// through is not known (see [`list`]).
    pub before_marks: bool,
}

impl Release {
    pub fn commit_short(&self) -> &str {
        self.meta.as_ref().map_or("?", ReleaseMeta::commit_short)
    }
}

/// Complete releases of `slot`, oldest first.
pub fn list(layout: &Layout, slot: Slot) -> anyhow::Result<Vec<Release>> {
    let dir = layout.releases_dir(slot);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut releases = Vec::new();
    for entry in entries {
        let entry = entry?;
        let id = entry.file_name().to_string_lossy().into_owned();
        // Only what `create` made: a folder without its metadata is not a release.
        if id.starts_with('.') || !entry.file_type()?.is_dir() || !entry.path().join(META).is_file()
        {
            continue;
        }
        releases.push(Release {
            meta: read_meta(&entry.path()),
            was_current: entry.path().join(WAS_CURRENT).is_file(),
            went_live: entry.path().join(WENT_LIVE).is_file(),
            rolled_back: entry.path().join(ROLLED_BACK).is_file(),
            before_marks: false,
            id,
        });
    }
    releases.sort_by(|a, b| a.id.cmp(&b.id));
    find_before_marks(&mut releases);
    Ok(releases)
}

/// Sets [`Release::before_marks`] (and `was_current`) on the releases a bluegreen from
/// before the marks made: no `marks` in their metadata, no mark, and older than every
/// release with either (`releases` sorted oldest first). Their `current` moved through
/// them in creation order, as far as anyone can tell; without this, the first release
/// an upgraded daemon marks live left every older one "never current", and `rollback`
/// had nowhere to go. An older version that did mark its releases (no `marks` in their
/// metadata either) marked its first one, so its unmarked ones (a failed push, one a
/// killed deploy left) keep saying what they are.
fn find_before_marks(releases: &mut [Release]) {
    let first_marked = releases
        .iter()
        .position(|r| r.was_current || r.went_live || r.meta.as_ref().is_some_and(|m| m.marks))
        .unwrap_or(releases.len());
    for release in &mut releases[..first_marked] {
        if release.meta.is_some() {
            release.before_marks = true;
            release.was_current = true;
        }
    }
}

/// The release before `id`: the newest older one that went live, or, when none did (no
/// daemon ran them), the newest older one that was current. A release that failed to
/// start is passed over, and so is one a killed deploy left behind, and one a rollback
/// went back from (until it is current again). Releases an older bluegreen made before
/// the marks count as once current ([`Release::before_marks`]). In a slot where no
/// release carries either mark (their metadata unreadable), the one made just before.
/// `id` need not be listed (its folder removed by hand): those older than it still are.
pub fn previous(releases: &[Release], id: &str) -> Option<String> {
    // `releases` is sorted by id, and ids sort by age.
    let i = releases.partition_point(|r| r.id.as_str() < id);
    let older = &releases[..i];
    let found = older
        .iter()
        .rev()
        .find(|r| r.went_live && !r.rolled_back)
        .or_else(|| older.iter().rev().find(|r| r.was_current && !r.rolled_back));
    match found {
        Some(release) => Some(release.id.clone()),
        None if !marked(releases) => older.last().map(|r| r.id.clone()),
        None => None,
    }
}
