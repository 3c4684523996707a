//! Pruning: after a deploy, a slot keeps `keep_releases` releases and never one that a
//! rollback, a restarted daemon or a running generation may still need; builds no
//! release uses go too.

use std::fs;

use anyhow::Context;

use super::{current, list, marked, previous, Release};
use crate::fsops;
use crate::layout::Layout;
use crate::slot::Slot;

/// After an install (the caller still holds the slot lock): prunes `slot`'s releases and
/// removes builds no release uses. The deploy is done by then, so a failure here does
/// not fail it: it is told in the returned note (e.g. `pruned 2 releases`) and the next
/// deploy tries again.
pub fn tidy(layout: &Layout, slot: Slot, keep: usize, was_current: Option<&str>) -> String {
    let mut done = Vec::new();
    match prune(layout, slot, keep, was_current) {
        Ok(pruned) => {
            if !pruned.removed.is_empty() {
                done.push(format!(
                    "pruned {} release{}",
                    pruned.removed.len(),
                    plural(pruned.removed.len())
                ));
            }
            // Each told once per deploy, and passed over: one folder that cannot go
            // (made by another user) does not stop the rest.
            for failed in pruned.failed {
                done.push(format!("{failed} (retried next deploy)"));
            }
        }
        Err(e) => done.push(format!("pruning failed, retried next deploy: {e:#}")),
    }
    match crate::build::remove_unused(layout) {
        Ok(unused) if unused.is_empty() => {}
        Ok(unused) => done.push(format!(
            "removed {} unused build{}",
            unused.len(),
            plural(unused.len())
        )),
        Err(e) => done.push(format!(
            "removing unused builds failed, retried next deploy: {e:#}"
        )),
    }
    done.join(", ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// How the daemon's register of running workers (`run/workers/<pgid>`) names what a
/// worker runs; `prune` reads it back so it never removes a running release.
pub fn in_use_entry(slot: Slot, generation: u64, release: &str) -> String {
    format!("{slot} generation {generation} release {release}")
}

/// Releases of `slot` that a running (live or draining) generation uses.
fn in_use(layout: &Layout, slot: Slot) -> Vec<String> {
    let Ok(entries) = fs::read_dir(layout.workers_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let text = fs::read_to_string(entry.path()).ok()?;
            // One line of the entry (the other names the group's leader).
            let rest = text
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{slot} generation ")))?;
            Some(rest.split_once(" release ")?.1.trim().to_string())
        })
        .collect()
}

/// Removes the temp folders in `slot`'s releases folder: a release being copied by a
/// deploy that was killed, or one a killed prune was removing. The caller holds the slot
/// lock, so none of them is still in use. Returns why each one left could not go.
pub(super) fn remove_temp(layout: &Layout, slot: Slot) -> Vec<String> {
    temp_folders(layout, slot)
        .into_iter()
        .filter_map(|path| {
            fsops::remove_any(&path)
                .with_context(|| format!("cannot remove {}", path.display()))
                .err()
                .map(|e| format!("{e:#}{}", whose(&path)))
        })
        .collect()
}

/// The temp folders (`.tmp-<id>`, see [`Layout::release_tmp_dir`]) in `slot`'s releases
/// folder, in name order.
fn temp_folders(layout: &Layout, slot: Slot) -> Vec<std::path::PathBuf> {
    let Ok(entries) = fs::read_dir(layout.releases_dir(slot)) else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found
}

/// The temp folders in `slot`'s releases folder that no deploy, rollback or promote is
/// making now (none holds the slot lock): what a stopped one left, which the next deploy
/// to the slot removes.
pub fn leftovers(layout: &Layout, slot: Slot) -> Vec<String> {
    let found = temp_folders(layout, slot);
    if found.is_empty() || fsops::held(&layout.slot_lock(slot)) {
        return Vec::new();
    }
    found
        .iter()
        .filter_map(|path| Some(path.file_name()?.to_string_lossy().into_owned()))
        .collect()
}

/// For a folder that could not be removed: `, which is <user>'s (uid N) ...` when it
/// is another user's, which no later deploy can remove either; else nothing.
fn whose(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(owner) = fs::symlink_metadata(path).map(|meta| meta.uid()) else {
        return String::new();
    };
    if owner == nix::unistd::geteuid().as_raw() {
        return String::new();
    }
    let name = fsops::user_name(owner).map_or_else(
        || format!("uid {owner}"),
        |name| format!("{name} (uid {owner})"),
    );
    format!(", which is {name}'s: remove it as that user or as root")
}

/// What a prune did: the releases it removed, and why each thing it could not remove
/// stays (passed over: the rest is still pruned).
#[derive(Debug, Default)]
pub struct Pruned {
    pub removed: Vec<String>,
    pub failed: Vec<String>,
}

/// Removes releases until `keep` are left, never the current one, the one `rollback`
/// would go to (`previous`, or the daemon's last live one), `was_current` (what `current`
/// named before the flip, unless the daemon refused it and it never served), or one a
/// running generation uses. Releases that never went
/// live (failed pushes) go first, oldest first, then those rolled back from, then the
/// oldest others: what a rollback passes over must not push out what it can go to. Also
/// removes temp folders of killed deploys. The caller holds the slot lock. A release or
/// temp folder that cannot be removed is passed over.
pub fn prune(
    layout: &Layout,
    slot: Slot,
    keep: usize,
    was_current: Option<&str>,
) -> anyhow::Result<Pruned> {
    let mut pruned = Pruned {
        failed: remove_temp(layout, slot),
        ..Pruned::default()
    };
    let releases = list(layout, slot)?;
    let current = current(layout, slot);
    let previous = current.as_deref().and_then(|c| previous(&releases, c));
    let running = in_use(layout, slot);
    // The daemon's last live release of the slot (state.json): where `rollback` goes when
    // `current` never went live, and what a restarted daemon falls back to. Not running
    // while the daemon is down, so `running` does not cover it then.
    let state = crate::state::State::load(&layout.state_file()).ok();
    let last_live = state
        .as_ref()
        .and_then(|state| state.live.get(&slot).cloned());
    // `was_current` may be a push whose generation the daemon is starting now (not yet
    // in `running`), so it stays; unless the daemon has refused it and it never served:
    // a run of failed pushes then kept each one before the flip and pushed out older
    // releases that served.
    let refused = state.and_then(|state| state.failed.get(&slot).map(|f| f.release.clone()));
    let was_current = was_current.filter(|id| {
        Some(*id) != refused.as_deref()
            || releases
                .iter()
                .any(|r| r.id == *id && (r.went_live || r.before_marks))
    });
    let excess = releases.len().saturating_sub(keep);
    // Where no release is marked (an older root), the marks say nothing: by age alone.
    let failed_first = marked(&releases);
    let mut doomed: Vec<&Release> = releases
        .iter()
        .filter(|release| {
            let id = Some(release.id.as_str());
            id != current.as_deref()
                && id != previous.as_deref()
                && id != was_current
                && id != last_live.as_deref()
                && !running.contains(&release.id)
        })
        .collect();
    // Stable: oldest first within each group. Those a rollback passes over go first:
    // the ones that never went live, then the ones rolled back from, then the others.
    // A release from before the marks is not known to have failed: it goes by age.
    doomed.sort_by_key(|release| match failed_first {
        false => 0,
        true if !(release.went_live || release.before_marks) => 0,
        true if release.rolled_back => 1,
        true => 2,
    });
    for release in doomed.into_iter().take(excess) {
        // Renamed out of the list first: a crash mid-delete leaves a temp folder, never
        // a release that looks complete but is not.
        let tmp = layout.release_tmp_dir(slot, &release.id);
        let dir = layout.release_dir(slot, &release.id);
        if let Err(e) = fs::rename(&dir, &tmp) {
            pruned.failed.push(format!(
                "cannot prune release {}: {e}{}",
                release.id,
                whose(&dir)
            ));
            continue;
        }
        // Out of the list already: removed, whatever is left of its folder.
        if let Err(e) = fsops::remove_tree(&tmp) {
            pruned.failed.push(format!(
                "cannot remove {}: {e:#}{}",
                tmp.display(),
                whose(&tmp)
            ));
        }
        pruned.removed.push(release.id.clone());
    }
    Ok(pruned)
}
