//! What the kernel reports about the names in one folder (inotify, through `notify`): how
//! a file was replaced, which no state left on disk can tell (a rename over it, or a
//! removal then a new file; a new file, or the old one rewritten in place).

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

pub struct FolderEvents {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
}

impl FolderEvents {
    /// Starts watching `dir` (not its subfolders).
    pub fn watch(dir: &Path) -> FolderEvents {
        let (tx, events) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx).unwrap();
        watcher.watch(dir, RecursiveMode::NonRecursive).unwrap();
        FolderEvents {
            _watcher: watcher,
            events,
        }
    }

    /// The kinds of the events that named `name`, from the first not yet read up to the
    /// first that makes a new file appear at `name` (a rename onto it, a creation, a
    /// write), waited for up to `limit`.
    pub fn until_replaced(&mut self, name: &str, limit: Duration) -> Vec<EventKind> {
        let deadline = Instant::now() + limit;
        let mut kinds = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match self.events.recv_timeout(left) {
                Ok(event) => event.unwrap(),
                Err(_) => panic!("no new {name} within {limit:?}; its events: {kinds:?}"),
            };
            if !event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_ref()))
            {
                continue;
            }
            kinds.push(event.kind);
            if renamed_onto(&event.kind)
                || matches!(
                    event.kind,
                    EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_))
                )
            {
                return kinds;
            }
        }
    }
}

/// A rename that put a file at the event's (second) path.
pub fn renamed_onto(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    )
}
