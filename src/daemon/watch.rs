//! The file watch on each slot folder: the backstop that notices `current` moving
//! without the control API being told (rollback while the daemon was busy, a manual
//! flip, a push that happened while the daemon was down).
//!
//! It watches the slot folder, not the `current` symlink: a watch on the symlink
//! follows it to the old release and never sees the flip. Events are debounced, then
//! each slot gets an `IfChanged` reload, which does nothing when it already runs
//! (or just failed to start) its current release.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::Daemon;
use crate::slot::Slot;

/// Quiet time after the last event before reacting.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Starts the watch; it lives as long as the returned watcher.
pub fn start(daemon: Arc<Daemon>) -> anyhow::Result<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel::<Slot>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        for path in &event.paths {
            if path.file_name().is_some_and(|n| n == "current") {
                for slot in Slot::ALL {
                    if path
                        .parent()
                        .and_then(|p| p.file_name())
                        .is_some_and(|n| n == slot.name())
                    {
                        let _ = tx.send(slot);
                    }
                }
            }
        }
    })?;
    for slot in Slot::ALL {
        let dir = daemon.layout.slot_dir(slot);
        std::fs::create_dir_all(&dir)?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    std::thread::spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut slots = vec![first];
            while let Ok(slot) = rx.recv_timeout(DEBOUNCE) {
                slots.push(slot);
            }
            for slot in Slot::ALL {
                if slots.contains(&slot) {
                    drop(daemon.reload(slot, super::supervisor::Reload::IfChanged));
                }
            }
        }
    });
    Ok(watcher)
}
