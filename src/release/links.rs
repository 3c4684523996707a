//! What a change of `app.linked_dirs` leaves out of the app's sight when `current`
//! moves: told as notes, so that data the app wrote is never silently left behind in a
//! release it no longer runs (and pruned with it).
//!
//! A path is compared in the release `current` named before and in the one it names
//! now: linked (a symlink to the slot's shared folder of that path) or a folder of the
//! release's own. Linked dirs added, removed, or a rollback across such a change show as
//! a path linked in one and not in the other. A shared folder a release links to that is
//! gone is found too ([`missing`]).

use std::fs;
use std::path::{Path, PathBuf};

use crate::layout::Layout;
use crate::slot::Slot;

/// What a release has at a path.
#[derive(PartialEq)]
enum Held {
    /// The link to the slot's shared folder of that path.
    Shared,
    /// A folder of its own, with this many entries.
    Own(usize),
    /// Nothing, or something else.
    Other,
}

/// Notes for `current` moving from release `before` to release `after` of `slot`, at
/// the paths `linked_dirs` names and those either release links into the shared folder.
pub fn notes(
    layout: &Layout,
    slot: Slot,
    before: &str,
    after: &str,
    linked_dirs: &[String],
) -> Vec<String> {
    let shared = layout.shared_dir(slot);
    let (old, new) = (
        layout.release_dir(slot, before),
        layout.release_dir(slot, after),
    );
    let mut paths: Vec<PathBuf> = linked_dirs.iter().map(PathBuf::from).collect();
    linked_in(&shared, &old, &new, Path::new(""), &mut paths);
    paths.sort();
    paths.dedup();
    let mut notes = Vec::new();
    for path in paths {
        let shown = shared.join(&path);
        match (held(&old, &shared, &path), held(&new, &shared, &path)) {
            (Held::Own(n), Held::Shared) if n > 0 => notes.push(format!(
                "release {before} has a `{}` of its own with {}, which {after} does not see: it sees {} (a linked dir, app.linked_dirs); copy them there if the app needs them (they go when {before} is pruned)",
                path.display(),
                counted(n),
                shown.display()
            )),
            (Held::Shared, Held::Own(_) | Held::Other) => {
                let n = entries(&shown);
                if n > 0 {
                    notes.push(format!(
                        "release {after} does not see {} ({}), which {before} did: `{}` is no linked dir for it (app.linked_dirs)",
                        shown.display(),
                        counted(n),
                        path.display()
                    ));
                }
            }
            _ => {}
        }
    }
    notes
}

/// The paths under `rel` of the shared folder that `old` or `new` links to: walked into
/// only where a release has a folder of its own (a linked `public/uploads` lies in the
/// release's own `public`).
fn linked_in(shared: &Path, old: &Path, new: &Path, rel: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(shared.join(rel)) else {
        return;
    };
    // A linked dir's shared side is a folder: the files the app keeps there are passed
    // over, not statted in both releases at every push.
    for entry in entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
    {
        let path = rel.join(entry.file_name());
        let kinds = [held(old, shared, &path), held(new, shared, &path)];
        if kinds.contains(&Held::Shared) {
            found.push(path);
        } else if kinds.iter().any(|k| matches!(k, Held::Own(_))) {
            linked_in(shared, old, new, &path, found);
        }
    }
}

/// The slot's shared folders that release `id` links to, at the paths `linked_dirs`
/// names, and that are gone (removed by hand): the app's writes there fail until they
/// are made again.
pub fn missing(layout: &Layout, slot: Slot, id: &str, linked_dirs: &[String]) -> Vec<PathBuf> {
    let shared = layout.shared_dir(slot);
    let release = layout.release_dir(slot, id);
    linked_dirs
        .iter()
        .map(Path::new)
        .filter(|path| held(&release, &shared, path) == Held::Shared)
        .map(|path| shared.join(path))
        .filter(|dir| !dir.is_dir())
        .collect()
}

fn held(release: &Path, shared: &Path, path: &Path) -> Held {
    let at = release.join(path);
    match fs::symlink_metadata(&at) {
        Ok(meta) if meta.file_type().is_symlink() => match fs::read_link(&at) {
            Ok(target) if target == shared.join(path) => Held::Shared,
            _ => Held::Other,
        },
        Ok(meta) if meta.is_dir() => Held::Own(entries(&at)),
        _ => Held::Other,
    }
}

fn entries(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |entries| entries.count())
}

/// `1 entry`, `3 entries`.
fn counted(n: usize) -> String {
    match n {
        1 => "1 entry".into(),
        n => format!("{n} entries"),
    }
}
