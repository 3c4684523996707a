//! Removing what builds leave once nothing needs it: finished builds no release uses
//! (with their logs and lock files), and the lock files and logs of failed builds.
//!
//! A lock file is removed only under its exclusive lock (see `fsops::remove_lock`), so a
//! deploy that opened it meanwhile locks a new one rather than share a removed one.

use std::fs::{self, File};

use anyhow::Context;
use nix::fcntl::Flock;

use super::is_finished;
use crate::fsops;
use crate::layout::Layout;

/// How many logs of failed builds are kept (the newest): each failure's message points
/// at its log, but a push that fails a thousand times must not leave a thousand.
const FAILED_LOGS_KEPT: usize = 20;

/// Removes finished builds that no release of either slot uses and no deploy is using
/// now (its use lock is free), with their logs and lock files, then the leftovers of
/// failed builds (see `remove_leftovers`). Returns the keys of the builds removed. A
/// build is renamed out of `builds/` before it is deleted, so a crash never leaves a
/// half-deleted one.
pub fn remove_unused(layout: &Layout) -> anyhow::Result<Vec<String>> {
    let used = used_keys(layout)?;
    let mut removed = Vec::new();
    for (key, entry) in builds_entries(layout)? {
        if key.starts_with('.') || used.contains(&key) || !is_finished(layout, &key) {
            continue;
        }
        let Some(unused) = fsops::try_lock(&layout.build_use_lock(&key))? else {
            continue;
        };
        // A deploy may have installed a release of it since `used` was listed (it
        // dropped its use lock just before we took it): look again, under the lock.
        if used_keys(layout)?.contains(&key) {
            continue;
        }
        let doomed = layout
            .build_tmp_root()
            .join(format!("{key}.unused.{}", std::process::id()));
        fs::rename(entry.path(), &doomed)
            .with_context(|| format!("cannot remove unused build {key}"))?;
        fsops::remove_tree(&doomed)
            .with_context(|| format!("cannot remove {}", doomed.display()))?;
        let _ = fs::remove_file(layout.build_log(&key));
        // Best effort from here: the build is gone, whatever becomes of its locks.
        if let Err(e) = remove_locks(layout, &key, unused) {
            tracing::debug!("cannot remove the lock files of build {key}: {e:#}");
        }
        removed.push(key);
    }
    if let Err(e) = remove_leftovers(layout) {
        tracing::debug!("cannot remove what failed builds left: {e:#}");
    }
    Ok(removed)
}

/// Removes the lock files of `key`, whose use lock the caller holds, if nobody is
/// building it now.
fn remove_locks(layout: &Layout, key: &str, unused: Flock<File>) -> anyhow::Result<()> {
    if let Some(building) = fsops::try_lock(&layout.build_lock(key))? {
        fsops::remove_lock(&layout.build_lock(key), building)?;
        fsops::remove_lock(&layout.build_use_lock(key), unused)?;
    }
    Ok(())
}

/// What failed builds leave in `builds/`: logs (the newest `FAILED_LOGS_KEPT` are
/// kept), then lock files (removed once free). A key with a build folder is never
/// touched.
pub(super) fn remove_leftovers(layout: &Layout) -> anyhow::Result<()> {
    let failed = |key: &str| !layout.build_dir(key).exists();
    let mut logs = Vec::new();
    for (name, entry) in builds_entries(layout)? {
        if let Some(key) = name.strip_suffix(".log").filter(|key| failed(key)) {
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            logs.push((modified, key.to_string()));
        }
    }
    logs.sort();
    let excess = logs.len().saturating_sub(FAILED_LOGS_KEPT);
    for (_, key) in &logs[..excess] {
        // Not while a deploy of it is under way (it may be building and writing the
        // log): every deploy of a key holds its use lock, shared, from before its build.
        // Not the build lock: a push finding that one taken would think a build of its
        // tree had just failed.
        if let Some(_unused) = fsops::try_lock(&layout.build_use_lock(key))? {
            if failed(key) {
                let _ = fs::remove_file(layout.build_log(key));
            }
        }
    }
    for (name, _) in builds_entries(layout)? {
        let key = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".lock").or_else(|| n.strip_suffix(".use")));
        let Some(key) = key.filter(|key| failed(key)) else {
            continue;
        };
        // Each key's pair is gone after its first file: `try_lock` must not make it anew.
        if !layout.build_lock(key).exists() && !layout.build_use_lock(key).exists() {
            continue;
        }
        if let Some(unused) = fsops::try_lock(&layout.build_use_lock(key))? {
            if failed(key) {
                remove_locks(layout, key, unused)?;
            }
        }
    }
    Ok(())
}

/// The entries of `builds/`, by name.
fn builds_entries(layout: &Layout) -> anyhow::Result<Vec<(String, fs::DirEntry)>> {
    let dir = layout.builds_dir();
    let entries = fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut named = Vec::new();
    for entry in entries {
        let entry = entry?;
        named.push((entry.file_name().to_string_lossy().into_owned(), entry));
    }
    Ok(named)
}

/// The build keys the releases of both slots use.
pub(super) fn used_keys(layout: &Layout) -> anyhow::Result<std::collections::HashSet<String>> {
    let mut used = std::collections::HashSet::new();
    for slot in crate::slot::Slot::ALL {
        for release in crate::release::list(layout, slot)? {
            if let Some(meta) = release.meta {
                used.insert(meta.build_key);
            }
        }
    }
    Ok(used)
}
