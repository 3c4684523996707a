//! `copy_tree`: a build copied into a new release folder, each file opened once and
//! copied by reflink where the file system can (plain copy otherwise), on a few threads,
//! with the modes and modification times the build left.
//!
//! The times are kept for what a build compiles ahead and checks by them: Python's
//! `.pyc` files name their source's mtime, and with every release's copy newer they were
//! all stale (each worker compiled its sources again at start); so were the
//! `Last-Modified` and ETags of static files, different in blue and green for one build.
//!
//! A push spends most of its time creating files: a tree of 10,000 small files is
//! created once by the checkout and once more by this copy. Each file is opened once on
//! each side (`reflink_copy::reflink_or_copy` opens both again for its plain copy after a
//! failed reflink, which on ext4 is every file), and once one file could not be
//! reflinked the rest are copied without trying. Files are copied by up to
//! [`MAX_THREADS`] threads, since most of a small file's copy is system-call time the
//! kernel can spend on two cores at once.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

/// The most threads a copy uses (fewer on a machine with fewer cores).
const MAX_THREADS: usize = 4;

/// What the walk found: the files to copy and the folders whose mode is set last.
#[derive(Default)]
struct Plan {
    files: Vec<(PathBuf, PathBuf)>,
    /// Each folder with the mode and times it gets once its files are in (a read-only
    /// folder would refuse them, and each file made moves its time): parents before
    /// children, set in reverse.
    dirs: Vec<(PathBuf, u32, FileTimes)>,
}

/// Copies the tree at `from` into the new folder `to`: files by reflink where the file
/// system can (plain copy otherwise) with their mode and times, symlinks as symlinks
/// (never followed), folders with their mode and times. `skip` names top-level entries
/// left out.
pub fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> anyhow::Result<()> {
    let mut plan = Plan::default();
    walk(from, to, skip, &mut plan)?;
    copy_files(&plan.files)?;
    for (dir, mode, times) in plan.dirs.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(*mode))
            .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
        File::open(dir)
            .and_then(|opened| opened.set_times(*times))
            .with_context(|| format!("cannot set the times of {}", dir.display()))?;
    }
    Ok(())
}

/// Makes the folders and symlinks of `from` under `to`, and lists its files.
fn walk(from: &Path, to: &Path, skip: &[&str], plan: &mut Plan) -> anyhow::Result<()> {
    fs::create_dir(to).with_context(|| format!("cannot create {}", to.display()))?;
    let meta = fs::metadata(from).with_context(|| format!("cannot read {}", from.display()))?;
    plan.dirs
        .push((to.to_path_buf(), meta.permissions().mode(), times(&meta)?));
    for entry in fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", from.display()))?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot inspect {}", src.display()))?;
        if kind.is_symlink() {
            let target =
                fs::read_link(&src).with_context(|| format!("cannot read {}", src.display()))?;
            symlink(target, &dst).with_context(|| format!("cannot link {}", dst.display()))?;
        } else if kind.is_dir() {
            walk(&src, &dst, &[], plan)?;
        } else if kind.is_file() {
            plan.files.push((src, dst));
        }
    }
    Ok(())
}

/// Copies each `(from, to)` pair, on up to [`MAX_THREADS`] threads; the first failure
/// stops the others and is the error.
fn copy_files(files: &[(PathBuf, PathBuf)]) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
        .min(files.len() / 64 + 1);
    let next = AtomicUsize::new(0);
    let reflink = AtomicBool::new(true);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some((src, dst)) = files.get(i) else {
            return;
        };
        if let Err(e) = copy_file(src, dst, &reflink) {
            let e = anyhow::Error::new(e).context(format!(
                "cannot copy {} to {}",
                src.display(),
                dst.display()
            ));
            failed
                .lock()
                .expect("copy failure lock: a copy thread does not panic holding it")
                .get_or_insert(e);
            // The others stop at their next file.
            next.store(files.len(), Ordering::Relaxed);
            return;
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        work();
    });
    match failed
        .into_inner()
        .expect("copy failure lock: a copy thread does not panic holding it")
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Copies one file into the new file `to` with its mode: by reflink while `reflink`
/// holds (a failed one clears it, and this file is copied plainly), else by
/// `copy_file_range` (what `io::copy` uses between two files).
fn copy_file(from: &Path, to: &Path, reflink: &AtomicBool) -> io::Result<()> {
    let mut source = File::open(from)?;
    let meta = source.metadata()?;
    let mode = meta.permissions().mode() & 0o7777;
    let mut target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(to)?;
    let cloned = reflink.load(Ordering::Relaxed)
        && match reflink_copy::reflink_file(&source, &target) {
            Ok(()) => true,
            // Not on this file system (ext4, tmpfs) or across two: the target is still
            // empty, and so is every other file's try.
            Err(_) => {
                reflink.store(false, Ordering::Relaxed);
                false
            }
        };
    if !cloned {
        if meta.blocks() * 512 < meta.len() {
            copy_sparse(&source, &target, meta.len())?;
        } else {
            io::copy(&mut source, &mut target)?;
        }
    }
    // The umask may have taken bits off the mode the file was created with.
    target.set_permissions(fs::Permissions::from_mode(mode))?;
    target.set_times(times(&meta)?)
}

/// The access and modification times of `meta`, to give a copy.
fn times(meta: &fs::Metadata) -> io::Result<FileTimes> {
    Ok(FileTimes::new()
        .set_accessed(meta.accessed()?)
        .set_modified(meta.modified()?))
}

/// Copies a file with holes (fewer blocks than its length) data range by data range, so
/// that its holes stay holes, as `cp` does: a plain copy writes them out as zeros, and a
/// build's 3 GiB sparse file took 3 GiB of disk in every release.
fn copy_sparse(mut source: &File, mut target: &File, len: u64) -> io::Result<()> {
    let mut at = 0;
    while at < len {
        let data = match lseek(source, offset(at)?, Whence::SeekData) {
            Ok(data) => data as u64,
            // Only a hole from `at` to the end.
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(source, offset(data)?, Whence::SeekHole)? as u64;
        source.seek(SeekFrom::Start(data))?;
        target.seek(SeekFrom::Start(data))?;
        io::copy(&mut source.take(hole - data), &mut target)?;
        at = hole;
    }
    // A hole at the end is the length alone.
    target.set_len(len)
}

fn offset(at: u64) -> io::Result<i64> {
    i64::try_from(at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_tree_keeps_contents_modes_times_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("bin/run", src.join("run")).unwrap();
        symlink("/etc", src.join("etc")).unwrap();
        fs::write(src.join("skipme"), "x").unwrap();
        // Enough files for more than one thread, in a folder that ends read-only.
        fs::create_dir(src.join("many")).unwrap();
        for i in 0..300 {
            fs::write(src.join(format!("many/{i}")), format!("file {i}\n")).unwrap();
        }
        // Times the build left, as a `.pyc` names its source's.
        let then = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        let at = FileTimes::new().set_modified(then);
        File::options()
            .write(true)
            .open(src.join("bin/run"))
            .unwrap()
            .set_times(at)
            .unwrap();
        File::open(src.join("bin")).unwrap().set_times(at).unwrap();
        fs::set_permissions(src.join("many"), fs::Permissions::from_mode(0o555)).unwrap();
        let dst = dir.path().join("dst");
        copy_tree(&src, &dst, &["skipme"]).unwrap();
        let modified = |p: &str| fs::metadata(dst.join(p)).unwrap().modified().unwrap();
        assert_eq!(modified("bin/run"), then);
        assert_eq!(modified("bin"), then);
        assert_eq!(
            modified("many/7"),
            fs::metadata(src.join("many/7"))
                .unwrap()
                .modified()
                .unwrap()
        );
        let mode = |p: &str| fs::metadata(dst.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("bin/run"), 0o755);
        assert_eq!(mode("many"), 0o555);
        assert_eq!(
            fs::read_link(dst.join("run")).unwrap(),
            Path::new("bin/run")
        );
        assert_eq!(fs::read_link(dst.join("etc")).unwrap(), Path::new("/etc"));
        assert!(!dst.join("skipme").exists());
        for i in 0..300 {
            let copied = fs::read_to_string(dst.join(format!("many/{i}"))).unwrap();
            assert_eq!(copied, format!("file {i}\n"));
        }
        fs::set_permissions(dst.join("many"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(src.join("many"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn holes_stay_holes() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        // 64 MiB long: data at 1 MiB and in the last bytes, holes around them.
        let mut file = File::create(src.join("sparse")).unwrap();
        file.set_len(64 << 20).unwrap();
        file.seek(SeekFrom::Start(1 << 20)).unwrap();
        file.write_all(b"data in the middle").unwrap();
        file.seek(SeekFrom::Start((64 << 20) - 3)).unwrap();
        file.write_all(b"end").unwrap();
        // And a sparse file whose end is a hole.
        let mut file = File::create(src.join("hole-at-end")).unwrap();
        file.write_all(b"start").unwrap();
        file.set_len(8 << 20).unwrap();
        drop(file);
        let dst = dir.path().join("dst");
        copy_tree(&src, &dst, &[]).unwrap();
        for name in ["sparse", "hole-at-end"] {
            let (from, to) = (src.join(name), dst.join(name));
            assert_eq!(fs::read(&from).unwrap(), fs::read(&to).unwrap(), "{name}");
            let on_disk = fs::metadata(&to).unwrap().blocks() * 512;
            // Where reflinks work the copy shares the blocks; elsewhere it has only the
            // data's (a block or two each), not the length's.
            assert!(on_disk < 1 << 20, "{name}: {on_disk} bytes on disk");
        }
    }

    #[test]
    fn a_file_that_cannot_be_copied_fails_the_copy_and_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        for i in 0..200 {
            fs::write(src.join(i.to_string()), "x").unwrap();
        }
        // A file at a target's path: its create fails.
        let dst = dir.path().join("dst");
        let mut plan = Plan::default();
        walk(&src, &dst, &[], &mut plan).unwrap();
        let (_, taken) = &plan.files[150];
        fs::write(taken, "already here").unwrap();
        let e = copy_files(&plan.files).unwrap_err();
        let message = format!("{e:#}");
        assert!(
            message.contains(&format!("to {}", taken.display())) && message.contains("exists"),
            "{message}"
        );
    }
}
