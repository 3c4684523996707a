//! `logs/<slot>.log`: worker output outside systemd, kept to a bounded size. Once the file
//! reaches [`MAX_BYTES`], it becomes `<slot>.log.1` (replacing the one before) and a new
//! one starts, so a slot's output never takes more than twice that on disk. (Under
//! systemd, journald keeps the output and rotates it.)
//!
//! Each generation writes through its own handle, appending; two generations of a slot
//! (one draining, one starting) may write at once. The one whose line takes the file past
//! the limit renames it; the other sees at its next line that the path is another file by
//! then, and opens that. A file someone removed or renamed (`rm`, logrotate) is started
//! again the same way, rather than written on unseen until the next deploy.
//!
//! A line that cannot be written (a full disk) is counted, not lost unseen: the next one
//! written starts on a line of its own, after `(N lines of worker output not written
//! here: <why>; the daemon's log has them)`, and the daemon's log says so once.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Where a slot's log is cut: 64 MiB.
pub const MAX_BYTES: u64 = 64 << 20;

pub struct SlotLog {
    path: PathBuf,
    max: u64,
    file: Mutex<Appending<File>>,
    /// That the path could not be opened again is logged once, not for every line.
    told: AtomicBool,
}

impl SlotLog {
    /// Opens `path` for appending (its folder made if someone removed it), to be cut at
    /// `max` bytes.
    pub fn open(path: PathBuf, max: u64) -> std::io::Result<SlotLog> {
        let file = append(&path)?;
        Ok(SlotLog {
            path,
            max,
            file: Mutex::new(Appending::new(file)),
            told: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` and a newline; past the limit, starts a new file. A file removed
    /// or renamed meanwhile (`rm`, logrotate) is started again at the path: its lines
    /// must not go on into a file nobody finds, holding the disk space it had. Errors
    /// are dropped: the line has reached the daemon's log too.
    pub fn write_line(&self, line: &str) {
        let mut file = self.file.lock().expect("slot log lock: no panic holds it");
        if let Err(e) = file.line(line) {
            if file.lost == 1 {
                tracing::warn!(
                    "cannot write to {}: {e}: worker lines are not kept there until it can be written again (this log has them)",
                    self.path.display()
                );
            }
        }
        let Ok(ours) = file.out.metadata() else {
            return;
        };
        // Another generation's handle may have cut it already, or someone removed it:
        // then the path is a new file or none, which this one takes up.
        let same = |meta: fs::Metadata| (meta.dev(), meta.ino()) == (ours.dev(), ours.ino());
        let at_path = fs::metadata(&self.path).is_ok_and(same);
        if ours.len() < self.max && at_path {
            return;
        }
        if at_path {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            if let Err(e) = fs::rename(&self.path, &old) {
                tracing::warn!("cannot rotate {}: {e}", self.path.display());
                return;
            }
        }
        match append(&self.path) {
            Ok(new) => {
                file.out = new;
                self.told.store(false, Ordering::Relaxed);
            }
            Err(e) if !self.told.swap(true, Ordering::Relaxed) => {
                tracing::warn!("cannot open {}: {e}", self.path.display())
            }
            Err(_) => {}
        }
    }
}

/// A log file's writer that keeps count of the lines it could not write.
struct Appending<W> {
    out: W,
    /// Lines not written since the last one that was, and why the last of them was not.
    lost: u64,
    why: String,
}

impl<W: Write> Appending<W> {
    fn new(out: W) -> Appending<W> {
        Appending {
            out,
            lost: 0,
            why: String::new(),
        }
    }

    /// Writes `line` and its newline in one write; after lines that could not be, first
    /// a newline (one of them may have been cut short) and how many there were.
    fn line(&mut self, line: &str) -> std::io::Result<()> {
        let mut text = String::with_capacity(line.len() + 1);
        if self.lost > 0 {
            text.push_str(&format!(
                "\n({} lines of worker output not written here: {}; the daemon's log has them)\n",
                self.lost, self.why
            ));
        }
        text.push_str(line);
        text.push('\n');
        match self.out.write_all(text.as_bytes()) {
            Ok(()) => {
                self.lost = 0;
                Ok(())
            }
            Err(e) => {
                self.lost += 1;
                self.why = e.to_string();
                Err(e)
            }
        }
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_past_its_size_is_cut_once_whoever_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/blue.log");
        let old = dir.path().join("logs/blue.log.1");
        // Two generations' handles, as a deploy has them.
        let (a, b) = (
            SlotLog::open(path.clone(), 100).unwrap(),
            SlotLog::open(path.clone(), 100).unwrap(),
        );
        for i in 0..9 {
            a.write_line(&format!("a{i} ......"));
        }
        assert!(!old.exists());
        a.write_line("a9 ......");
        // 100 bytes: cut, and a new file started.
        assert_eq!(fs::read_to_string(&old).unwrap().lines().count(), 10);
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        // The other handle still had the old file: its line lands there, and it takes up
        // the new file rather than cutting again.
        b.write_line("b0");
        b.write_line("b1");
        a.write_line("a10");
        let old_text = fs::read_to_string(&old).unwrap();
        assert!(
            old_text.starts_with("a0 ") && old_text.ends_with("b0\n"),
            "{old_text}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "b1\na10\n");
    }

    /// Takes whole writes until `room` bytes are gone, then part of one, then fails
    /// (a disk filling up) until given room again.
    struct Filling {
        written: Vec<u8>,
        room: usize,
    }

    impl Write for Filling {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_a_full_disk_took_are_counted_and_the_next_starts_its_own_line() {
        let mut log = Appending::new(Filling {
            written: Vec::new(),
            room: 10,
        });
        log.line("first").unwrap();
        assert!(log.line("cut short").is_err());
        assert!(log.line("not written").is_err());
        log.out.room = 1000;
        log.line("after").unwrap();
        log.line("and on").unwrap();
        assert_eq!(
            String::from_utf8(log.out.written).unwrap(),
            "first\ncut \n(2 lines of worker output not written here: No space left on device (os error 28); the daemon's log has them)\nafter\nand on\n"
        );
    }

    #[test]
    fn a_log_removed_or_renamed_under_it_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/blue.log");
        let log = SlotLog::open(path.clone(), 1 << 20).unwrap();
        log.write_line("first");
        // An operator freeing disk space.
        fs::remove_file(&path).unwrap();
        log.write_line("lost with the file");
        log.write_line("second");
        assert_eq!(fs::read_to_string(&path).unwrap(), "second\n");
        // logrotate's default: rename, then a new file at the path.
        let rotated = dir.path().join("logs/blue.log-20261123");
        fs::rename(&path, &rotated).unwrap();
        fs::write(&path, "").unwrap();
        log.write_line("into the rotated one");
        log.write_line("third");
        assert_eq!(fs::read_to_string(&path).unwrap(), "third\n");
        assert_eq!(
            fs::read_to_string(&rotated).unwrap(),
            "second\ninto the rotated one\n"
        );
        assert!(
            !dir.path().join("logs/blue.log.1").exists(),
            "nothing was cut"
        );
    }
}
