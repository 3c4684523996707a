//! What a change of `app.linked_dirs` leaves out of the app's sight when `current`
//! moves: told as notes, so that data the app wrote is never silently left behind in a
//! release it no longer runs (and pruned with it).
//!
//! A path is compared in the release `current` named before and in the one it names
//! now: linked (a symlink to the slot's shared folder of that path) or a folder of the
//! release's own. Linked dirs added, removed, or a rollback across such a change show as
//! a path linked in one and not in the other. A shared folder a release links to that is
//! gone is found too ([`missing`]).
//!
//! A release's link names the shared folder relative to itself ([`target`]), so that a
//! root moved, renamed, restored elsewhere or copied (`cp -a`, to make a second app)
//! keeps its releases' links inside itself; by absolute path where `releases` is a link
//! to another disk. A link made otherwise (a release an older bluegreen made, in this
//! root or in the one it was moved or copied from) is pointed so before a generation of
//! it starts ([`repoint`]).

use std::fs;
use std::path::{Path, PathBuf};

use crate::fsops;
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

/// What the link at `path` in a release of `slot` names: the slot's shared folder of
/// that path. From where the link is ([`relative`]), unless the slot's `releases` is a
/// link to a folder elsewhere (another disk), from which `..` leads elsewhere too: then
/// by absolute path.
pub fn target(layout: &Layout, slot: Slot, path: &Path) -> PathBuf {
    let releases = fs::symlink_metadata(layout.releases_dir(slot));
    match releases.is_ok_and(|meta| meta.file_type().is_symlink()) {
        true => layout.shared_dir(slot).join(path),
        false => relative(path),
    }
}

/// `data` -> `../../shared/data`, `public/uploads` -> `../../../shared/public/uploads`:
/// from `<slot>/releases/<id>/<path>` to `<slot>/shared/<path>`.
fn relative(path: &Path) -> PathBuf {
    let up: PathBuf = (0..=path.components().count()).map(|_| "..").collect();
    up.join("shared").join(path)
}

/// The slot's shared folders that release `id` links to and that are gone (removed by
/// hand): the app's writes there fail until they are made again.
pub fn missing(layout: &Layout, slot: Slot, id: &str, linked_dirs: &[String]) -> Vec<PathBuf> {
    let shared = layout.shared_dir(slot);
    let release = layout.release_dir(slot, id);
    linked(&release, &shared, linked_dirs)
        .into_iter()
        .filter(|path| held(&release, &shared, path) == Held::Shared)
        .map(|path| shared.join(path))
        .filter(|dir| !dir.is_dir())
        .collect()
}

/// Points each link of release `id` to a slot's shared folder at this root's as
/// [`target`] names it: one by absolute path (this root's, or another's where the root
/// was when the release was made), or a relative one where `releases` has since become
/// a link elsewhere. Returns a line for each that named another root's (the root moved
/// or copied from there: the app saw that root's data, or none) or that could not be
/// changed.
pub fn repoint(layout: &Layout, slot: Slot, id: &str, linked_dirs: &[String]) -> Vec<String> {
    let shared = layout.shared_dir(slot);
    let release = layout.release_dir(slot, id);
    let mut told = Vec::new();
    for path in linked(&release, &shared, linked_dirs) {
        let link = release.join(&path);
        let want = target(layout, slot, &path);
        let named = match fs::read_link(&link) {
            Ok(named) if named != want => named,
            _ => continue,
        };
        if held(&release, &shared, &path) != Held::Shared {
            continue;
        }
        let ours = shared.join(&path);
        let foreign = named.is_absolute() && named != ours;
        match (fsops::flip_symlink(&link, &want), foreign) {
            (Ok(_), false) => {}
            (Ok(_), true) => told.push(format!(
                "release {id}'s linked dir `{}` named {}, outside this root (the root was moved or copied from there?): it names this root's {} now",
                path.display(),
                named.display(),
                ours.display()
            )),
            (Err(e), _) => told.push(format!(
                "release {id}'s linked dir `{}` names {} and cannot be pointed at {}: {e:#}",
                path.display(),
                named.display(),
                ours.display()
            )),
        }
    }
    told
}

/// The paths `linked_dirs` names, those the release was made with (its metadata's: a
/// change of `app.linked_dirs` the daemon has not read yet does not hide a link the
/// release has), and those of the `shared` folder it links to (an older release's, made
/// before the metadata said, at a path the config has dropped since).
fn linked(release: &Path, shared: &Path, linked_dirs: &[String]) -> Vec<PathBuf> {
    let made_with = crate::release::read_meta(release)
        .and_then(|meta| meta.linked_dirs)
        .unwrap_or_default();
    let mut paths: Vec<PathBuf> = linked_dirs
        .iter()
        .chain(&made_with)
        .map(PathBuf::from)
        .collect();
    linked_in(shared, release, release, Path::new(""), &mut paths);
    paths.sort();
    paths.dedup();
    paths
}

fn held(release: &Path, shared: &Path, path: &Path) -> Held {
    let at = release.join(path);
    match fs::symlink_metadata(&at) {
        Ok(meta) if meta.file_type().is_symlink() => match fs::read_link(&at) {
            Ok(named) if named == relative(path) || made_elsewhere(&named, shared, path) => {
                Held::Shared
            }
            _ => Held::Other,
        },
        Ok(meta) if meta.is_dir() => Held::Own(entries(&at)),
        _ => Held::Other,
    }
}

/// `named` is an absolute link to a slot's shared folder of `path`,
/// `<root>/<slot>/shared/<path>`: this root's (made before links were relative, or where
/// `releases` is a link elsewhere) or the one this root was moved or copied from.
fn made_elsewhere(named: &Path, shared: &Path, path: &Path) -> bool {
    let slot_shared: PathBuf = shared
        .components()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    named.is_absolute() && named.ends_with(slot_shared.join(path))
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
