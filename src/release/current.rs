//! What a slot's `current` symlink names: a release of the slot, or (a hand edit) what
//! it points at instead, in one line.

use std::fs;
use std::path::Path;

use super::{is_name, META};
use crate::layout::Layout;
use crate::slot::Slot;

/// The release `current` points at: a release of `slot` (see [`super::exists`]), or a name in
/// its releases folder that is gone (removed by hand), whether the link is written
/// relative (as bluegreen writes it) or absolute. `None` when `current` is missing, or (a
/// hand edit) points at anything else, such as a release still being made (`.tmp-…`), a
/// folder bluegreen did not make, or one outside the slot's releases: [`no_current`]
/// says which.
pub fn current(layout: &Layout, slot: Slot) -> Option<String> {
    read_current(layout, slot).ok().flatten()
}

/// Why `slot` has no [`current`] release, in one line: `blue/current is missing (removed
/// by hand?)`, or what it points at instead of a release ([`elsewhere`]).
pub fn no_current(layout: &Layout, slot: Slot) -> String {
    elsewhere(layout, slot)
        .unwrap_or_else(|| format!("{slot}/current is missing (removed by hand?)"))
}

/// What `current` points at instead of a release of `slot`, in one line, when a hand
/// edit put something there that is not one; `None` when it names a release or is
/// missing.
pub fn elsewhere(layout: &Layout, slot: Slot) -> Option<String> {
    read_current(layout, slot).err()
}

/// The release `current` names, none when it is missing, or why what it points at is
/// not a release of the slot.
fn read_current(layout: &Layout, slot: Slot) -> Result<Option<String>, String> {
    let link = layout.current_link(slot);
    let target = match fs::read_link(&link) {
        Ok(target) => target,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(format!("{slot}/current is not a symlink to a release")),
    };
    let elsewhere = |why: &str| {
        format!(
            "{slot}/current points at {}, {why}",
            crate::logging::printable(&target.display().to_string())
        )
    };
    let Some(id) = target.file_name().and_then(|name| name.to_str()) else {
        return Err(elsewhere("which is not a release"));
    };
    // In the slot's releases folder however the link is written (`releases/<id>`, an
    // absolute path, through a symlinked root): never `<id>` of some other folder. With
    // no such folder to compare (the releases removed by hand), as written.
    let releases = layout.releases_dir(slot);
    let written = layout.slot_dir(slot).join(&target);
    let in_releases = match written.parent().map(Path::canonicalize) {
        Some(Ok(parent)) => releases.canonicalize().is_ok_and(|r| r == parent),
        _ => written.parent() == Some(releases.as_path()),
    };
    let dir = layout.release_dir(slot, id);
    let found = fs::symlink_metadata(&dir);
    if !is_name(id) {
        Err(elsewhere(
            "which is not a finished release (one still being made, or left by a crash)",
        ))
    } else if !in_releases {
        Err(elsewhere(&format!(
            "which is not in {}",
            releases.display()
        )))
    } else if found.as_ref().is_ok_and(|m| !m.is_dir()) {
        Err(elsewhere(
            "which is not a folder (a release is one, never a symlink out of the releases)",
        ))
    } else if found.is_ok() && !dir.join(META).is_file() {
        Err(elsewhere(&format!(
            "which is not a release bluegreen made (it has no {META})"
        )))
    } else {
        // A release removed by hand is still the one `current` names: `rollback` goes
        // back from it, and a start of it says it is gone.
        Ok(Some(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// What `current` may point at, and how what it may not is told.
    #[test]
    fn current_names_only_a_release_of_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path()).unwrap();
        let slot = Slot::Blue;
        let releases = layout.releases_dir(slot);
        for folder in ["r1", ".tmp-r2", "handmade"] {
            fs::create_dir_all(releases.join(folder)).unwrap();
        }
        fs::write(releases.join("r1").join(META), "{}").unwrap();
        fs::write(releases.join(".tmp-r2").join(META), "{}").unwrap();
        // Another root with a release of the same name.
        let other = dir.path().join("other/releases/r1");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join(META), "{}").unwrap();
        let link = layout.current_link(slot);
        let point = |target: &Path| {
            let _ = fs::remove_file(&link);
            symlink(target, &link).unwrap();
        };
        assert_eq!(current(&layout, slot), None);
        assert_eq!(
            no_current(&layout, slot),
            "blue/current is missing (removed by hand?)"
        );
        point(Path::new("releases/r1"));
        assert_eq!(current(&layout, slot).as_deref(), Some("r1"));
        point(&releases.join("r1"));
        assert_eq!(current(&layout, slot).as_deref(), Some("r1"));
        // Removed by hand: still the one `current` names.
        point(Path::new("releases/r0"));
        assert_eq!(current(&layout, slot).as_deref(), Some("r0"));
        let elsewhere = |target: &Path| {
            point(target);
            assert_eq!(current(&layout, slot), None, "{}", target.display());
            no_current(&layout, slot)
        };
        assert_eq!(
            elsewhere(Path::new("releases/.tmp-r2")),
            "blue/current points at releases/.tmp-r2, which is not a finished release (one still being made, or left by a crash)"
        );
        assert_eq!(
            elsewhere(Path::new("releases/handmade")),
            "blue/current points at releases/handmade, which is not a release bluegreen made (it has no .bluegreen-release.json)"
        );
        assert_eq!(
            elsewhere(&other),
            format!(
                "blue/current points at {}, which is not in {}",
                other.display(),
                releases.display()
            )
        );
        assert_eq!(
            elsewhere(Path::new("/")),
            "blue/current points at /, which is not a release"
        );
        // A symlink in the releases folder to a release-looking folder elsewhere.
        symlink(&other, releases.join("escape")).unwrap();
        assert_eq!(
            elsewhere(Path::new("releases/escape")),
            "blue/current points at releases/escape, which is not a folder (a release is one, never a symlink out of the releases)"
        );
        assert!(!super::super::exists(&layout, slot, "escape"));
        // The whole releases folder removed by hand: `r1` is still what it names.
        fs::remove_dir_all(&releases).unwrap();
        point(Path::new("releases/r1"));
        assert_eq!(current(&layout, slot).as_deref(), Some("r1"));
        fs::remove_file(&link).unwrap();
        fs::create_dir(&link).unwrap();
        assert_eq!(current(&layout, slot), None);
        assert_eq!(
            no_current(&layout, slot),
            "blue/current is not a symlink to a release"
        );
    }
}
