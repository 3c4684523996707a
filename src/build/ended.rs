//! Why a build failed, as the last line of its log: written by the push that ran it
//! (whatever failed: the checkout, the command, its finishing), read by a push that
//! waited for it.
//!
//! That line is bluegreen's, not the build's output: a push that waited quotes it
//! (`build failed: ... exited with status 3; log ...; last lines: ...`), where it
//! had only "failed or stopped" to say, and its time stamp is when the build failed,
//! which tells a push that began before then not to run the build again (see `ensure`).
//! A build that failed silently left its log's time stamp at its start.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What starts the line, so that build output that looks like it is never taken for it.
const MARK: &str = "(bluegreen: not built: ";

/// How much of the log's end is read for the line.
const READ: u64 = 4096;

/// Appends why the build failed (`why`, one line) to its log, made if the build never
/// started (a checkout that failed). A log that cannot be written is left as it is: the
/// push that failed says why anyway.
pub fn write(log: &Path, why: &str) {
    let why = crate::logging::printable(why.lines().next().unwrap_or(""));
    let _ = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut file| writeln!(file, "{MARK}{why})"));
}

/// Why the build of `log` failed, if its log says (the log of a build whose hook was
/// killed does not).
///
/// Only a plain file is read, and only its end: a log put in place by hand may be a
/// link to `/dev/full` or `/dev/zero`, which never end, or a FIFO, which would block.
pub fn read(log: &Path) -> Option<String> {
    // Opened without waiting for a FIFO's writer, then looked at.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(log)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    file.seek(SeekFrom::Start(meta.len().saturating_sub(READ)))
        .ok()?;
    let mut end = Vec::new();
    file.read_to_end(&mut end).ok()?;
    let end = String::from_utf8_lossy(&end);
    let last = end.trim_end_matches('\n').rsplit('\n').next()?;
    last.strip_prefix(MARK)?
        .strip_suffix(')')
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_last_line_says_why_the_build_failed_and_output_alike_is_not_taken_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        assert_eq!(read(&log), None);
        fs::write(&log, "(bluegreen: not built: step zero)\nstep\n").unwrap();
        assert_eq!(read(&log), None);
        write(&log, "build failed: exited with status 3\nsecond line");
        assert_eq!(
            read(&log).as_deref(),
            Some("build failed: exited with status 3")
        );
        // A checkout that failed has no log yet: the line makes it.
        let none = dir.path().join("none.log");
        write(&none, "cannot check out: bad tree");
        assert_eq!(read(&none).as_deref(), Some("cannot check out: bad tree"));
    }

    /// A log that is no plain file is not read: `/dev/zero` read to its end took the
    /// memory until the OOM killer came; a FIFO would block the push.
    #[test]
    fn a_log_that_is_a_device_or_a_fifo_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero.log");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert_eq!(read(&zero), None);
        let fifo = dir.path().join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(read(&fifo), None);
    }
}
