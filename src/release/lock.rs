//! A slot's two locks: the slot lock, held while its releases and `current` change (a
//! push's release step, a rollback, a promote), and the push lock, a push's turn to
//! build. Builds are not under the slot lock, so a rollback in an incident never waits
//! for one; pushes to one slot still build one after the other, and a burst of them
//! builds only the first and the newest tree (the push whose turn it is deploys what the
//! branch points at then, and the ones after it find that current: see `hook`).

use std::fs::File;
use std::io::Write;

use nix::fcntl::Flock;

use crate::fsops;
use crate::layout::Layout;
use crate::slot::Slot;

/// Takes the slot's lock ([`Layout::slot_lock`]), held while its releases and `current`
/// change; if another process holds it, `out` is told once that this waits for it.
pub fn lock_slot(layout: &Layout, slot: Slot, out: &mut dyn Write) -> anyhow::Result<Flock<File>> {
    let waiting =
        format!("another push, rollback or promote is changing {slot}'s releases; waiting for it");
    take(layout, slot, &layout.slot_lock(slot), &waiting, out)
}

/// Takes a push's turn on `slot` ([`Layout::push_lock`]), held from its look at the
/// branch tip through its build to its release; if another push has it, `out` is told
/// once that this waits for it.
pub fn push_turn(layout: &Layout, slot: Slot, out: &mut dyn Write) -> anyhow::Result<Flock<File>> {
    let waiting = format!("another push to {slot} is building; waiting for its turn");
    take(layout, slot, &layout.push_lock(slot), &waiting, out)
}

/// Takes `lock`, one of `slot`'s, telling `out` once what it waits for (`waiting`).
fn take(
    layout: &Layout,
    slot: Slot,
    lock: &std::path::Path,
    waiting: &str,
    out: &mut dyn Write,
) -> anyhow::Result<Flock<File>> {
    slot_folder(layout, slot)?;
    fsops::lock(lock, || {
        let held = crate::procfs::held_by(lock);
        let _ = writeln!(out, "{slot}: {waiting}{held}");
    })
}

/// Whether a push to `slot` has its turn now: building, when the caller holds the slot
/// lock (a push releases under it).
pub fn push_under_way(layout: &Layout, slot: Slot) -> bool {
    fsops::held(&layout.push_lock(slot))
}

/// A slot folder that is gone is named, with what makes it again, rather than as a
/// lock file that cannot be opened, or as a slot with no release.
pub fn slot_folder(layout: &Layout, slot: Slot) -> anyhow::Result<()> {
    let dir = layout.slot_dir(slot);
    anyhow::ensure!(
        dir.is_dir(),
        "{slot}'s folder {} is missing: `bluegreen init {}` makes it again",
        dir.display(),
        layout.root().display()
    );
    Ok(())
}
