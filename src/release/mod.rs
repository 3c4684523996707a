//! `Release`: a slot's versioned copy of a build, and the `current` symlink naming one.
//!
//! A release is copied into `releases/.tmp-<id>`, gets its linked dirs and metadata, and
//! only then is renamed to `releases/<id>`: a folder without the dot is complete. Ids
//! start with the UTC creation time, so sorting ids sorts releases by age.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::build;
use crate::fsops;
use crate::layout::Layout;
use crate::slot::Slot;
use crate::tree_copy;

mod current;
mod history;
mod id;
mod links;
mod lock;
mod marks;
mod prune;

use marks::stamp;
pub use marks::{
    comes_back, last_left_live, mark_live, mark_rolled_back, marked, rolled_back,
    unmark_rolled_back, went_live,
};

pub use current::{current, elsewhere, no_current};
pub use history::{list, previous, Release};
pub use id::{is_name, new_id};
pub use links::{missing as missing_shared, notes as link_notes, repoint as repoint_links};
pub use lock::{lock_slot, push_turn, push_under_way, slot_folder};
pub use prune::{in_use_entry, leftovers, prune, tidy};

/// Metadata file inside a release.
pub const META: &str = ".bluegreen-release.json";
/// Written into a release when `current` moves off it (holding that moment's time): it
/// was current once, so `rollback` may go back to it. A complete release without it never
/// was current: a deploy killed between copying it and the flip left it behind.
pub const WAS_CURRENT: &str = ".bluegreen-was-current";
/// Written into a release by the daemon when a generation of it went live (holding that
/// moment's time): it is known to have served, so `rollback` goes back to it first.
pub const WENT_LIVE: &str = ".bluegreen-went-live";
/// Written into a release that `rollback` moved `current` back off (holding that moment's
/// time), and removed when `current` names it again: a later rollback passes it over, so
/// that going back from a release pushed after a rollback never lands on the one rolled
/// back from.
pub const ROLLED_BACK: &str = ".bluegreen-rolled-back";

/// What a release records about where it came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReleaseMeta {
    pub id: String,
    pub slot: Slot,
    pub commit: String,
    #[serde(rename = "ref")]
    pub refname: String,
    /// The branch's previous commit, as the push reported it.
    pub old: String,
    pub build_key: String,
    pub created: String,
    pub summary: String,
    /// `<slot>/<release>` when made by `promote` rather than a push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<String>,
    /// `true` in every release this version makes: its folder gets the marks
    /// ([`WAS_CURRENT`], [`WENT_LIVE`]) as it goes through them. Missing in a release an
    /// older bluegreen made, which has none whatever it went through (see [`list`]).
    #[serde(default)]
    pub marks: bool,
    /// The linked dirs the release was made with (`app.linked_dirs` then; written by
    /// [`create`], whatever the caller put here). Missing in a release an older bluegreen
    /// made: then the config's are taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_dirs: Option<Vec<String>>,
}

impl ReleaseMeta {
    /// The commit's first 7 hex digits (read back, the commit is checked to be hex).
    pub fn commit_short(&self) -> &str {
        &self.commit[..self.commit.len().min(7)]
    }
}

/// Materialises `meta.id` in `slot` from the finished build `meta.build_key`. The caller
/// holds the slot lock.
pub fn create(
    layout: &Layout,
    meta: &ReleaseMeta,
    linked_dirs: &[String],
) -> anyhow::Result<PathBuf> {
    let slot = meta.slot;
    let build = layout.build_dir(&meta.build_key);
    anyhow::ensure!(
        build::is_finished(layout, &meta.build_key),
        "build {} is not finished",
        meta.build_key
    );
    let releases = layout.releases_dir(slot);
    fs::create_dir_all(&releases)
        .with_context(|| format!("cannot create {}", releases.display()))?;
    // What killed deploys (or a killed prune) left goes before the copy, not only after
    // a deploy that works: on a disk they filled, none would. Its failure does not stop
    // this deploy; `prune` tries again and says why.
    let _ = prune::remove_temp(layout, slot);
    let tmp = layout.release_tmp_dir(slot, &meta.id);
    fsops::remove_any(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    let made = (|| -> anyhow::Result<()> {
        // The marks are ours: a pushed tree that carries files of those names does not
        // get to say the release ran.
        tree_copy::copy_tree(
            &build,
            &tmp,
            &[build::META, WAS_CURRENT, WENT_LIVE, ROLLED_BACK],
        )?;
        // Its links, metadata and marks go in, also where the build made its folder
        // read-only (the copy has the build's mode).
        fsops::owner_writable(&tmp)?;
        for dir in linked_dirs {
            let shared = layout.shared_dir(slot).join(dir);
            fs::create_dir_all(&shared)
                .with_context(|| format!("cannot create {}", shared.display()))?;
            let link = tmp.join(dir);
            real_parents(&tmp, Path::new(dir))?;
            // What the tree had at that path is replaced by the link, never written through.
            fsops::remove_any(&link)
                .with_context(|| format!("cannot replace {}", link.display()))?;
            std::os::unix::fs::symlink(links::target(layout, slot, Path::new(dir)), &link)
                .with_context(|| {
                    format!("cannot link {} to {}", link.display(), shared.display())
                })?;
        }
        fsops::sync_tree(&tmp)?;
        let meta = ReleaseMeta {
            linked_dirs: Some(linked_dirs.to_vec()),
            ..meta.clone()
        };
        fsops::write_atomic(&tmp.join(META), &serde_json::to_vec_pretty(&meta)?)
    })();
    if let Err(e) = made {
        // A copy that failed (a full disk) gives its space back at once, not at the next
        // deploy that gets that far.
        let _ = fsops::remove_tree(&tmp);
        return Err(e);
    }
    let dir = layout.release_dir(slot, &meta.id);
    fs::rename(&tmp, &dir)
        .with_context(|| format!("cannot move the release into {}", dir.display()))?;
    fs::File::open(&releases)
        .and_then(|folder| folder.sync_all())
        .with_context(|| format!("cannot sync {}", releases.display()))?;
    Ok(dir)
}

/// Makes every parent folder of `dir` inside `release` a real folder, refusing one that
/// is a symlink or a file from the tree: following it would write outside the release.
fn real_parents(release: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut path = release.to_path_buf();
    let parents: Vec<_> = dir.components().collect();
    for part in &parents[..parents.len().saturating_sub(1)] {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => anyhow::bail!(
                "linked dir `{}`: `{}` in the release is not a folder (a symlink or file from the tree); refusing to follow it",
                dir.display(),
                path.strip_prefix(release).unwrap_or(&path).display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir(&path)
                .with_context(|| format!("cannot create {}", path.display()))?,
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
        }
    }
    Ok(())
}

/// What [`install`] did besides making the release current.
pub struct Installed {
    /// What `current` named before (for [`tidy`]).
    pub was_current: Option<String>,
    /// What the new release does not see that the one before did (see
    /// [`link_notes`]), and what went wrong after the flip (see [`flip`]), to tell the
    /// caller.
    pub notes: Vec<String>,
}

/// Makes `meta` its slot's current release: copies the build in and flips `current`.
/// The caller holds the slot lock and the build's use lock.
pub fn install(
    layout: &Layout,
    meta: &ReleaseMeta,
    linked_dirs: &[String],
) -> anyhow::Result<Installed> {
    create(layout, meta, linked_dirs)?;
    let was_current = current(layout, meta.slot);
    let mut notes = was_current.as_ref().map_or_else(Vec::new, |before| {
        links::notes(layout, meta.slot, before, &meta.id, linked_dirs)
    });
    notes.extend(flip(layout, meta.slot, &meta.id, false)?);
    Ok(Installed { was_current, notes })
}

/// Points `current` of `slot` at release `id`, marking the release it named before as
/// [`WAS_CURRENT`]. An error means `current` did not move. What goes wrong besides is
/// returned as notes for the caller to tell: a mark that cannot be written (a full disk:
/// the new link needs no data block, the mark does) does not stop the flip, which is what
/// a rollback on a full disk is for, and without it a release that never went live
/// either is passed over by a later `rollback`; a flip that could not be flushed to disk
/// has happened all the same. Release `id` loses its [`ROLLED_BACK`] mark: current
/// again, it is no longer one gone back from. So does the release left, unless
/// `going_back` (a rollback, which marked it): it was current until now, and a mark on it
/// is one a rollback cut off before its flip (or a `--to` one cut off after it) left, which
/// would make later rollbacks pass over a release that served until this flip.
pub fn flip(
    layout: &Layout,
    slot: Slot,
    id: &str,
    going_back: bool,
) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        layout.release_dir(slot, id).join(META).is_file(),
        "{slot} has no release {id}"
    );
    let mut notes = Vec::new();
    if let Some(old) = current(layout, slot).filter(|old| old != id) {
        let dir = layout.release_dir(slot, &old);
        if dir.is_dir() {
            if let Err(e) = stamp(&dir.join(WAS_CURRENT)) {
                notes.push(format!(
                    "cannot mark release {slot}/{old} as once current: {e:#}"
                ));
            }
            if !going_back {
                if let Err(e) = unmark_rolled_back(layout, slot, &old) {
                    notes.push(format!("{e:#}"));
                }
            }
        }
    }
    // The caller holds the slot lock: any earlier flip's temp link is a dead one's.
    fsops::remove_stale_siblings(&layout.current_link(slot));
    notes.extend(fsops::flip_symlink(
        &layout.current_link(slot),
        &layout.current_target(id),
    )?);
    // Removing a file needs no free block; an error here leaves a release that later
    // rollbacks pass over, which `releases` shows.
    if let Err(e) = unmark_rolled_back(layout, slot, id) {
        notes.push(format!("{e:#}"));
    }
    Ok(notes)
}

/// Whether `slot` has a finished release named `id`: a plain name (see [`is_name`]) in
/// its releases folder, a folder there (not a symlink out of it) holding its metadata
/// file, as `create` makes one.
pub fn exists(layout: &Layout, slot: Slot, id: &str) -> bool {
    let dir = layout.release_dir(slot, id);
    is_name(id) && fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) && dir.join(META).is_file()
}

/// The metadata of one release.
pub fn meta(layout: &Layout, slot: Slot, id: &str) -> Option<ReleaseMeta> {
    read_meta(&layout.release_dir(slot, id))
}

/// A release's metadata, if it reads as bluegreen writes it. The file lies in a folder
/// the app's own processes can write, so what becomes a path or a slice is checked: a
/// `build_key` such as `/srv/x` made `promote` copy that folder into a release, and a
/// `commit` cut at 7 bytes inside a character panicked. Control characters in the text
/// shown on terminals (`releases`) are replaced, as the hook does with a commit message.
fn read_meta(dir: &Path) -> Option<ReleaseMeta> {
    let mut meta: ReleaseMeta = serde_json::from_slice(&fs::read(dir.join(META)).ok()?).ok()?;
    let hex =
        |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(&meta.commit) || !build::is_key(&meta.build_key) {
        return None;
    }
    meta.summary = crate::logging::printable(&meta.summary);
    meta.created = crate::logging::printable(&meta.created);
    Some(meta)
}
