//! What keeps a slot's pushes from deploying into this root, told by `init` (which
//! refuses), `status` (a note) and the daemon at its start (an event).
//!
//! The hook finds its root by the real folder of the repo git runs it in: a slot repo
//! that is a link to another folder deploys wherever that folder is (another root's
//! slot, a slot of this root, or nothing at all), and a hook linked to a binary that is
//! gone deploys nothing; git tells the pusher of neither.

use std::fs;

use crate::layout::Layout;
use crate::slot::Slot;

/// The first of [`linked_elsewhere`] and [`dangling_hook`] that holds.
pub fn problem(layout: &Layout, slot: Slot) -> Option<String> {
    linked_elsewhere(layout, slot).or_else(|| dangling_hook(layout, slot))
}

/// `<slot>.git` resolves to a folder other than the root's own `<slot>.git` (a symlink
/// to another root's repo, or to the other slot's): where its pushes go instead.
pub fn linked_elsewhere(layout: &Layout, slot: Slot) -> Option<String> {
    let repo = layout.repo(slot);
    let real = fs::canonicalize(&repo).ok()?;
    let own = fs::canonicalize(layout.root())
        .ok()?
        .join(repo.file_name()?);
    if real == own {
        return None;
    }
    let folder = real.parent()?;
    let name = real.file_name()?.to_string_lossy();
    let slot_there = name
        .strip_suffix(".git")
        .and_then(|s| s.parse::<Slot>().ok());
    let goes = match slot_there {
        Some(there) if folder.join(crate::layout::CONFIG).is_file() => {
            format!("deploy to {there} of {}", folder.display())
        }
        _ => format!(
            "deploy nothing ({} is no slot repo of a root)",
            real.display()
        ),
    };
    Some(format!(
        "{} links to {}: the hook finds its root by the repo's real folder, so pushes to {slot} {goes}; a root's repos are folders of its own (remove the link, then `bluegreen init {}`)",
        repo.display(),
        real.display(),
        crate::pasted::path(layout.root())
    ))
}

/// A hook that links to a binary no longer there (an upgrade removed the version `init`
/// linked): git runs no hook it cannot find and tells the pusher nothing.
pub fn dangling_hook(layout: &Layout, slot: Slot) -> Option<String> {
    let hook = layout.hook(slot);
    let target = fs::read_link(&hook).ok()?;
    if hook.exists() {
        return None;
    }
    Some(format!(
        "{}'s hook {} links to {}, which is gone: pushes to {slot} deploy nothing and git says nothing; `bluegreen init {}` links it to the bluegreen run",
        layout.repo(slot).display(),
        hook.display(),
        target.display(),
        crate::pasted::path(layout.root())
    ))
}
