//! File locks: `flock(2)` on a lock file, exclusive (one push per slot, one build per
//! key, one `serve` per root) or shared (a build in use), that stay right when the lock
//! file is removed while someone waits for it.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

use super::mode_of;

/// An exclusive lock on `path`, held until the value is dropped. `on_wait` runs once if
/// another process holds it, before blocking (so the pusher can be told why).
pub fn lock(path: &Path, on_wait: impl FnOnce()) -> anyhow::Result<Flock<File>> {
    let mut on_wait = Some(on_wait);
    locked(path, |file| {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                if let Some(on_wait) = on_wait.take() {
                    on_wait();
                }
                Flock::lock(file, FlockArg::LockExclusive)
                    .map(Some)
                    .map_err(|(_, e)| e)
            }
            Err((_, e)) => Err(e),
        }
    })
    .map(|lock| lock.expect("a blocking lock is always taken"))
}

/// A shared lock on `path`, held until the value is dropped (blocks while someone
/// holds it exclusively).
pub fn lock_shared(path: &Path) -> anyhow::Result<Flock<File>> {
    locked(path, |file| {
        Flock::lock(file, FlockArg::LockShared)
            .map(Some)
            .map_err(|(_, e)| e)
    })
    .map(|lock| lock.expect("a blocking lock is always taken"))
}

/// Whether another process holds a lock on `path` now (a look only: the lock is let go
/// at once, and whoever asks for it meanwhile waits that long). A lock file that is not
/// there is held by nobody, and is not made.
pub fn held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    matches!(
        Flock::lock(file, FlockArg::LockExclusiveNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

/// An exclusive lock on `path` if nobody holds it now, without waiting.
pub fn try_lock(path: &Path) -> anyhow::Result<Option<Flock<File>>> {
    locked(path, |file| {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e),
        }
    })
}

/// Removes the lock file of `lock`, which must be held exclusively: whoever opened the
/// file before and locks it after finds it gone from `path` and opens the new one
/// (see `locked`), so no two ever hold "the" lock at once.
pub fn remove_lock(path: &Path, lock: Flock<File>) -> std::io::Result<()> {
    let removed = fs::remove_file(path);
    drop(lock);
    removed
}

/// Opens `path` and locks it with `take`, again while the locked file is no longer the
/// one at `path` (`remove_lock` took it away meanwhile).
fn locked(
    path: &Path,
    mut take: impl FnMut(File) -> nix::Result<Option<Flock<File>>>,
) -> anyhow::Result<Option<Flock<File>>> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let Some(lock) = take(open_lock(path)?)
            .map_err(|e| anyhow::anyhow!("cannot lock {}: {e}", path.display()))?
        else {
            return Ok(None);
        };
        let held = lock
            .metadata()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        match fs::metadata(path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok(Some(lock)),
            _ => continue,
        }
    }
}

/// Opens (or makes) the lock file `path`, mode 0600: `flock` needs only a descriptor, and
/// any user who can open the file for reading could hold the lock for good (every push
/// to the slot waiting, `serve` refused). One made readable by an older version is made
/// 0600 too, if it is this user's.
fn open_lock(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::PermissionDenied => denied(path),
                _ => String::new(),
            };
            anyhow::Error::new(e).context(format!("cannot open lock {}{why}", path.display()))
        })?;
    if let Ok(meta) = file.metadata() {
        if meta.mode() & 0o077 != 0 && meta.uid() == nix::unistd::geteuid().as_raw() {
            let _ = file.set_permissions(fs::Permissions::from_mode(0o600));
        }
    }
    Ok(file)
}

/// Why this user may not write `path`: its folder is not writable, or the file is not
/// (` (/srv/app/builds is not writable by this user, mode 555, app's (uid 999): `bluegreen
/// init` names each folder that is not)`), said before the error itself.
fn denied(path: &Path) -> String {
    use nix::unistd::{access, AccessFlags};
    let folder = path.parent().unwrap_or(Path::new("/"));
    let blocked = match access(folder, AccessFlags::W_OK | AccessFlags::X_OK) {
        Err(_) => folder,
        Ok(()) if path.exists() && access(path, AccessFlags::W_OK).is_err() => path,
        Ok(()) => return String::new(),
    };
    format!(
        " ({} is not writable by this user{}: `bluegreen init` names each folder that is not)",
        blocked.display(),
        mode_of(blocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_removed_while_waited_for_is_locked_anew() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let held = lock(&path, || {}).unwrap();
        let (waiting_tx, waiting) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || {
                let lock = lock(&path, || waiting_tx.send(()).unwrap()).unwrap();
                lock.metadata().unwrap().ino()
            }
        });
        waiting.recv().unwrap();
        remove_lock(&path, held).unwrap();
        // The waiter's lock is on the file now at `path`, not on the one removed.
        let locked = waiter.join().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), locked);
    }
}
