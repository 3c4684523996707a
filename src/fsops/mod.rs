//! File-system steps that must never leave a half state: atomic writes, symlink flips,
//! removals, and the file locks (`lock.rs`) that serialise them.
//!
//! Every swap is write-beside-then-rename(2) followed by an fsync of the folder, so a
//! crash at any instant leaves the old or the new content, never a mix.

mod lock;

pub use lock::{held, lock, lock_shared, remove_lock, try_lock};

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// The name of user `uid` (a file's owner, as messages name it), if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|user| user.name)
}

/// `<path> links to <target>, which is missing` (or `which cannot be followed: <why>`,
/// a loop of links) when `path` is a symlink that leads to nothing: said instead of "no
/// such file", which would call the link itself missing.
pub fn dangling(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    let end = match fs::metadata(path) {
        Ok(_) => return None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "which is missing".to_string(),
        Err(e) => format!("which cannot be followed: {e}"),
    };
    Some(format!(
        "{} links to {}, {end}",
        path.display(),
        target.display()
    ))
}

/// Whether both paths name the same existing file or folder (through links, or written
/// two ways).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The bytes of `path`, a regular file of at most `limit` bytes. Anything else is refused
/// at once, unread: a FIFO (whose opening waits for a writer), a device or a file that
/// never ends (a link to `/dev/zero`), a folder.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, Read};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let regular = |kind: fs::FileType| {
        let what = match () {
            _ if kind.is_file() => return Ok(()),
            _ if kind.is_dir() => "a folder",
            _ if kind.is_fifo() => "a FIFO",
            _ if kind.is_socket() => "a socket",
            _ => "a device",
        };
        Err(Error::other(format!("it is {what}, not a regular file")))
    };
    // Looked at before it is opened (opening a device may do something: a terminal's
    // becomes the controlling one, a tape rewinds), and again once open (it may have been
    // replaced meanwhile), never waiting for a FIFO's writer.
    regular(fs::metadata(path)?.file_type())?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    regular(file.metadata()?.file_type())?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Error::other(format!(
            "it is larger than {limit} bytes, far more than it should hold"
        )));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` through a temp file beside it, fsynced, then renamed over.
/// A symlink at `path` is replaced, never followed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic_mode(path, bytes, 0o666)
}

/// [`write_atomic`] for a file that may hold secrets (the config's `env` tables): no
/// access for others (mode 0640, less as the umask says).
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic_mode(path, bytes, 0o640)
}

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = sibling(path, ".tmp");
    let result = (|| {
        // Whatever a crash (or anyone) left at the temp name goes; a symlink there is
        // never written through.
        remove_any(&tmp)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        // Opened before the rename, so that failing to open it leaves `path` as it was.
        let folder = parent_folder(path)?;
        fs::rename(&tmp, path)?;
        folder.map_or(Ok(()), |folder| folder.sync_all())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Flushes the file system holding `dir` to disk: the files of a build or release copied
/// into it are on disk before the rename that publishes them (a power cut must not leave
/// a release that looks complete with empty files). One call, not an fsync per file.
pub fn sync_tree(dir: &Path) -> anyhow::Result<()> {
    let folder = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    nix::unistd::syncfs(&folder).with_context(|| format!("cannot sync {}", dir.display()))
}

/// Points the symlink `link` at `target` by making a new link beside it and renaming it
/// over: readers see the old target or the new one, never no link. An error means the
/// link did not move. Once it has moved, a failure to flush its folder to disk is no
/// error (every reader, the daemon included, already follows the new link; only a power
/// cut could bring the old one back): it is returned as a note for the caller to tell.
pub fn flip_symlink(link: &Path, target: &Path) -> anyhow::Result<Option<String>> {
    let tmp = sibling(link, ".new");
    let _ = fs::remove_file(&tmp);
    let moved = (|| {
        // Opened before the rename, so that failing to open it leaves the link as it was.
        let folder = parent_folder(link)?;
        symlink(target, &tmp)?;
        fs::rename(&tmp, link)?;
        Ok::<_, std::io::Error>(folder)
    })();
    let folder = match moved {
        Ok(folder) => folder,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| {
                format!("cannot point {} at {}", link.display(), target.display())
            });
        }
    };
    let unsynced = folder.and_then(|folder| folder.sync_all().err());
    Ok(unsynced.map(|e| {
        format!(
            "{} points at {} now, but its folder could not be flushed to disk ({e}): a power cut could bring back the link it replaced",
            link.display(),
            target.display()
        )
    }))
}

/// Removes whatever is at `path` (file, symlink or folder) without following a symlink.
pub fn remove_any(path: &Path) -> std::io::Result<()> {
    // `link/` or `link/.` names what the link points to, to the kernel: a symlink there
    // would be taken for a folder, and its target's files removed. Without the trailing
    // parts it names the link itself.
    let path: std::path::PathBuf = path.components().collect();
    let path = path.as_path();
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => remove_tree(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the folder `path` and all it holds, also what a build left read-only (a Go
/// module cache, a `chmod -R a-w`): on a permission error its folders are made
/// owner-writable and it tries again. Symlinks are never followed.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_writable(path)?;
            fs::remove_dir_all(path)
        }
        other => other,
    }
}

/// Gives the owner read, write and search rights on the folder `dir` itself (not what it
/// holds): a build folder or release is ours to write our metadata, links and marks into,
/// whatever mode the build gave it (`chmod -R a-w .`).
pub fn owner_writable(dir: &Path) -> anyhow::Result<()> {
    let mode = fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o700 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700))
            .with_context(|| format!("cannot make {} writable", dir.display()))?;
    }
    Ok(())
}

/// Gives the owner read, write and search rights on `dir` and every folder in it.
fn make_writable(dir: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700))?;
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

/// `, mode 555, app's (uid 999)` of `path`, for a message on why it may not be written;
/// nothing if it cannot be read.
pub fn mode_of(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(path) {
        Ok(meta) => format!(
            ", mode {:o}, {}",
            meta.mode() & 0o7777,
            crate::owner::Owner::of(meta.uid()).shown()
        ),
        Err(_) => String::new(),
    }
}

/// Removes the temp files that `write_atomic` and `flip_symlink` left beside `path` when
/// a process died between making one and renaming it over (`.<name>.tmp.<pid>`,
/// `.<name>.new.<pid>`). Only for a caller that holds what serialises the writers of
/// `path` (the slot lock for `current`, the serve lock for `state.json`): another
/// writer's temp file could be in use.
pub fn remove_stale_siblings(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefixes = [".tmp.", ".new."].map(|suffix| format!(".{}{suffix}", name.to_string_lossy()));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| entry_name.starts_with(p.as_str())) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{suffix}.{}", std::process::id()))
}

/// The folder holding `path`, opened to be fsynced (none for a bare file name).
fn parent_folder(path: &Path) -> std::io::Result<Option<File>> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir).map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_to_nothing_says_where_it_leads() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let (link, gone) = (dir.path().join("link"), dir.path().join("gone"));
        symlink(&gone, &link).unwrap();
        let said = dangling(&link).unwrap();
        assert!(said.ends_with("/gone, which is missing"), "{said}");
        // A loop is no missing file.
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        symlink(&b, &a).unwrap();
        symlink(&a, &b).unwrap();
        let said = dangling(&a).unwrap();
        assert!(said.contains("/b, which cannot be followed: "), "{said}");
        // A link to something, and no link, are nothing to say.
        fs::write(&gone, "").unwrap();
        assert_eq!(dangling(&link), None);
        assert_eq!(dangling(&gone), None);
    }

    #[test]
    fn only_a_regular_file_of_bounded_size_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "text").unwrap();
        assert_eq!(read_regular(&file, 4).unwrap(), b"text");
        // Through a link, as a config kept elsewhere is.
        let link = dir.path().join("link");
        symlink(&file, &link).unwrap();
        assert_eq!(read_regular(&link, 4).unwrap(), b"text");
        let refused = |path: &Path, limit| read_regular(path, limit).unwrap_err().to_string();
        assert_eq!(
            refused(&file, 3),
            "it is larger than 3 bytes, far more than it should hold"
        );
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(refused(&fifo, 4), "it is a FIFO, not a regular file");
        let device = dir.path().join("zero");
        symlink("/dev/zero", &device).unwrap();
        assert_eq!(refused(&device, 4), "it is a device, not a regular file");
        assert_eq!(refused(dir.path(), 4), "it is a folder, not a regular file");
    }

    /// Runs `f` on a thread whose effective capabilities are cleared: as root, that
    /// thread obeys file permissions like any user (capabilities are per thread on
    /// Linux), so a permission test means something when the tests run as root.
    fn as_plain_user<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // _LINUX_CAPABILITY_VERSION_3: two data words; pid 0 is this thread.
                    let mut header = Header {
                        version: 0x2008_0522,
                        pid: 0,
                    };
                    let mut data = [Data::default(); 2];
                    // SAFETY: capget/capset read and write exactly these two structs,
                    // laid out as <linux/capability.h> declares them.
                    let got = unsafe {
                        nix::libc::syscall(nix::libc::SYS_capget, &mut header, data.as_mut_ptr())
                    };
                    assert_eq!(got, 0, "capget failed");
                    for word in &mut data {
                        word.effective = 0;
                    }
                    // SAFETY: as above.
                    let set = unsafe {
                        nix::libc::syscall(nix::libc::SYS_capset, &mut header, data.as_ptr())
                    };
                    assert_eq!(set, 0, "capset failed");
                    f()
                })
                .join()
                .unwrap()
        })
    }

    #[test]
    fn remove_tree_removes_what_a_build_left_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("release");
        fs::create_dir_all(tree.join("cache/mod/pkg")).unwrap();
        fs::write(tree.join("cache/mod/pkg/file.go"), "package pkg").unwrap();
        for folder in ["cache/mod/pkg", "cache/mod", "cache"] {
            fs::set_permissions(tree.join(folder), fs::Permissions::from_mode(0o555)).unwrap();
        }
        as_plain_user(|| remove_tree(&tree)).unwrap();
        assert!(!tree.exists());
    }

    #[test]
    fn write_atomic_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "keep").unwrap();
        let path = dir.path().join("meta.json");
        symlink(&outside, &path).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
        // Nor through a symlink planted at its temp name.
        symlink(&outside, sibling(&path, ".tmp")).unwrap();
        write_atomic(&path, b"newer").unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&path).unwrap(), "newer");
    }

    #[test]
    fn flip_replaces_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        assert_eq!(flip_symlink(&link, Path::new("releases/a")).unwrap(), None);
        assert_eq!(flip_symlink(&link, Path::new("releases/b")).unwrap(), None);
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("releases/b"));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_write_that_fails_leaves_the_file_as_it_was() {
        // A folder its user may write but not read: the file could be replaced, its
        // folder not flushed; before, the file was replaced and the write still failed.
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("run");
        fs::create_dir(&folder).unwrap();
        let path = folder.join("state.json");
        write_atomic(&path, b"old").unwrap();
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o300)).unwrap();
        let written = as_plain_user(|| write_atomic(&path, b"new"));
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(written.is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(fs::read_dir(&folder).unwrap().count(), 1);
    }

    #[test]
    fn a_flip_that_fails_leaves_the_link_where_it_was() {
        // A folder its user may write but not read: the link could move, its folder could
        // not be flushed. Before, the link moved and the flip still failed, so a push said
        // "not deployed" while `current` named it.
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("blue");
        fs::create_dir(&folder).unwrap();
        let link = folder.join("current");
        flip_symlink(&link, Path::new("releases/a")).unwrap();
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o300)).unwrap();
        let flipped = as_plain_user(|| flip_symlink(&link, Path::new("releases/b")));
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o755)).unwrap();
        let error = format!("{:#}", flipped.unwrap_err());
        assert!(error.starts_with("cannot point "), "{error}");
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("releases/a"));
        assert_eq!(fs::read_dir(&folder).unwrap().count(), 1);
    }
}
