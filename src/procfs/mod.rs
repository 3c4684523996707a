//! What `/proc` tells about other processes: the fields of their `stat`, who holds a
//! lock, the variables of their environment (`environ.rs`) and the sockets they hold
//! (`sockets.rs`). The hook finds what killed hooks' builds left, and the daemon what its
//! workers left, by a variable each sets on what it starts; the daemon finds who listens
//! on a generation's port.

mod environ;
mod sockets;

pub use environ::{environs, Environ};
pub(crate) use sockets::listening_rows;
pub use sockets::{listening_for_loopback, listening_on, outgoing_ports, socket_inodes, Listening};

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fields of `/proc/<pid>/stat` in `dir` from the third (the state) on: those after
/// the command name, which is in parentheses and may hold spaces.
pub fn stat_fields(dir: &Path) -> Option<Vec<String>> {
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Field `n` (1-based, as proc(5) counts them) of `/proc/<pid>/stat` in `dir`.
pub fn stat_field(dir: &Path, n: usize) -> Option<String> {
    stat_fields(dir)?.into_iter().nth(n.checked_sub(3)?)
}

/// The process group of the process whose `/proc` folder is `dir` (field 5).
pub fn group(dir: &Path) -> Option<u32> {
    stat_field(dir, 5)?.parse().ok()
}

/// The parent of the process whose `/proc` folder is `dir` (field 4): 0 for the first
/// process and for kernel threads' parent.
pub fn parent(dir: &Path) -> Option<u32> {
    stat_field(dir, 4)?.parse().ok()
}

/// The command name of the process whose `/proc` folder is `dir` (`comm`: its program's
/// file name, cut to 15 bytes); empty when it cannot be read.
pub fn name(dir: &Path) -> Vec<u8> {
    let mut name = fs::read(dir.join("comm")).unwrap_or_default();
    name.truncate(name.trim_ascii_end().len());
    name
}

/// The arguments of the process whose `/proc` folder is `dir`, its program first; none
/// when they cannot be read.
pub fn arguments(dir: &Path) -> Vec<Vec<u8>> {
    let line = fs::read(dir.join("cmdline")).unwrap_or_default();
    let mut arguments: Vec<Vec<u8>> = line.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    // The last one ends with a NUL too.
    if arguments.last().is_some_and(Vec::is_empty) {
        arguments.pop();
    }
    arguments
}

/// How long ago the process whose `/proc` folder is `dir` started, to within a clock
/// tick (10 ms): `stat` field 22 counts ticks since boot, read against the same clock.
pub fn age(dir: &Path) -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    use nix::unistd::{sysconf, SysconfVar};
    let ticks: u64 = stat_field(dir, 22)?.parse().ok()?;
    let per_second = u64::try_from(sysconf(SysconfVar::CLK_TCK).ok()??).ok()?;
    let started = Duration::from_secs(ticks / per_second)
        + Duration::from_secs(ticks % per_second) / u32::try_from(per_second).ok()?;
    Duration::from(clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?).checked_sub(started)
}

/// Whether process `pid` runs: it exists and is no zombie (dead, not yet reaped by its
/// parent, which for an orphan is pid 1, in its own time). Asked of the kernel first
/// (kill(2) with no signal): another user's process hidden in /proc (`hidepid=2`) is
/// alive all the same; the zombie test needs /proc, and is passed over without it.
pub fn running(pid: u32) -> bool {
    use nix::errno::Errno;
    // Never 0 (or beyond i32): kill(2) would take it for a process group.
    let Some(raw) = i32::try_from(pid).ok().filter(|&raw| raw > 0) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) | Err(Errno::EPERM) => stat_field(Path::new(&format!("/proc/{pid}")), 3)
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The process that holds a `flock(2)` on the file at `path`, as `/proc/locks` names it;
/// `None` when none does, or it is not visible from here. Looked up by inode, and taken
/// only from a process that has the file open: `/proc/locks` names the device of the
/// filesystem, which on btrfs or overlayfs is not the one `stat` gives.
pub fn flock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let inode = fs::metadata(path).ok()?.ino();
    let path = fs::canonicalize(path).ok()?;
    let locks = fs::read_to_string("/proc/locks").ok()?;
    holders(&locks, inode).into_iter().find(|pid| {
        fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|open| open == path))
        })
    })
}

/// ` (pid N)` for a process this user may see, empty for one it may not.
pub fn shown(pid: Option<u32>) -> String {
    pid.map_or_else(String::new, |pid| format!(" (pid {pid})"))
}

/// ` (held by pid N)`: the process holding a `flock(2)` on `path`, for a message that
/// says what it waits for; with the way on when that process is stopped (Ctrl-Z on a
/// push, a SIGSTOP), which holds the lock for good. Empty when none is found.
pub fn held_by(path: &Path) -> String {
    let Some(pid) = flock_holder(path) else {
        return String::new();
    };
    match stat_field(Path::new(&format!("/proc/{pid}")), 3).as_deref() {
        Some("T") => {
            format!(" (held by pid {pid}, which is stopped: `kill -CONT {pid}` lets it go on)")
        }
        _ => format!(" (held by pid {pid})"),
    }
}

/// In `/proc/locks` text, the pids holding a FLOCK on a file with this `inode`.
fn holders(locks: &str, inode: u64) -> Vec<u32> {
    locks
        .lines()
        .filter_map(|line| {
            // `1: FLOCK  ADVISORY  WRITE 1234 fe:00:10985588 0 EOF`; a waiter's line has `->`.
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [_, "FLOCK", _, _, pid, file, ..]
                    if file.rsplit(':').next() == Some(&inode.to_string()) =>
                {
                    pid.parse().ok().filter(|&pid| pid > 0)
                }
                _ => None,
            }
        })
        .collect()
}

/// The `/proc` folder of every process there is now.
pub fn processes() -> Vec<PathBuf> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter(|p| {
            p.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|p| p.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn this_process_is_read_back() {
        let me = Path::new("/proc/self");
        let path = std::env::var_os("PATH").expect("tests run with a PATH");
        let env = Environ::read(me).unwrap();
        assert_eq!(env.get("PATH"), Some(path.as_bytes()));
        assert_eq!(env.path("PATH"), Some(PathBuf::from(&path)));
        // A name that is a prefix of a set one, or a suffix, is not that one.
        assert_eq!(env.get("PAT"), None);
        assert_eq!(env.get("ATH"), None);
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        assert_eq!(group(me), Some(pgid));
        let parent_pid = nix::unistd::getppid().to_string();
        assert_eq!(stat_field(me, 4), Some(parent_pid));
        assert_eq!(parent(me), Some(std::os::unix::process::parent_id()));
        let program = std::env::current_exe().unwrap();
        let file = program.file_name().unwrap().as_bytes();
        assert_eq!(name(me), file[..file.len().min(15)]);
        let args: Vec<Vec<u8>> = std::env::args_os().map(|a| a.as_bytes().to_vec()).collect();
        assert_eq!(arguments(me), args);
        // The age of a child started 300 ms before it is read (the pause is what is
        // measured), within a clock tick or two; this process is older.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let young = age(Path::new(&format!("/proc/{}", child.id()))).unwrap();
        let old = age(me).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            young >= Duration::from_millis(270) && young < Duration::from_secs(5),
            "{young:?}"
        );
        assert!(old >= young, "{old:?} {young:?}");
    }

    #[test]
    fn the_holder_of_a_flock_is_found_by_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let (held, free) = (dir.path().join("held"), dir.path().join("free"));
        fs::write(&free, "").unwrap();
        let lock = crate::fsops::try_lock(&held).unwrap().unwrap();
        assert_eq!(flock_holder(&held), Some(std::process::id()));
        assert_eq!(flock_holder(&free), None);
        drop(lock);
        assert_eq!(flock_holder(&held), None);
        // A waiter's line names the same file after `->`: not taken for the holder.
        let locks = "1: FLOCK  ADVISORY  WRITE 77 fe:00:5 0 EOF\n1: -> FLOCK  ADVISORY  WRITE 88 fe:00:5 0 EOF\n2: FLOCK  ADVISORY  WRITE 99 00:2a:5 0 EOF\n";
        assert_eq!(holders(locks, 5), vec![77, 99]);
        assert_eq!(holders(locks, 6), Vec::<u32>::new());
    }
}
