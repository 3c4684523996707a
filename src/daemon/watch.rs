//! The file watch on each slot folder: the backstop that notices `current` moving
//! without the control API being told (rollback while the daemon was busy, a manual
//! flip, a push that happened while the daemon was down).
//!
//! It watches the slot folder, not the `current` symlink: a watch on the symlink
//! follows it to the old release and never sees the flip. Events are debounced, then
//! each slot gets an `IfChanged` reload, which does nothing when it already runs
//! (or just failed to start) its current release.
//!
//! An inotify watch belongs to the folder, not its path: a slot folder moved away or
//! removed and made again (restored from a backup) would be watched no more. So the
//! root is watched too, and a slot folder that appears in it is watched afresh, then
//! reloaded (its `current` may have moved before the new watch was in place).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};

use super::Daemon;
use crate::slot::Slot;

/// Quiet time after the last event before reacting.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What the watch saw, for the debouncing thread.
enum Seen {
    /// The slot's `current` changed.
    Current(Slot),
    /// The slot's folder appeared in the root (made, or moved there).
    Folder(Slot),
}

/// The running watch; it lives as long as this.
pub struct Watch {
    /// Shared with the debouncing thread, which watches a slot folder that came back;
    /// the thread holds it weakly, so dropping this ends the watch and the thread.
    _watcher: Arc<Mutex<notify::RecommendedWatcher>>,
}

/// Starts the watch; it lives as long as the returned [`Watch`].
pub fn start(daemon: Arc<Daemon>) -> anyhow::Result<Watch> {
    let (tx, rx) = mpsc::channel::<Seen>();
    let slot_dirs = Slot::ALL.map(|slot| daemon.layout.slot_dir(slot));
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let appeared = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        for path in &event.paths {
            for slot in Slot::ALL {
                let dir = &slot_dirs[slot.index()];
                if appeared && path == dir {
                    let _ = tx.send(Seen::Folder(slot));
                } else if path.file_name().is_some_and(|n| n == "current")
                    && path
                        .parent()
                        .and_then(|p| p.file_name())
                        .is_some_and(|n| n == slot.name())
                {
                    let _ = tx.send(Seen::Current(slot));
                }
            }
        }
    })?;
    for slot in Slot::ALL {
        let dir = daemon.layout.slot_dir(slot);
        std::fs::create_dir_all(&dir)?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    watcher.watch(daemon.layout.root(), RecursiveMode::NonRecursive)?;
    let watcher = Arc::new(Mutex::new(watcher));
    let weak = Arc::downgrade(&watcher);
    std::thread::spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut seen = vec![first];
            while let Ok(next) = rx.recv_timeout(DEBOUNCE) {
                seen.push(next);
            }
            let Some(watcher) = weak.upgrade() else {
                return;
            };
            for slot in Slot::ALL {
                if seen
                    .iter()
                    .any(|s| matches!(s, Seen::Folder(f) if *f == slot))
                {
                    rewatch(&daemon, &watcher, slot);
                }
            }
            drop(watcher);
            for slot in Slot::ALL {
                if seen
                    .iter()
                    .any(|s| matches!(s, Seen::Current(f) | Seen::Folder(f) if *f == slot))
                {
                    drop(daemon.reload(slot, super::supervisor::Reload::IfChanged));
                }
            }
        }
    });
    Ok(Watch { _watcher: watcher })
}

/// Watches `slot`'s folder again, the one now at its path.
fn rewatch(daemon: &Daemon, watcher: &Mutex<notify::RecommendedWatcher>, slot: Slot) {
    let dir = daemon.layout.slot_dir(slot);
    let mut watcher = watcher.lock().expect("watcher lock: no panic holds it");
    // The old folder's watch, if it is still there (moved away, not removed).
    let _ = watcher.unwatch(&dir);
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(
            slot = slot.name(),
            "cannot watch {} again: {e}; a hand flip of its current is not seen until the daemon restarts",
            dir.display()
        );
    }
}
